"""The corpus: one file, a folder of files or a glob of them, memory-mapped and split into training,
validation and test bytes (`bytelm.data.splits` says how).

The config names either a known corpus (`data.corpus`, fetched by `launch.download_data` into
`data.dir`) or its own (`data.file`: a file, a folder whose files are the shards, or a glob; it
wins). Nothing reads a whole file into memory: the bytes stay on disk and windows are read from
the map. A text corpus (`data.format`) is checked to be UTF-8, streamed, once per file version
(`bytelm.data.utf8`).
"""

from __future__ import annotations

import dataclasses
import glob
import mmap
import os
from pathlib import Path

import numpy as np

from bytelm.data import download, splits, utf8
from bytelm.errors import BytelmError, ConfigError

FORMATS = ("text", "bytes")


class CorpusError(BytelmError):
    """The corpus is missing, unreadable, not UTF-8, too short for the model, or not what it was."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A mapped corpus: its files (sorted) and their splits, each a `splits.Split` of uint8 ids.

    `checks` holds what the UTF-8 checks run this time measured (none when all were remembered)."""

    source: str  # what the config named: the file, folder or glob
    files: tuple[Path, ...]
    sizes: tuple[int, ...]
    train: splits.Split
    val: splits.Split
    test: splits.Split
    checks: tuple[dict, ...] = ()

    @property
    def path(self) -> str:
        return str(self.files[0]) if len(self.files) == 1 else self.source

    def split(self, name: str) -> splits.Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def manifest(self) -> dict:
        """What a run records of its corpus, and a resumed run must find again: files, sizes, splits."""
        return {
            "files": [{"path": str(p), "bytes": n} for p, n in zip(self.files, self.sizes, strict=True)],
            "splits": {name: self.split(name).size for name in splits.SPLITS},
        }


def resolve_files(data_config) -> tuple[str, list[Path]]:
    """(what the config named, the corpus files in sorted order): `data.file` (a file, a folder of
    shards or a glob) if set, else the known `data.corpus` in `data.dir`."""
    if data_config.get("file"):
        named = str(data_config.file)
        if glob.has_magic(named):
            found = sorted(Path(p) for p in glob.glob(os.path.expanduser(named)) if Path(p).is_file())
            if not found:
                raise CorpusError(f"the glob {named} matches no file: check --config.data.file")
            return named, found
        path = Path(named).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not found:
                raise CorpusError(
                    f"the folder {path} holds no files: put the corpus's shards in it, or fix --config.data.file"
                )
            return named, found
        if not path.exists():
            raise CorpusError(f"corpus file {path} does not exist: check --config.data.file")
        return named, [path]
    known = known_corpus(data_config)
    path = Path(data_config.dir) / known.filename
    if not path.exists():
        raise CorpusError(
            f"corpus {known.name!r} is not at {path}: fetch it with `{download.download_command(known.name)}`"
        )
    return str(path), [path]


def known_corpus(data_config) -> download.KnownCorpus:
    """The known corpus that `data.corpus` names (a one-line error listing them otherwise)."""
    name = data_config.corpus
    if name not in download.KNOWN_CORPORA:
        known = ", ".join(sorted(download.KNOWN_CORPORA))
        raise ConfigError(
            f"unknown corpus {name!r}: set --config.data.corpus to one of {known}, "
            "or --config.data.file=PATH for your own text"
        )
    return download.KNOWN_CORPORA[name]


def is_text(data_config) -> bool:
    """Whether the corpus is checked to be UTF-8: `data.format`, or the known corpus's own."""
    fmt = data_config.get("format", "")
    if fmt not in ("", *FORMATS):
        raise ConfigError(f"data.format must be one of text, bytes (or '' for the corpus's own), got {fmt!r}")
    if fmt:
        return fmt == "text"
    return True if data_config.get("file") else known_corpus(data_config).is_text


