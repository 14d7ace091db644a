"""The evaluation report: ranges, top segments and the files of ``write_report``."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import matplotlib.image
import numpy as np
import pytest

from mnad.errors import UserError
from mnad.metrics import roc_auc
from pipelines.score.report import (
    Segment,
    VideoScores,
    anomalous_ranges,
    default_threshold,
    pooled_roc,
    report_gap,
    segment_picture,
    top_segments,
    video_auc,
    write_report,
)
from pipelines.score.report.page import time_span

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_video(
    video_id: str,
    score: np.ndarray,
    label: np.ndarray | None = None,
    *,
    first: int = 4,
    fps: float | None = None,
) -> VideoScores:
    """A video whose frames ``first, first + 1, ...`` carry ``score``; PSNR mirrors it."""
    score = np.asarray(score, dtype=np.float64)
    return VideoScores(
        video_id=video_id,
        frame_index=np.arange(first, first + score.size),
        score=score,
        label=label,
        psnr=40.0 - 10.0 * score,
        feature_distance=0.01 + 0.02 * score,
        fps=fps,
    )


def two_bumps() -> np.ndarray:
    """100 frames at 0.1 with a bump to 0.7 (frames 24..28) and one to 0.95 (frames 64..69)."""
    score = np.full(100, 0.1)
    score[20:25] = [0.4, 0.6, 0.7, 0.6, 0.4]
    score[60:66] = [0.5, 0.8, 0.95, 0.9, 0.6, 0.3]
    return score


# ---------------------------------------------------------------------------------------------
# anomalous_ranges


def test_anomalous_ranges_runs() -> None:
    frames = np.arange(10)
    labels = np.array([0, 1, 1, 0, 1, 1, 1, 0, 0, 1])
    assert anomalous_ranges(frames, labels) == [(1, 2), (4, 6), (9, 9)]


def test_anomalous_ranges_gap_breaks_a_run() -> None:
    frames = np.array([4, 5, 6, 8, 9, 20])
    labels = np.array([1, 1, 1, 1, 1, 1])
    assert anomalous_ranges(frames, labels) == [(4, 6), (8, 9), (20, 20)]


def test_anomalous_ranges_unknown_is_not_anomalous() -> None:
    frames = np.arange(5, 10)
    assert anomalous_ranges(frames, np.array([1, -1, 1, 1, -1])) == [(5, 5), (7, 8)]


@pytest.mark.parametrize(
    "labels", [None, np.zeros(4, dtype=np.int8), np.full(4, -1, dtype=np.int8)]
)
def test_anomalous_ranges_none(labels: np.ndarray | None) -> None:
    assert anomalous_ranges(np.arange(4), labels) == []


def test_anomalous_ranges_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="frame_index"):
        anomalous_ranges(np.arange(4), np.zeros(3))


# ---------------------------------------------------------------------------------------------
# top_segments


def test_top_segments_two_bumps_ranked_by_peak_with_times() -> None:
    video = make_video("v", two_bumps(), first=4, fps=10.0)
    segments = top_segments(video, k=3, threshold=0.5)
    # array index i is frame i + 4
    assert segments == [
        Segment("v", 64, 68, 66, 0.95, 6.4, 6.9),
        Segment("v", 25, 27, 26, 0.7, 2.5, 2.8),
    ]
    assert [s.n_frames for s in segments] == [5, 3]


def test_top_segments_k_min_length_and_frames_only() -> None:
    video = make_video("v", two_bumps(), first=0)
    assert [s.peak_frame for s in top_segments(video, k=1, threshold=0.5)] == [62]
    assert [s.first_frame for s in top_segments(video, threshold=0.5, min_length=4)] == [60]
    assert top_segments(video, k=0) == []
    assert all(s.start_s is None and s.end_s is None for s in top_segments(video))


def test_top_segments_default_threshold_finds_both_bumps() -> None:
    video = make_video("v", two_bumps(), first=0)
    threshold = default_threshold(video.score)
    assert 0.1 < threshold < 0.7
    assert [(s.peak_frame, s.peak_score) for s in top_segments(video)] == [(62, 0.95), (22, 0.7)]


def test_top_segments_gap_splits_a_run() -> None:
    video = VideoScores(
        "g",
        frame_index=np.array([0, 1, 2, 10, 11]),
        score=np.array([0.0, 0.9, 0.8, 0.7, 0.0]),
        label=None,
        psnr=np.zeros(5),
        feature_distance=np.zeros(5),
    )
    segments = top_segments(video, threshold=0.5)
    assert [(s.first_frame, s.last_frame) for s in segments] == [(1, 2), (10, 10)]


def test_top_segments_max_gap_joins_a_noisy_event() -> None:
    score = np.zeros(40)
    score[[10, 11, 13, 14, 15, 18, 30]] = [0.6, 0.7, 0.9, 0.6, 0.6, 0.8, 0.5]
    video = make_video("n", score, first=0, fps=10.0)
    plain = top_segments(video, k=5, threshold=0.5)
    assert [(s.first_frame, s.last_frame) for s in plain] == [
        (13, 15),
        (18, 18),
        (10, 11),
        (30, 30),
    ]
    joined = top_segments(video, k=5, threshold=0.5, max_gap=2)
    assert [(s.first_frame, s.last_frame, s.peak_frame) for s in joined] == [
        (10, 18, 13),
        (30, 30, 30),
    ]
    assert [s.first_frame for s in top_segments(video, threshold=0.5, max_gap=2, min_length=2)] == [
        10
    ]
    assert report_gap(video) == 10 and report_gap(make_video("x", score)) == 25


def test_top_segments_constant_and_single_frame() -> None:
    constant = make_video("c", np.full(20, 0.3))
    assert default_threshold(constant.score) == np.inf
    assert top_segments(constant) == []
    single = make_video("s", [0.8], fps=25.0)
    assert top_segments(single) == []
    assert top_segments(single, threshold=0.5) == [Segment("s", 4, 4, 4, 0.8, 0.16, 0.2)]


def test_video_scores_names_the_video_on_bad_lengths() -> None:
    with pytest.raises(ValueError, match="'cam7'.*psnr"):
        VideoScores("cam7", np.arange(3), np.zeros(3), None, np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="'cam7'.*label"):
        VideoScores("cam7", np.arange(3), np.zeros(3), np.zeros(4), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="'cam7'.*ascending"):
        VideoScores("cam7", np.array([0, 2, 1]), np.zeros(3), None, np.zeros(3), np.zeros(3))


# ---------------------------------------------------------------------------------------------
# write_report


def small_render(calls: list[tuple[str, int]]):
    """A render callable returning small arrays, recording what it was asked for."""

    def render(video_id: str, frame_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calls.append((video_id, frame_index))
        rng = np.random.default_rng(frame_index)
        frame = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
        prediction = rng.random((16, 24, 1))
        error = rng.random((16, 24)) * 0.05
        return frame, prediction, error

    return render


def labelled_videos() -> list[VideoScores]:
    rng = np.random.default_rng(0)
    videos = []
    for name, (lo, hi) in {"Test001": (30, 60), "Test002": (10, 25)}.items():
        labels = np.zeros(80, dtype=np.int8)
        labels[lo:hi] = 1
        score = np.clip(0.15 + 0.6 * labels + rng.normal(0, 0.08, 80), 0, 1)
        videos.append(make_video(name, score, labels, fps=25.0))
    return videos


class _Links(HTMLParser):
    """Collects href/src values and element ids of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)
            if name == "id" and value is not None:
                self.ids.add(value)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 10 and image.shape[1] > 10


