"""The parameter pack: save and load rates for a ~100M-parameter tree."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from bench.measure import summarize
from bytelm.artifacts import param_pack


def bench_pack(params_millions: float, repeats: int, folder, log: Callable[[str], None]) -> dict:
    """Parameter-pack save and load rates (MB/s of float32 weights) for a ~`params_millions` M tree:
    GPT-2-small-like leaves (768-wide matrices), so the per-leaf overhead is realistic."""
    rng = np.random.default_rng(0)
    width, n_leaves = 768, max(1, round(params_millions * 1e6 / (768 * 3072)))
    tree = {"params": {f"w_{i}": rng.standard_normal((width, 4 * width), dtype=np.float32) for i in range(n_leaves)}}
    size_mb = sum(a.nbytes for a in tree["params"].values()) / 1e6
    path = os.path.join(folder, "bench_pack.json")
    save_s, load_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        param_pack.save_pack(path, tree, {"name": "bench"})
        save_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        param_pack.load_pack(path)
        load_s.append(time.perf_counter() - t)
    file_mb = os.path.getsize(path) / 1e6
    os.remove(path)
    out = {
        "params": n_leaves * width * 4 * width,
        "weights_mb": size_mb,
        "file_mb": file_mb,
        "save_mb_per_s": summarize([size_mb / s for s in save_s]),
        "load_mb_per_s": summarize([size_mb / s for s in load_s]),
    }
    log(
        f"pack    {out['params'] / 1e6:.1f}M params ({size_mb:,.0f} MB, file {file_mb:,.0f} MB): save "
        f"{out['save_mb_per_s']['median']:,.0f} MB/s, load {out['load_mb_per_s']['median']:,.0f} MB/s"
    )
    return out