def map_file(path: Path) -> tuple[np.ndarray, mmap.mmap]:
    """The file's bytes as a read-only uint8 array `[size]` over a memory map (nothing is read yet)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise CorpusError(f"corpus file {path} is empty: give a file with some text in it, or remove it")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the map outlives the descriptor
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {path}: {e.strerror or e}") from None
    return np.frombuffer(mm, dtype=np.uint8), mm


def wanted_sizes(data_config) -> tuple[int, int, int] | None:
    """The fixed (train, val, test) sizes the config (or the known corpus) asks for, or None to
    split by fractions; checked before any file is touched."""
    wanted = tuple(int(data_config.get(f"{name}_bytes", 0)) for name in splits.SPLITS)
    if not any(wanted) and not data_config.get("file"):
        wanted = known_corpus(data_config).splits or wanted
    if any(wanted):
        if wanted[0] <= 0 or wanted[1] <= 0 or wanted[2] < 0:
            raise ConfigError(
                f"data.train_bytes and data.val_bytes must be positive (and data.test_bytes >= 0), got {wanted}"
            )
        return wanted
    vf, tf = data_config.val_fraction, data_config.get("test_fraction", 0.0)
    if not 0.0 < vf < 1.0 or not 0.0 <= tf < 1.0 or vf + tf >= 1.0:
        raise ConfigError(
            f"data.val_fraction ({vf}) must lie in (0, 1), data.test_fraction ({tf}) in [0, 1), and their sum below 1"
        )
    return None


def split_counts(data_config, sizes: list[int], wanted: tuple[int, int, int] | None) -> list[tuple[int, int, int]]:
    """Per file, its (train, val, test) bytes: the fixed sizes `wanted` (from `wanted_sizes`) cut
    from the files' concatenation, or with None the fractions of each file."""
    if wanted is None:
        return splits.by_fractions(sizes, data_config.val_fraction, data_config.get("test_fraction", 0.0))
    if sum(wanted) > sum(sizes):
        raise CorpusError(
            f"data.train_bytes + val_bytes + test_bytes = {sum(wanted):,} does not fit the corpus's "
            f"{sum(sizes):,} bytes ({len(sizes)} file(s)): lower them"
        )
    return splits.by_sizes(sizes, wanted)


def load(data_config, seq_len: int) -> Corpus:
    """Maps, checks and splits the configured corpus for windows of `seq_len + 1` bytes."""
    wanted, text = wanted_sizes(data_config), is_text(data_config)  # config mistakes before any file
    source, files, maps = _mapped(data_config, seq_len)
    sizes = [data.size for _, data, _ in maps]
    counts = split_counts(data_config, sizes, wanted)
    parts = splits.make_splits(maps, counts)
    _check_sizes(source, sum(sizes), parts, testing=bool(sum(c[2] for c in counts)))
    checks = check_text(data_config, files) if text else ()
    return Corpus(source, tuple(files), tuple(sizes), parts["train"], parts["val"], parts["test"], checks)


def load_all(data_config, seq_len: int) -> splits.Split:
    """Every byte of the configured corpus as one split (`launch.evaluate --file`), mapped and checked."""
    text = is_text(data_config)
    _, files, maps = _mapped(data_config, seq_len)
    if text:
        check_text(data_config, files)
    return splits.Split("file", [splits.Piece(path, data, mm, 0, data.size) for path, data, mm in maps])


def _mapped(data_config, seq_len: int) -> tuple[str, list[Path], list[tuple[Path, np.ndarray, mmap.mmap]]]:
    """(what the config named, its files, each file's (path, bytes, map)), long enough for a window."""
    source, files = resolve_files(data_config)
    maps = [(path, *map_file(path)) for path in files]
    _check_length(source, sum(data.size for _, data, _ in maps), seq_len)
    return source, files, maps


def check_text(data_config, files: list[Path]) -> tuple[dict, ...]:
    """Each file's UTF-8 check (`bytelm.data.utf8`); what the checks that ran measured."""
    measured = []
    for path in files:
        try:
            m = utf8.check(path, data_config.get("check_cache_dir", ""))
        except utf8.Utf8Error as e:
            raise CorpusError(str(e)) from None
        if m:
            measured.append(m)
    return tuple(measured)


def _check_length(source: str, total: int, seq_len: int) -> None:
    if total < seq_len + 1:
        raise CorpusError(
            f"corpus {source} has {total} bytes, fewer than seq_len + 1 = {seq_len + 1}: "
            "use a longer text or a smaller --config.model.seq_len"
        )


def _check_sizes(source: str, total: int, parts: dict[str, splits.Split], testing: bool) -> None:
    train, val, test = parts["train"].size, parts["val"].size, parts["test"].size
    if train < 2 or val < 2 or (testing and test < 2):
        raise CorpusError(
            f"corpus {source} ({total} bytes) leaves {train} training, {val} validation and {test} test "
            "bytes; each needs at least 2: adjust --config.data.val_fraction (or the split sizes)"
        )


def check_unchanged(recorded: dict | None, current: Corpus) -> None:
    """A resumed run's windows depend on the corpus's bytes: one-line error if its files or sizes
    differ from what the run recorded when it started (`recorded`, None for runs from before)."""
    if not recorded:
        return
    was = {f["path"]: f["bytes"] for f in recorded.get("files", [])}
    now = dict(zip(map(str, current.files), current.sizes, strict=True))
    for path, n in was.items():
        if path not in now:
            raise CorpusError(
                f"corpus file {path} is gone since this run started: restore it, or start over with --overwrite"
            )
        if now[path] != n:
            raise CorpusError(
                f"corpus file {path} has {now[path]:,} bytes, {n:,} when this run started: its windows would change; "
                "restore the file, or start over with --overwrite"
            )
    added = sorted(set(now) - set(was))
    if added or recorded.get("splits") != current.manifest()["splits"]:
        raise CorpusError(
            f"the corpus has changed since this run started ({', '.join(added) or 'its splits differ'}): "
            "resume with the files it had, or start over with --overwrite"
        )
