"""The PyTorch peer: nanoGPT's GPT-2, trained eagerly the way the PyTorch toy does, for side-by-side timing.

    python -m bench.nanogpt_torch --corpus=data/real/text/tiny_shakespeare.txt --steps=200

The model is the same function as `bytelm.models.gpt2.transformer.GPT2` (pre-norm blocks, one QKV
matmul, tanh GELU, learned positions, tied head, GPT-2's init), written as in nanoGPT's `model.py`,
with token ids and an embedding lookup. Training follows bytelm's recipe: AdamW with weight decay
on matrices only, global-norm clipping, linear warm-up then cosine decay, and the very same windows
(`bytelm.data.batches`, numpy only), so that losses compare as well as times. Prints one JSON object.
Needs the optional extra `bench` (`pip install -e '.[bench]'`, torch 2.13.0).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bytelm.data import batches


class Block(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int, layers: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.attn_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.mlp_proj = nn.Linear(width, ffn), nn.Linear(ffn, width)
        for proj in (self.attn_proj, self.mlp_proj):  # GPT-2: residual projections scaled by 1/sqrt(2·layers)
            proj.scaled_init = 1 / math.sqrt(2 * layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(D, dim=2)
        q, k, v = (t.view(B, L, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp_proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, seq_len: int, layers: int, heads: int, head_dim: int, ffn: int, vocab: int = 256):
        super().__init__()
        width = heads * head_dim
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(seq_len, width)
        self.h = nn.ModuleList(Block(width, heads, ffn, layers) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02 * getattr(m, "scaled_init", 1.0))
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied head


def lr_at(count: int, a: argparse.Namespace) -> float:
    """bytelm's schedule (`training.optimizer.lr_schedule`): `count` updates already applied."""
    if count < a.warmup_steps:
        return a.lr * (count + 1) / max(a.warmup_steps, 1)
    progress = min(max((count - a.warmup_steps) / max(a.steps - a.warmup_steps, 1), 0.0), 1.0)
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * progress))


def masked_loss(model: GPT, w: np.ndarray, lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the NLL over real targets, and their count, for int windows `[B, L+1]`."""
    ids = torch.from_numpy(w).long()
    logits = model(ids[:, :-1])
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    mask = torch.from_numpy((np.arange(w.shape[1] - 1)[None, :] + 1 < lengths[:, None]).astype(np.float32))
    return (nll * mask.reshape(-1)).sum(), mask.sum()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--val_fraction", type=float, default=0.1)
    for name, default in [("steps", 2000), ("batch_size", 12), ("seq_len", 64), ("num_layers", 4), ("num_heads", 4)]:
        p.add_argument(f"--{name}", type=int, default=default)
    for name, default in [("head_dim", 32), ("ffn_hidden", 512), ("warmup_steps", 100), ("data_seed", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    for name, default in [("lr", 1e-3), ("min_lr", 1e-4), ("beta1", 0.9), ("beta2", 0.99), ("weight_decay", 0.1)]:
        p.add_argument(f"--{name}", type=float, default=default)
    p.add_argument("--grad_clip", type=float, default=1.0)
    p.add_argument("--eval_windows", type=int, default=0, help="validation windows at the end (0 = the whole split)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    return p.parse_args(argv)


def train(model: GPT, train_ids: np.ndarray, a: argparse.Namespace) -> tuple[list[float], float]:
    """bytelm's recipe on bytelm's windows; returns the seconds of every step and the last loss."""
    params = [q for q in model.parameters() if q.requires_grad]
    groups = [
        {"params": [q for q in params if q.dim() >= 2], "weight_decay": a.weight_decay},
        {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0},
    ]
    # foreach: one multi-tensor kernel per step instead of a Python loop over the 52 tensors (torch picks
    # foreach by itself only for CUDA tensors).
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(a.beta1, a.beta2), foreach=True)
    step_s: list[float] = []
    for step in range(a.steps):
        t0 = time.perf_counter()
        starts = batches.train_starts(train_ids.size, a.seq_len, a.batch_size, step, a.data_seed, None)
        w, lengths = batches.windows(train_ids, starts, a.seq_len)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a)
        total, count = masked_loss(model, w, lengths)
        loss = total / count.clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        loss_value = loss.item()  # the host reads the loss every step, as a training loop that logs does
        step_s.append(time.perf_counter() - t0)
    return step_s, loss_value


def evaluate(model: GPT, val_ids: np.ndarray, a: argparse.Namespace) -> float:
    """Mean NLL over the same evenly spread validation windows bytelm evaluates."""
    model.eval()
    nll, count = 0.0, 0.0
    starts = batches.eval_starts(val_ids.size, a.seq_len, a.eval_windows)
    with torch.no_grad():
        for i in range(0, starts.size, 32):
            w, lengths = batches.windows(val_ids, starts[i : i + 32], a.seq_len)
            s, c = masked_loss(model, w, lengths)
            nll, count = nll + float(s), count + float(c)
    return nll / max(count, 1.0)


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = np.frombuffer(open(a.corpus, "rb").read(), dtype=np.uint8)
    n_val = int(round(data.size * a.val_fraction))
    train_ids, val_ids = data[: data.size - n_val], data[data.size - n_val :]
    model = GPT(a.seq_len, a.num_layers, a.num_heads, a.head_dim, a.ffn_hidden)
    t_start = time.perf_counter()
    step_s, last_loss = train(model, train_ids, a)
    train_wall = time.perf_counter() - t_start
    t0 = time.perf_counter()
    val_loss = evaluate(model, val_ids, a)
    eval_s = time.perf_counter() - t0
    timed = step_s[min(10, len(step_s) - 1) :]  # the first steps warm up allocator and threads
    result = {
        "peer": f"torch {torch.__version__} eager",
        "threads": torch.get_num_threads(),
        "steps": a.steps,
        "step_ms": {"median": 1e3 * statistics.median(timed), "min": 1e3 * min(timed), "max": 1e3 * max(timed)},
        "tokens_per_s": a.batch_size * a.seq_len / statistics.median(timed),
        "train_wall_s": train_wall,
        "eval_s": eval_s,
        "wall_s": train_wall + eval_s,
        "final_train_loss": last_loss,
        "val_loss": val_loss,
    }
    json.dump(result, sys.stdout)
    print()
    return result


if __name__ == "__main__":
    main()
