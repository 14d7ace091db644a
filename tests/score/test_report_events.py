"""The report of a calibrated job: summary, top events, videos with events, bounded size;
and the note on the per-video report of an uncalibrated one."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mnad.metrics import auc
from pipelines.schema import EVENTS_SCHEMA, SCORES_SCHEMA
from pipelines.score.events import archive_events
from pipelines.score.report import (
    PER_VIDEO_NOTE,
    TOP_EVENTS,
    TOP_VIDEOS,
    Segment,
    pooled_roc,
    table_roc,
    video_scores,
    write_score_report,
)
from pipelines.score.report.page import time_span
from tests.score.test_report import assert_links_resolve, assert_png, small_render

THRESHOLD = 2.5
RATE = 0.001
METRICS = {
    "threshold": THRESHOLD,
    "events": 3.0,
    "alarm_rate": 0.0421,
    "calibration_alarm_rate": 0.00098,
    "calibration_held_out_alarm_rate": 0.00131,
    "events_per_hour": 61.5,
    "micro_auc": 0.875,
    "macro_auc": 0.8125,
    "calibrated_micro_auc": 0.875,
    "per_video_micro_auc": 0.79,
    "anomalies": 2.0,
    "anomalies_found": 0.5,
    "events_on_normal": 1.0,
}

Video = tuple[str, np.ndarray, np.ndarray | None]
"""(video_id, calibrated score per frame, labels or None)."""


def scores_table(videos: Sequence[Video], first: int = 4) -> pa.Table:
    """A SCORES_SCHEMA table of videos scored from frame ``first`` on, sorted by video; the
    job's ``score`` is the calibrated one."""
    columns: dict[str, list] = {name: [] for name in SCORES_SCHEMA.names}
    for video_id, score, label in sorted(videos, key=lambda v: v[0]):
        n = score.size
        span = max(float(score.max() - score.min()), 1e-9)
        columns["dataset"] += ["synth"] * n
        columns["video_id"] += [video_id] * n
        columns["frame_index"] += list(range(first, first + n))
        columns["psnr"] += list(35.0 - score)
        columns["feature_distance"] += list(0.01 + 0.001 * score)
        columns["point_score"] += list(score)
        columns["memory_updated"] += [False] * n
        columns["score"] += list(score)
        columns["label"] += list(np.full(n, -1) if label is None else label)
        columns["score_per_video"] += list((score - score.min()) / span)
        columns["score_calibrated"] += list(score)
    return pa.table(columns, schema=SCORES_SCHEMA)


