"""The paper's setting on one GPU: `paper-pred`, 256x256x3, UCSD Ped2, 60 epochs, bf16.

Runs the product's own stages in one process, on the GPU machine's local Ray:

1. `mnad ingest` of Ped2 at 256x256, 3 channels (the paper's loader reads grey frames as
   three equal channels);
2. `mnad train --preset paper-pred --workers 1 --gpus-per-worker 1` (bf16 autocast,
   channels_last, NCCL path);
3. `mnad score` in both memory modes on the GPU: per-video with one actor holding the GPU
   and scoring the videos in lockstep (``mnad.lockstep.LockstepScorer``: every test video at
   once, each with its own memory and the paper's per-frame update) under bf16, paper (one
   actor, the memory carried) in float32 as the paper's numbers are;
4. the lockstep scorer in this process on the trained model and the test videos: exact
   (per-frame update) against the same scorer without updates (``score_exact_vs_no_update``)
   and the bf16 rate, with the share of frames that updated;

and prints one line per figure: training clips/s, scoring frames/s and the frame AUCs,
next to the paper's 97.0. Meant to finish in under 10 minutes on one H100/H200-class GPU.

    python scripts/gpu_paper.py --ped2 ../shared/datasets/ucsd_ped2 --out /tmp/paper [--epochs 60]

With --epochs 1 --cpu it is a smoke test that runs anywhere (slowly, not the paper's figures).
``--dry-run`` checks the scoring path in seconds on the device there is (CUDA, else the CPU):
a small random model's lockstep scores against each video scored alone, and the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ped2", default="../shared/datasets/ucsd_ped2")
    parser.add_argument("--out", default="mnad-runs/gpu-paper")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cpu", action="store_true", help="no GPU: a smoke test only")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only check the lockstep scoring path on this device (seconds)",
    )
    args = parser.parse_args()
    if args.dry_run:
        return dry_run()

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import torch

    from pipelines.ingest import IngestConfig, run_ingest
    from pipelines.score import ScoreConfig, run_score
    from pipelines.train import TrainConfig, run_train

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_paper: no CUDA device; pass --cpu for a smoke test", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    data, tracking = out / "data", f"sqlite:///{out / 'mlflow.db'}"
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {
        "device": "cpu" if args.cpu else torch.cuda.get_device_name(0),
        "epochs": args.epochs,
        "size": args.size,
    }

    t0 = time.perf_counter()
    ingested = run_ingest(
        IngestConfig(
            source=args.ped2, out=str(data), size=(args.size, args.size), channels=3, quiet=True
        )
    )
    figures["ingest_s"] = round(time.perf_counter() - t0, 1)
    if ingested.exit_status:
        print("gpu_paper: ingest reported failed inputs; see the manifest", file=sys.stderr)

    t0 = time.perf_counter()
    result = run_train(
        TrainConfig(
            data=str(data),
            preset="paper-pred",
            epochs=args.epochs,
            workers=1,
            gpus_per_worker=0 if args.cpu else 1,
            tracking_uri=tracking,
            output=str(out),
            quiet=False,
        )
    )
    train_s = time.perf_counter() - t0
    rates = [e["clips_per_s"] for e in result.epochs if "clips_per_s" in e]
    figures["train_s"] = round(train_s, 1)
    figures["train_clips_per_s"] = round(sorted(rates)[len(rates) // 2], 1) if rates else None

    # Per-video: one actor on the whole GPU, every video in lockstep (one batch per frame
    # step); fractions of a GPU would split the videos and the batch.
    gpu_share = {"paper": 1.0, "per-video": 1.0}
    for memory in ("paper", "per-video"):
        scored = run_score(
            ScoreConfig(
                data=str(data),
                model=result.model_uri,
                out=str(out / f"scores-{memory}"),
                memory=memory,  # type: ignore[arg-type]
                gpus_per_actor=0 if args.cpu else gpu_share[memory],
                precision="fp32" if memory == "paper" or args.cpu else "bf16",
                batch_size=64,
                tracking_uri=tracking,
                quiet=True,
            )
        )
        figures[f"{memory}_micro_auc"] = round(scored.metrics.get("micro_auc", float("nan")), 4)
        figures[f"{memory}_macro_auc"] = round(scored.metrics.get("macro_auc", float("nan")), 4)
        figures[f"{memory}_frames_per_s"] = round(scored.metrics.get("frames_per_s", 0.0), 1)
    figures.update(lockstep_figures(result.checkpoint, str(data), "cpu" if args.cpu else "cuda"))
    figures["paper_reported_micro_auc"] = 0.970
    print(json.dumps(figures, indent=2))
    (out / "figures.json").write_text(json.dumps(figures, indent=2))
    return 0


def test_clips(data: str, cfg, batch: int) -> list[tuple]:
    """Every test video's clips, in memory, as the scoring actors read them."""
    import torch

    from pipelines.data import list_shards
    from pipelines.score.actor import video_inputs

    videos = []
    for shard in list_shards(data, "test"):
        parts = [c for _, c in video_inputs(shard, cfg, batch)]
        if parts:
            videos.append(
                (torch.cat([p.inputs for p in parts]), torch.cat([p.target for p in parts]))
            )
    return videos


