import base64
import json

import jax
import ml_dtypes
import numpy as np
import pytest

import gpt2_tiny
from bytelm import models, param_pack
from bytelm.param_pack import ParamPackError, load_pack, save_pack


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
    model = models.build(gpt2_tiny.get_config().model)
    variables = models.init_variables(model, jax.random.key(0))
    save_pack(tmp_path / "p.json", variables, {})
    back = load_pack(tmp_path / "p.json", expected=models.abstract_variables(model))
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back), strict=True):
        assert np.asarray(a).tobytes() == b.tobytes()


def test_shape_mismatch_lists_every_problem_before_use(tmp_path):
    model = models.build(gpt2_tiny.get_config().model)
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
