"""The parameter pack: a JSON file that holds a parameter tree with every leaf's exact bits.

    {"format": "bytelm.param_pack", "version": 1,
     "model": {...the resolved config.model...},
     "leaves": [{"path": "params/h_0/attn/qkv/kernel", "dtype": "float32", "shape": [128, 384],
                 "encoding": "base64-le", "data": "<base64 of the raw little-endian bytes>",
                 "sha256": "<hex digest of those raw bytes>",
                 "stats": {"mean": 0.0, "std": 0.02, "min": -0.08, "max": 0.09}}, ...]}

Raw little-endian bytes (not decimal text) are what make the round trip exact for every dtype,
NaN payloads, ±0, ±inf and subnormals included; the sha256 catches any corruption of them; the
stats are for readers and are never used on load. The format knows no model: `model` is an opaque
dict that the caller writes and reads.

Loading validates everything it can before it allocates a weight: the header, each leaf's path,
dtype and shape (against sane limits and the data length), and, given `expected`, every path, shape
and dtype against the model's. Every failure is a `ParamPackError`.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import json
import math
import mmap
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_dtypes
import numpy as np

from bytelm.artifacts import json_scan
from bytelm.atomic_io import atomic_write, json_safe
from bytelm.errors import BytelmError

FORMAT = "bytelm.param_pack"
VERSION = 1
ENCODING = "base64-le"
DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "uint32": np.dtype("<u4"),
    "bool": np.dtype("?"),
}
# Sanity limits checked before any allocation: a leaf of 2^34 elements is far beyond any model we
# train on one host, and rank 8 beyond any layer we build.
MAX_LEAF_ELEMENTS = 1 << 34
MAX_RANK = 8
# Leaves are hashed, summarised and base64-encoded this many elements/bytes at a time, so that
# saving never holds a second whole copy of a large leaf. (A multiple of 3: base64 works in triples.)
CHUNK_BYTES = 3 << 20
HEADER_FIELDS = ("format", "version", "model")


class ParamPackError(BytelmError):
    """A pack is unreadable, corrupt, of an unknown format, or does not fit the expected model."""


def _path_str(key_path) -> str:
    parts = []
    for k in key_path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        else:
            parts.append(str(k))
    return "/".join(parts)


def flatten(tree) -> dict[str, Any]:
    """`{"a/b/c": leaf}` for a nested tree of arrays, in the tree's (sorted-key) order."""
    return {_path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: dict[str, Any]) -> dict:
    """Inverse of `flatten` for trees of nested dicts."""
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        *parents, last = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return tree


def dtype_name(dtype: np.dtype) -> str:
    for name, dt in DTYPES.items():
        if np.dtype(dtype) == dt or np.dtype(dtype).newbyteorder("<") == dt:
            return name
    raise ParamPackError(f"dtype {dtype} cannot be packed: use one of {', '.join(DTYPES)}")


