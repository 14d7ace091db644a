"""Training throughput through Ray Train against a bare PyTorch loop, measured in one run.

    .venv/bin/python scripts/bench_train.py DATA [--preset small] [--epochs 2] [--workers 1 2]
        [--threads 1] [--json PATH] [--sync-bn-cost]

Baseline: one process, the same model, batch and threads, over clips already in memory as a
uint8 tensor (the same uint8 -> [-1, 1] conversion per batch), the memory updated by the
model itself (the paper's single-process step). It runs before and after the Ray Train runs,
and the ratios use the mean of the two, so that a change in the machine's load during the
run shows (as a gap between the two) rather than skewing one side.

Ray Train: ``run_train`` with 1 and 2 workers on the same DATA; its clips/s is the mean over
epochs 2..E of what the workers measure (epoch 1 pays start-up), and "end to end" divides
all clips by the wall time of ``run_train`` (start-up, checkpoints and MLflow included).
Every process (the baseline, each worker) runs ``--threads`` intra-op threads, so one worker
does the work of the baseline and two workers do it twice over.

Also printed: clips per CPU-second (process CPU time: the baseline's, the sum of the
workers'), which a busy shared machine distorts far less than wall time; its ratio is the
Ray Train loop's own overhead (data iteration, collectives, Ray's threads; the Ray Data read
tasks run in other processes and are not counted). The aim is a ratio >= 0.9 for one
worker. When the training frames fit in memory (``pipelines.train.data.fits_in_memory``)
the workers cut their clips from frames in the object store and no read task runs beside
them; the first line says which input the run uses.

``--sync-bn-cost`` measures instead what synchronised BatchNorm costs a step: the worker
loop (``TorchTrainer`` over ``train_loop``, clips in memory) with 2 workers with and without
it, in turns (with, without, with, without) so that a change in load hits both; the ratio
is the mean step time with over without.

Nothing here is asserted; ``--json`` also writes the figures to PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnad.clips import model_clips  # noqa: E402
from mnad.losses import training_losses  # noqa: E402
from mnad.network import build_model  # noqa: E402
from pipelines.data import video_clips  # noqa: E402
from pipelines.train import TrainConfig, load_preset, run_train  # noqa: E402
from pipelines.train.data import (  # noqa: E402
    ClipTable,
    InMemoryClips,
    fits_in_memory,
    frames_nbytes,
    list_videos,
)
from pipelines.train.worker import WorkerPlan, train_loop  # noqa: E402


def load_clips(data: str, clip_length: int) -> torch.Tensor:
    """Every training clip of DATA in memory: uint8 (N, T*C, H, W)."""
    parts = [
        batch.clips
        for video in list_videos(data, "train")
        for batch in video_clips(video.path, clip_length)
    ]
    return torch.from_numpy(np.concatenate(parts))


class Rate(NamedTuple):
    wall: float  # clips per second
    cpu: float  # clips per CPU-second


def bare_loop(clips: torch.Tensor, preset_name: str, epochs: int, threads: int) -> Rate:
    """A single-process loop over in-memory clips (epochs after a warm-up one)."""
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
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(steps):
            x, target = model_clips(clips[order[i * batch : (i + 1) * batch]], cfg)
            out = model(x)  # updates the memory with this batch's queries
            loss = training_losses(out.prediction, target, out.compactness, out.separateness, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
        n = steps * batch
        rates.append((n / (time.perf_counter() - start), n / (time.process_time() - cpu)))
    return Rate(*np.mean(rates[1:] if len(rates) > 1 else rates, axis=0))


def ray_train(
    data: str, preset: str, epochs: int, workers: int, cpus: float, work: Path
) -> tuple[Rate, float]:
    """(steady rate, end-to-end clips/s) of run_train with ``workers`` workers."""
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
    steady = result.epochs[1:] or result.epochs
    rate = Rate(
        float(np.mean([r["clips_per_s"] for r in steady])),
        float(np.mean([r["clips"] / r["cpu_seconds"] for r in steady])),
    )
    return rate, sum(r["clips"] for r in result.epochs) / wall


def worker_loop(
    table: ClipTable, preset_name: str, epochs: int, workers: int, sync: bool, work: Path
) -> float:
    """Steady clips/s of the worker loop alone (no MLflow, no registry), clips in memory."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    preset = load_preset(preset_name).replace(epochs=epochs)
    plan = WorkerPlan(
        preset=preset, batch_per_worker=preset.optim.batch_size // workers, checkpoint_every=0,
        shuffle_buffer=0, threads=1, use_gpu=False, in_memory=InMemoryClips(table, None),
        sync_batchnorm=sync,
    )  # fmt: skip
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"plan": plan},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers),
        run_config=ray.train.RunConfig(
            name=f"sync-{sync}-{time.time_ns()}", storage_path=str(work)
        ),
    )
    history = trainer.fit().return_value
    steady = history[1:] or history
    return float(np.mean([r["clips_per_s"] for r in steady]))


