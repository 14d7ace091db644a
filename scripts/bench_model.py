"""Model-library benchmarks on this machine's CPU.

1. Training clips/s of a preset: forward, backward and Adam step of the bare model on
   in-memory tensors at the preset's batch size (the ceiling for any training pipeline).
2. The vectorised memory update against a per-item Python loop of the same result
   (the form of the paper's code), on the query count of a training batch.

Usage: python scripts/bench_model.py [--presets small paper-pred] [--steps N] [--json PATH]
Prints one line per figure and the ratio of each pair measured side by side in this run;
``--json`` also writes them to PATH.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mnad import memory as mem
from mnad.clips import split_clip
from mnad.config import get_preset
from mnad.losses import training_losses
from mnad.network import build_model


def train_clips_per_s(preset_name: str, steps: int, warmup: int = 2) -> float:
    preset = get_preset(preset_name)
    cfg, batch = preset.model, preset.optim.batch_size
    model = build_model(cfg, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=preset.optim.lr)
    x = torch.rand(batch, cfg.channels * cfg.clip_length, cfg.height, cfg.width) * 2 - 1
    inputs, target = split_clip(x, cfg)

    def step() -> None:
        out = model(inputs)
        loss = training_losses(out.prediction, target, out.compactness, out.separateness, cfg)
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def memory_update_timing(n: int, m: int, c: int, repeats: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    items = mem.init_items(m, c, g)
    queries = F.normalize(torch.randn(n, c, generator=g), dim=1)
    torch.testing.assert_close(
        mem.updated_items(queries, items), mem.updated_items_loop(queries, items)
    )
    timings = []
    for fn in (mem.updated_items, mem.updated_items_loop):
        fn(queries, items)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(queries, items)
        timings.append((time.perf_counter() - t0) / repeats * 1e3)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper-pred"])
    parser.add_argument("--steps", type=int, default=0, help="steps per preset (0: auto)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    figures = {"torch": torch.__version__, "threads": torch.get_num_threads(), "train": [],
               "memory_update": []}  # fmt: skip
    for name in args.presets:
        steps = args.steps or (30 if get_preset(name).model.height <= 128 else 3)
        rate = train_clips_per_s(name, steps)
        print(f"train  {name:<12} {rate:8.2f} clips/s  ({steps} steps, bare model, CPU)")
        figures["train"].append({"preset": name, "steps": steps, "clips_per_s": rate})
    for name in args.presets:
        cfg, batch = get_preset(name).model, get_preset(name).optim.batch_size
        n = batch * (cfg.height // 8) * (cfg.width // 8)
        vec, loop = memory_update_timing(n, cfg.memory_size, cfg.feature_dim, repeats=50)
        print(
            f"memory update {name:<12} N={n} M={cfg.memory_size} C={cfg.feature_dim}: "
            f"vectorised {vec:.3f} ms, per-item loop {loop:.3f} ms, ratio {loop / vec:.1f}x"
        )
        figures["memory_update"].append({
            "preset": name, "n": n, "m": cfg.memory_size, "c": cfg.feature_dim,
            "vectorised_ms": vec, "loop_ms": loop, "ratio": loop / vec,
        })  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