def leaf_stats(arr: np.ndarray) -> dict[str, float]:
    """Mean, std, min and max in float64 (NaN for an empty leaf); for readers, never for loading.

    Two passes over float64 chunks, so that a large leaf never gets a whole float64 copy.
    """
    if arr.size == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    flat = arr.reshape(-1)
    step = max(1, CHUNK_BYTES // 8)
    chunks = lambda: (flat[i : i + step].astype(np.float64) for i in range(0, flat.size, step))
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN leaves give NaN stats, by design
        mean = math.fsum(float(c.sum()) for c in chunks()) / flat.size
        var = math.fsum(float(np.square(c - mean).sum()) for c in chunks()) / flat.size
        lows, highs = zip(*((float(c.min()), float(c.max())) for c in chunks()), strict=True)
    nan_or = lambda values, pick: math.nan if any(map(math.isnan, values)) else pick(values)
    return {"mean": mean, "std": math.sqrt(var), "min": nan_or(lows, min), "max": nan_or(highs, max)}


def _write_leaf(f, path: str, leaf) -> None:
    """Writes one leaf record, `data` last and encoded chunk by chunk from the array's own bytes."""
    arr = np.asarray(leaf)
    name = dtype_name(arr.dtype)
    arr = np.ascontiguousarray(arr, dtype=DTYPES[name])  # no copy when already contiguous little-endian
    raw = memoryview(arr.reshape(-1).view(np.uint8))
    digest = hashlib.sha256(raw).hexdigest()
    head = {
        "path": path,
        "dtype": name,
        "shape": list(arr.shape),
        "encoding": ENCODING,
        "sha256": digest,
        "stats": json_safe(leaf_stats(arr)),
    }
    f.write(json.dumps(head, allow_nan=False)[:-1].encode("utf-8") + b', "data": "')
    for i in range(0, len(raw), CHUNK_BYTES):
        f.write(binascii.b2a_base64(raw[i : i + CHUNK_BYTES], newline=False))
    f.write(b'"}')


def save_pack(path: str | os.PathLike, params, model_config: dict) -> None:
    """Writes `params` (a nested dict of arrays) and `model_config` to `path`, atomically.

    Leaves are hashed and encoded one chunk at a time straight from their arrays, so saving holds
    the weights (on the host) plus a few megabytes.
    """
    flat = flatten(params)
    header = {"format": FORMAT, "version": VERSION, "model": json_safe(dict(model_config))}

    def write(f) -> None:
        head = json.dumps(header, allow_nan=False)
        f.write(head[:-1].encode("utf-8") + b', "leaves": [\n')
        for i, (p, leaf) in enumerate(flat.items()):
            if i:
                f.write(b",\n")
            _write_leaf(f, p, jax.device_get(leaf))
        f.write(b"\n]}\n")

    atomic_write(path, write)


class _Data:
    """Where a leaf's base64 text lies in the mapped file: `[start, end)`, quotes excluded."""

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end

    def __len__(self) -> int:
        return self.end - self.start


def _check_leaf_header(i: int, rec: Any) -> tuple[str, str, tuple[int, ...]]:
    """Validates one leaf record's fields without touching its data; returns (path, dtype, shape)."""
    where = f"leaf {i}"
    if not isinstance(rec, dict):
        raise ParamPackError(f"{where} is a {type(rec).__name__}, not an object")
    for key in ("path", "dtype", "shape", "encoding", "data", "sha256"):
        if key not in rec:
            raise ParamPackError(f"{where} has no {key!r} field")
    path = rec["path"]
    if not isinstance(path, str) or not path or any(not part for part in path.split("/")):
        raise ParamPackError(f"{where} has an invalid path {path!r}")
    where = f"leaf {path!r}"
    if not isinstance(rec["dtype"], str) or rec["dtype"] not in DTYPES:
        raise ParamPackError(f"{where} has unsupported dtype {rec['dtype']!r} (known: {', '.join(DTYPES)})")
    shape = rec["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ParamPackError(f"{where} has an invalid shape {shape!r} (a list of at most {MAX_RANK} ints >= 0)")
    if math.prod(shape) > MAX_LEAF_ELEMENTS:
        raise ParamPackError(f"{where} declares {math.prod(shape)} elements, over the limit {MAX_LEAF_ELEMENTS}")
    if rec["encoding"] != ENCODING:
        raise ParamPackError(f"{where} has unknown encoding {rec['encoding']!r} (expected {ENCODING!r})")
    if not isinstance(rec["data"], _Data) or not isinstance(rec["sha256"], str):
        raise ParamPackError(f"{where} has non-string data or sha256")
    nbytes = math.prod(shape) * DTYPES[rec["dtype"]].itemsize
    # base64 of n bytes is 4·ceil(n/3) characters: check the length before decoding anything.
    if len(rec["data"]) != 4 * math.ceil(nbytes / 3):
        raise ParamPackError(
            f"{where}: data holds {len(rec['data'])} base64 characters, but shape {shape} of "
            f"{rec['dtype']} needs {4 * math.ceil(nbytes / 3)} (the pack is truncated or corrupt)"
        )
    return path, rec["dtype"], tuple(shape)


def _decode_leaf(buf, path: str, dtype: str, shape: tuple[int, ...], rec: dict) -> np.ndarray:
    data: _Data = rec["data"]
    try:
        # From the map into one bytes object, which becomes the array's buffer: the only copy of
        # this leaf that loading makes.
        with memoryview(buf) as view, view[data.start : data.end] as text:
            raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ParamPackError(f"leaf {path!r}: data is not valid base64 (the pack is corrupt)") from None
    if hashlib.sha256(raw).hexdigest() != rec["sha256"]:
        raise ParamPackError(f"leaf {path!r}: data does not match its sha256 (the pack is corrupt)")
    return np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape)


@contextlib.contextmanager
def _mapped(path: str | os.PathLike) -> Iterator[mmap.mmap]:
    """The pack's bytes, memory-mapped read-only: the OS pages them in and out, not our heap."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ParamPackError(f"no parameter pack at {path}") from None
    except IsADirectoryError:
        raise ParamPackError(f"{path} is a directory, not a parameter pack") from None
    except OSError as e:
        raise ParamPackError(f"cannot read parameter pack {path}: {e.strerror or e}") from None
    with f:
        try:
            if os.fstat(f.fileno()).st_size == 0:
                raise ParamPackError(f"{path} is empty, not a parameter pack")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise ParamPackError(f"cannot read parameter pack {path}: {getattr(e, 'strerror', None) or e}") from None
        try:
            yield buf
        finally:
            buf.close()


def _json(buf, start: int, end: int, path, what: str) -> Any:
    try:
        return json.loads(bytes(buf[start:end]))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ParamPackError(f"{path}: {what} is not valid JSON (truncated or corrupt parameter pack)") from None


def _fields(buf, start: int, path, what: str) -> tuple[dict[str, tuple[int, int]], int]:
    """The spans of an object's fields, keyed by name, and the object's end; names must be unique."""
    items, end = json_scan.object_spans(buf, start)
    fields: dict[str, tuple[int, int]] = {}
    for key_token, s, e in items:
        key = _json(key_token, 0, len(key_token), path, f"a field name in {what}")
        if key in fields:
            raise ParamPackError(f"{path}: {what} has the field {key!r} twice")
        fields[key] = (s, e)
    return fields, end


def _read_leaf_record(buf, start: int, end: int, i: int, path) -> Any:
    """One leaf's record with every field decoded except `data`, which stays a `_Data` span."""
    if buf[start : start + 1] != b"{":
        return _json(buf, start, end, path, f"leaf {i}")  # not an object: the checks say so
    fields, _ = _fields(buf, start, path, f"leaf {i}")
    rec: dict[str, Any] = {}
    for key, (s, e) in fields.items():
        if key == "data" and buf[s : s + 1] == b'"':
            rec[key] = _Data(s + 1, e - 1)
        else:
            rec[key] = _json(buf, s, e, path, f"field {key!r} of leaf {i}")
    return rec


def _read_document(buf, path) -> tuple[dict, list[Any]]:
    """The checked header (format, version, model) and every leaf record, data left in the map."""
    try:
        start = json_scan.skip_ws(buf, 0)
        if buf[start : start + 1] != b"{":
            raise ParamPackError(f"{path} is not a parameter pack (not a JSON object)")
        fields, end = _fields(buf, start, path, "the document")
        if json_scan.skip_ws(buf, end) != len(buf):
            raise ParamPackError(f"{path} has data after its end (not valid JSON)")
        header = {k: _json(buf, *fields[k], path, f"field {k!r}") for k in HEADER_FIELDS if k in fields}
        if header.get("format") != FORMAT:
            raise ParamPackError(f"{path} is not a parameter pack (its format field is not {FORMAT!r})")
        if header.get("version") != VERSION:
            raise ParamPackError(
                f"{path} is pack version {header.get('version')!r}; this bytelm reads version {VERSION}"
            )
        if not isinstance(header.get("model"), dict):
            raise ParamPackError(f"{path} has no 'model' object")
        leaves_at = fields.get("leaves", (0, 0))[0]
        if "leaves" not in fields or buf[leaves_at : leaves_at + 1] != b"[":
            raise ParamPackError(f"{path} has no 'leaves' list")
        spans = json_scan.array_items(buf, leaves_at)
        return header, [_read_leaf_record(buf, s, e, i, path) for i, (s, e) in enumerate(spans)]
    except json_scan.JsonScanError as e:
        raise ParamPackError(f"{path} is not valid JSON ({e}): a truncated or corrupt parameter pack") from None


def check_against(found: dict[str, tuple[tuple[int, ...], str]], expected) -> None:
    """Raises one `ParamPackError` listing every missing, unexpected, mis-shaped or mis-typed leaf.

    `found` maps path → (shape, dtype name); `expected` is a tree of arrays or ShapeDtypeStructs.
    """
    want = {p: (tuple(x.shape), dtype_name(x.dtype)) for p, x in flatten(expected).items()}
    problems = [f"missing {p} {list(s)} {d}" for p, (s, d) in want.items() if p not in found]
    problems += [f"unexpected {p} {list(s)} {d}" for p, (s, d) in found.items() if p not in want]
    for p in want.keys() & found.keys():
        (ws, wd), (fs, fd) = want[p], found[p]
        if ws != fs:
            problems.append(f"wrong shape {p}: pack {list(fs)}, model {list(ws)}")
        if wd != fd:
            problems.append(f"wrong dtype {p}: pack {fd}, model {wd}")
    if problems:
        raise ParamPackError(
            f"the pack does not fit the model ({len(problems)} problems): " + "; ".join(sorted(problems))
        )


def load_pack(path: str | os.PathLike, expected=None) -> dict:
    """Loads a pack as a nested dict of NumPy arrays of the stored dtypes.

    float64 stays float64 even where JAX runs without x64: moving to the device is the caller's
    step. Given `expected` (e.g. `jax.eval_shape` of the model's init), every path, shape and dtype
    is checked before any leaf is decoded. Memory: the file is mapped, not read, and each leaf is
    decoded straight into its array, so loading holds one copy of the weights plus mapped pages
    that the OS can drop at will.
    """
    with _mapped(path) as buf:
        _, records = _read_document(buf, path)
        headers = [_check_leaf_header(i, rec) for i, rec in enumerate(records)]
        found: dict[str, tuple[tuple[int, ...], str]] = {}
        for p, dtype, shape in headers:
            if p in found:
                raise ParamPackError(f"{path} holds leaf {p!r} twice")
            found[p] = (shape, dtype)
        folders = {p.rsplit("/", k)[0] for p in found for k in range(1, p.count("/") + 1)}
        clash = sorted(folders & found.keys())
        if clash:  # a leaf path may not also be a folder of other leaves
            raise ParamPackError(f"{path}: leaf {clash[0]!r} is also the parent of other leaves")
        if expected is not None:
            check_against(found, expected)
        flat = {p: _decode_leaf(buf, p, d, s, rec) for (p, d, s), rec in zip(headers, records, strict=True)}
    return unflatten(flat)
