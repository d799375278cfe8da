"""Atomic file writes: a temporary file in the target's folder, flushed, then renamed over it.

A crash or a failed write (disk full, permission denied) leaves the previous version intact:
`os.replace` is atomic on POSIX within one filesystem, which is why the temporary file lives in
the same folder as the target. The file gets the mode an ordinary write would give it (0666 less the
umask: 0644 under the usual 022), not the owner-only 0600 of a temporary file, so that a run on a
shared machine is readable by whom the user's umask says.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bytelm.errors import BytelmError


class WriteError(BytelmError):
    """A file could not be written; the previous version, if any, is untouched."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(f)` on a temporary binary file next to `path`, then renames it to `path`."""
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        raise WriteError(
            f"could not write {path}: {e.strerror or e} (check free space and permissions; "
            "the previous version, if any, is unchanged)"
        ) from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def current_umask() -> int:
    """The process's umask: from /proc/self/status on Linux, since the portable way (set it, read the old
    value, put it back) briefly changes it for every thread of the process."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """Replaces non-finite floats by the strings "NaN", "Infinity", "-Infinity" (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
    """Writes strict JSON (no bare NaN/Infinity tokens) atomically."""
    text = json.dumps(json_safe(obj), indent=indent, allow_nan=False, ensure_ascii=False)
    atomic_write_text(path, text + "\n")
