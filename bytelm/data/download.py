"""The known corpora and how to fetch them: a local mirror first, the canonical URL last.

Each known corpus is pinned by size and sha256, so a truncated download, a proxy's error page or
a silently changed upstream file is refused instead of changing every number downstream.
Offline machines are normal (air-gapped clusters): `BYTELM_DATA_MIRROR` names a folder that
holds the files under their mirror paths, and an explicit `source` (a path or URL) wins over both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from bytelm.atomic_io import atomic_write
from bytelm.errors import BytelmError

MIRROR_ENV = "BYTELM_DATA_MIRROR"
_CHUNK = 1 << 20


class DownloadError(BytelmError):
    """A corpus could not be fetched or did not match its pinned size and sha256."""


@dataclasses.dataclass(frozen=True)
class KnownCorpus:
    """A corpus bytelm knows by name: where it lands, where mirrors keep it, what it must hash to."""

    name: str
    filename: str  # under the data dir (config.data.dir), e.g. data/real/text/
    mirror_path: str  # under $BYTELM_DATA_MIRROR
    url: str
    size: int  # bytes
    sha256: str
    flag: str  # the download_data flag that fetches it


KNOWN_CORPORA: dict[str, KnownCorpus] = {
    c.name: c
    for c in (
        KnownCorpus(
            name="tiny_shakespeare",
            filename="tiny_shakespeare.txt",
            mirror_path="tinyshakespeare/input.txt",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            size=1_115_394,
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            flag="--tiny_shakespeare",
        ),
        KnownCorpus(
            name="tinystories_valid",
            filename="tinystories_valid.txt",
            mirror_path="tinystories/TinyStories-valid.txt",
            url="https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt",
            size=19_447_282,
            sha256="94e431816c4cce81ff71e4408ff8d3bda9a42e8d2663986697c3954288cb38b4",
            flag="--tinystories_valid",
        ),
    )
}

DEFAULT_DATA_DIR = "data/real/text"


def download_command(name: str) -> str:
    """The exact command that fetches known corpus `name`."""
    return f"python -m launch.download_data {KNOWN_CORPORA[name].flag}"


def file_digest(path: str | os.PathLike) -> tuple[int, str]:
    """Returns (size in bytes, sha256 hex) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def is_verified(path: str | os.PathLike, corpus: KnownCorpus) -> bool:
    """True if `path` is a file with the corpus's pinned size and sha256."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size != corpus.size:
        return False
    return file_digest(path)[1] == corpus.sha256


def resolve_source(corpus: KnownCorpus, source: str | None, env: dict[str, str]) -> str:
    """The first given of: `source`, the mirror folder in `env`, the canonical URL."""
    if source:
        return source
    mirror = env.get(MIRROR_ENV, "")
    if mirror:
        return str(Path(mirror) / corpus.mirror_path)
    return corpus.url


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def _copy_verified(src: IO[bytes], dst: IO[bytes], corpus: KnownCorpus, source: str) -> None:
    """Copies src to dst while hashing; raises before the rename if size or sha256 differ."""
    h = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        size += len(chunk)
        if size > corpus.size:
            break  # no need to read a wrong file to its end
        h.update(chunk)
        dst.write(chunk)
    if size != corpus.size or h.hexdigest() != corpus.sha256:
        got = f"{size} bytes" if size <= corpus.size else f"more than {corpus.size} bytes"
        raise DownloadError(
            f"{source} is not the {corpus.name} corpus ({got}, expected {corpus.size} bytes with "
            f"sha256 {corpus.sha256[:12]}...): point --source or ${MIRROR_ENV} at the right file"
        )


def fetch(
    name: str,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    *,
    source: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> tuple[Path, bool]:
    """Puts known corpus `name` at `data_dir/<filename>`, verified; returns (path, fetched).

    `fetched` is False when the right file was already there (nothing is read from the source).
    The file is written to a temporary name and renamed only once size and sha256 match.
    """
    corpus = KNOWN_CORPORA[name]
    dest = Path(data_dir) / corpus.filename
    if is_verified(dest, corpus):
        return dest, False
    src = resolve_source(corpus, source, dict(os.environ) if env is None else env)
    try:
        if _is_url(src):
            with urllib.request.urlopen(src, timeout=timeout_s) as response:
                atomic_write(dest, lambda f: _copy_verified(response, f, corpus, src))
        else:
            if not Path(src).is_file():
                raise DownloadError(
                    f"no file at {src}: give --source=PATH_OR_URL or set ${MIRROR_ENV} to a "
                    f"folder holding {corpus.mirror_path}"
                )
            with open(src, "rb") as f:
                atomic_write(dest, lambda out: _copy_verified(f, out, corpus, src))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot reach {src} ({reason}): on an offline machine set ${MIRROR_ENV} to a folder "
            f"holding {corpus.mirror_path}, or pass --source=PATH"
        ) from None
    except OSError as e:
        raise DownloadError(f"cannot read {src}: {e.strerror or e}") from None
    return dest, True


def fetch_and_say(name: str, data_dir: str | os.PathLike = DEFAULT_DATA_DIR, *, source: str | None = None) -> str:
    """Fetches known corpus `name` (as `fetch`) and returns the line that says what happened."""
    path, fetched = fetch(name, data_dir, source=source)
    corpus = KNOWN_CORPORA[name]
    if fetched:
        return f"{name}: fetched and verified ({corpus.size:,} bytes, sha256 {corpus.sha256[:12]}...) → {path}"
    return f"{name}: already at {path}, verified; nothing to do"


__all__ = [
    "DEFAULT_DATA_DIR",
    "DownloadError",
    "KNOWN_CORPORA",
    "KnownCorpus",
    "MIRROR_ENV",
    "download_command",
    "fetch",
    "fetch_and_say",
    "file_digest",
    "is_verified",
    "resolve_source",
]
