"""Spans of JSON values in a byte buffer, found without decoding them.

The parameter pack is one JSON document whose leaves hold hundreds of megabytes of base64. Decoding
it with `json.loads` would hold the file's bytes, a Python string of every leaf and the decoded
weights at once (about 3.7 copies of the weights). This scanner walks the document's structure over
a memory-mapped file instead, so that a caller can `json.loads` the small values and decode each
large string straight from the map, one at a time.

The scanner finds where each value starts and ends; it does not fully validate what lies inside a
value it skips. Callers validate the values they use (with `json.loads`, or a strict base64
decoder), which is what makes the pair a strict reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_WS = re.compile(rb"[ \t\n\r]*")
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null|NaN|-?Infinity")
# Deeper nesting than this is refused rather than followed: no pack needs it, and json.loads of
# such a value would hit the recursion limit anyway.
MAX_DEPTH = 512


class JsonScanError(ValueError):
    """The buffer is not the JSON structure the caller expected; `str(e)` names where."""


def skip_ws(buf, pos: int) -> int:
    return _WS.match(buf, pos).end()


def string_end(buf, pos: int) -> int:
    """End of the string token starting at `buf[pos] == '"'`; memchr-fast over long strings."""
    if buf[pos : pos + 1] != b'"':
        raise JsonScanError(f"expected a string at byte {pos}")
    q = pos
    while True:
        q = buf.find(b'"', q + 1)
        if q < 0:
            raise JsonScanError(f"unterminated string starting at byte {pos}")
        slashes = 0
        while buf[q - 1 - slashes] == 0x5C:  # a quote after an odd run of backslashes is escaped
            slashes += 1
        if slashes % 2 == 0:
            return q + 1


def value_end(buf, pos: int) -> int:
    """End of the JSON value starting at `pos` (after any whitespace); iterative, so deep nesting
    cannot exhaust the Python stack."""
    closers: list[int] = []
    n = len(buf)
    while True:
        pos = skip_ws(buf, pos)
        if pos >= n:
            raise JsonScanError("unexpected end of the document")
        c = buf[pos]
        if c == 0x22:  # '"'
            pos = string_end(buf, pos)
        elif c in (0x7B, 0x5B):  # '{' '['
            if len(closers) >= MAX_DEPTH:
                raise JsonScanError(f"nesting deeper than {MAX_DEPTH} at byte {pos}")
            closers.append(0x7D if c == 0x7B else 0x5D)
            pos = skip_ws(buf, pos + 1)
            if pos < n and buf[pos] == closers[-1]:
                closers.pop()
                pos += 1
            else:
                continue
        else:
            m = _SCALAR.match(buf, pos)
            if m is None:
                raise JsonScanError(f"unexpected byte {bytes([c])!r} at byte {pos}")
            pos = m.end()
        # After a value: close containers, or find the separator before the next value.
        while closers:
            pos = skip_ws(buf, pos)
            if pos >= n:
                raise JsonScanError("unexpected end of the document")
            c = buf[pos]
            if c == closers[-1]:
                closers.pop()
                pos += 1
            elif c in (0x2C, 0x3A):  # ',' ':' (their placement is checked by the caller's decoder)
                pos += 1
                break
            else:
                raise JsonScanError(f"unexpected byte {bytes([c])!r} at byte {pos}")
        else:
            return pos


def _expect(buf, pos: int, byte: bytes) -> int:
    pos = skip_ws(buf, pos)
    if buf[pos : pos + 1] != byte:
        raise JsonScanError(f"expected {byte.decode()!r} at byte {pos}")
    return pos + 1


def object_spans(buf, pos: int) -> tuple[list[tuple[bytes, int, int]], int]:
    """The fields of the object starting at `pos` as (raw key token, value start, value end), and
    the object's end. The key is the raw string token, quotes included, for the caller to decode.
    """
    items: list[tuple[bytes, int, int]] = []
    pos = skip_ws(buf, _expect(buf, pos, b"{"))
    if buf[pos : pos + 1] == b"}":
        return items, pos + 1
    while True:
        pos = skip_ws(buf, pos)
        key_end = string_end(buf, pos)
        start = skip_ws(buf, _expect(buf, key_end, b":"))
        end = value_end(buf, start)
        items.append((bytes(buf[pos:key_end]), start, end))
        pos = skip_ws(buf, end)
        if buf[pos : pos + 1] == b"}":
            return items, pos + 1
        pos = _expect(buf, pos, b",")


def array_items(buf, pos: int) -> Iterator[tuple[int, int]]:
    """Yields (value start, value end) for each element of the array starting at `pos`."""
    pos = _expect(buf, pos, b"[")
    pos = skip_ws(buf, pos)
    if buf[pos : pos + 1] == b"]":
        return
    while True:
        start = skip_ws(buf, pos)
        end = value_end(buf, start)
        yield start, end
        pos = skip_ws(buf, end)
        if buf[pos : pos + 1] == b"]":
            return
        pos = _expect(buf, pos, b",")