def lockstep_rates(model, videos: list[tuple], device: str, threshold=None) -> dict[str, float]:
    """Frames/s of the lockstep scorer (every video at once) exact, without updates and in
    bf16, with the share of frames updating; one untimed warm-up each."""
    import time

    import numpy as np
    import torch

    from mnad.lockstep import LockstepScorer
    from pipelines.score.actor import lockstep_ahead, lockstep_slots
    from pipelines.score.config import ScoreConfig

    kind = "cuda" if device.startswith("cuda") else "cpu"
    slots = min(lockstep_slots(device), len(videos))
    batch = ScoreConfig.__dataclass_fields__["batch_size"].default  # mnad score's default
    ahead = lockstep_ahead(device, model.config, batch)
    frames = sum(v[0].shape[0] for v in videos)
    out: dict[str, float] = {}
    for name, options in (("exact", {}), ("no_update", {"update": False}),
                          ("bf16", {"precision": "bf16"})):  # fmt: skip
        scorer = LockstepScorer(model, threshold=threshold, slots=slots,
                                ahead=ahead, **options)  # fmt: skip
        runs = [(i, [v]) for i, v in enumerate(videos)]
        for _ in range(2):  # the first is a warm-up
            if kind == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            done = list(scorer.score(runs))
            if kind == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
        out[f"lockstep_{name}_frames_per_s"] = round(frames / seconds, 1)
        if name == "exact":
            out["lockstep_updated"] = round(
                float(np.mean(np.concatenate([d.scores.updated for d in done]))), 3
            )
    out["score_exact_vs_no_update"] = round(
        out["lockstep_exact_frames_per_s"] / out["lockstep_no_update_frames_per_s"], 3
    )
    out["lockstep_slots"] = slots
    return out


def lockstep_figures(checkpoint: str, data: str, device: str) -> dict[str, float]:
    """The lockstep rates on the trained model (inference copy) and the test videos."""
    from mnad.checkpoint import load_checkpoint
    from mnad.video import scoring_model

    ckpt = load_checkpoint(checkpoint)
    model = scoring_model(ckpt, device)
    return lockstep_rates(model, test_clips(data, ckpt.preset.model, 64), device)


def dry_run() -> int:
    """The scoring path on this device in seconds: a small random model's lockstep results
    against each video scored alone (StreamingScorer), and the lockstep rates."""
    import numpy as np
    import torch

    from mnad.config import get_preset
    from mnad.lockstep import LockstepScorer
    from mnad.network import build_model, inference_copy
    from mnad.streaming import StreamingScorer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = get_preset("small").model
    model = inference_copy(build_model(cfg, seed=0)).to(device)
    g = torch.Generator().manual_seed(0)
    videos = []
    for n in (40, 25, 33, 12, 40, 7):
        x = torch.rand(n, cfg.channels * (cfg.input_frames + 1), cfg.height, cfg.width,
                       generator=g) * 2 - 1  # fmt: skip
        split = cfg.channels * cfg.input_frames
        videos.append((x[:, :split].contiguous(), x[:, split:].contiguous()))
    probe = StreamingScorer(model, update=False)
    gates = np.concatenate([probe.score(*v).point_score for v in videos])
    threshold = float(np.quantile(gates, 0.8))  # about 80 % of frames update
    alone = StreamingScorer(model, threshold=threshold)
    together = LockstepScorer(model, threshold=threshold, slots=4, ahead=8)
    got = {f.key: f for f in together.score([(i, [v]) for i, v in enumerate(videos)])}
    worst, same = 0.0, True
    for i, v in enumerate(videos):
        alone.reset()
        ref = alone.score(*v)
        same &= bool(np.array_equal(ref.updated, got[i].scores.updated))
        worst = max(worst, float(np.max(np.abs(ref.psnr - got[i].scores.psnr))))
    figures = {"device": device, "decisions_equal": same, "max_psnr_diff_db": worst}
    figures.update(lockstep_rates(model, videos, device, threshold))
    print(json.dumps(figures, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
