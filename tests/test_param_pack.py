import base64
import copy
import json
import tempfile
import tracemalloc

import jax
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bytelm import models
from bytelm.artifacts import param_pack
from bytelm.artifacts.param_pack import ParamPackError, load_pack, save_pack
from conftest import load_config


def special_values(dtype) -> np.ndarray:
    """NaNs with payloads, ±0, ±inf, subnormals, extremes and ordinary numbers, as raw bits."""
    dt = np.dtype(dtype)
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    info = ml_dtypes.finfo(dt)
    values = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            1.0,
            -2.5,
            float(info.max),
            float(info.tiny),
            float(info.smallest_subnormal),
            -float(info.smallest_subnormal),
        ],
        dtype=dt,
    )
    nbits = dt.itemsize * 8
    mant = int(info.nmant)
    exp_all_ones = ((1 << (nbits - 1 - mant)) - 1) << mant
    nans = np.array(
        [exp_all_ones | 1, exp_all_ones | (1 << (mant - 1)) | 5, (1 << (nbits - 1)) | exp_all_ones | 3], dtype=bits
    ).view(dt)
    return np.concatenate([values, nans])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16])
def test_round_trip_is_bit_exact_with_special_values(tmp_path, dtype):
    vals = special_values(dtype)
    tree = {"params": {"a": vals.reshape(13, 1), "b": {"c": vals[::-1].copy()}, "empty": np.zeros((0, 3), dtype)}}
    save_pack(tmp_path / "p.json", tree, {"name": "test"})
    back = load_pack(tmp_path / "p.json")
    for path, leaf in param_pack.flatten(tree).items():
        got = param_pack.flatten(back)[path]
        assert got.dtype == leaf.dtype and got.shape == leaf.shape
        assert got.tobytes() == leaf.tobytes(), path  # every bit, NaN payloads included


def test_float64_stays_float64_and_ints_survive(tmp_path):
    tree = {"x": np.array([1 / 3], np.float64), "n": np.array([-7, 2**40], np.int64), "ok": np.array([True])}
    save_pack(tmp_path / "p.json", tree, {})
    back = load_pack(tmp_path / "p.json")
    assert back["x"].dtype == np.float64 and back["x"][0] == 1 / 3
    assert back["n"].tolist() == [-7, 2**40] and back["ok"].tolist() == [True]


def test_pack_schema_and_stats(tmp_path):
    tree = {"params": {"w": np.array([[1.0, -1.0], [3.0, 5.0]], np.float32)}}
    save_pack(tmp_path / "p.json", tree, {"name": "gpt2", "seq_len": 64})
    doc = json.loads((tmp_path / "p.json").read_text())
    assert (doc["format"], doc["version"], doc["model"]) == ("bytelm.param_pack", 1, {"name": "gpt2", "seq_len": 64})
    (leaf,) = doc["leaves"]
    assert leaf["path"] == "params/w" and leaf["dtype"] == "float32" and leaf["shape"] == [2, 2]
    assert leaf["encoding"] == "base64-le"
    assert base64.b64decode(leaf["data"]) == np.array([1, -1, 3, 5], "<f4").tobytes()
    assert leaf["stats"] == {"mean": 2.0, "std": pytest.approx(np.std([1, -1, 3, 5])), "min": -1.0, "max": 5.0}


def test_gpt2_params_round_trip_through_the_model(tmp_path):
    model = models.build(load_config("gpt2_tiny").model)
    variables = models.init_variables(model, jax.random.key(0))
    save_pack(tmp_path / "p.json", variables, {})
    back = load_pack(tmp_path / "p.json", expected=models.abstract_variables(model))
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back), strict=True):
        assert np.asarray(a).tobytes() == b.tobytes()


def test_shape_mismatch_lists_every_problem_before_use(tmp_path):
    model = models.build(load_config("gpt2_tiny").model)
    variables = jax.device_get(models.init_variables(model, jax.random.key(0)))
    flat = param_pack.flatten(variables)
    flat["params/wpe"] = np.zeros((32, 128), np.float32)  # wrong shape
    flat["params/h_0/ln_1/scale"] = flat["params/h_0/ln_1/scale"].astype(np.float16)  # wrong dtype
    del flat["params/ln_f/bias"]  # missing
    flat["params/extra"] = np.zeros(3, np.float32)  # unexpected
    save_pack(tmp_path / "p.json", param_pack.unflatten(flat), {})
    with pytest.raises(ParamPackError) as e:
        load_pack(tmp_path / "p.json", expected=models.abstract_variables(model))
    msg = str(e.value)
    assert "4 problems" in msg
    for part in (
        "wrong shape params/wpe: pack [32, 128], model [64, 128]",
        "wrong dtype params/h_0/ln_1/scale: pack float16, model float32",
        "missing params/ln_f/bias",
        "unexpected params/extra",
    ):
        assert part in msg


def _write(tmp_path, doc) -> str:
    p = tmp_path / "p.json"
    p.write_text(json.dumps(doc))
    return str(p)


