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
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
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
    assert (ts.size, ts.hexdigest[:8], ts.mirror_path) == (1_115_394, "86c4e6aa", "tinyshakespeare/input.txt")
    assert download.download_command("tinystories_valid") == "python -m launch.download_data --tinystories_valid"


def test_the_mirrored_tiny_shakespeare_verifies(tiny_shakespeare: Path):
    assert download.is_verified(tiny_shakespeare, download.KNOWN_CORPORA["tiny_shakespeare"])


@pytest.fixture
def zipped_corpus(tmp_path, monkeypatch) -> KnownCorpus:
    """A small known corpus distributed as a zip archive (as enwik8 and text8 are), in a mirror."""
    import zipfile

    data = bytes(range(256)) * 40  # bytes, not text
    (tmp_path / "mirror" / "z").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "mirror" / "z" / "z.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.txt", "not the corpus")
        archive.writestr("zbytes", data)
    corpus = KnownCorpus(
        name="zbytes",
        filename="zbytes",
        mirror_path="z/z.zip",
        url="http://127.0.0.1:9/z.zip",
        size=len(data),
        digest="sha1:" + hashlib.sha1(data).hexdigest(),
        flag="--zbytes",
        member="zbytes",
        splits=(9000, 500, 740),
        is_text=False,
    )
    monkeypatch.setitem(download.KNOWN_CORPORA, "zbytes", corpus)
    return corpus


def test_a_zipped_corpus_is_extracted_verified_and_a_rerun_does_nothing(tmp_path, zipped_corpus):
    env = {download.MIRROR_ENV: str(tmp_path / "mirror")}
    path, fetched = download.fetch("zbytes", tmp_path / "data", env=env)
    assert fetched and path.read_bytes() == bytes(range(256)) * 40
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["zbytes"]  # no archive or temp left
    assert download.fetch("zbytes", tmp_path / "data", env=env) == (path, False)
    # A --source that is the extracted file itself is taken as it is.
    path.rename(tmp_path / "extracted")
    assert download.fetch("zbytes", tmp_path / "data", source=str(tmp_path / "extracted"), env={})[1]


def test_a_damaged_or_wrong_archive_is_refused_and_leaves_nothing(tmp_path, zipped_corpus):
    import zipfile

    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("something_else", b"x")
    with pytest.raises(DownloadError, match=r"wrong\.zip holds no 'zbytes': point --source"):
        download.fetch("zbytes", tmp_path / "data", source=str(wrong), env={})
    archive_bytes = (tmp_path / "mirror/z/z.zip").read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive_bytes[:200] + archive_bytes[-120:])  # damaged, but still ends in a directory
    with pytest.raises(DownloadError):
        download.fetch("zbytes", tmp_path / "data", source=str(cut), env={})
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_the_byte_level_benchmarks_are_pinned_with_their_conventional_splits():
    for name, digest in (("enwik8", "sha1:57b8363b"), ("text8", "sha256:6e890197")):
        c = download.KNOWN_CORPORA[name]
        assert c.size == 100_000_000 and c.splits == (90_000_000, 5_000_000, 5_000_000)
        assert c.digest.startswith(digest) and c.member == name and c.url.endswith(f"{name}.zip")
    assert download.download_command("enwik8") == "python -m launch.download_data --enwik8"
