"""Frame-level evaluation of MNAD (Park, Noh, Ham, CVPR 2020), Sec. 4.1: ROC, AUC and EER.

The paper reports the frame-level AUC with all test frames of a dataset pooled after the
per-video normalisation of Eq. (13) (``micro_auc`` here; the paper's code computes it with
scikit-learn's ``roc_auc_score``). ``macro_auc``, the mean of per-video AUCs, and ``eer`` are
reported beside it. The curves and areas are scikit-learn's (``sklearn.metrics``); this module
validates the inputs, pools and averages videos, and reads the EER off the ROC.

Conventions: labels are 0 (normal) or 1 (anomalous), a higher score means more anomalous.
Frames of unknown label (-1) are rejected with a ``ValueError``; the caller drops them first,
with ``known_frames``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from sklearn import metrics as skm

UNKNOWN = -1
"""The label of a frame whose ground truth is not known; see ``known_frames``."""


class MacroAuc(NamedTuple):
    """Mean per-video AUC and how many videos it averages."""

    value: float
    """Mean AUC over the videos that hold both classes; NaN when none does."""
    n_videos: int
    """How many videos held both classes and entered the mean."""


def known_frames(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the frames labelled ``UNKNOWN`` (-1) from one sequence of scores and labels.

    Args:
        scores: (N,) per-frame scores.
        labels: (N,) per-frame labels in {-1, 0, 1}.

    Returns:
        ``(scores, labels)`` of the frames whose label is 0 or 1.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    keep = labels != UNKNOWN
    return scores[keep], labels[keep]


def _validate(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check one sequence of scores and labels; return them as float64 and int64 arrays."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"scores and labels must be 1-D, got shapes {scores.shape} and {labels.shape}"
        )
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels: lengths must match")
    if scores.size == 0:
        raise ValueError("no frames to evaluate")
    if not np.isin(labels, (0, 1)).all():
        found = np.unique(labels[~np.isin(labels, (0, 1))])
        raise ValueError(
            f"labels must be 0 or 1, found {found[:5].tolist()}; drop unknown (-1) frames "
            "with known_frames first"
        )
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    return scores, labels.astype(np.int64)


def _validate_both_classes(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_validate``, and check that both classes occur (an ROC needs both)."""
    scores, labels = _validate(scores, labels)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        raise ValueError(f"ROC needs both classes, got {n_pos} anomalous of {labels.size} frames")
    return scores, labels


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact ROC curve: scikit-learn's ``roc_curve(..., drop_intermediate=False)``.

    Frames are ranked by decreasing score; frames of equal score form one ROC point, so ties
    give a diagonal step (half credit in the AUC). The first point is (0, 0) at threshold
    ``inf``; each following point counts the frames with ``score >= threshold`` as positive.

    Args:
        scores: (N,) finite scores, higher = more anomalous.
        labels: (N,) labels in {0, 1}; both classes must occur.

    Returns:
        ``(fpr, tpr, thresholds)``, each (K + 1,) for K distinct scores; thresholds decrease.
    """
    scores, labels = _validate_both_classes(scores, labels)
    fpr, tpr, thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr, thresholds


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a curve by the trapezoid rule (scikit-learn's ``auc``); ``fpr`` monotonic.

    Args:
        fpr: (K,) x coordinates, non-decreasing or non-increasing.
        tpr: (K,) y coordinates.

    Returns:
        The area, taken as positive for either direction of ``fpr``.
    """
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"need two 1-D arrays of one length >= 2, got {x.shape} and {y.shape}")
    dx = np.diff(x)  # (K - 1,)
    if (dx < 0).any() and (dx > 0).any():
        raise ValueError("fpr is not monotonic")
    return float(skm.auc(x, y))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of one set of frames: scikit-learn's ``roc_auc_score``.

    Args:
        scores: (N,) finite scores, higher = more anomalous.
        labels: (N,) labels in {0, 1}; both classes must occur.

    Returns:
        AUC in [0, 1]: the probability that an anomalous frame outscores a normal one, ties
        counting one half.
    """
    scores, labels = _validate_both_classes(scores, labels)
    return float(skm.roc_auc_score(labels, scores))


def _paired(
    scores_by_video: Mapping[str, np.ndarray], labels_by_video: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Match scores to labels by video name and validate each video."""
    if set(scores_by_video) != set(labels_by_video):
        unmatched = sorted(set(scores_by_video) ^ set(labels_by_video))
        raise ValueError(f"scores and labels name different videos; unmatched: {unmatched}")
    if not scores_by_video:
        raise ValueError("no videos to evaluate")
    paired = []
    for name in sorted(scores_by_video):
        try:
            scores, labels = _validate(scores_by_video[name], labels_by_video[name])
        except ValueError as err:
            raise ValueError(f"video {name!r}: {err}") from err
        paired.append((name, scores, labels))
    return paired


def micro_auc(
    scores_by_video: Mapping[str, np.ndarray], labels_by_video: Mapping[str, np.ndarray]
) -> float:
    """The paper's frame-level AUC: the frames of all videos pooled into one ROC.

    Scores must already be normalised per video (``mnad.anomaly_score.fused_abnormality``
    on each video); this function does not normalise.

    Args:
        scores_by_video: video name -> (T,) per-frame abnormality.
        labels_by_video: video name -> (T,) labels in {0, 1}; same names and lengths.

    Returns:
        The pooled AUC. A ``ValueError`` if the pooled frames hold only one class.
    """
    paired = _paired(scores_by_video, labels_by_video)
    scores = np.concatenate([s for _, s, _ in paired])
    labels = np.concatenate([y for _, _, y in paired])
    return roc_auc(scores, labels)


def macro_auc(
    scores_by_video: Mapping[str, np.ndarray], labels_by_video: Mapping[str, np.ndarray]
) -> MacroAuc:
    """Mean of the per-video AUCs over the videos that hold both classes.

    A video with only normal (or only anomalous) frames has no AUC and is left out of the
    mean; ``n_videos`` says how many entered it. When none did, the value is NaN (no error).

    Args:
        scores_by_video: video name -> (T,) per-frame abnormality.
        labels_by_video: video name -> (T,) labels in {0, 1}; same names and lengths.

    Returns:
        ``MacroAuc(value, n_videos)``.
    """
    aucs = [
        roc_auc(scores, labels)
        for _, scores, labels in _paired(scores_by_video, labels_by_video)
        if 0 < labels.sum() < labels.size
    ]
    return MacroAuc(float(np.mean(aucs)) if aucs else float("nan"), len(aucs))


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate: the error where the ROC's FPR equals its FNR = 1 - TPR.

    The crossing is found on the exact ROC (``roc_curve``) and interpolated linearly between
    the two ROC points around it. Perfect separation gives 0, reversed scores give 1.

    Args:
        scores: (N,) finite scores, higher = more anomalous.
        labels: (N,) labels in {0, 1}; both classes must occur.

    Returns:
        EER in [0, 1].
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    # Each point of the exact ROC adds at least one frame, so FPR - FNR rises strictly from -1
    # to 1: np.interp finds its zero linearly between the two points that bracket it.
    gap = fpr - (1 - tpr)  # (K + 1,)
    return float(np.interp(0.0, gap, fpr))


__all__ = [
    "UNKNOWN",
    "MacroAuc",
    "auc",
    "eer",
    "known_frames",
    "macro_auc",
    "micro_auc",
    "roc_auc",
    "roc_curve",
]