def _good_doc(tmp_path) -> dict:
    save_pack(tmp_path / "good.json", {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, {})
    return json.loads((tmp_path / "good.json").read_text())


def test_corruption_is_a_param_pack_error(tmp_path):
    doc = _good_doc(tmp_path)
    raw = bytearray(base64.b64decode(doc["leaves"][0]["data"]))
    raw[0] ^= 1
    doc["leaves"][0]["data"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ParamPackError, match="does not match its sha256"):
        load_pack(_write(tmp_path, doc))
    text = (tmp_path / "good.json").read_text()
    (tmp_path / "trunc.json").write_text(text[: len(text) // 2])
    with pytest.raises(ParamPackError, match="not valid JSON"):
        load_pack(tmp_path / "trunc.json")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format="other"), "not a parameter pack"),
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d["leaves"][0].update(shape=[10**6, 10**6]), "over the limit"),
        (lambda d: d["leaves"][0].update(shape=[3, 3]), "truncated or corrupt"),
        (lambda d: d["leaves"][0].update(dtype="complex64"), "unsupported dtype"),
        (lambda d: d["leaves"].append(dict(d["leaves"][0])), "twice"),
        (lambda d: d["leaves"][0].update(shape=[2, -3]), "invalid shape"),
    ],
)
def test_bad_headers_are_refused_before_decoding(tmp_path, edit, message):
    doc = _good_doc(tmp_path)
    edit(doc)
    with pytest.raises(ParamPackError, match=message):
        load_pack(_write(tmp_path, doc))


def test_missing_pack_is_a_param_pack_error(tmp_path):
    with pytest.raises(ParamPackError, match="no parameter pack"):
        load_pack(tmp_path / "none.json")


def test_save_is_atomic_and_keeps_the_old_pack_on_failure(tmp_path):
    p = tmp_path / "p.json"
    save_pack(p, {"w": np.ones(3, np.float32)}, {})
    before = p.read_bytes()
    with pytest.raises(ParamPackError, match="cannot be packed"):
        save_pack(p, {"w": np.ones(3, np.complex64)}, {})
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["p.json"]  # no temporary file left behind


# --- Fuzzing: whatever the bytes, the loader raises ParamPackError or returns a tree. -------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_HUGE = st.lists(st.integers(min_value=0, max_value=10**30) | st.integers(max_value=-1), min_size=1, max_size=9)


def _fuzz_doc() -> dict:
    tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, ml_dtypes.bfloat16)}}
    with tempfile.TemporaryDirectory() as d:
        save_pack(f"{d}/p.json", tree, {"name": "gpt2", "d_model": 8})
        return json.loads(open(f"{d}/p.json", "rb").read())


_DOC = _fuzz_doc()
_RAW = json.dumps(_DOC).encode()
_LEAF_FIELDS = ("path", "dtype", "shape", "encoding", "data", "sha256", "stats")


def _wrong_type(draw_value, where: str, field: str) -> bytes:
    doc = copy.deepcopy(_DOC)
    (doc if where == "top" else doc["leaves"][int(where)])[field] = draw_value
    return json.dumps(doc).encode()


@st.composite
def _broken_packs(draw) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "top_type", "leaf_type", "duplicate", "huge", "noise"]))
    if kind == "truncate":
        return _RAW[: draw(st.integers(0, len(_RAW) - 1))]
    if kind == "flip":
        raw = bytearray(_RAW)
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
        return bytes(raw)
    if kind == "top_type":
        return _wrong_type(draw(_JSON), "top", draw(st.sampled_from(["format", "version", "model", "leaves"])))
    if kind == "leaf_type":
        return _wrong_type(draw(_JSON), draw(st.sampled_from(["0", "1"])), draw(st.sampled_from(_LEAF_FIELDS)))
    if kind == "duplicate":
        doc = copy.deepcopy(_DOC)
        doc["leaves"].append(dict(doc["leaves"][draw(st.integers(0, 1))]))
        return json.dumps(doc).encode()
    if kind == "huge":
        return _wrong_type(draw(_HUGE), draw(st.sampled_from(["0", "1"])), "shape")
    return draw(st.binary(max_size=64) | st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe{}"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_broken_packs())
def test_fuzzed_packs_raise_only_param_pack_error(tmp_path, raw):
    p = tmp_path / "fuzz.json"
    p.write_bytes(raw)
    try:
        load_pack(p)
    except ParamPackError as e:
        assert "\n" not in str(e)  # one line, fit for the CLI
    if raw == _RAW:  # an untouched pack still loads (the fuzzer sometimes flips a byte back)
        assert load_pack(p)["params"]["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_leaf_declaring_10_to_the_12_elements_is_refused_without_allocating(tmp_path):
    doc = copy.deepcopy(_DOC)
    doc["leaves"][0]["shape"] = [10**6, 10**6]
    (tmp_path / "p.json").write_text(json.dumps(doc))
    tracemalloc.start()
    try:
        with pytest.raises(ParamPackError, match="over the limit"):
            load_pack(tmp_path / "p.json")
        assert tracemalloc.get_traced_memory()[1] < 1 << 20  # under a megabyte, nowhere near 4 TB
    finally:
        tracemalloc.stop()


def test_save_and_load_hold_at_most_one_copy_of_the_weights(tmp_path):
    """Peak Python/NumPy heap (tracemalloc) while saving and loading a 64 MB tree: saving streams
    from the arrays, loading decodes from a memory map straight into the result."""
    rng = np.random.default_rng(0)
    tree = {"big": rng.standard_normal((4096, 3072), np.float32), "mid": rng.standard_normal(2**20, np.float32)}
    tree["small"] = {f"s{i}": np.full(100, i, np.float32) for i in range(50)}
    weights = sum(a.nbytes for a in param_pack.flatten(tree).values())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        save_pack(tmp_path / "p.json", tree, {})
        save_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        back = load_pack(tmp_path / "p.json")
        load_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert back["big"].tobytes() == tree["big"].tobytes()
    assert save_peak < 0.25 * weights, (save_peak, weights)
    assert load_peak < 1.1 * weights, (load_peak, weights)  # the result itself plus a few MB
