"""Scoring frames/s of the product against two baselines measured in the same run.

    .venv/bin/python scripts/bench_score.py [--preset small] [--frames 500] [--batch 32]
        [--threads 2] [--rounds 3] [--threshold X] [--checkpoint CKPT] [--videos 12]
        [--slots 12] [--ray] [--profile] [--json PATH]

Rows (every one over the same clips, in memory: the first ``--videos`` videos in sorted
order, each cut to an equal share of ``--frames`` (``--videos 0``: whole videos until
``--frames``); the memory carried from video to video as in the paper's evaluation, except
in the lockstep rows):

- ``bare forward``: the limit of a plain batched model: ``model(x)`` in eval mode under
  ``no_grad``, batches of B clips, no scores, no memory update.
- ``per-frame loop``: what users have today: the paper's evaluation loop, batch of one,
  gradients on (the paper's code does not use ``no_grad``), encoder and decoder reading the
  carried memory, PSNR, feature distance and the update gate read back with ``.item()``, and
  the test-time update as the paper writes it (``mnad.memory.updated_items_loop``).
- ``scorer frame``: the product: ``StreamingScorer(inference_copy(model)).score(inputs,
  targets)`` in batches of B under ``no_grad`` (the paper's per-frame update, exact), on the
  copy the scoring actors run (BatchNorm folded, channels_last); ``plain model``: the same
  on the model as trained; ``bf16``: the same under ``--precision bf16``.
- ``scorer batch`` / ``scorer no-update``: the same with ``granularity="batch"`` and with
  ``update=False``.
- ``lockstep``: per-video scoring as the scoring actors do it (``--memory per-video``):
  ``mnad.lockstep.LockstepScorer`` on the inference copy, ``--slots`` videos at once, each
  from the trained memory with the paper's per-frame update (exact); ``lockstep no-update``
  the same scorer with ``update=False``; ``lockstep bf16`` under ``--precision bf16``.

Two ratios are printed on their own lines (and under ``ratios`` in ``--json``), at the
"key" threshold: the preset's if at least half the frames update there (a trained model
updates after 75 to 90 % of Ped2's frames), else the gate at which 80 % of them do:
``score_exact_vs_no_update`` (exact lockstep / the same scorer without updates: what the
per-frame update costs) and ``score_bf16_vs_paper_loop`` (bf16 lockstep / the per-frame loop).

Each gated row runs at the preset's threshold (or ``--threshold``), at the median update gate
of the frames (about half of them update: the hardest case for the speculative decoder), and
with every frame updating. Every row is timed ``--rounds`` times, rounds interleaved; the
table gives the median frames/s, the spread (max - min over median), the fraction of frames
that updated the memory, and the ratios to the per-frame loop at the same threshold and to
the bare forward. The scorer's results are checked against the loop's (update decisions equal,
PSNR to float tolerance). ``--ray`` also times the whole ``mnad score`` Ray Data job on a DATA
folder written from the same frames: its own frames/s (actor start-up included) and the
steady rate between the first and the last finished video. Nothing here is asserted;
``--json`` also writes the table, the checks and the Ray job's figures to PATH.

Inputs: UCSD Ped2 test frames from ``--frames-dir`` (decoded with PIL, resized to the preset's
size, grey repeated to the preset's channels); random frames, with a warning, if there are
none. Weights: an untrained model (seed 0) unless ``--checkpoint`` names one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnad import anomaly_score as scores  # noqa: E402
from mnad import memory as mem  # noqa: E402
from mnad.clips import model_clips, stack_clips  # noqa: E402
from mnad.config import Preset, get_preset  # noqa: E402
from mnad.lockstep import LockstepScorer  # noqa: E402
from mnad.network import MNAD, build_model, inference_copy  # noqa: E402
from mnad.streaming import FrameScores, StreamingScorer  # noqa: E402
from pipelines.score.actor import lockstep_ahead, lockstep_slots  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PED2 = ROOT.parent / "shared" / "datasets" / "ucsd_ped2"

Video = tuple[str, np.ndarray, np.ndarray]  # (video_id, uint8 frames (n, H, W, 1), labels (n,))
Clips = tuple[torch.Tensor, torch.Tensor]  # inputs (n, T*C, H, W), targets (n, C, H, W)


# --- inputs ----------------------------------------------------------------------------------


def load_videos(frames_dir: Path, preset: Preset, clips_wanted: int, count: int = 0) -> list[Video]:
    """Test videos in sorted order: the first ``count`` videos, each cut to an equal share of
    ``clips_wanted`` clips; with ``count`` 0, whole videos until ``clips_wanted`` clips (the
    last one cut).

    Grey uint8 frames at the preset's size; labels from ``frame_labels_ped2.npy`` if it fits.
    Random frames, with a warning, if the folder holds none (``count`` videos of them).
    """
    cfg = preset.model
    span = cfg.clip_length - 1  # frames of a video that get no clip
    dirs = sorted(p for p in frames_dir.glob("*") if p.is_dir()) if frames_dir.is_dir() else []
    if not dirs:
        warnings.warn(f"no frames under {frames_dir}: random frames instead", stacklevel=1)
        rng = np.random.default_rng(0)
        n = max(1, count)
        shape = (-(-clips_wanted // n) + span, cfg.height, cfg.width, 1)
        return [
            (f"random{i}", rng.integers(0, 256, shape, np.uint8), np.zeros(shape[0], np.int8))
            for i in range(n)
        ]
    from PIL import Image

    all_labels = None
    labels_file = frames_dir.parents[1] / "frame_labels_ped2.npy"
    if labels_file.is_file():
        all_labels = np.load(labels_file)
    videos, offset, clips = [], 0, 0
    share = -(-clips_wanted // count) if count else 0
    for d in dirs:
        files = sorted(d.glob("*.jpg"))
        total = len(files)
        files = files[: (share or clips_wanted - clips) + span]
        frames = np.stack(
            [
                np.asarray(
                    Image.open(f).convert("L").resize((cfg.width, cfg.height), Image.BILINEAR)
                )
                for f in files
            ]
        )[..., None]  # (n, H, W, 1)
        labels = np.full(len(files), -1, np.int8)
        if all_labels is not None and offset + total <= len(all_labels):
            labels = all_labels[offset : offset + len(files)].astype(np.int8)
        offset += total
        videos.append((d.name, frames, labels))
        clips += max(0, len(files) - span)
        if (count and len(videos) == count) or (not count and clips >= clips_wanted):
            break
    return videos


def video_clips(frames: np.ndarray, preset: Preset) -> Clips:
    """All clips of one video, as the scoring actors make them
    (``pipelines.score.video_inputs``: ``mnad.clips.stack_clips`` and ``model_clips``)."""
    cfg = preset.model
    starts = np.arange(frames.shape[0] - cfg.clip_length + 1)
    clip = model_clips(stack_clips(frames, starts, cfg.clip_length), cfg)
    return clip.inputs.contiguous(), clip.target.contiguous()


# --- the measured paths ----------------------------------------------------------------------


def run_scorer(model: MNAD, videos: list[Clips], batch: int, **options) -> FrameScores:
    """The product: each video's clips through one StreamingScorer, B at a time."""
    scorer = StreamingScorer(model, **options)
    parts = []
    with torch.no_grad():
        for inputs, targets in videos:
            for i in range(0, inputs.shape[0], batch):
                parts.append(scorer.score(inputs[i : i + batch], targets[i : i + batch]))
    return FrameScores.concat(parts)


