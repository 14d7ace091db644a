"""Scores on a fixed scale: calibration on normal footage, thresholds, smoothing and events.

The paper's Eq. (13) normalises PSNR and the feature distance by each test video's own min
and max, which reproduces its AUC but makes every video reach 1.0, cannot score a frame
before the video has ended, and puts two videos on different scales. A :class:`Calibration`
fixes the scale once, from normal footage the model did not train on:

    abnormality = alpha * (P0 - P) / sP + (1 - alpha) * (D - D0) / sD

with P the frame's PSNR (Eq. 11), D its feature distance (Eq. 12), (P0, sP) and (D0, sD)
the median and the MAD-based standard deviation of each over the calibration frames. It is
Eq. (13) with each video's min-max replaced by one robust location and scale: 0 is a
typical normal frame, 1 is one robust standard deviation towards anomalous, and the score
of a frame depends on nothing but that frame, so it streams.

Why robust location and scale rather than empirical quantiles: a quantile map saturates at
the largest calibration frame, exactly where anomalies lie, so frames far beyond normal
would all score 1.0 and lose their order; the median and MAD keep the order in the tail and
are not moved by a few odd frames in the calibration footage.

A threshold is the calibration frames' own quantile at ``1 - false_alarm_rate``, after the
same temporal smoothing the scores get (:func:`smooth`, a trailing mean that reads no
frame after the one it scores). The calibration keeps each calibration video's PSNR and
distances, so a threshold for any rate and smoothing is worked out from the footage itself,
and so is an honest alarm rate: each video scored at the threshold of the others
(:meth:`Calibration.held_out_alarm_rate`), since the rate on the frames that chose the
threshold is at most the target by construction.
:func:`events` turns a video's scores into runs of frames over the threshold, joined across
short gaps. numpy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

MAD_TO_STD = 1.4826
"""Scale from the median absolute deviation to the standard deviation of a normal law."""
MIN_SCALE = 1e-6
"""The smallest scale used: a constant component scores 0 instead of dividing by zero."""
FORMAT = "mnad.calibration/1"
DEFAULT_FALSE_ALARM_RATE = 0.001
"""The target share of normal frames over the threshold unless one is asked for: one frame
in a thousand (at 25 fps, 90 frames an hour before they are joined into events). With fewer
than 1 / rate calibration frames the threshold is the calibration's highest score."""


@dataclass(frozen=True)
class Calibration:
    """Robust location and scale of PSNR and feature distance on normal footage, and the
    calibrated scores of that footage (for thresholds)."""

    alpha: float  # weight of the PSNR term, as in Eq. (13)
    psnr_median: float
    psnr_scale: float
    distance_median: float
    distance_scale: float
    videos: tuple[str, ...]  # the calibration videos
    psnr: tuple[np.ndarray, ...]  # each calibration video's per-frame PSNR, in order
    distance: tuple[np.ndarray, ...]  # and its feature distances

    @property
    def frames(self) -> int:
        return sum(len(p) for p in self.psnr)

    @property
    def scores(self) -> tuple[np.ndarray, ...]:
        """Each calibration video's calibrated scores."""
        return tuple(self.score(p, d) for p, d in zip(self.psnr, self.distance, strict=True))

    def score(self, psnr: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """Each frame's calibrated abnormality; (T,) float64, from that frame alone."""
        psnr = np.asarray(psnr, dtype=np.float64)
        distance = np.asarray(distance, dtype=np.float64)
        if psnr.shape != distance.shape:
            raise ValueError(f"psnr {psnr.shape} and distance {distance.shape} differ in shape")
        z_psnr = (self.psnr_median - psnr) / self.psnr_scale
        z_distance = (distance - self.distance_median) / self.distance_scale
        return self.alpha * z_psnr + (1 - self.alpha) * z_distance

    def threshold(self, false_alarm_rate: float, window: int = 1) -> float:
        """The score above which ``false_alarm_rate`` of the calibration frames lie, after
        smoothing over ``window`` frames: the ``1 - rate`` quantile, taken at the next
        calibration frame up so the rate measured on the footage is at most the target."""
        check_rate(false_alarm_rate)
        pooled = self._pooled(window)
        if false_alarm_rate == 0:
            return float(pooled.max())
        return float(np.quantile(pooled, 1 - false_alarm_rate, method="higher"))

    def alarm_rate(self, threshold: float, window: int = 1) -> float:
        """The share of calibration frames over ``threshold`` after smoothing."""
        return float(np.mean(self._pooled(window) > threshold))

    def held_out_alarm_rate(self, false_alarm_rate: float, window: int = 1) -> float | None:
        """The alarm rate on footage the threshold was not chosen on: each calibration video
        in turn scored by a calibration fitted on the others, at its threshold; the share of
        all those frames over it. None with fewer than two calibration videos."""
        if len(self.videos) < 2:
            return None
        over = frames = 0
        rows = list(zip(self.videos, self.psnr, self.distance, strict=True))
        for k in range(len(rows)):
            others = {v: (p, d) for i, (v, p, d) in enumerate(rows) if i != k}
            rest = fit(others, self.alpha)
            scores = smooth(rest.score(self.psnr[k], self.distance[k]), window)
            over += int((scores > rest.threshold(false_alarm_rate, window)).sum())
            frames += scores.size
        return over / frames

    def _pooled(self, window: int) -> np.ndarray:
        return np.concatenate([smooth(s, window) for s in self.scores])

    def summary(self) -> dict[str, Any]:
        """The statistics without the per-frame scores: what a registry tag can hold."""
        return {
            "alpha": self.alpha,
            "psnr_median": self.psnr_median,
            "psnr_scale": self.psnr_scale,
            "distance_median": self.distance_median,
            "distance_scale": self.distance_scale,
            "videos": len(self.videos),
            "frames": self.frames,
        }

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            **self.summary(),
            "videos": list(self.videos),
            "psnr": [p.tolist() for p in self.psnr],
            "distance": [d.tolist() for d in self.distance],
        }
        return json.dumps(doc)

    @staticmethod
    def from_json(text: str) -> Calibration:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError(f"not an MNAD calibration (format {doc.get('format')!r})")
        return Calibration(
            alpha=float(doc["alpha"]),
            psnr_median=float(doc["psnr_median"]),
            psnr_scale=float(doc["psnr_scale"]),
            distance_median=float(doc["distance_median"]),
            distance_scale=float(doc["distance_scale"]),
            videos=tuple(doc["videos"]),
            psnr=tuple(np.asarray(p, dtype=np.float64) for p in doc["psnr"]),
            distance=tuple(np.asarray(d, dtype=np.float64) for d in doc["distance"]),
        )


