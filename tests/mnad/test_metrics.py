"""mnad.metrics against hand-worked examples and, on random data, a brute-force count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnad.metrics import (
    MacroAuc,
    auc,
    eer,
    known_frames,
    macro_auc,
    micro_auc,
    roc_auc,
    roc_curve,
)

LABELS = np.array([0, 0, 1, 1])


def test_perfect_separation() -> None:
    scores = np.array([0.1, 0.2, 0.8, 0.9])
    assert roc_auc(scores, LABELS) == 1.0
    assert eer(scores, LABELS) == 0.0


def test_reversed_scores() -> None:
    scores = np.array([0.9, 0.8, 0.2, 0.1])
    assert roc_auc(scores, LABELS) == 0.0
    assert eer(scores, LABELS) == 1.0


def test_ties_by_hand() -> None:
    # Both anomalies tie with one normal frame at 0.5. Pairs (anomalous, normal): each
    # anomaly beats the 0.2 frame (1) and ties the 0.5 frame (1/2): AUC = (2 * 1.5) / 4.
    scores = np.array([0.2, 0.5, 0.5, 0.5])
    fpr, tpr, thresholds = roc_curve(scores, LABELS)
    np.testing.assert_array_equal(fpr, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.5, 0.2])
    assert auc(fpr, tpr) == 0.75
    assert roc_auc(scores, LABELS) == 0.75
    # FNR = 1 - TPR: (1, 0, 0). FPR - FNR goes -1 -> 0.5 between the first two points,
    # crossing 0 at 2/3 of the way: FPR = FNR = 2/3 * 0.5 = 1/3.
    assert eer(scores, LABELS) == pytest.approx(1 / 3)


def test_all_tied_scores_give_chance() -> None:
    scores = np.full(6, 0.3)
    labels = np.array([0, 1, 0, 1, 1, 0])
    assert roc_auc(scores, labels) == 0.5
    assert eer(scores, labels) == pytest.approx(0.5)


def test_auc_trapezoid_and_direction() -> None:
    assert auc(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.5
    assert auc(np.array([0.0, 0.5, 1.0]), np.array([0.5, 0.5, 1.0])) == 0.625
    assert auc(np.array([1.0, 0.5, 0.0]), np.array([1.0, 0.5, 0.5])) == 0.625
    with pytest.raises(ValueError, match="monotonic"):
        auc(np.array([0.0, 1.0, 0.5]), np.array([0.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    ("scores", "labels", "expected_auc", "expected_eer"),
    [
        # The crossing falls on an ROC point. Ranked: 0.8 (1), 0.4 (0), 0.35 (1), 0.1 (0).
        # Pairs: 0.8 beats both normals, 0.35 beats 0.1 only: AUC = 3 / 4. At threshold 0.4,
        # FPR = 1/2 (0.4 of 0.4, 0.1) and FNR = 1/2 (0.35 of 0.8, 0.35): EER = 1/2.
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 3 / 4, 1 / 2),
        # A vertical step. Ranked: 0.5 (0), 0.4 (1), 0.2 (0), 0.1 (0). The anomaly beats two
        # of three normals: AUC = 2/3. At threshold 0.4 FNR drops from 1 to 0 while FPR stays
        # 1/3, so FPR - FNR crosses 0 at FPR = 1/3.
        ([0.1, 0.2, 0.5, 0.4], [0, 0, 0, 1], 2 / 3, 1 / 3),
        # A horizontal step. Ranked: 0.9 (1), 0.5 (0), 0.3 (1), 0.2 (1). The normal beats two
        # of three anomalies: AUC = 1/3. From threshold 0.9 to 0.5, FNR stays 2/3 while FPR
        # goes 0 -> 1, so FPR - FNR goes -2/3 -> 1/3 and crosses 0 at FPR = 2/3.
        ([0.5, 0.9, 0.3, 0.2], [0, 1, 1, 1], 1 / 3, 2 / 3),
    ],
)
def test_auc_and_eer_by_hand(
    scores: list[float], labels: list[int], expected_auc: float, expected_eer: float
) -> None:
    assert roc_auc(np.array(scores), np.array(labels)) == pytest.approx(expected_auc)
    assert eer(np.array(scores), np.array(labels)) == pytest.approx(expected_eer)


def _brute_force_roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at (0, 0) and then at every distinct score, by counting frames >= it."""
    thresholds = np.unique(scores)[::-1]  # (K,) decreasing
    positive = scores[None, :] >= thresholds[:, None]  # (K, N)
    fpr = (positive & (labels == 0)).sum(axis=1) / (labels == 0).sum()
    tpr = (positive & (labels == 1)).sum(axis=1) / (labels == 1).sum()
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