def run_lockstep(
    model: MNAD, videos: list[Clips], batch: int, slots: int, **options
) -> FrameScores:
    """Per-video scoring as the actors do it: ``slots`` videos at once, each from the trained
    memory, handed over in runs of B clips; results in the order of the videos."""
    ahead = lockstep_ahead("cpu", model.config, batch)
    scorer = LockstepScorer(model, slots=slots, ahead=ahead, **options)
    runs = [
        (i, [(x[j : j + batch], y[j : j + batch]) for j in range(0, x.shape[0], batch)])
        for i, (x, y) in enumerate(videos)
    ]
    done = {f.key: f.scores for f in scorer.score(runs)}
    return FrameScores.concat([done[i] for i in range(len(videos))])


def run_per_video(model: MNAD, videos: list[Clips], batch: int, **options) -> FrameScores:
    """Each video through one StreamingScorer from the trained memory: what lockstep must
    equal."""
    scorer = StreamingScorer(model, **options)
    parts = []
    with torch.no_grad():
        for inputs, targets in videos:
            scorer.reset()
            for i in range(0, inputs.shape[0], batch):
                parts.append(scorer.score(inputs[i : i + batch], targets[i : i + batch]))
    return FrameScores.concat(parts)


def run_bare(model: MNAD, inputs: torch.Tensor, batch: int) -> None:
    """The limit: a batched eval forward pass, nothing else."""
    model.eval()
    with torch.no_grad():
        for i in range(0, inputs.shape[0], batch):
            model(inputs[i : i + batch])