def assert_links_resolve(out: Path, page: str) -> _Links:
    parser = _Links()
    parser.feed(page)
    assert parser.links
    for link in parser.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("/"), link
        if not parts.path:
            assert parts.fragment in parser.ids, link
        else:
            assert (out / unquote(parts.path)).is_file(), link
    return parser


def test_write_report_files_links_metrics_and_escaping(tmp_path: Path) -> None:
    videos = [*labelled_videos(), make_video("<b>x", two_bumps(), fps=None)]
    calls: list[tuple[str, int]] = []
    metrics = {"micro_auc": 0.91234, "eer": 0.125, "frames": 260}
    files = write_report(
        videos,
        tmp_path / "report",
        title="Ped2 <score> run",
        metrics=metrics,
        roc=pooled_roc(videos),
        render=small_render(calls),
    )
    out = tmp_path / "report"

    assert files.index == out / "index.html" and files.roc == out / "roc.png"
    assert set(files.video_plots) == {"Test001", "Test002", "<b>x"}
    assert files.video_plots["Test001"] == out / "videos" / "Test001.png"
    for path in [files.roc, *files.video_plots.values(), *files.segment_images]:
        assert_png(path)
    assert len(files.segment_images) == len(files.segments) == len(calls) > 3
    assert {s.video_id for s in files.segments} == {"Test001", "Test002", "<b>x"}
    assert ("<b>x", 66) in calls  # the unlabelled video's top peak was rendered

    page = files.index.read_text(encoding="utf-8")
    assert_links_resolve(out, page)
    assert "micro_auc" in page and "0.9123" in page and "260" in page
    assert "&lt;b&gt;x" in page and "<b>x" not in page
    assert "Ped2 &lt;score&gt; run" in page
    assert "<script" not in page and "http" not in page
    auc1 = roc_auc(videos[0].score, videos[0].label)
    assert f"{auc1:.3f}" in page
    first = next(s for s in files.segments if s.video_id == "Test001")
    assert first.start_s == first.first_frame / 25 and first.end_s == (first.last_frame + 1) / 25
    span = f"00:{first.start_s:04.1f} – 00:{first.end_s:04.1f}"
    assert span == time_span(first) and span in page  # its time span, mm:ss.s


