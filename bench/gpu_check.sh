#!/usr/bin/env bash
# The GPU check, sized for a short loan of a GPU machine (about 8 minutes, one JSON file):
#   1. the GPU-only tests (tests/test_gpu.py: cuDNN attention = einsum attention, bfloat16 fast kernels
#      train and sample, the fast sampler = the reference, the parallel Mamba scan = the fused one);
#   2. configs/gpt2_small.py trained 50 steps in bfloat16 with fast kernels, and in float32, through the
#      benchmark's train section (tokens/s, MFU against the GPU's bf16 peak, the fast kernels' speed-up).
#
#   bash bench/gpu_check.sh OUT_DIR        # on the GPU machine, from the repository's root
#   bash bench/gpu_check.sh --dry-run      # anywhere: checks it would find what it needs, runs nothing heavy
#
# It uses the JAX it finds (the lent machines carry JAX 0.11 with its CUDA 13 plugin and no package
# registry): packages it lacks can travel as wheels in BYTELM_WHEELS (default .whl), e.g. ml_collections.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0; out="${1:-gpu_check}"
if [ "${1:-}" = "--dry-run" ]; then dry=1; out="$(mktemp -d)"; fi
mkdir -p "$out"
PY="${PYTHON:-python3}"  # PYTHON=.venv/bin/python for a virtual environment
wheels="${BYTELM_WHEELS:-.whl}"
if ! "$PY" -c "import ml_collections" 2>/dev/null && compgen -G "$wheels/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/bytelm-site "$wheels"/*.whl \
    && export PYTHONPATH="/tmp/bytelm-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
missing=$("$PY" - <<'PY'
import importlib.util
need = ["jax", "flax", "optax", "orbax.checkpoint", "chex", "absl", "ml_collections", "pytest", "matplotlib", "tqdm"]
def absent(name):
    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:  # its parent package is missing
        return True
print(" ".join(m for m in need if absent(m)))
PY
)
if [ -n "$missing" ]; then echo "error: gpu_check needs $missing: pip install them, or put their wheels in $wheels" >&2; exit 2; fi
backend=$("$PY" -c "import jax; print(jax.default_backend())")
tests=(tests/test_gpu.py)
bench=("$PY" -m launch.benchmark --only=train --config=configs/gpt2_small.py --train_steps=50 --repeats=2 --markdown=)
if [ "$dry" = 1 ]; then
  "$PY" -m pytest -q --collect-only "${tests[@]}" -p no:cacheprovider >/dev/null || { echo "error: the GPU tests do not collect" >&2; exit 1; }
  "$PY" -c "from bytelm.config_base import load_config_file; load_config_file('configs/gpt2_small.py')" || exit 1
  echo "dry run: backend $backend; would run pytest ${tests[*]} and, twice, ${bench[*]} --out=$out/…"
  exit 0
fi
[ "$backend" = gpu ] || { echo "error: no GPU here (JAX's backend is $backend): run this on a GPU machine" >&2; exit 2; }
start=$(date +%s)
timeout 300 "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" --junitxml="$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 150 "${bench[@]}" --out="$out/bf16.json" --config.runtime.fast_kernels=True 2>&1 | tail -3
timeout 150 "${bench[@]}" --out="$out/f32.json" 2>&1 | tail -3
"$PY" - "$out" "$tests_rc" "$(( $(date +%s) - start ))" <<'PY'
import json, sys, pathlib, xml.etree.ElementTree as ET
out, rc, seconds = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def run(name):
    try:
        return json.loads((out / name).read_text())["train"]["runs"][0]
    except (OSError, KeyError, ValueError):
        return None
suite = ET.parse(out / "gpu_tests.xml").getroot().find("testsuite") if (out / "gpu_tests.xml").exists() else None
bf16, f32 = run("bf16.json"), run("f32.json")
peak_bf16 = 989e12  # dense bf16 tensor FLOP/s of an H100/H200 SXM (NVIDIA's datasheet)
result = {
    "tests": {"exit": rc, **({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {})},
    "gpt2_small_bf16": bf16, "gpt2_small_f32": f32,
    "mfu_bf16": bf16 and bf16["model_flops_per_token"] * bf16["tokens_per_s"]["median"] / peak_bf16,
    "fast_kernel_speedup": bf16 and f32 and bf16["tokens_per_s"]["median"] / f32["tokens_per_s"]["median"],
    "seconds": seconds,
}
(out / "gpu_check.json").write_text(json.dumps(result, indent=1))
print(json.dumps({k: result[k] for k in ("tests", "mfu_bf16", "fast_kernel_speedup", "seconds")}))
sys.exit(0 if rc == 0 and bf16 and f32 else 1)
PY
