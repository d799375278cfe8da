"""The corpus: one UTF-8 text file, read as bytes and split into training and validation ids.

The config names either a known corpus (`data.corpus`, fetched by `launch.download_data` into
`data.dir`) or an explicit file (`data.file`, which wins). The last `data.val_fraction` of the
bytes is the validation split: a contiguous tail, so no validation text leaks into training.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bytelm.data import download
from bytelm.errors import BytelmError, ConfigError


class CorpusError(BytelmError):
    """The corpus file is missing, unreadable, not UTF-8, or too short for the model."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A tokenized corpus. `train` and `val` are uint8 byte ids (`[n_train]`, `[n_val]`)."""

    path: Path
    train: np.ndarray
    val: np.ndarray

    @property
    def num_bytes(self) -> int:
        return int(self.train.size + self.val.size)


def resolve_path(data_config) -> Path:
    """The corpus file named by the config: `data.file` if set, else the known `data.corpus`."""
    if data_config.get("file"):
        return Path(data_config.file)
    name = data_config.corpus
    if name not in download.KNOWN_CORPORA:
        known = ", ".join(sorted(download.KNOWN_CORPORA))
        raise ConfigError(
            f"unknown corpus {name!r}: set --config.data.corpus to one of {known}, "
            "or --config.data.file=PATH for your own text"
        )
    path = Path(data_config.dir) / download.KNOWN_CORPORA[name].filename
    if not path.exists():
        raise CorpusError(f"corpus {name!r} is not at {path}: fetch it with `{download.download_command(name)}`")
    return path


def first_invalid_utf8(data: bytes) -> int | None:
    """Byte offset of the first invalid UTF-8 sequence in `data`, or None if it is all valid."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start
    return None


def read_bytes(path: Path) -> bytes:
    """Reads a corpus file, turning every way it can fail into a one-line `CorpusError`."""
    if not path.exists():
        raise CorpusError(f"corpus file {path} does not exist: check --config.data.file")
    if path.is_dir():
        raise CorpusError(f"corpus path {path} is a directory: point --config.data.file at a text file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {path}: {e.strerror or e}") from None


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Splits `[n]` ids into (train, val) with the last `round(n * val_fraction)` ids as val."""
    n_val = int(round(ids.size * val_fraction))
    return ids[: ids.size - n_val], ids[ids.size - n_val :]


def load(data_config, seq_len: int) -> Corpus:
    """Reads, validates and splits the configured corpus for windows of `seq_len + 1` bytes."""
    if not 0.0 < data_config.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must lie strictly between 0 and 1, got {data_config.val_fraction}")
    path = resolve_path(data_config)
    data = read_bytes(path)
    if not data:
        raise CorpusError(f"corpus file {path} is empty: give a UTF-8 text file with some text in it")
    bad = first_invalid_utf8(data)
    if bad is not None:
        raise CorpusError(
            f"corpus file {path} is not valid UTF-8: first bad byte 0x{data[bad]:02x} at offset "
            f"{bad}; convert it (e.g. `iconv -f latin1 -t utf-8`) or fix that byte"
        )
    if len(data) < seq_len + 1:
        raise CorpusError(
            f"corpus file {path} has {len(data)} bytes, fewer than seq_len + 1 = {seq_len + 1}: "
            "use a longer text or a smaller --config.model.seq_len"
        )
    ids = np.frombuffer(data, dtype=np.uint8)
    train, val = split(ids, data_config.val_fraction)
    if train.size < 2 or val.size < 2:
        raise CorpusError(
            f"corpus file {path} ({len(data)} bytes) leaves {train.size} training and {val.size} "
            "validation bytes; both need at least 2: adjust --config.data.val_fraction"
        )
    return Corpus(path=path, train=train, val=val)