def fit(videos: Mapping[str, tuple[np.ndarray, np.ndarray]], alpha: float) -> Calibration:
    """The calibration of normal videos: ``{video_id: (psnr, feature_distance)}``, each
    scored with the test-time rules (memory reset at each video, updated as it goes)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    kept = {v: pair for v, pair in videos.items() if len(pair[0])}
    if not kept:
        raise ValueError("no scored frames to calibrate on")
    psnr = np.concatenate([np.asarray(p, dtype=np.float64) for p, _ in kept.values()])
    distance = np.concatenate([np.asarray(d, dtype=np.float64) for _, d in kept.values()])
    if not (np.isfinite(psnr).all() and np.isfinite(distance).all()):
        raise ValueError("calibration scores hold NaN or infinite values")
    p0, sp = _robust(psnr)
    d0, sd = _robust(distance)
    as_arrays = [(np.asarray(p, np.float64), np.asarray(d, np.float64)) for p, d in kept.values()]
    return Calibration(
        alpha, p0, sp, d0, sd, tuple(kept),
        psnr=tuple(p for p, _ in as_arrays), distance=tuple(d for _, d in as_arrays),
    )  # fmt: skip


def _robust(x: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation (at least ``MIN_SCALE``)."""
    median = float(np.median(x))
    scale = MAD_TO_STD * float(np.median(np.abs(x - median)))
    if scale < MIN_SCALE:  # more than half the frames equal: fall back on the spread
        scale = max(float(np.std(x)), MIN_SCALE)
    return median, scale


def check_rate(false_alarm_rate: float) -> None:
    if not (math.isfinite(false_alarm_rate) and 0.0 <= false_alarm_rate < 1.0):
        raise ValueError(f"false alarm rate must be in [0, 1), got {false_alarm_rate!r}")


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` frames (1: unchanged): frame t averages frames
    t - window + 1 .. t, fewer at the start of the video. Reads no frame after t."""
    scores = np.asarray(scores, dtype=np.float64)
    if window < 1:
        raise ValueError(f"smoothing window must be >= 1 frame, got {window}")
    if window == 1 or scores.size == 0:
        return scores.copy()
    sums = np.cumsum(np.concatenate([[0.0], scores]))
    t = np.arange(1, scores.size + 1)
    lo = np.maximum(t - window, 0)
    return (sums[t] - sums[lo]) / (t - lo)


class Event(NamedTuple):
    """A run of frames over the threshold in one video (frame numbers of the video)."""

    first_frame: int
    last_frame: int
    peak_frame: int
    peak_score: float
    frames: int  # frames over the threshold in the run


def events(
    frame_index: Sequence[int] | np.ndarray,
    scores: np.ndarray,
    threshold: float,
    merge_gap: int,
) -> list[Event]:
    """Runs of frames whose score is over ``threshold``, joined when at most ``merge_gap``
    frame numbers lie between one run's last frame and the next one's first.

    ``frame_index`` is ascending (the video's scored frames; gaps are allowed)."""
    index = np.asarray(frame_index, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if index.shape != scores.shape:
        raise ValueError(f"frame_index {index.shape} and scores {scores.shape} differ in shape")
    over = np.flatnonzero(scores > threshold)
    if over.size == 0:
        return []
    # A new event where the frame number jumps by more than the gap allows.
    breaks = np.flatnonzero(np.diff(index[over]) > merge_gap + 1) + 1
    found = []
    for run in np.split(over, breaks):
        peak = run[int(np.argmax(scores[run]))]
        first, last = int(index[run[0]]), int(index[run[-1]])
        found.append(Event(first, last, int(index[peak]), float(scores[peak]), int(run.size)))
    return found


__all__ = [
    "DEFAULT_FALSE_ALARM_RATE",
    "MAD_TO_STD",
    "Calibration",
    "Event",
    "check_rate",
    "events",
    "fit",
    "smooth",
]
