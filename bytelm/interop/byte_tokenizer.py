"""The byte tokenizer as `tokenizers` files, so that `AutoTokenizer.from_pretrained(DIR)` maps text to
exactly its UTF-8 byte values (id = byte, no offset, no special tokens) and decodes them back.

A `tokenizers` BPE model with no merges over a vocabulary of the 256 byte values, behind the
byte-level pre-tokenizer and decoder: the pre-tokenizer turns each UTF-8 byte into one printable
character (the GPT-2 byte-to-character table below), the vocabulary maps that character to the
byte's own value, and the decoder turns the characters back into bytes and the bytes into text
(invalid UTF-8 becomes U+FFFD, as `bytelm.data.tokenizer.decode`). No regex split, no prefix space,
no post-processor: nothing is added to or taken from the text.
"""

from __future__ import annotations

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def byte_to_char() -> dict[int, str]:
    """GPT-2's byte-level table: every byte to a printable character, printable ASCII and Latin-1 to
    themselves and the rest (controls, space, a few others) to the characters from U+0100 on."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in kept:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tokenizer_json() -> dict:
    """The `tokenizers` JSON document."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {char: b for b, char in byte_to_char().items()},
            "merges": [],
        },
    }


def tokenizer_config(model_max_length: int | None) -> dict:
    """transformers' `tokenizer_config.json`: the fast tokenizer over `tokenizer.json`, no special tokens."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length or 1_000_000_000,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
