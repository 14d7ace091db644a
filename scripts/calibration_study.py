"""How the calibrated score ranks frames under other weights and smoothing, from the scores
a job wrote: micro and macro AUC, the threshold and the held-out alarm rate of each variant.

    .venv/bin/python scripts/calibration_study.py SCORES MODEL [--tracking-uri URI]
        [--alphas 0 0.3 0.6 1] [--windows 1 5 9] [--false-alarm-rate 0.001]

SCORES is a folder `mnad score` wrote (its frames dataset, SCORES/frames, holds each frame's
PSNR and feature distance); MODEL the calibrated model it scored (its calibration holds the
calibration videos' PSNR and distances, so every variant is refitted from the same footage).
"""

from __future__ import annotations

import argparse
import tempfile

from mnad import metrics
from mnad.calibration import DEFAULT_FALSE_ALARM_RATE, fit, smooth
from mnad.checkpoint import load_checkpoint
from pipelines import tracking
from pipelines.score import read_frames
from pipelines.score.events import videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores")
    parser.add_argument("model")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.3, 0.6, 1.0])
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 5, 9])
    parser.add_argument("--false-alarm-rate", type=float, default=DEFAULT_FALSE_ALARM_RATE)
    args = parser.parse_args()

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    ref = tracking.find_model(args.model, uri)
    with tempfile.TemporaryDirectory() as tmp:
        calibration = load_checkpoint(tracking.fetch_model(ref, uri, dst=tmp)).calibration
    if calibration is None:
        raise SystemExit(f"{args.model}: no calibration (run mnad calibrate)")
    frames = read_frames(args.scores)
    psnr = frames.column("psnr").to_numpy()
    distance = frames.column("feature_distance").to_numpy()
    label = frames.column("label").to_numpy()
    rows = list(videos(frames))
    pairs = zip(calibration.psnr, calibration.distance, strict=True)
    footage = dict(zip(calibration.videos, pairs, strict=True))
    print(f"{args.model}: calibrated on {len(calibration.videos)} videos, "
          f"{calibration.frames} frames; {frames.num_rows} frames scored")  # fmt: skip
    print("| alpha | smoothing (frames) | micro AUC | macro AUC | threshold | held-out alarms |")
    print("|---|---|---|---|---|---|")
    for alpha in args.alphas:
        variant = fit(footage, alpha)
        for window in args.windows:
            score = {v.video_id: smooth(variant.score(psnr[v.rows], distance[v.rows]), window)
                     for v in rows}  # fmt: skip
            known = {v.video_id: metrics.known_frames(score[v.video_id], label[v.rows])
                     for v in rows}  # fmt: skip
            known = {k: pair for k, pair in known.items() if len(pair[1])}
            scores = {k: s for k, (s, _) in known.items()}
            labels = {k: lab for k, (_, lab) in known.items()}
            micro = metrics.micro_auc(scores, labels)
            macro = metrics.macro_auc(scores, labels).value
            threshold = variant.threshold(args.false_alarm_rate, window)
            held = variant.held_out_alarm_rate(args.false_alarm_rate, window)
            held_text = "n/a" if held is None else f"{held:.4f}"
            print(f"| {alpha:g} | {window} | {micro:.4f} | {macro:.4f} | {threshold:.3f} | "
                  f"{held_text} |")  # fmt: skip


if __name__ == "__main__":
    main()
