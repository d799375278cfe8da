"""The known corpora and how to fetch them: a local mirror first, the canonical URL last.

Each known corpus is pinned by size and a published digest, so a truncated download, a proxy's error
page or a silently changed upstream file is refused instead of changing every number downstream.
Offline machines are normal (air-gapped clusters): `BYTELM_DATA_MIRROR` names a folder that
holds the files under their mirror paths, and an explicit `source` (a path or URL) wins over both.
A corpus distributed as a zip archive (enwik8, text8) is fetched as the archive and its one member
extracted; a source that is the extracted file itself is taken as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import IO

from bytelm.atomic_io import atomic_write
from bytelm.errors import BytelmError

MIRROR_ENV = "BYTELM_DATA_MIRROR"
_CHUNK = 1 << 20


class DownloadError(BytelmError):
    """A corpus could not be fetched or did not match its pinned size and digest."""


@dataclasses.dataclass(frozen=True)
class KnownCorpus:
    """A corpus bytelm knows by name: where it lands, where mirrors keep it, what it must hash to."""

    name: str
    filename: str  # under the data dir (config.data.dir), e.g. data/real/text/
    mirror_path: str  # under $BYTELM_DATA_MIRROR
    url: str
    size: int  # bytes of the corpus file (extracted, for an archive)
    digest: str  # "ALGORITHM:HEX" of the corpus file, as published (hashlib's names)
    flag: str  # the download_data flag that fetches it
    member: str = ""  # the file inside the zip archive that `url` and `mirror_path` name; "" = no archive
    splits: tuple[int, int, int] | None = None  # (train, val, test) bytes, where the corpus has a convention
    is_text: bool = True  # whether the file is UTF-8 throughout (enwik8's first 10^8 bytes cut a character)

    @property
    def algorithm(self) -> str:
        return self.digest.split(":", 1)[0]

    @property
    def hexdigest(self) -> str:
        return self.digest.split(":", 1)[1]


KNOWN_CORPORA: dict[str, KnownCorpus] = {
    c.name: c
    for c in (
        KnownCorpus(
            name="tiny_shakespeare",
            filename="tiny_shakespeare.txt",
            mirror_path="tinyshakespeare/input.txt",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            size=1_115_394,
            digest="sha256:86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            flag="--tiny_shakespeare",
        ),
        KnownCorpus(
            name="tinystories_valid",
            filename="tinystories_valid.txt",
            mirror_path="tinystories/TinyStories-valid.txt",
            url="https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories-valid.txt",
            size=19_447_282,
            digest="sha256:94e431816c4cce81ff71e4408ff8d3bda9a42e8d2663986697c3954288cb38b4",
            flag="--tinystories_valid",
        ),
        # The Hutter Prize's file: the first 10^8 bytes of the English Wikipedia dump of 2006-03-03.
        # Size, MD5 a1fa5ffddb56f4953e226637dabbb36a and SHA-1 as published in the readme of the
        # distribution (http://mattmahoney.net/dc/textdata.html, "enwik8 100,000,000 ... SHA-1").
        # Read as bytes (no UTF-8 check): byte-level benchmarks score every byte as it is, and a cut
        # at 10^8 bytes need not fall between two characters.
        KnownCorpus(
            name="enwik8",
            filename="enwik8",
            mirror_path="enwik8/enwik8.zip",
            url="http://mattmahoney.net/dc/enwik8.zip",
            size=100_000_000,
            digest="sha1:57b8363b814821dc9d47aa4d41f58733519076b2",
            flag="--enwik8",
            member="enwik8",
            splits=(90_000_000, 5_000_000, 5_000_000),
            is_text=False,
        ),
        # enwik9's first 10^8 bytes of clean text (lower-case letters and spaces), from the same page;
        # SHA-256 as published with the file's checks in, e.g., the text8 instructions of papers' code
        # ("sha256sum data/text8 ... 6e890197...").
        KnownCorpus(
            name="text8",
            filename="text8",
            mirror_path="text8/text8.zip",
            url="http://mattmahoney.net/dc/text8.zip",
            size=100_000_000,
            digest="sha256:6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7",
            flag="--text8",
            member="text8",
            splits=(90_000_000, 5_000_000, 5_000_000),
        ),
    )
}

DEFAULT_DATA_DIR = "data/real/text"


def download_command(name: str) -> str:
    """The exact command that fetches known corpus `name`."""
    return f"python -m launch.download_data {KNOWN_CORPORA[name].flag}"


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> tuple[int, str]:
    """Returns (size in bytes, hex digest) of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def is_verified(path: str | os.PathLike, corpus: KnownCorpus) -> bool:
    """True if `path` is a file with the corpus's pinned size and digest."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size != corpus.size:
        return False
    return file_digest(path, corpus.algorithm)[1] == corpus.hexdigest


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
    """Copies src to dst while hashing; raises before the rename if size or digest differ."""
    h = hashlib.new(corpus.algorithm)
    size = 0
    while chunk := src.read(_CHUNK):
        size += len(chunk)
        if size > corpus.size:
            break  # no need to read a wrong file to its end
        h.update(chunk)
        dst.write(chunk)
    if size != corpus.size or h.hexdigest() != corpus.hexdigest:
        got = f"{size} bytes" if size <= corpus.size else f"more than {corpus.size} bytes"
        raise DownloadError(
            f"{source} is not the {corpus.name} corpus ({got}, expected {corpus.size} bytes with "
            f"{corpus.algorithm} {corpus.hexdigest[:12]}...): point --source or ${MIRROR_ENV} at the right file"
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
    The file is written to a temporary name and renamed only once size and digest match; an
    archive is downloaded to a temporary file first, removed on every way out.
    """
    corpus = KNOWN_CORPORA[name]
    dest = Path(data_dir) / corpus.filename
    if is_verified(dest, corpus):
        return dest, False
    src = resolve_source(corpus, source, dict(os.environ) if env is None else env)
    try:
        if _is_url(src):
            with tempfile.TemporaryDirectory(prefix=".fetch-", dir=_made(dest.parent)) as tmp:
                local = Path(tmp) / Path(corpus.mirror_path).name
                with urllib.request.urlopen(src, timeout=timeout_s) as response, open(local, "wb") as f:
                    shutil.copyfileobj(response, f, _CHUNK)
                _install(local, dest, corpus, src)
        else:
            if not Path(src).is_file():
                raise DownloadError(
                    f"no file at {src}: give --source=PATH_OR_URL or set ${MIRROR_ENV} to a "
                    f"folder holding {corpus.mirror_path}"
                )
            _install(Path(src), dest, corpus, src)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot reach {src} ({reason}): on an offline machine set ${MIRROR_ENV} to a folder "
            f"holding {corpus.mirror_path}, or pass --source=PATH"
        ) from None
    except OSError as e:
        raise DownloadError(f"cannot read {src}: {e.strerror or e}") from None
    return dest, True


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _install(local: Path, dest: Path, corpus: KnownCorpus, source: str) -> None:
    """Writes `dest` from the local file `local`: its archive member for a zipped corpus (unless
    `local` is the extracted file already), else the file itself; verified, atomically."""
    if corpus.member and zipfile.is_zipfile(local):
        try:
            with zipfile.ZipFile(local) as archive, archive.open(corpus.member) as member:
                atomic_write(dest, lambda out: _copy_verified(member, out, corpus, f"{source}!{corpus.member}"))
        except KeyError:
            raise DownloadError(
                f"{source} holds no {corpus.member!r}: point --source or ${MIRROR_ENV} at the {corpus.name} archive"
            ) from None
        except (zipfile.BadZipFile, EOFError) as e:
            raise DownloadError(f"{source} is a damaged zip archive ({e}): fetch it again") from None
        return
    with open(local, "rb") as f:
        atomic_write(dest, lambda out: _copy_verified(f, out, corpus, source))


def fetch_and_say(name: str, data_dir: str | os.PathLike = DEFAULT_DATA_DIR, *, source: str | None = None) -> str:
    """Fetches known corpus `name` (as `fetch`) and returns the line that says what happened."""
    path, fetched = fetch(name, data_dir, source=source)
    corpus = KNOWN_CORPORA[name]
    if fetched:
        pinned = f"{corpus.size:,} bytes, {corpus.algorithm} {corpus.hexdigest[:12]}..."
        return f"{name}: fetched and verified ({pinned}) → {path}"
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
