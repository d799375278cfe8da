"""The error types that reach users.

Every error a user can cause is raised as a subclass of `BytelmError` with a message that names
the problem and the fix on one line. `launch/` turns it into that line and `exit_code`, never a
traceback. Areas with their own module define their own subclass (`CorpusError` in
`data/corpus.py`, `ParamPackError` in `artifacts/param_pack.py`, ...).
"""


class BytelmError(Exception):
    """Base of all user-facing errors. Runtime failures exit with status 1."""

    exit_code = 1


class UsageError(BytelmError):
    """A flag, a config value or an argument is invalid. Exits with status 2, like a bad flag."""

    exit_code = 2


class ConfigError(UsageError):
    """A config field has a bad value or the fields contradict each other."""


class RunDirError(BytelmError):
    """A run directory is missing, unreadable, or would be overwritten."""


class Stopped(BytelmError):
    """A run stopped on request (SIGINT, SIGTERM) after saving its state: not a failure of bytelm's,
    so the entry points print the message without "error:", with the exit code of the signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def check_at_least(section: str, values: dict[str, int], minimum: int = 1) -> None:
    """Raises a one-line `ConfigError` naming the first of `values` (field → value) below `minimum`."""
    for name, value in values.items():
        if value < minimum:
            raise ConfigError(f"{section}.{name} must be at least {minimum}, got {value}")
