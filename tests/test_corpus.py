import pytest

from bytelm.data import corpus
from bytelm.data.corpus import CorpusError
from bytelm.errors import ConfigError
from conftest import tiny_config


def load(path, seq_len=16, **overrides):
    return corpus.load(tiny_config(path, **overrides).data, seq_len)


def test_split_takes_the_last_fraction_as_validation(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes(bytes(range(32, 127)) + b"\n" * 5)  # 100 bytes
    c = load(f, data__val_fraction=0.1)
    assert c.train.size == 90 and c.val.size == 10
    assert bytes(c.train) + bytes(c.val) == f.read_bytes()


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


def test_directory_and_missing_files(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        load(tmp_path)
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
    assert corpus.resolve_path(cfg.data) == f