def sync_bn_cost(args: argparse.Namespace) -> None:
    """Step time of 2 workers with synchronised BatchNorm over without, in turns."""
    import ray

    preset = load_preset(args.preset)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    videos = list_videos(args.data, "train")
    table = ClipTable.load(videos, preset.model.clip_length, fit=preset.model)
    rates: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="mnad-bench-") as tmp:
        for sync in (True, False, True, False):
            rates[sync].append(worker_loop(table, args.preset, args.epochs, 2, sync, Path(tmp)))
            print(f"2 workers, SyncBN {'on ' if sync else 'off'}: {rates[sync][-1]:7.1f} clips/s")
    ray.shutdown()
    step = {sync: preset.optim.batch_size / float(np.mean(r)) for sync, r in rates.items()}
    print(
        f"step time with / without SyncBN: {step[True] * 1e3:.1f} / {step[False] * 1e3:.1f} ms,"
        f" ratio {step[True] / step[False]:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"rates": {str(k): v for k, v in rates.items()},
                                         "ratio": step[True] / step[False]}, indent=2))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="DATA folder written by `mnad ingest`")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--sync-bn-cost", action="store_true", help="measure SyncBN's cost a step instead"
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if args.sync_bn_cost:
        sync_bn_cost(args)
        return

    import ray

    preset = load_preset(args.preset)
    clips = load_clips(args.data, preset.model.clip_length)
    print(
        f"{len(clips)} clips {tuple(clips.shape[1:])}, preset {preset.name}, batch "
        f"{preset.optim.batch_size}, {args.epochs} epochs, {args.threads} thread(s) a process"
    )
    before = bare_loop(clips, args.preset, args.epochs, threads=args.threads)
    print(f"bare PyTorch loop (before): {before.wall:7.1f} clips/s, {before.cpu:7.1f} clips/CPU-s")
    ray.init(
        num_cpus=max(args.workers) * args.threads, include_dashboard=False, log_to_driver=False
    )
    shape = tuple(clips.shape[2:]) + (clips.shape[1] // preset.model.clip_length,)
    nbytes = frames_nbytes(list_videos(args.data, "train"), shape)
    where = "in memory" if fits_in_memory(nbytes) else "streamed by Ray Data"
    print(f"training input: {nbytes / 2**20:.0f} MiB of frames, {where}")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="mnad-bench-") as tmp:
        for workers in args.workers:
            runs[workers] = ray_train(
                args.data, args.preset, args.epochs, workers, args.threads, Path(tmp)
            )
            rate, end_to_end = runs[workers]
            print(
                f"Ray Train, {workers} worker(s):  {rate.wall:7.1f} clips/s, "
                f"{rate.cpu:7.1f} clips/CPU-s; end to end {end_to_end:.1f} clips/s",
                flush=True,
            )
    ray.shutdown()
    after = bare_loop(clips, args.preset, args.epochs, threads=args.threads)
    print(f"bare PyTorch loop (after):  {after.wall:7.1f} clips/s, {after.cpu:7.1f} clips/CPU-s")
    base = Rate((before.wall + after.wall) / 2, (before.cpu + after.cpu) / 2)
    figures = {
        "clips": len(clips), "preset": preset.name, "batch": preset.optim.batch_size,
        "epochs": args.epochs, "threads": args.threads, "bare_before": before._asdict(),
        "bare_after": after._asdict(), "bare": base._asdict(), "ray_train": [],
    }  # fmt: skip
    for workers, (rate, end_to_end) in runs.items():
        print(
            f"ratio to the baseline, {workers} worker(s): {rate.wall / base.wall:.2f} (clips/s), "
            f"{rate.cpu / base.cpu:.2f} (clips/CPU-s), {end_to_end / base.wall:.2f} (end to end)"
        )
        figures["ray_train"].append({
            "workers": workers, "wall": rate.wall, "cpu": rate.cpu, "end_to_end": end_to_end,
            "ratio_wall": rate.wall / base.wall, "ratio_cpu": rate.cpu / base.cpu,
            "ratio_end_to_end": end_to_end / base.wall,
        })  # fmt: skip
    if 1 in runs:
        figures["ratios"] = {"train_vs_bare_loop": runs[1][0].wall / base.wall}
        print(f"train_vs_bare_loop {figures['ratios']['train_vs_bare_loop']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
