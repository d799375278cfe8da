import mmap

import numpy as np
import pytest

from bytelm.data import batches, corpus, utf8
from bytelm.data.corpus import CorpusError
from bytelm.errors import ConfigError
from conftest import tiny_config


def load(path, seq_len=16, **overrides):
    return corpus.load(tiny_config(path, **overrides).data, seq_len)


def test_split_takes_the_last_fraction_as_validation(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes(bytes(range(32, 127)) + b"\n" * 5)  # 100 bytes
    c = load(f, data__val_fraction=0.1)
    assert c.train.size == 90 and c.val.size == 10 and c.test.size == 0
    assert c.train.to_array().tobytes() + c.val.to_array().tobytes() == f.read_bytes()


def test_invalid_utf8_names_the_offset(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"hello world " * 5 + "café".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"not valid UTF-8: first bad byte 0xe9 at offset 63"):
        load(f)


def test_empty_and_short_files_are_clear_errors(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_bytes(b"")
    with pytest.raises(CorpusError, match="is empty"):
        load(f)
    f.write_bytes(b"x" * 16)
    with pytest.raises(CorpusError, match=r"has 16 bytes, fewer than seq_len \+ 1 = 17"):
        load(f, seq_len=16)


def test_empty_folder_unmatched_glob_and_missing_files(tmp_path):
    with pytest.raises(CorpusError, match=f"the folder {tmp_path} holds no files"):
        load(tmp_path)
    with pytest.raises(CorpusError, match=r"the glob .*\*\.txt matches no file"):
        load(tmp_path / "*.txt")
    with pytest.raises(CorpusError, match="does not exist"):
        load(tmp_path / "nope.txt")


def test_missing_known_corpus_gives_the_download_command(tmp_path):
    cfg = tiny_config("")
    cfg.data.dir = str(tmp_path)
    with pytest.raises(CorpusError, match="python -m launch.download_data --tiny_shakespeare"):
        corpus.load(cfg.data, 16)


def test_unknown_corpus_and_bad_fraction_are_config_errors(tmp_path):
    cfg = tiny_config("")
    cfg.data.corpus = "war_and_peace"
    with pytest.raises(ConfigError, match="unknown corpus"):
        corpus.load(cfg.data, 16)
    with pytest.raises(ConfigError, match="val_fraction"):
        load(tmp_path / "x", data__val_fraction=1.0)


def test_file_wins_over_corpus(tmp_path, tiny_shakespeare):
    f = tmp_path / "mine.txt"
    f.write_text("my own words, " * 10)
    cfg = tiny_config(f)
    cfg.data.corpus = "tiny_shakespeare"
    assert corpus.resolve_files(cfg.data) == (str(f), [f])


# --- UTF-8, streamed and remembered ---------------------------------------------------------------


@pytest.mark.parametrize("at", [5, 7, 8, 9, 15, 16])
def test_a_bad_byte_is_named_by_its_offset_wherever_it_falls_among_the_chunks(tmp_path, at):
    f = tmp_path / "c.txt"
    data = bytearray(b"abcdefghijklmnopqrstuvwx")
    data[at] = 0xFF
    f.write_bytes(bytes(data))
    assert utf8.first_invalid(f, chunk_bytes=8) == (at, 0xFF)


def test_characters_cut_by_a_chunk_boundary_are_whole_and_a_cut_at_the_end_is_not(tmp_path):
    f = tmp_path / "c.txt"
    text = "é€𝄞 ends here. " * 7  # 2-, 3- and 4-byte characters, so every boundary cuts one somewhere
    f.write_text(text, encoding="utf-8")
    for chunk in (1, 2, 3, 5, 7, 8):
        assert utf8.first_invalid(f, chunk_bytes=chunk) is None, chunk
    raw = text.encode()
    f.write_bytes(raw + "€".encode()[:2])  # the file stops inside its last character
    assert utf8.first_invalid(f, chunk_bytes=4) == (len(raw), 0xE2)
    f.write_bytes(raw[:30] + b"\xc3(" + raw[30:])  # a lead byte followed by no continuation byte
    assert utf8.first_invalid(f, chunk_bytes=31) == (30, 0xC3)


def test_a_passed_check_is_remembered_until_the_file_changes_and_needs_no_write_access(tmp_path):
    corpus_dir, cache = tmp_path / "read-only", tmp_path / "cache"
    corpus_dir.mkdir()
    f = corpus_dir / "c.txt"
    f.write_text("some text\n" * 100)
    corpus_dir.chmod(0o555)
    try:
        first = utf8.check(f, str(cache))
        assert first["bytes"] == 1000 and first["mb_per_s"] > 0
        assert utf8.check(f, str(cache)) is None  # remembered
        assert utf8.check(f, "") is not None  # no cache: checked every time
    finally:
        corpus_dir.chmod(0o755)
    with open(f, "ab") as out:
        out.write(b"\xff")  # a change of size (and mtime): checked again, and found out
    with pytest.raises(utf8.Utf8Error, match="first bad byte 0xff at offset 1000"):
        utf8.check(f, str(cache))


def test_a_bytes_corpus_is_not_checked(tmp_path):
    f = tmp_path / "b.bin"
    f.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CorpusError, match="not valid UTF-8"):
        load(f)
    c = load(f, data__format="bytes")
    assert c.checks == () and sum(c.sizes) == 1024


# --- Many files, memory-mapped --------------------------------------------------------------------


def _shards(folder, sizes, seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i, n in enumerate(sizes):
        (folder / f"shard-{i:03d}.txt").write_bytes(bytes(rng.integers(97, 123, size=n, dtype=np.uint8)))
    return sorted(folder.iterdir())


def test_a_folder_and_a_glob_are_the_same_sorted_shards_each_split_by_its_fractions(tmp_path):
    files = _shards(tmp_path / "s", [300, 500, 200])
    (tmp_path / "s" / ".hidden").write_bytes(b"not a shard")
    c = load(tmp_path / "s", data__val_fraction=0.1, data__test_fraction=0.1)
    assert list(c.files) == files and c.sizes == (300, 500, 200)
    assert load(tmp_path / "s" / "shard-*.txt").files == c.files
    assert c.val.piece_sizes == [30, 50, 20] and c.test.piece_sizes == [30, 50, 20]
    assert c.train.size == 800
    first = files[0].read_bytes()
    assert c.train.to_array()[:240].tobytes() == first[:240]
    assert c.val.to_array()[:30].tobytes() == first[240:270] and c.test.to_array()[:30].tobytes() == first[270:]
    # Memory-mapped: the splits are views of the files' maps, not copies.
    for p in c.train.pieces:
        assert isinstance(p.mm, mmap.mmap) and not p.data.flags.owndata and not p.data.flags.writeable
        assert memoryview(p.mm).obj is p.mm and p.mm.size() == p.data.size


def test_windows_never_straddle_two_files(tmp_path):
    _shards(tmp_path / "s", [40, 40])
    c = load(tmp_path / "s", data__val_fraction=0.5)
    train = c.train  # 20 bytes of each file
    assert train[15:32].tobytes() == train.pieces[0].data[15:20].tobytes()  # cut at the first file's end
    w, lengths = batches.windows(train, np.array([15, 20, 30]), seq_len=16)
    assert lengths.tolist() == [5, 17, 10]
    assert batches.eval_starts(train.piece_sizes, 8, 0).tolist() == [0, 8, 16, 20, 28, 36]


def test_adding_a_file_in_sorted_order_changes_no_split_of_the_others(tmp_path):
    _shards(tmp_path / "s", [400, 300])
    before = load(tmp_path / "s", data__test_fraction=0.1)
    sized = load(tmp_path / "s", data__train_bytes=500, data__val_bytes=100, data__test_bytes=50)
    (tmp_path / "s" / "shard-999.txt").write_bytes(b"z" * 250)
    after = load(tmp_path / "s", data__test_fraction=0.1)
    for name in ("train", "val", "test"):
        assert after.split(name).piece_sizes[:2] == before.split(name).piece_sizes
    again = load(tmp_path / "s", data__train_bytes=500, data__val_bytes=100, data__test_bytes=50)
    assert [again.split(n).to_array().tobytes() for n in ("train", "val", "test")] == [
        sized.split(n).to_array().tobytes() for n in ("train", "val", "test")
    ]


def test_fixed_split_sizes_cut_the_concatenation_and_must_fit(tmp_path):
    _shards(tmp_path / "s", [100, 100, 100])
    c = load(tmp_path / "s", data__train_bytes=150, data__val_bytes=100, data__test_bytes=40)
    assert (c.train.piece_sizes, c.val.piece_sizes, c.test.piece_sizes) == ([100, 50], [50, 50], [40])
    with pytest.raises(CorpusError, match=r"= 301 does not fit the corpus's 300 bytes \(3 file\(s\)\): lower them"):
        load(tmp_path / "s", data__train_bytes=200, data__val_bytes=100, data__test_bytes=1)
    with pytest.raises(ConfigError, match="must be positive"):
        load(tmp_path / "s", data__train_bytes=100, data__val_bytes=0, data__test_bytes=10)


def test_a_known_corpus_brings_its_conventional_splits(tmp_path, monkeypatch):
    from bytelm.data import download

    known = download.KnownCorpus(
        "bench", "bench.bin", "bench/bench.zip", "http://127.0.0.1:9/", 1000, "sha256:" + "0" * 64, "--bench",
        member="bench", splits=(900, 50, 50), is_text=False,
    )  # fmt: skip
    monkeypatch.setitem(download.KNOWN_CORPORA, "bench", known)
    (tmp_path / "bench.bin").write_bytes(bytes(range(256)) * 3 + b"\xff" * 232)
    cfg = tiny_config("")
    cfg.data.corpus, cfg.data.dir = "bench", str(tmp_path)
    c = corpus.load(cfg.data, 16)  # bytes, so no UTF-8 check; 90 / 5 / 5 of its 1000 bytes
    assert (c.train.size, c.val.size, c.test.size) == (900, 50, 50) and c.checks == ()


def test_an_empty_shard_and_a_changed_file_are_named(tmp_path):
    files = _shards(tmp_path / "s", [100, 100])
    files[1].write_bytes(b"")
    with pytest.raises(CorpusError, match=f"corpus file {files[1]} is empty"):
        load(tmp_path / "s")
    files[1].write_bytes(b"q" * 100)
    c = load(tmp_path / "s")
    recorded = c.manifest()
    corpus.check_unchanged(recorded, c)
    files[1].write_bytes(b"q" * 101)
    with pytest.raises(CorpusError, match=f"corpus file {files[1]} has 101 bytes, 100 when this run started"):
        corpus.check_unchanged(recorded, load(tmp_path / "s"))
    files[1].unlink()
    with pytest.raises(CorpusError, match=f"corpus file {files[1]} is gone since this run started"):
        corpus.check_unchanged(recorded, load(tmp_path / "s"))


def test_a_run_from_before_the_new_data_fields_still_resumes(tmp_path):
    from bytelm.artifacts import run_dir

    current = tiny_config(tmp_path / "c.txt").to_dict()
    saved = {**current, "data": {k: v for k, v in current["data"].items() if k not in (
        "format", "check_cache_dir", "test_fraction", "train_bytes", "val_bytes", "test_bytes")}}  # fmt: skip
    assert run_dir.config_differences(saved, current) == []
    changed = {**current, "data": {**current["data"], "test_fraction": 0.1}}
    assert run_dir.config_differences(saved, changed) == ["data.test_fraction: 0.0 → 0.1"]