def run_paper_loop(model: MNAD, videos: list[Clips], threshold: float) -> FrameScores:
    """What users have today: the paper's evaluation loop, one frame at a time, with
    autograd on, the update as a Python loop over items."""
    model.eval()
    items = model.memory.items.detach().clone()
    psnr, dist, gate, updated = [], [], [], []
    for inputs, targets in videos:
        for j in range(inputs.shape[0]):
            target = targets[j : j + 1]
            dec = model.decode(model.encode(inputs[j : j + 1]), items)
            psnr.append(scores.psnr(scores.prediction_error(dec.prediction, target)).item())
            dist.append(dec.feature_distance.item())
            gate.append(scores.point_score(dec.prediction, target).item())
            updated.append(gate[-1] < threshold)
            if updated[-1]:
                items = mem.updated_items_loop(dec.queries, items).detach()  # paper: .detach()
    return FrameScores(np.array(psnr), np.array(dist), np.array(gate), np.array(updated))


class Row:
    """One line of the table: a timed path, its timings and what it reported."""

    def __init__(
        self, name: str, threshold: float | None, run: Callable[[list[Clips]], FrameScores | None]
    ):
        self.name, self.threshold, self.run = name, threshold, run
        self.seconds: list[float] = []
        self.result: FrameScores | None = None
        self.videos: list[Clips] = []

    def time_once(self) -> None:
        t0 = time.perf_counter()
        self.result = self.run(self.videos)
        self.seconds.append(time.perf_counter() - t0)

    def rates(self, frames: int) -> list[float]:
        return [frames / s for s in self.seconds]


def fmt_threshold(t: float | None) -> str:
    if t is None:
        return "-"
    return "inf" if math.isinf(t) else f"{t:.4g}"


# --- the Ray Data job ------------------------------------------------------------------------


