"""UCSD Ped2 through the product's own stages, over several seeds: the AUC as mean and spread.

Ingests Ped2 once at the preset's input size, then for each seed trains with Ray Train
(``mnad train``'s code path, one worker with every CPU unless told otherwise), scores the
test split in both memory modes (``mnad score``) and prints one JSON line per seed:
``micro_auc`` and ``macro_auc`` of per-video min-max scores (the paper's), and of the
calibrated scores when training calibrated the model. The last
line is the summary: for each memory mode the micro and macro AUC as mean and (sample)
standard deviation, and the training seconds. Everything lands under --out, the MLflow
store at --out/mlflow.db.

    python scripts/ped2_seeds.py --seeds 0 1 2 --out /tmp/ped2-seeds
    python scripts/ped2_seeds.py --seeds 0 --set height=128 width=128 --out /tmp/ped2-128

``--set`` changes fields of the preset (model or optimisation, as ``Preset.replace``
takes them) for a study of one variable at a time; the changed preset is written to
--out/preset.json and trained from there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from mnad.config import get_preset
from pipelines.ingest import IngestConfig, run_ingest
from pipelines.score import ScoreConfig, run_score
from pipelines.train import TrainConfig, run_train

MODES = ("per-video", "paper")
CALIBRATED_KEYS = ("calibrated_micro_auc", "calibrated_macro_auc")
SMOOTHED_KEYS = ("per_video_smoothed_micro_auc", "per_video_smoothed_macro_auc")


def spread(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value), rounded for printing."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "sd": round(sd, 4)}


def parse_field(item: str) -> tuple[str, object]:
    """``name=value`` with the value read as JSON where it parses (numbers), else a string."""
    name, sep, text = item.partition("=")
    if not sep:
        raise SystemExit(f"--set {item}: expected FIELD=VALUE")
    try:
        return name, json.loads(text)
    except json.JSONDecodeError:
        return name, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ped2", default="../shared/datasets/ucsd_ped2")
    parser.add_argument("--out", default="/tmp/ped2-seeds")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=float(os.cpu_count() or 1))
    parser.add_argument(
        "--smooth",
        type=int,
        default=None,
        help="score with this smoothing (frames of a trailing mean; default: the preset's)",
    )
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="FIELD=VALUE", help="preset fields to change"
    )
    args = parser.parse_args()

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    out = Path(args.out).resolve()
    preset = get_preset(args.preset).replace(**dict(parse_field(item) for item in args.set))
    if args.set:
        out.mkdir(parents=True, exist_ok=True)
        (out / "preset.json").write_text(preset.to_json())
    cfg = preset.model
    data = out / f"data-{cfg.height}x{cfg.width}x{cfg.channels}"
    tracking = f"sqlite:///{out / 'mlflow.db'}"
    started = time.perf_counter()
    run_ingest(
        IngestConfig(
            source=args.ped2,
            out=str(data),
            layout="frames",
            size=(cfg.height, cfg.width),
            channels=cfg.channels,
            dataset="ped2",
            quiet=True,
        )
    )
    ingest_s = time.perf_counter() - started

    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        trained = run_train(
            TrainConfig(
                data=str(data),
                preset=str(out / "preset.json") if args.set else args.preset,
                epochs=args.epochs,
                seed=seed,
                workers=args.workers,
                cpus_per_worker=args.cpus_per_worker,
                tracking_uri=tracking,
                experiment="ped2-seeds",
                output=str(out / "runs"),
                name=f"{args.preset}-seed{seed}",
                quiet=True,
            )
        )
        row = {"seed": seed, "train_s": round(time.perf_counter() - t0, 1)}
        row["final_loss"] = round(trained.epochs[-1].get("loss", float("nan")), 6)
        for mode in MODES:
            t0 = time.perf_counter()
            scored = run_score(
                ScoreConfig(
                    data=str(data),
                    model=trained.model_uri,
                    out=str(out / f"scores-seed{seed}-{mode}"),
                    memory=mode,
                    tracking_uri=tracking,
                    experiment="ped2-seeds",
                    report=False,
                    smooth=args.smooth,
                    quiet=True,
                )
            )
            m = scored.metrics
            row[mode] = {  # the paper's measure: per-video min-max; calibrated beside it
                "micro_auc": round(m["per_video_micro_auc"], 4),
                "macro_auc": round(m["per_video_macro_auc"], 4),
                **{k: round(m[k], 4) for k in (*CALIBRATED_KEYS, *SMOOTHED_KEYS) if k in m},
                "frames_per_s": round(scored.metrics["frames_per_s"], 1),
                "score_s": round(time.perf_counter() - t0, 1),
            }
        rows.append(row)
        print(json.dumps(row), flush=True)

    summary = {
        "preset": args.preset,
        "changes": args.set,
        "seeds": args.seeds,
        "ingest_s": round(ingest_s, 1),
        "train_s": spread([r["train_s"] for r in rows]),
        **{
            mode: {
                k: spread([r[mode][k] for r in rows])
                for k in ("micro_auc", "macro_auc", *CALIBRATED_KEYS, *SMOOTHED_KEYS)
                if all(k in r[mode] for r in rows)
            }
            for mode in MODES
        },
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
