import hashlib
from pathlib import Path

import pytest

from bytelm.data import download
from bytelm.data.download import DownloadError, KnownCorpus


@pytest.fixture
def fake_corpus(tmp_path, monkeypatch) -> KnownCorpus:
    """A small known corpus with its own mirror, so the tests exercise every source cheaply."""
    data = b"To be, or not to be, that is the question.\n" * 10
    mirror = tmp_path / "mirror"
    (mirror / "fake").mkdir(parents=True)
    (mirror / "fake" / "input.txt").write_bytes(data)
    corpus = KnownCorpus(
        name="fake",
        filename="fake.txt",
        mirror_path="fake/input.txt",
        url="http://127.0.0.1:9/fake.txt",  # the discard port: nothing listens, the connection fails
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        flag="--fake",
    )
    monkeypatch.setitem(download.KNOWN_CORPORA, "fake", corpus)
    return corpus


def test_mirror_fetch_verifies_and_rerun_does_nothing(tmp_path, fake_corpus):
    env = {download.MIRROR_ENV: str(tmp_path / "mirror")}
    path, fetched = download.fetch("fake", tmp_path / "data", env=env)
    assert fetched and path.read_bytes() == (tmp_path / "mirror/fake/input.txt").read_bytes()
    mtime = path.stat().st_mtime_ns
    path2, fetched2 = download.fetch("fake", tmp_path / "data", env=env)
    assert (path2, fetched2) == (path, False) and path.stat().st_mtime_ns == mtime


def test_source_wins_over_mirror_and_url(tmp_path, fake_corpus):
    src = tmp_path / "elsewhere.txt"
    src.write_bytes((tmp_path / "mirror/fake/input.txt").read_bytes())
    env = {download.MIRROR_ENV: str(tmp_path / "no-such-mirror")}
    assert download.resolve_source(fake_corpus, str(src), env) == str(src)
    assert download.resolve_source(fake_corpus, None, env) == str(tmp_path / "no-such-mirror/fake/input.txt")
    assert download.resolve_source(fake_corpus, None, {}) == fake_corpus.url
    path, fetched = download.fetch("fake", tmp_path / "data", source=str(src), env=env)
    assert fetched and path.exists()


def test_checksum_mismatch_is_refused_and_keeps_nothing_half_written(tmp_path, fake_corpus):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"x" * fake_corpus.size)  # right size, wrong bytes
    with pytest.raises(DownloadError, match="is not the fake corpus"):
        download.fetch("fake", tmp_path / "data", source=str(bad), env={})
    assert list((tmp_path / "data").iterdir()) == []  # no partial or temporary file left


def test_mismatch_leaves_an_existing_file_untouched(tmp_path, fake_corpus):
    dest = tmp_path / "data" / "fake.txt"
    dest.parent.mkdir()
    dest.write_bytes(b"the user's own, older copy")
    with pytest.raises(DownloadError):
        download.fetch("fake", tmp_path / "data", source=str(tmp_path / "mirror/fake/input.txt") + "x", env={})
    assert dest.read_bytes() == b"the user's own, older copy"


def test_unreachable_url_is_one_line_error_with_the_fix(tmp_path, fake_corpus):
    with pytest.raises(DownloadError) as e:
        download.fetch("fake", tmp_path / "data", env={}, timeout_s=5)
    msg = str(e.value)
    assert "cannot reach" in msg and download.MIRROR_ENV in msg and "\n" not in msg


def test_known_corpora_are_pinned():
    ts = download.KNOWN_CORPORA["tiny_shakespeare"]
    assert (ts.size, ts.sha256[:8], ts.mirror_path) == (1_115_394, "86c4e6aa", "tinyshakespeare/input.txt")
    assert download.download_command("tinystories_valid") == "python -m launch.download_data --tinystories_valid"


def test_the_mirrored_tiny_shakespeare_verifies(tiny_shakespeare: Path):
    assert download.is_verified(tiny_shakespeare, download.KNOWN_CORPORA["tiny_shakespeare"])