def write_data(root: Path, videos: list[Video], preset: Preset) -> Path:
    """A DATA folder as ``mnad ingest`` writes it, test split only, from decoded frames."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.schema import MANIFEST_SCHEMA, FrameShape, frame_batch, shard_schema

    cfg = preset.model
    shape = FrameShape(cfg.height, cfg.width, 1)
    (root / "test").mkdir(parents=True)
    rows = []
    for video_id, frames, labels in videos:
        with pq.ParquetWriter(root / "test" / f"{video_id}.parquet", shard_schema(shape)) as w:
            w.write_batch(
                frame_batch(dataset="ped2", split="test", video_id=video_id, start_index=0,
                            labels=labels, pixels=frames.tobytes(), shape=shape)
            )  # fmt: skip
        rows.append({
            "source": video_id, "split": "test", "video_id": video_id, "content_hash": "-",
            "frames": len(frames), "anomalous_frames": int((labels == 1).sum()),
            "height": cfg.height, "width": cfg.width, "status": "ok", "error": None,
            "shard": f"test/{video_id}.parquet",
        })  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), root / "manifest.parquet")
    splits = {"test": {"videos": len(rows), "frames": sum(r["frames"] for r in rows),
                       "anomalous_frames": sum(r["anomalous_frames"] for r in rows)}}  # fmt: skip
    (root / "summary.json").write_text(json.dumps({
        "dataset": "ped2", "layout": "frames", "height": cfg.height, "width": cfg.width,
        "channels": 1, "failed": [], "splits": splits,
    }))  # fmt: skip
    return root


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def ray_job(
    videos: list[Video], model: MNAD, preset: Preset, batch: int, memory: str, precision: str
) -> dict[str, float]:
    """Time ``run_score`` once; Ray is started before the clock starts."""
    import ray

    from mnad.checkpoint import save_checkpoint
    from pipelines.score import ScoreConfig, run_score

    work = Path(tempfile.mkdtemp(prefix="bench_score_"))
    data = write_data(work / "data", videos, preset)
    ckpt = save_checkpoint(work / "ck", model, preset)
    if not ray.is_initialized():
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        print(f"# ray.init: {time.perf_counter() - t0:.1f} s (not counted below)")
    config = ScoreConfig(
        data=str(data), model=str(ckpt), out=str(work / f"scores-{memory}-{precision}"),
        memory=memory, precision=precision, batch_size=batch,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}", report=False,
    )  # fmt: skip
    t0, wall0 = time.perf_counter(), time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_score(config)
    wall = time.perf_counter() - t0
    # Each video's part file is written when that video is done: its mtime dates it.
    done = sorted(
        (p.stat().st_mtime - wall0, pq_rows(p)) for p in (Path(config.out) / "parts").iterdir()
    )
    steady = float("nan")  # frames after the first finished video over the time they took
    if len(done) >= 2 and done[-1][0] > done[0][0]:
        steady = sum(f for _, f in done[1:]) / (done[-1][0] - done[0][0])
    summary = json.loads((Path(config.out) / "summary.json").read_text())
    return {
        "frames": result.frames,
        "job_fps": result.metrics["frames_per_s"],
        "job_seconds": summary["seconds"],
        "first_video_s": done[0][0] if done else float("nan"),
        "steady_fps": steady,
        "wall_s": wall,
        "micro_auc": result.metrics.get("micro_auc", float("nan")),
    }


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--frames", type=int, default=0, help="clips to score (0: by preset)")
    parser.add_argument("--batch", type=int, default=32, help="clips per batch")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--threshold", type=float, default=None,
                        help="update gate threshold (default: the preset's)")  # fmt: skip
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: untrained)")
    parser.add_argument("--frames-dir", type=Path, default=PED2 / "testing" / "frames")
    parser.add_argument(
        "--videos",
        type=int,
        default=12,
        help="videos, each an equal share of --frames (0: whole videos; 12: Ped2's test split)",
    )
    parser.add_argument("--slots", type=int, default=lockstep_slots("cpu"),
                        help="lockstep: videos at once (default: the actors' on CPUs)")  # fmt: skip
    parser.add_argument("--ray", action="store_true", help="also time the mnad score Ray job")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the scorer at the median threshold")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        from mnad.checkpoint import load_model

        model, preset = load_model(args.checkpoint)
        weights = args.checkpoint
    else:
        preset = get_preset(args.preset)
        model, weights = build_model(preset.model, seed=0).eval(), "untrained (seed 0)"
    cfg = preset.model
    n_wanted = args.frames or (500 if cfg.height <= 128 else 8)
    raw = load_videos(args.frames_dir, preset, n_wanted, args.videos)
    videos = [video_clips(frames, preset) for _, frames, _ in raw]
    n = sum(v[0].shape[0] for v in videos)
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads; preset {preset.name} "
        f"({cfg.height}x{cfg.width}x{cfg.channels}, widths {cfg.widths}, memory "
        f"{cfg.memory_size}x{cfg.feature_dim}); weights {weights}"
    )
    print(f"# {n} clips of {len(raw)} video(s) ({', '.join(v for v, _, _ in raw)}), "
          f"batch {args.batch}, {args.rounds} interleaved rounds")  # fmt: skip

    default_t = cfg.update_threshold if args.threshold is None else args.threshold
    probe = run_scorer(model, videos, args.batch, update=False)
    half_t = float(np.median(probe.point_score))
    thresholds = {"default": default_t, "median": half_t, "all": math.inf}
    if float(np.mean(probe.point_score < default_t)) >= 0.5:
        key_label = "default"
    else:  # an untrained model: the gate at which 80 % of the frames update, as trained ones
        key_label = "80%"
        thresholds[key_label] = float(np.quantile(probe.point_score, 0.8))
    key_t = thresholds[key_label]
    print(f"# thresholds: default {default_t:.4g}, median gate {half_t:.4g}, all inf; "
          f"gate range {probe.point_score.min():.4g}..{probe.point_score.max():.4g}")  # fmt: skip
    figures = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "preset": preset.name,
        "weights": weights, "clips": n, "videos": [v for v, _, _ in raw], "batch": args.batch,
        "rounds": args.rounds, "thresholds": {k: fmt_threshold(t) for k, t in thresholds.items()},
        "rows": [], "checks": [], "ray": [],
    }  # fmt: skip

    b = args.batch
    # The scoring actors run an inference copy (BatchNorm folded, channels_last); the "plain
    # model" and "bf16" rows show what that copy and --precision bf16 each change.
    folded = inference_copy(model)
    rows = [Row("bare forward", None, lambda v: run_bare(model, torch.cat([c[0] for c in v]), b))]
    loops: dict[float, Row] = {}
    for label, t in thresholds.items():
        loops[t] = Row(f"per-frame loop ({label})", t,
                       lambda v, t=t: run_paper_loop(model, v, t))  # fmt: skip
        rows.append(loops[t])
        rows.append(Row(f"scorer frame ({label})", t,
                        lambda v, t=t: run_scorer(folded, v, b, threshold=t)))  # fmt: skip
        if label == "default":
            rows.append(Row(f"  plain model ({label})", t,
                            lambda v, t=t: run_scorer(model, v, b, threshold=t)))  # fmt: skip
            rows.append(Row(f"  bf16 ({label})", t,
                            lambda v, t=t: run_scorer(folded, v, b, threshold=t,
                                                     precision="bf16")))  # fmt: skip
        if label != "all":
            rows.append(Row(f"scorer batch ({label})", t,
                            lambda v, t=t: run_scorer(folded, v, b, threshold=t,
                                                     granularity="batch")))  # fmt: skip
    slots = max(1, min(args.slots, len(videos)))
    for label in dict.fromkeys([key_label, "all"]):
        t = thresholds[label]
        rows.append(Row(f"lockstep ({label})", t,
                        lambda v, t=t: run_lockstep(folded, v, b, slots, threshold=t)))  # fmt: skip
    rows.append(Row(f"  lockstep bf16 ({key_label})", key_t,
                    lambda v: run_lockstep(folded, v, b, slots, threshold=key_t,
                                           precision="bf16")))  # fmt: skip
    rows.append(Row("lockstep no-update", None,
                    lambda v: run_lockstep(folded, v, b, slots, update=False)))  # fmt: skip
    rows.append(Row("scorer no-update", None, lambda v: run_scorer(folded, v, b, update=False)))
    rows.append(Row("  bf16 no-update", None, lambda v: run_scorer(folded, v, b, update=False,
                                                                   precision="bf16")))  # fmt: skip

    warm = [(videos[0][0][: 2 * b], videos[0][1][: 2 * b])]
    for row in rows:  # warm-up on a few clips, untimed
        row.run(warm)
        row.videos = videos
    for _ in range(args.rounds):
        for row in rows:
            row.time_once()

    bare = statistics.median(rows[0].rates(n))
    print()
    print(f"{'path':<26} {'thresh':>7} {'upd%':>5} {'fr/s med':>9} {'min':>8} {'max':>8} "
          f"{'spread':>6} {'x loop':>7} {'x bare':>7}")  # fmt: skip
    for row in rows:
        r = row.rates(n)
        med = statistics.median(r)
        loop = loops.get(row.threshold if row.threshold is not None else default_t)
        x_loop = f"{med / statistics.median(loop.rates(n)):7.2f}" if loop else f"{'':7}"
        upd = f"{100 * row.result.updated.mean():5.1f}" if row.result is not None else "    -"
        print(f"{row.name:<26} {fmt_threshold(row.threshold):>7} {upd} {med:9.1f} "
              f"{min(r):8.1f} {max(r):8.1f} {(max(r) - min(r)) / med:6.1%} {x_loop} "
              f"{med / bare:7.2f}")  # fmt: skip
        figures["rows"].append({
            "path": row.name, "threshold": fmt_threshold(row.threshold),
            "updated": None if row.result is None else float(row.result.updated.mean()),
            "fps_median": med, "fps_min": min(r), "fps_max": max(r),
            "spread": (max(r) - min(r)) / med,
            "x_loop": med / statistics.median(loop.rates(n)) if loop else None,
            "x_bare": med / bare,
        })  # fmt: skip

    print()
    for t, loop in loops.items():
        exact = next(r for r in rows if r.name.startswith("scorer frame") and r.threshold == t)
        a, e = exact.result, loop.result
        assert a is not None and e is not None
        same = np.array_equal(a.updated, e.updated)
        dpsnr = float(np.max(np.abs(a.psnr - e.psnr)))
        print(
            f"# check at threshold {fmt_threshold(t)}: update decisions "
            f"{'equal' if same else 'DIFFER'}, max |PSNR scorer - loop| {dpsnr:.2e} dB"
        )
        figures["checks"].append({"threshold": fmt_threshold(t), "decisions_equal": same,
                                  "max_psnr_diff_db": dpsnr})  # fmt: skip
    lock = next(r for r in rows if r.name == f"lockstep ({key_label})").result
    alone = run_per_video(folded, videos, b, threshold=key_t)
    assert lock is not None
    same = np.array_equal(lock.updated, alone.updated)
    dpsnr = float(np.max(np.abs(lock.psnr - alone.psnr))) if len(lock.psnr) else 0.0
    print(f"# check, lockstep ({slots} slots) vs each video scored alone at threshold "
          f"{key_label}: update decisions {'equal' if same else 'DIFFER'}, max |PSNR| "
          f"{dpsnr:.2e} dB")  # fmt: skip
    figures["checks"].append({"threshold": f"{key_label}, lockstep vs per video",
                              "lockstep_decisions_equal": same,
                              "max_psnr_diff_db": dpsnr})  # fmt: skip
    bf16 = next(r for r in rows if r.name.startswith("  bf16 (")).result
    exact = loops[thresholds["default"]].result
    assert bf16 is not None and exact is not None
    agree = float(np.mean(bf16.updated == exact.updated))
    dpsnr = float(np.max(np.abs(bf16.psnr - exact.psnr)))
    print(f"# bf16 at the default threshold: {agree:.1%} of update decisions as the loop's, "
          f"max |PSNR bf16 - loop| {dpsnr:.3f} dB")  # fmt: skip
    figures["checks"].append({"threshold": "default, bf16", "decisions_agree": agree,
                              "max_psnr_diff_db": dpsnr})  # fmt: skip

    def rate(name: str) -> float:
        return statistics.median(next(r for r in rows if r.name == name).rates(n))

    ratios = {
        "score_exact_vs_no_update": rate(f"lockstep ({key_label})") / rate("lockstep no-update"),
        "score_bf16_vs_paper_loop": rate(f"  lockstep bf16 ({key_label})")
        / rate(f"per-frame loop ({key_label})"),
    }
    updated = next(r for r in rows if r.name == f"lockstep ({key_label})").result
    assert updated is not None
    print(
        f"# ratios at threshold {key_label} ({fmt_threshold(key_t)}, "
        f"{updated.updated.mean():.0%} of frames update), {slots} videos in lockstep:"
    )
    for key, value in ratios.items():
        print(f"{key} {value:.3f}")
    figures["ratios"] = ratios
    figures["key_threshold"] = {
        "label": key_label, "threshold": fmt_threshold(key_t),
        "updated": float(updated.updated.mean()), "slots": slots,
    }  # fmt: skip

    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        run_scorer(model, videos, b, threshold=half_t)
        prof.disable()
        print("\n# cProfile of the scorer at the median threshold (tottime, top 15)")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)

    if args.ray:
        print()
        for memory, precision in (("per-video", "fp32"), ("paper", "fp32"), ("per-video", "bf16")):
            r = ray_job(raw, model, preset, b, memory, precision)
            print(f"mnad score --memory {memory:<9} --precision {precision}: {r['frames']} "
                  f"frames, job "
                  f"{r['job_fps']:.1f} frames/s over {r['job_seconds']:.1f} s (actor start-up "
                  f"included, first video done at {r['first_video_s']:.1f} s), steady "
                  f"{r['steady_fps']:.1f} frames/s, run_score wall {r['wall_s']:.1f} s "
                  f"(MLflow included), micro AUC {r['micro_auc']:.3f}")  # fmt: skip
            figures["ray"].append({"memory": memory, "precision": precision, **r})
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
