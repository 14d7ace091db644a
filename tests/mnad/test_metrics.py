"""mnad.metrics against hand-worked examples and scikit-learn (a test-only dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

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


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_scikit_learn_on_random_data_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    labels = rng.integers(0, 2, n)
    scores = rng.integers(0, 40, n) / 40 + 0.3 * labels  # coarse grid: many ties
    fpr, tpr, thresholds = roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thr[1:])
    assert roc_auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores))
    # EER lies where the curve crosses the anti-diagonal: scikit-learn's points bracket it
    sk_gap = sk_fpr - (1 - sk_tpr)
    i = int(np.argmax(sk_gap >= 0))
    low, high = sorted((sk_fpr[i - 1], sk_fpr[i]))
    assert low <= eer(scores, labels) <= high


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
