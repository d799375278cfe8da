"""Byte tokens: one UTF-8 byte is one token, so the vocabulary is the 256 byte values.

There is no tokenizer file to ship or lose. Text is encoded to int32 ids in [0, 256); ids are
decoded back with an incremental UTF-8 decoder, so a character whose bytes arrive over several
sampling steps prints whole, and a sequence that is not UTF-8 prints as U+FFFD instead of raising.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

import numpy as np

VOCAB_SIZE = 256
SPACE_CELL = "\u2423"  # an open box: a space byte in a space-separated grid, where a plain space would vanish

# Bytes that `display` shows as themselves; everything else is escaped so logs stay one line.
_PRINTABLE = frozenset(range(32, 127)) - {ord("\\")}
_NAMED_ESCAPES = {ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r", ord("\\"): "\\\\"}


def encode(text: str | bytes) -> np.ndarray:
    """Returns the token ids of `text` (a str is encoded as UTF-8): int32 `[num_bytes]`."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32)


def space_like() -> np.ndarray:
    """bool `[256]`: SpaceByte's space-like bytes (Slagle 2024): ASCII that is neither a letter nor a digit,
    and UTF-8 lead bytes (0b11xxxxxx), the bytes after which a word or a character starts."""
    ids = np.arange(VOCAB_SIZE)
    alnum = ((ids >= ord("0")) & (ids <= ord("9"))) | ((ids >= ord("A")) & (ids <= ord("Z")))
    alnum |= (ids >= ord("a")) & (ids <= ord("z"))
    return ((ids < 0x80) & ~alnum) | (ids >= 0xC0)


def one_hot(ids, xp=np):
    """Integer ids `[...]` → float32 one-hot `[..., 256]`: the typed input every model takes.

    `xp` is the array module: NumPy (the default) for batches built on the host, `jax.numpy`
    inside jitted code (the samplers)."""
    return xp.eye(VOCAB_SIZE, dtype=xp.float32)[ids]


def _to_bytes(ids: Iterable[int] | np.ndarray) -> bytes:
    arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"token ids must lie in [0, {VOCAB_SIZE}); got {arr.min()}..{arr.max()}")
    return arr.astype(np.uint8).tobytes()


def decode(ids: Iterable[int] | np.ndarray) -> str:
    """Decodes ids to text; bytes that are not valid UTF-8 become U+FFFD."""
    return _to_bytes(ids).decode("utf-8", errors="replace")


class StreamDecoder:
    """Decodes ids as they arrive, holding back the bytes of an unfinished character.

    `push(ids)` returns the text completed so far; `flush()` returns whatever is left (an
    unfinished character becomes U+FFFD).
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: Iterable[int] | np.ndarray) -> str:
        return self._decoder.decode(_to_bytes(ids))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


def display_token(token_id: int) -> str:
    """One id as a printable, escaped string: 'a', '\\n', '\\t', '\\\\', '\\xNN'."""
    token_id = int(token_id)
    if token_id in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[token_id]
    if token_id in _PRINTABLE:
        return chr(token_id)
    return f"\\x{token_id:02x}"


def grid_cell(token_id: int) -> str:
    """`display_token`, except that a space shows as an open box (for aligned, space-separated rows)."""
    return SPACE_CELL if int(token_id) == ord(" ") else display_token(token_id)


def display(ids: Iterable[int] | np.ndarray) -> str:
    """Ids as one escaped line for logs: control bytes and non-ASCII bytes become escapes."""
    return "".join(display_token(b) for b in _to_bytes(ids))