def bumps(n: int, spans: Sequence[tuple[int, int, float]], seed: int = 0) -> np.ndarray:
    """Calibrated scores near 0 with bumps of height ``peak`` over array indices [a, b)."""
    score = np.random.default_rng(seed).normal(0.0, 0.3, n)
    for a, b, peak in spans:
        score[a:b] = peak - 0.1 * np.abs(np.arange(a, b) - (a + b) // 2)
    return score


def labelled_archive() -> tuple[list[Video], dict[str, tuple[float | None, float]]]:
    """cam_a (labelled, one event on the anomaly, one on normal frames), cam_b (unlabelled,
    the highest event), cam_c (labelled, no event), cam_d (no frame rate, one event)."""
    label_a = np.zeros(120, dtype=np.int8)
    label_a[60:80] = 1
    videos = [
        ("cam_a", bumps(120, [(20, 26, 4.0), (62, 74, 6.0)], seed=1), label_a),
        ("cam_b", bumps(100, [(40, 50, 9.0)], seed=2), None),
        ("cam_c", bumps(80, [], seed=3), np.zeros(80, dtype=np.int8)),
        ("cam_d", bumps(90, [(10, 14, 5.0)], seed=4), None),
    ]
    clock = {"cam_a": (25.0, 0.0), "cam_b": (10.0, 3600.0), "cam_c": (25.0, 0.0)}
    return videos, clock


def events_section(page: str) -> str:
    return page[page.index("<h2>Top events") : page.index("<h2>Videos with events")]


def event_rows(page: str) -> list[dict[str, str]]:
    """The top-events table's rows: column heading -> the cell's text."""
    section = events_section(page)
    heads = re.findall(r"<th>([^<]*)</th>", section)
    rows = []
    for row in re.findall(r"<tr><td>(.*?)</tr>", section):
        cells = re.findall(r"(?:^|<td[^>]*>)(.*?)</td>", row)
        rows.append(dict(zip(heads, [re.sub(r"<[^>]*>", "", c) for c in cells], strict=True)))
    return rows


def ranked_rows(page: str) -> list[tuple[int, str]]:
    """(rank, video) of each row of the top-events table."""
    return [(int(row["rank"]), row["video"]) for row in event_rows(page)]


def test_events_report_leads_with_summary_and_ranked_events(tmp_path: Path) -> None:
    videos, clock = labelled_archive()
    frames = scores_table(videos)
    events = archive_events(frames, THRESHOLD, 0.2, clock)
    calls: list[tuple[str, int]] = []
    out = tmp_path / "report"
    local = write_score_report(
        frames,
        str(out),
        title="archive <1>",
        metrics=METRICS,
        render=small_render(calls),
        events=events,
        threshold=THRESHOLD,
        false_alarm_rate=RATE,
        normalise="calibrated",
    )
    assert local == str(out)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert_links_resolve(out, page)
    heads = ["<h2>Summary", "<h2>Top events", "<h2>Videos with events", "<h2>ROC", "<h2>Metrics"]
    assert [page.index(h) for h in heads] == sorted(page.index(h) for h in heads)
    assert page.index("<h2>Summary") < page.index("<table")

    summary = page[: page.index("<h2>Top events")]
    assert "2.5 (calibrated scale)" in summary and "0.1% of normal frames" in summary
    assert "0.098%" in summary and "0.131%" in summary  # on calibration, held out
    assert "61.5" in summary and "4 in 3 of 4 videos" in summary
    assert "50% of 2 anomalous intervals" in summary and "1 of 4" in summary
    assert "robust z units" in summary and "0.79" in summary

    expected = [(r["rank"], r["video_id"]) for r in events.sort_by("rank").to_pylist()]
    assert ranked_rows(page) == expected and expected[0] == (1, "cam_b")
    assert calls == [(r["video_id"], r["peak_frame"]) for r in events.sort_by("rank").to_pylist()]
    for rank, _ in expected:
        assert_png(out / "events" / f"{rank}.png")
    assert "more in events.parquet" not in page
    # the anomalous column: cam_a's two events (one on the anomaly), unknown for cam_b, cam_d
    overlaps = {(r["video"], r["anomalous"]) for r in event_rows(page)}
    assert overlaps == {
        ("cam_a", "yes (12 frames)"),
        ("cam_a", "no"),
        ("cam_b", "—"),
        ("cam_d", "—"),
    }

    plots = sorted(p.name for p in (out / "videos").iterdir())
    assert plots == ["cam_a.png", "cam_b.png", "cam_d.png"]  # cam_c had no event
    assert "3 of 4 videos had events; 1 had none." in page and "cam_c" not in page
    shown = page[page.index("<h2>Videos with events") : page.index("<h2>ROC")]
    assert [shown.index(f'id="v-{v}"') for v in ("cam_b", "cam_a", "cam_d")] == sorted(
        shown.index(f'id="v-{v}"') for v in ("cam_b", "cam_a", "cam_d")
    )  # by highest peak
    assert_png(out / "roc.png")
    assert "archive &lt;1&gt;" in page and "<script" not in page and "http" not in page


def test_events_report_size_does_not_grow_with_the_archive(tmp_path: Path) -> None:
    def report(n_with: int, folder: Path) -> tuple[int, int, str]:
        videos: list[Video] = [
            (f"v{i:04d}", bumps(30, [(10, 14, 3.0 + i / 100), (20, 24, 3.0)], seed=i), None)
            for i in range(n_with)
        ]
        videos += [(f"w{i:04d}", bumps(30, [], seed=i), None) for i in range(10)]
        frames = scores_table(videos)
        events = archive_events(frames, THRESHOLD, 0.0, {})
        assert events.num_rows == 2 * n_with
        metrics = {k: v for k, v in METRICS.items() if "auc" not in k and "anomal" not in k}
        calls: list[tuple[str, int]] = []
        write_score_report(
            frames,
            str(folder),
            title="t",
            metrics=metrics,
            render=small_render(calls),
            events=events,
            false_alarm_rate=RATE,
            normalise="calibrated",
        )
        assert len(calls) == TOP_EVENTS
        page = (folder / "index.html").read_text(encoding="utf-8")
        assert_links_resolve(folder, page)
        assert not (folder / "roc.png").exists()  # no labels
        assert f"and {2 * n_with - TOP_EVENTS:,} more in events.parquet" in page
        assert f"{n_with:,} of {n_with + 10:,} videos had events; 10 had none." in page
        assert "frame rate unknown" in page or "events_per_hour" in metrics
        files = len(list((folder / "events").iterdir())), len(list((folder / "videos").iterdir()))
        return (*files, page)

    big_events, big_plots, big = report(300, tmp_path / "big")
    small_events, small_plots, _ = report(60, tmp_path / "small")
    assert (big_events, big_plots) == (small_events, small_plots) == (TOP_EVENTS, TOP_VIDEOS)
    assert [rank for rank, _ in ranked_rows(big)] == list(range(1, TOP_EVENTS + 1))
    assert ranked_rows(big)[0][1] == "v0299"  # the highest bump
    assert big.count('<div class="video"') == TOP_VIDEOS and "v0000" not in big


def test_event_times_in_the_video_clock_or_a_dash(tmp_path: Path) -> None:
    assert time_span(Segment("v", 50, 59, 55, 3.0, 2.0, 2.4)) == "00:02.0 – 00:02.4"
    assert time_span(Segment("v", 0, 1, 0, 3.0, 3725.0, 3725.26)) == "1:02:05.0 – 1:02:05.3"
    assert time_span(Segment("v", 0, 1, 0, 3.0, 59.96, 61.0)) == "01:00.0 – 01:01.0"
    assert time_span(Segment("v", 0, 1, 0, 3.0, None, None)) == "—"

    videos, clock = labelled_archive()
    frames = scores_table(videos)
    events = archive_events(frames, THRESHOLD, 0.2, clock)
    write_score_report(
        frames, str(tmp_path), title="t", metrics=METRICS, render=None, events=events
    )
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    cells = {row["video"]: row["time"] for row in event_rows(page)}
    cam_b = events.filter(pa.compute.equal(events.column("video_id"), "cam_b")).to_pylist()[0]
    # cam_b's clock starts an hour in, at 10 fps: frame 44 (array index 40) is at 1:00:04.4
    assert cam_b["first_frame"] == 44 and cam_b["start_s"] == pytest.approx(3604.4)
    assert cells["cam_b"] == f"1:00:04.4 – 1:00:{cam_b['end_s'] - 3600:04.1f}"
    assert cells["cam_d"] == "—"  # no frame rate
    assert not (tmp_path / "events").exists()  # no render, no pictures


def test_events_report_on_per_video_scores_and_with_no_events(tmp_path: Path) -> None:
    videos, clock = labelled_archive()
    frames = scores_table(videos)
    per_video = frames.set_column(
        frames.schema.get_field_index("score"),
        frames.schema.field("score"),
        frames.column("score_per_video"),
    )
    events = archive_events(frames, THRESHOLD, 0.2, clock)
    write_score_report(
        per_video,
        str(tmp_path / "pv"),
        title="t",
        metrics=METRICS,
        render=None,
        events=events,
        threshold=THRESHOLD,
        normalise="per-video",
    )
    page = (tmp_path / "pv" / "index.html").read_text(encoding="utf-8")
    assert "normalised per video" in page and "target false-alarm rate" not in page
    assert len(list((tmp_path / "pv" / "videos").iterdir())) == 3

    none = pa.table({n: [] for n in EVENTS_SCHEMA.names}, schema=EVENTS_SCHEMA)
    write_score_report(
        frames, str(tmp_path / "none"), title="t", metrics={}, render=None, events=none,
        threshold=99.0, false_alarm_rate=RATE, normalise="calibrated",
    )  # fmt: skip
    page = (tmp_path / "none" / "index.html").read_text(encoding="utf-8")
    assert "No frame scored over the threshold" in page
    assert "0 of 4 videos had events; 4 had none." in page
    assert list((tmp_path / "none" / "videos").iterdir()) == []
    with pytest.raises(ValueError, match="normalise"):
        write_score_report(
            frames, str(tmp_path / "x"), title="t", metrics=METRICS, render=None,
            events=events, normalise="minmax",
        )  # fmt: skip


def test_without_events_the_per_video_report_and_its_note(tmp_path: Path) -> None:
    videos, _ = labelled_archive()
    frames = scores_table(videos)
    calls: list[tuple[str, int]] = []
    write_score_report(
        frames, str(tmp_path), title="t", metrics={"micro_auc": 0.8}, render=small_render(calls)
    )
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert_links_resolve(tmp_path, page)
    assert page.index('<p class="note">') < page.index("<h2>")
    assert "normalised per video" in PER_VIDEO_NOTE and "mnad calibrate" in PER_VIDEO_NOTE
    assert "reaches 1.0" in PER_VIDEO_NOTE and "threshold" in PER_VIDEO_NOTE
    assert "<h2>Per video: score and top segments</h2>" in page and "Top events" not in page
    assert len(list((tmp_path / "videos").iterdir())) == 4 and calls


def test_table_roc_is_the_pooled_roc_of_the_videos() -> None:
    videos, _ = labelled_archive()
    frames = scores_table(videos)
    fpr, tpr = table_roc(frames)
    pooled = pooled_roc(video_scores(frames))
    assert pooled is not None
    assert auc(fpr, tpr) == pytest.approx(auc(*pooled))
    unlabelled = scores_table([v for v in videos if v[2] is None])
    assert table_roc(unlabelled) is None
