import numpy as np

from bytelm.data import tokenizer


def test_encode_is_utf8_bytes_as_int32():
    ids = tokenizer.encode("aé€")
    assert ids.dtype == np.int32
    assert ids.tolist() == list("aé€".encode())
    assert tokenizer.encode(b"\x00\xff").tolist() == [0, 255]


def test_decode_round_trips_text():
    text = "ROMEO:\nBut soft — what light? 🌅"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_decode_replaces_invalid_utf8_instead_of_raising():
    assert tokenizer.decode([0x61, 0xFF, 0x62]) == "a\ufffdb"
    assert tokenizer.decode([0xE2, 0x82]) == "\ufffd"  # a truncated 3-byte character


def test_stream_decoder_holds_a_character_split_across_steps():
    dec = tokenizer.StreamDecoder()
    euro = list("€".encode())  # three bytes
    assert dec.push(euro[:1]) == ""
    assert dec.push(euro[1:2]) == ""
    assert dec.push(euro[2:]) == "€"
    assert dec.push([0xFF]) == "\ufffd"
    assert dec.push([0xE2]) == ""
    assert dec.flush() == "\ufffd"  # an unfinished character at the end


def test_display_escapes_control_and_non_ascii_bytes():
    assert tokenizer.display(tokenizer.encode("a\nb\tc\\")) == "a\\nb\\tc\\\\"
    assert tokenizer.display([0, 127, 200]) == "\\x00\\x7f\\xc8"
    assert tokenizer.display_token(ord("A")) == "A"