@pytest.mark.parametrize("seed", range(5))
def test_matches_pairwise_count_on_random_data_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    labels = rng.integers(0, 2, n)
    scores = rng.integers(0, 40, n) / 40 + 0.3 * labels  # coarse grid: many ties
    # AUC as the Mann-Whitney statistic: the share of (anomalous, normal) pairs in which the
    # anomaly scores higher, ties counting one half.
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(scores, labels) == pytest.approx(wins)

    fpr, tpr, thresholds = roc_curve(scores, labels)
    want_fpr, want_tpr = _brute_force_roc(scores, labels)
    np.testing.assert_allclose(fpr, want_fpr)
    np.testing.assert_allclose(tpr, want_tpr)
    np.testing.assert_array_equal(thresholds[1:], np.unique(scores)[::-1])
    assert auc(fpr, tpr) == pytest.approx(wins)

    # EER: the first point where FPR >= FNR, and the line from the point before it.
    gap = want_fpr - (1 - want_tpr)
    i = int(np.argmax(gap >= 0))
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    assert eer(scores, labels) == pytest.approx(
        want_fpr[i - 1] + t * (want_fpr[i] - want_fpr[i - 1])
    )


def test_accepts_bool_labels_and_float_labels() -> None:
    scores = np.array([0.2, 0.5, 0.5, 0.5])
    assert roc_auc(scores, LABELS.astype(bool)) == 0.75
    assert roc_auc(scores, LABELS.astype(np.float32)) == 0.75


def test_micro_and_macro_differ_on_two_videos() -> None:
    # Each video alone separates perfectly (AUC 1), but video "b" scores its normal frame
    # above video "a"'s anomaly. Pooled pairs (anomalous, normal):
    # 0.9 > 0.1, 0.9 < 0.95, 0.99 > 0.1, 0.99 > 0.95: micro AUC = 3 / 4.
    scores = {"a": np.array([0.1, 0.9]), "b": np.array([0.95, 0.99])}
    labels = {"a": np.array([0, 1]), "b": np.array([0, 1])}
    assert micro_auc(scores, labels) == 0.75
    assert macro_auc(scores, labels) == MacroAuc(1.0, 2)


def test_macro_skips_single_class_videos() -> None:
    scores = {
        "a": np.array([0.1, 0.9]),
        "b": np.array([0.2, 0.4, 0.4]),  # AUC (1 + 1/2) / 2 = 0.75
        "normal_only": np.array([0.3, 0.6]),
    }
    labels = {"a": np.array([0, 1]), "b": np.array([0, 0, 1]), "normal_only": np.array([0, 0])}
    result = macro_auc(scores, labels)
    assert result.n_videos == 2
    assert result.value == pytest.approx((1.0 + 0.75) / 2)


def test_macro_with_no_two_class_video_is_nan() -> None:
    result = macro_auc({"a": np.array([0.1, 0.2])}, {"a": np.array([0, 0])})
    assert math.isnan(result.value)
    assert result.n_videos == 0


def test_micro_with_a_single_class_raises() -> None:
    with pytest.raises(ValueError, match="both classes"):
        micro_auc(
            {"a": np.array([0.1, 0.2]), "b": np.array([0.3])},
            {"a": np.array([0, 0]), "b": np.array([0])},
        )


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match="lengths must match"):
        roc_auc(np.zeros(3), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_auc(np.array([0.1, 0.2, 0.3]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="known_frames"):
        eer(np.array([0.1, 0.2, 0.3]), np.array([0, 1, -1]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="1-D"):
        roc_auc(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unmatched"):
        micro_auc({"a": np.zeros(2)}, {"b": np.array([0, 1])})
    with pytest.raises(ValueError, match="video 'a'.*lengths"):
        macro_auc({"a": np.zeros(2)}, {"a": np.array([0, 1, 1])})


def test_known_frames_drops_unknown_labels() -> None:
    scores, labels = known_frames(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, -1, 1, -1]))
    np.testing.assert_array_equal(scores, [0.1, 0.3])
    np.testing.assert_array_equal(labels, [0, 1])
    assert roc_auc(scores, labels) == 1.0
