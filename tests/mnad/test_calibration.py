"""mnad.calibration against values worked out by hand: the fixed scale, thresholds, the
held-out alarm rate, the trailing mean and events."""

from __future__ import annotations

import numpy as np
import pytest

from mnad.calibration import MAD_TO_STD, Calibration, events, fit, smooth
from pipelines.calibrate.driver import figures_of, warning


def _two_videos() -> Calibration:
    # PSNR 10, 11, 12, 13, 14 (median 12, MAD 1); distance 1..5 (median 3, MAD 1).
    return fit(
        {"a": (np.array([10.0, 11, 12]), np.array([1.0, 2, 3])),
         "b": (np.array([13.0, 14]), np.array([4.0, 5]))},
        alpha=0.5,
    )  # fmt: skip


def test_the_scale_is_the_median_and_the_mad_of_the_calibration_frames() -> None:
    c = _two_videos()
    assert (c.psnr_median, c.distance_median) == (12.0, 3.0)
    assert c.psnr_scale == pytest.approx(MAD_TO_STD) and c.distance_scale == pytest.approx(
        MAD_TO_STD
    )
    # A frame of PSNR 9 (3 below) and distance 6 (3 above): 0.5 * 3/s + 0.5 * 3/s = 3/s.
    assert c.score(np.array([9.0]), np.array([6.0]))[0] == pytest.approx(3 / MAD_TO_STD)
    assert c.score(np.array([12.0]), np.array([3.0]))[0] == 0.0  # the typical frame
    again = Calibration.from_json(c.to_json())
    assert again.summary() == c.summary() and again.threshold(0.2) == c.threshold(0.2)


def test_the_threshold_leaves_at_most_the_target_share_of_frames_over_it() -> None:
    c = _two_videos()
    # Each frame: 0.5 * (12 - p) / s + 0.5 * (d - 3) / s with p - 12 = d - 3: all zero.
    assert np.allclose(np.concatenate(c.scores), 0.0)
    skewed = fit({"a": (np.full(9, 12.0), np.arange(9.0))}, alpha=0.0)  # distance only
    # Scores (0..8 - 4) / (1.4826 * 2): the 0.8 quantile taken upwards is frame 7 of 9.
    assert skewed.threshold(0.2) == pytest.approx((7 - 4) / (MAD_TO_STD * 2))
    assert skewed.alarm_rate(skewed.threshold(0.2)) == pytest.approx(1 / 9)  # only frame 8
    assert skewed.threshold(0.0) == pytest.approx(4 / (MAD_TO_STD * 2))  # the largest


def test_the_held_out_rate_scores_each_video_at_the_others_threshold() -> None:
    quiet = np.zeros(20), np.linspace(0, 1, 20)
    loud = np.zeros(20), np.linspace(10, 11, 20)  # far above what the quiet video shows
    c = fit({"quiet": quiet, "loud": loud}, alpha=0.0)
    # At the quiet video's threshold every frame of the loud one alarms, and the reverse
    # none: half of all frames.
    assert c.held_out_alarm_rate(0.01) == pytest.approx(0.5)
    assert "calibrate on more normal videos" in warning(figures_of(c, 0.01))
    alike = fit({"a": quiet, "b": quiet}, alpha=0.0)
    assert alike.held_out_alarm_rate(0.01) == 0.0 and warning(figures_of(alike, 0.01)) is None
    assert fit({"a": quiet}, alpha=0.0).held_out_alarm_rate(0.01) is None


def test_smooth_is_a_trailing_mean() -> None:
    assert smooth(np.array([1.0, 2, 3, 4]), 2).tolist() == [1.0, 1.5, 2.5, 3.5]
    assert smooth(np.array([3.0, 0, 0, 6]), 3).tolist() == [3.0, 1.5, 1.0, 2.0]
    x = np.random.default_rng(0).normal(size=50)
    assert np.allclose(smooth(x[:20], 5), smooth(x, 5)[:20])  # reads no later frame
    with pytest.raises(ValueError, match=">= 1"):
        smooth(x, 0)


def test_events_are_runs_over_the_threshold_joined_across_short_gaps() -> None:
    index = np.arange(10, 20)
    scores = np.array([0, 5, 6, 0, 0, 0, 7, 0, 9, 0.0])
    # Runs: frames 11-12, 16, 18. Gap 12->16 has 3 frames between, 16->18 one.
    found = events(index, scores, 1.0, merge_gap=1)
    assert [(e.first_frame, e.last_frame, e.peak_frame, e.frames) for e in found] == [
        (11, 12, 12, 2), (16, 18, 18, 2)]  # fmt: skip
    assert [e.first_frame for e in events(index, scores, 1.0, merge_gap=3)] == [11]
    assert events(index, scores, 9.0, merge_gap=3) == []  # strictly over
