"""What every entry point shares: flag parsing and turning errors into one line and an exit code.

Usage errors (bad flags, unknown or ill-typed config overrides, bad settings) exit with status 2;
runtime failures (missing corpus, corrupt pack, unwritable workdir) with status 1; Ctrl-C with 130.
No traceback reaches the user for any error bytelm knows about.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

from bytelm.config_base import load_config_file
from bytelm.errors import BytelmError, Stopped

USAGE_EXIT = 2
INTERRUPT_EXIT = 130


def fail(message: str, code: int) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def _config_file_arg(argv: list[str]) -> str | None:
    for a in argv[1:]:
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def _parse_flags(argv: list[str], positional: bool = False) -> list[str]:
    config_file = _config_file_arg(argv)
    if config_file is None and "config" in flags.FLAGS:  # the entry point's default file, if it has one
        config_file = flags.FLAGS["config"].default_unparsed
    if config_file is not None and not os.path.isfile(config_file):
        fail(
            f"config file {config_file} does not exist: pass one of configs/*.py, e.g. --config=configs/gpt2_tiny.py",
            USAGE_EXIT,
        )
    try:
        rest = flags.FLAGS(argv)
        # ml_collections loads a config file lazily: load it now so a bad path is a usage error.
        if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
            flags.FLAGS["config"].value.keys()  # the first attribute access triggers the load
    except flags.Error as e:
        fail(f"{e} (see --helpshort)", USAGE_EXIT)
    except (AttributeError, KeyError):
        # An unknown override: ml_collections names the field and may suggest a close one.
        fail(_unknown_field_message(argv), USAGE_EXIT)
    except BytelmError as e:  # the config file's own error (one that loads another config that is missing)
        fail(f"cannot load config file {config_file}: {e}", USAGE_EXIT)
    except (OSError, ValueError, TypeError, SyntaxError) as e:
        fail(f"cannot load config file {config_file}: {str(e).splitlines()[-1] if str(e) else e!r}", USAGE_EXIT)
    if len(rest) > 1 and not positional:
        fail(f"unexpected arguments: {' '.join(rest[1:])} (flags are --name=value)", USAGE_EXIT)
    return rest


def _unknown_field_message(argv: list[str]) -> str:
    """Finds the override whose path is not in the loaded config and suggests the closest field."""
    config = load_config_file(_config_file_arg(argv) or "")
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        node, walked = config, "--config"
        for part in arg.split("=", 1)[0].split(".")[1:]:
            if not hasattr(node, "keys"):
                return f"unknown config field {arg.split('=', 1)[0]} ({walked} is a value, not a section)"
            keys = list(node.keys())
            if part not in keys:
                close = difflib.get_close_matches(part, keys, n=1)
                fix = f"did you mean {walked}.{close[0]}?" if close else f"{walked} has: {', '.join(keys)}"
                return f"unknown config field {walked}.{part} ({fix})"
            node, walked = node[part], f"{walked}.{part}"
    return "unknown config field (check the --config.* overrides against the config file)"


def overridden_fields(name: str = "config") -> set[str]:
    """The config fields given on the command line (`--config.runtime.cpu_devices=2` →
    `runtime.cpu_devices`): explicit settings, which a conflicting environment may not override."""
    return set(config_flags.get_override_values(flags.FLAGS[name]))


def run(main: Callable[..., None], positional: bool = False) -> None:
    """Runs `main()` under absl, converting bytelm errors and Ctrl-C into a line and an exit code.

    With `positional`, arguments that are not flags are allowed and `main(argv)` receives them.
    """

    def wrapped(argv: list[str]) -> None:
        # Orbax logs every save and restore at INFO through absl, whose level absl's flag parsing
        # has just set: chatter in a training log, not something a user must act on.
        logging.getLogger("absl").setLevel(logging.WARNING)
        try:
            main(argv) if positional else main()
        except Stopped as e:
            print(str(e), file=sys.stderr, flush=True)  # a requested stop, not an error
            sys.exit(e.exit_code)
        except BytelmError as e:
            if getattr(e, "exit_now", False):
                # Background writer threads are still failing (a full disk during a checkpoint):
                # exit without the interpreter's shutdown, which would print their tracebacks.
                print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
                sys.stdout.flush()
                os._exit(e.exit_code)
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr, flush=True)
            sys.exit(INTERRUPT_EXIT)
        except BrokenPipeError:
            # Output piped into `head` and closed: not an error of ours.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)

    # JAX logs at INFO that it found no TPU: start-up chatter, not something a user must act on.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    app.run(wrapped, flags_parser=lambda argv: _parse_flags(argv, positional))
