"""The UTF-8 check of a corpus file: streamed in chunks (nothing the size of the file is held), and
remembered, so that a large corpus is checked once and not at every start.

A result is remembered in `data.check_cache_dir` (the project's `data/checks` by default, never the
corpus's own folder, which may be read-only) under a key made of the file's absolute path, size and
modification time: a file that changes in any of them is checked again.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
from pathlib import Path

from bytelm.atomic_io import atomic_write_json
from bytelm.errors import BytelmError

CHUNK_BYTES = 4 << 20  # read and decode 4 MiB at a time: at disk speed, with a small bounded buffer


class Utf8Error(BytelmError):
    """A corpus file holds bytes that are not UTF-8."""


def first_invalid(path: Path, chunk_bytes: int = CHUNK_BYTES) -> tuple[int, int] | None:
    """(offset, byte) of the first invalid UTF-8 sequence in the file at `path`, or None.

    Each chunk is decoded on its own; a character cut by the chunk's end is carried into the next
    chunk, so an offset is exact wherever the bad byte falls, on a chunk boundary included."""
    decode = codecs.utf_8_decode
    carry, offset = b"", 0  # `offset`: where `carry` starts in the file
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            data = carry + chunk if carry else chunk
            try:
                _, used = decode(data, "strict", False)  # stops before an incomplete last character
            except UnicodeDecodeError as e:
                return offset + e.start, data[e.start]
            carry, offset = data[used:], offset + used
    if carry:  # the file ends inside a character
        return offset, carry[0]
    return None


def _key(path: Path) -> tuple[str, dict]:
    st = path.stat()
    ident = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32], ident


def is_remembered(path: Path, cache_dir: str) -> bool:
    """Whether an earlier check of this very file (same path, size and modification time) passed."""
    if not cache_dir:
        return False
    name, ident = _key(path)
    record = Path(cache_dir).expanduser() / f"{name}.json"
    try:
        return json.loads(record.read_text()).get("file") == ident
    except (OSError, ValueError):
        return False


def check(path: Path, cache_dir: str) -> dict | None:
    """Checks that the file at `path` is UTF-8, unless a passed check is remembered; raises
    `Utf8Error` naming the first bad byte's offset. Returns what a fresh check measured
    (`bytes`, `seconds`, `mb_per_s`), or None when the result was remembered."""
    if is_remembered(path, cache_dir):
        return None
    t0 = time.perf_counter()
    bad = first_invalid(path)
    if bad is not None:
        offset, byte = bad
        raise Utf8Error(
            f"corpus file {path} is not valid UTF-8: first bad byte 0x{byte:02x} at offset {offset}; convert it "
            "(e.g. `iconv -f latin1 -t utf-8`), fix that byte, or set --config.data.format=bytes to train on raw bytes"
        )
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    measured = {"bytes": size, "seconds": seconds, "mb_per_s": size / 1e6 / max(seconds, 1e-9)}
    if cache_dir:
        _remember(path, Path(cache_dir).expanduser(), measured)
    return measured


def _remember(path: Path, folder: Path, measured: dict) -> None:
    """Writes the passed check's record; a cache that cannot be written only costs the next check."""
    name, ident = _key(path)
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write_json(folder / f"{name}.json", {"file": ident, "utf8": "valid", **measured})
    except (OSError, BytelmError):
        pass
