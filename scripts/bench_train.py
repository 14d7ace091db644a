"""Training throughput through Ray Train against a bare PyTorch loop, measured in one run.

    .venv/bin/python scripts/bench_train.py DATA [--preset small] [--epochs 2] [--workers 1 2]
        [--threads 1]

Baseline: one process, the same model, batch and threads, over clips already in memory as a
uint8 tensor (the same uint8 -> [-1, 1] conversion per batch), the memory updated by the
model itself (the paper's single-process step). Ray Train: ``run_train`` with 1 and 2
workers on the same DATA; its clips/s is the mean over epochs 2..E of what the workers
measure (epoch 1 pays start-up), and "end to end" divides all clips by the wall time of
``run_train`` (start-up, checkpoints and MLflow included). Every process (the baseline, each
worker) runs ``--threads`` intra-op threads, so one worker does the work of the baseline and
two workers do it twice over. Prints the ratios to the baseline; the aim is >= 0.9 for one
worker. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnad.network import build_model  # noqa: E402
from pipelines.clips import list_videos, video_clips  # noqa: E402
from pipelines.train import TrainConfig, clip_inputs, load_preset, run_train, training_losses  # noqa: E402


def load_clips(data: str, clip_length: int) -> torch.Tensor:
    """Every training clip of DATA in memory: uint8 (N, T*C, H, W)."""
    parts = [
        batch.clips
        for video in list_videos(data, "train")
        for batch in video_clips(video.path, clip_length)
    ]
    return torch.from_numpy(np.concatenate(parts))


def bare_loop(clips: torch.Tensor, preset_name: str, epochs: int, threads: int) -> float:
    """Clips/s of a single-process loop over in-memory clips (epochs after a warm-up one)."""
    torch.set_num_threads(threads)
    preset = load_preset(preset_name)
    cfg, batch = preset.model, preset.optim.batch_size
    model = build_model(cfg, seed=0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=preset.optim.lr)
    generator = torch.Generator().manual_seed(0)
    steps = len(clips) // batch
    rates = []
    for _ in range(epochs):
        order = torch.randperm(len(clips), generator=generator)
        start = time.perf_counter()
        for i in range(steps):
            x, target = clip_inputs(clips[order[i * batch : (i + 1) * batch]], cfg)
            out = model(x)  # updates the memory with this batch's queries
            loss = training_losses(out.prediction, target, out.compactness, out.separateness, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
        rates.append(steps * batch / (time.perf_counter() - start))
    return float(np.mean(rates[1:] if len(rates) > 1 else rates))


def ray_train(
    data: str, preset: str, epochs: int, workers: int, cpus: float, work: Path
) -> tuple[float, float]:
    """(steady clips/s, end-to-end clips/s) of run_train with ``workers`` workers."""
    start = time.perf_counter()
    result = run_train(
        TrainConfig(
            data=data,
            preset=preset,
            epochs=epochs,
            workers=workers,
            cpus_per_worker=cpus,
            output=str(work / f"runs-{workers}"),
            tracking_uri=f"sqlite:///{work}/mlflow.db",
            quiet=True,
        )
    )
    wall = time.perf_counter() - start
    rates = [r["clips_per_s"] for r in result.epochs]
    steady = float(np.mean(rates[1:] if len(rates) > 1 else rates))
    return steady, sum(r["clips"] for r in result.epochs) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="DATA folder written by `mnad ingest`")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import ray

    preset = load_preset(args.preset)
    clips = load_clips(args.data, preset.model.clip_length)
    print(
        f"{len(clips)} clips {tuple(clips.shape[1:])}, preset {preset.name}, batch "
        f"{preset.optim.batch_size}, {args.epochs} epochs, {args.threads} thread(s) a process"
    )
    base = bare_loop(clips, args.preset, args.epochs, threads=args.threads)
    print(f"bare PyTorch loop, 1 process: {base:8.1f} clips/s", flush=True)
    cpus = max(args.workers) * args.threads
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="mnad-bench-") as tmp:
        for workers in args.workers:
            steady, end_to_end = ray_train(
                args.data, args.preset, args.epochs, workers, args.threads, Path(tmp)
            )
            print(
                f"Ray Train {workers} worker(s):    {steady:8.1f} clips/s "
                f"(ratio {steady / base:.2f}); end to end {end_to_end:.1f} clips/s "
                f"(ratio {end_to_end / base:.2f})",
                flush=True,
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
