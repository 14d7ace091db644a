"""mnad.anomaly_score against numbers worked out by hand (paper Eqs. 11-13 and the update gate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnad.anomaly_score import (
    MSE_EPS,
    fused_abnormality,
    min_max,
    point_score,
    prediction_error,
    psnr,
)


def _two_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """One sample of two pixels: [0, 1]-scale prediction (1, 0.8) against target (0.5, 0.5)."""
    pred = torch.tensor([1.0, 0.6]).reshape(1, 1, 1, 2)  # (B, C, H, W) on [-1, 1]
    target = torch.zeros(1, 1, 1, 2)  # (B, C, H, W)
    return pred, target


def test_prediction_error_on_the_unit_scale() -> None:
    pred, target = _two_pixels()
    # squared errors on [0, 1]: 0.5 ** 2 = 0.25 and 0.3 ** 2 = 0.09; mean 0.17
    err = prediction_error(pred, target)
    assert err.shape == (1,)
    assert err.dtype == torch.float32
    assert err.item() == pytest.approx(0.17, rel=1e-6)


def test_prediction_error_is_per_sample() -> None:
    target = torch.zeros(3, 2, 4, 4)  # (B, C, H, W)
    pred = torch.stack([torch.full((2, 4, 4), v) for v in (0.0, 0.2, -1.0)])  # (B, C, H, W)
    # [0, 1]-scale differences 0, 0.1, 0.5 at every pixel
    expected = torch.tensor([0.0, 0.01, 0.25])
    torch.testing.assert_close(prediction_error(pred, target), expected)


def test_prediction_error_upcasts_half_precision() -> None:
    pred = torch.zeros(2, 1, 2, 2, dtype=torch.bfloat16)  # (B, C, H, W)
    assert prediction_error(pred, pred).dtype == torch.float32
    assert prediction_error(pred.double(), pred.double()).dtype == torch.float64


@pytest.mark.parametrize("shapes", [((1, 1, 2, 2), (1, 1, 2, 3)), ((4, 4), (4, 4))])
def test_prediction_error_rejects_bad_shapes(shapes: tuple[tuple[int, ...], ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        prediction_error(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


@pytest.mark.parametrize(("mse", "db"), [(0.01, 20.0), (0.001, 30.0), (1.0, 0.0), (0.1, 10.0)])
def test_psnr_hand_values(mse: float, db: float) -> None:
    assert float(psnr(mse)) == pytest.approx(db)
    assert psnr(torch.tensor([mse])).item() == pytest.approx(db, rel=1e-6)
    assert psnr(np.array([mse]))[0] == pytest.approx(db)


def test_psnr_keeps_type_shape_and_dtype() -> None:
    t = psnr(torch.tensor([[0.01, 0.1]], dtype=torch.float32))
    assert isinstance(t, torch.Tensor)
    assert t.shape == (1, 2)
    assert t.dtype == torch.float32
    a = psnr(np.array([0.01, 0.1], dtype=np.float32))
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.float64


def test_psnr_of_a_perfect_prediction_is_finite() -> None:
    cap = 10 * math.log10(1 / MSE_EPS)  # 100 dB
    assert cap == pytest.approx(100.0)
    assert float(psnr(0.0)) == pytest.approx(cap)
    t = psnr(torch.zeros(3))
    assert torch.isfinite(t).all()
    torch.testing.assert_close(t, torch.full((3,), cap))
    assert float(psnr(0.0, eps=1e-4)) == pytest.approx(40.0)


def test_point_score_two_pixels_by_hand() -> None:
    pred, target = _two_pixels()
    # e = (0.25, 0.09); w = 1 - exp(-e) = (0.221199, 0.086069)
    # score = (0.221199 * 0.25 + 0.086069 * 0.09) / (0.221199 + 0.086069) = 0.205182
    w1, w2 = 1 - math.exp(-0.25), 1 - math.exp(-0.09)
    by_hand = (w1 * 0.25 + w2 * 0.09) / (w1 + w2)
    assert by_hand == pytest.approx(0.205182, abs=1e-6)
    score = point_score(pred, target)
    assert score.shape == (1,)
    assert score.item() == pytest.approx(by_hand, rel=1e-6)


def test_point_score_uniform_error_equals_that_error() -> None:
    target = torch.zeros(2, 3, 4, 4)  # (B, C, H, W)
    pred = torch.cat([torch.full((1, 3, 4, 4), 0.2), torch.full((1, 3, 4, 4), -0.6)])
    # every pixel has e = 0.01 (first sample) or 0.09 (second): the weighted mean is e
    torch.testing.assert_close(point_score(pred, target), torch.tensor([0.01, 0.09]))


def test_point_score_of_a_perfect_prediction_is_zero() -> None:
    frames = torch.rand(2, 3, 4, 4) * 2 - 1  # (B, C, H, W)
    score = point_score(frames, frames)
    assert not torch.isnan(score).any()
    torch.testing.assert_close(score, torch.zeros(2))


def test_point_score_is_per_sample_and_gates_like_the_paper() -> None:
    pred, target = _two_pixels()
    pred = torch.cat([pred, target])  # (2, 1, 1, 2): a bad and a perfect prediction
    target = torch.cat([target, target])
    score = point_score(pred, target)
    assert score.shape == (2,)
    assert (score < 0.01).tolist() == [False, True]


def test_min_max_hand_values() -> None:
    np.testing.assert_allclose(min_max(np.array([2.0, 4.0, 3.0, 6.0])), [0.0, 0.5, 0.25, 1.0])


def test_min_max_of_a_constant_video_is_zeros() -> None:
    out = min_max(np.full(5, 7.5, dtype=np.float32))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, np.zeros(5))
    assert min_max(np.array([])).shape == (0,)
    np.testing.assert_array_equal(min_max(np.array([3.0])), [0.0])


def test_fused_abnormality_three_frames_by_hand() -> None:
    psnr_db = np.array([20.0, 30.0, 40.0])  # g = (0, 1/2, 1)
    distance = np.array([0.2, 0.1, 0.4])  # g = (1/3, 0, 1); 1 - g = (2/3, 1, 0)
    # s = 0.6 * g(P) + 0.4 * (1 - g(D)) = (4/15, 0.7, 0.6); abnormality 1 - s
    out = fused_abnormality(psnr_db, distance, alpha=0.6)
    assert out.shape == (3,)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [11 / 15, 0.3, 0.4])


def test_fused_abnormality_extremes_of_alpha() -> None:
    psnr_db = np.array([20.0, 30.0, 40.0])
    distance = np.array([0.2, 0.1, 0.4])
    np.testing.assert_allclose(fused_abnormality(psnr_db, distance, 1.0), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(fused_abnormality(psnr_db, distance, 0.0), [1 / 3, 0.0, 1.0])


def test_fused_abnormality_of_a_constant_video_has_no_nan() -> None:
    out = fused_abnormality(np.full(4, 30.0), np.full(4, 0.1), alpha=0.7)
    # g = 0 for both: s = 0.3 * (1 - 0) = 0.3, abnormality 0.7 everywhere
    np.testing.assert_allclose(out, np.full(4, 0.7))


def test_fused_abnormality_validates() -> None:
    with pytest.raises(ValueError, match="one length"):
        fused_abnormality(np.zeros(3), np.zeros(4), 0.6)
    with pytest.raises(ValueError, match="alpha"):
        fused_abnormality(np.zeros(3), np.zeros(3), 1.5)


def test_each_video_is_normalised_apart() -> None:
    # g(.) spans one video: the same fused score per video as Eq. (13) computed by hand.
    np.testing.assert_allclose(
        fused_abnormality(np.array([20.0, 30.0, 40.0]), np.array([0.2, 0.1, 0.4]), 0.6),
        [11 / 15, 0.3, 0.4],
    )
    # video 02: g(P) = (0, 1), 1 - g(D) = (0, 1): s = (0, 1)
    np.testing.assert_allclose(
        fused_abnormality(np.array([10.0, 12.0]), np.array([5.0, 1.0]), 0.6), [1.0, 0.0]
    )