def test_write_report_edge_videos_without_roc_or_render(tmp_path: Path) -> None:
    videos = [
        make_video("single", [0.4], np.array([1], dtype=np.int8)),
        make_video("flat", np.full(30, 0.5), np.full(30, -1, dtype=np.int8), fps=30.0),
        make_video("a$b", two_bumps()),
    ]
    files = write_report(videos, tmp_path, title="edges")
    assert files.roc is None and files.segment_images == []
    assert [s.video_id for s in files.segments] == ["a$b", "a$b"]
    for path in files.video_plots.values():
        assert_png(path)
    page = files.index.read_text(encoding="utf-8")
    assert_links_resolve(tmp_path, page)
    assert "No segment stands out" in page
    assert video_auc(videos[0]) is None and video_auc(videos[1]) is None


def test_write_report_pictures_of_unlabelled_only(tmp_path: Path) -> None:
    videos = [*labelled_videos(), make_video("archive/cam 1", two_bumps())]
    calls: list[tuple[str, int]] = []
    files = write_report(
        videos, tmp_path, title="t", render=small_render(calls), pictures="unlabelled", top_k=1
    )
    assert calls == [("archive/cam 1", 66)]
    (image,) = files.segment_images
    assert image.parent == tmp_path / "segments" and "/" not in image.name
    assert_links_resolve(tmp_path, files.index.read_text(encoding="utf-8"))


def test_write_report_file_names_differ_beyond_case(tmp_path: Path) -> None:
    files = write_report(
        [make_video("Cam", [0.1, 0.5]), make_video("cam", [0.2])], tmp_path, title="t"
    )
    assert len({p.name.casefold() for p in files.video_plots.values()}) == 2
    assert all(p.is_file() for p in files.video_plots.values())


def test_write_report_rejects_no_videos_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no videos"):
        write_report([], tmp_path, title="empty")
    twice = [make_video("v", [0.1, 0.2]), make_video("v", [0.3])]
    with pytest.raises(ValueError, match="'v' appears twice"):
        write_report(twice, tmp_path, title="dup")


def test_render_out_of_range_names_the_video(tmp_path: Path) -> None:
    def render(video_id: str, frame_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frame = np.full((8, 8, 3), -0.5)  # still on the model's [-1, 1] scale
        return frame, frame, np.zeros((8, 8))

    with pytest.raises(ValueError, match=r"render\('cam', 62\).*\[0, 1\]"):
        write_report([make_video("cam", two_bumps(), first=0)], tmp_path, title="t", render=render)


def test_segment_picture_layout() -> None:
    frame = np.zeros((16, 20), dtype=np.uint8)
    prediction = np.ones((16, 20, 3))
    error = np.zeros((16, 20))
    error[3, 4] = 2.0
    picture, error_max = segment_picture(frame, prediction, error)
    factor = 8  # 16 rows enlarged to 128
    assert picture.dtype == np.uint8
    assert picture.shape == (16 * factor, (3 * 20 + 2 * 4) * factor, 3)
    assert error_max == 2.0
    assert (picture[:, : 20 * factor] == 0).all()  # black frame
    assert (picture[:, 24 * factor : 44 * factor] == 255).all()  # white prediction
    with pytest.raises(ValueError, match="error map"):
        segment_picture(frame, prediction, np.zeros((8, 8)))
