"""Ground-truth formats (pipelines.ingest.labels), natural order, and each layout
(pipelines.ingest.layouts) on small files of its real shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import scipy.io

from pipelines.errors import UserError
from pipelines.ingest.labels import (
    FrameLabels,
    LabelError,
    ano_pred_ranges,
    concatenated_flags,
    flags_from_masks,
    parse_ucsd_m,
    read_concatenated,
    read_mask_file,
    split_concatenated,
)
from pipelines.ingest.layouts import VideoSource, discover, id_key, natural_key

LOCAL = pafs.LocalFileSystem()


def _cells(arrays: list[np.ndarray]) -> np.ndarray:
    cells = np.empty((1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        cells[0, i] = a
    return cells


def test_natural_order_whatever_the_numbering() -> None:
    names = ["10.jpg", "9.jpg", "1.jpg", "100.jpg", "img2.png", "img10.png"]
    assert sorted(names, key=natural_key) == [
        "1.jpg", "9.jpg", "10.jpg", "100.jpg", "img2.png", "img10.png",
    ]  # fmt: skip
    assert id_key("01") == id_key("1") and id_key("01_0014") == "1_14"


def test_ucsd_m_with_several_ranges_and_comments() -> None:
    text = (
        "TestVideoFile = {};\n"
        "TestVideoFile{end+1}.gt_frame = [61:180];\n"
        "% TestVideoFile{end+1}.gt_frame = [1:2];\n"
        "TestVideoFile{end+1}.gt_frame = [5:90, 140:200];\n"
    )
    assert parse_ucsd_m(text) == [((61, 180),), ((5, 90), (140, 200))]


def test_ano_pred_mat_cells(tmp_path: Path) -> None:
    gt = _cells([np.array([[61], [180]]), np.array([[5, 140], [90, 200]])])
    scipy.io.savemat(tmp_path / "ped.mat", {"gt": gt})
    loaded = scipy.io.loadmat(tmp_path / "ped.mat")["gt"]
    assert ano_pred_ranges(loaded) == [((61, 180),), ((5, 90), (140, 200))]


def test_avenue_masks_any_pixel_is_anomalous(tmp_path: Path) -> None:
    masks = [np.zeros((4, 5), np.uint8) for _ in range(4)]
    masks[1][2, 3] = 1
    masks[3][:] = 1
    path = tmp_path / "1_label.mat"
    scipy.io.savemat(path, {"volLabel": _cells(masks)})
    np.testing.assert_array_equal(read_mask_file(str(path), LOCAL), [0, 1, 0, 1])
    np.testing.assert_array_equal(flags_from_masks(_cells(masks)), [0, 1, 0, 1])


@pytest.mark.parametrize("shape", [(5,), (1, 5)])
def test_concatenated_labels_either_shape(shape: tuple[int, ...]) -> None:
    flags = concatenated_flags(np.array([0, 1, 1, 0, 2]).reshape(shape))
    np.testing.assert_array_equal(flags, [0, 1, 1, 0, 1])
    sources = split_concatenated(flags, [2, 3], "f.npy")
    assert [s.resolve(n).tolist() for s, n in zip(sources, [2, 3], strict=True)] == [
        [0, 1], [1, 0, 1],
    ]  # fmt: skip


def test_concatenated_labels_of_wrong_length_fail_every_video() -> None:
    sources = split_concatenated(np.zeros(4, np.int8), [2, 3], "f.npy")
    for source in sources:
        with pytest.raises(LabelError, match="4 labels for 5 frames in 2 test videos"):
            source.resolve(2)
    with pytest.raises(LabelError, match=r"shape \(N,\) or \(1, N\)"):
        concatenated_flags(np.zeros((2, 3)))


def test_frame_labels_by_chunks_equal_the_whole() -> None:
    ranges = FrameLabels("x.m", ranges=((2, 3), (7, 7)), fill=0)
    chunks = np.concatenate([ranges.chunk(0, 4), ranges.chunk(4, 4)])
    np.testing.assert_array_equal(chunks, [0, 1, 1, 0, 0, 0, 1, 0])
    ranges.check(8)
    with pytest.raises(LabelError, match=r"x.m: range \[7:7\] is outside frames 1..6"):
        ranges.check(6)
    flags = FrameLabels("y.npy", flags=np.array([1, 0, 1], np.int8))
    np.testing.assert_array_equal(flags.chunk(2, 2), [1, -1])
    with pytest.raises(LabelError, match="y.npy: 3 labels for 4 frames"):
        flags.check(4)
    np.testing.assert_array_equal(FrameLabels.constant(0).chunk(5, 2), [0, 0])


def test_frames_layout_with_gaps_and_numbering_from_one(tmp_path: Path, media) -> None:
    media.frames(tmp_path / "training/frames/01", ["1.jpg", "2.jpg", "10.jpg"])
    media.frames(tmp_path / "testing/frames/02", ["0.jpg", "5.jpg", "9.jpg", "11.jpg"])
    media.frames(tmp_path / "testing/frames/10", ["000.jpg", "001.jpg"])
    (tmp_path / "x.m").write_text(
        "TestVideoFile{end+1}.gt_frame = [2:3];\nTestVideoFile{end+1}.gt_frame = [1:1];\n"
    )
    found = discover(str(tmp_path))
    assert found.layout == "frames" and found.label_file == str(tmp_path / "x.m")
    train, test2, test10 = found.videos
    assert (train.split, train.video_id, train.labels) == ("train", "01", None)
    assert [Path(f).name for f in train.frames] == ["1.jpg", "2.jpg", "10.jpg"]
    assert [Path(f).name for f in test2.frames] == ["0.jpg", "5.jpg", "9.jpg", "11.jpg"]
    assert test2.labels.resolve(4).tolist() == [0, 1, 1, 0]
    assert test10.labels.resolve(2).tolist() == [1, 0]
    assert VideoSource.from_json(test2.to_json()) == test2


def test_frames_layout_prefers_m_then_mat_then_npy(tmp_path: Path, media) -> None:
    media.frames(tmp_path / "testing/frames/01", ["0.jpg", "1.jpg", "2.jpg"])
    np.save(tmp_path / "frame_labels_x.npy", np.array([[1, 1, 0]]))
    assert discover(str(tmp_path)).videos[0].labels.resolve(3).tolist() == [1, 1, 0]
    scipy.io.savemat(tmp_path / "x.mat", {"gt": _cells([np.array([[3], [3]])])})
    assert discover(str(tmp_path)).videos[0].labels.resolve(3).tolist() == [0, 0, 1]


def test_ucsd_layout_tif_frames_skip_gt_folders(tmp_path: Path, media) -> None:
    media.frames(tmp_path / "Train/Train001", [f"{i:03d}.tif" for i in range(1, 4)])
    media.frames(tmp_path / "Test/Test001", [f"{i:03d}.tif" for i in range(1, 5)])
    media.frames(tmp_path / "Test/Test001_gt", [f"{i:03d}.bmp" for i in range(1, 5)])
    (tmp_path / "Test/UCSDped1.m").write_text("TestVideoFile{end+1}.gt_frame = [2:4];\n")
    found = discover(str(tmp_path))
    assert found.layout == "ucsd"
    assert [(v.split, v.video_id, len(v.frames)) for v in found.videos] == [
        ("train", "Train001", 3), ("test", "Test001", 4),
    ]  # fmt: skip
    assert found.videos[1].labels.resolve(4).tolist() == [0, 1, 1, 1]


def test_avenue_layout_pairs_videos_with_masks(tmp_path: Path, media) -> None:
    media.video(tmp_path / "training_videos/01.avi", 3)
    media.video(tmp_path / "testing_videos/01.avi", 3)
    media.video(tmp_path / "testing_videos/02.avi", 3)
    mask_dir = tmp_path / "ground_truth_demo/testing_label_mask"
    mask_dir.mkdir(parents=True)
    masks = [np.eye(3, dtype=np.uint8) * (i == 1) for i in range(3)]
    scipy.io.savemat(mask_dir / "1_label.mat", {"volLabel": _cells(masks)})
    found = discover(str(tmp_path))
    assert found.layout == "avenue"
    train, test1, test2 = found.videos
    assert train.split == "train" and train.path.endswith("training_videos/01.avi")
    assert test1.labels.resolve(3).tolist() == [0, 1, 0]
    with pytest.raises(LabelError, match="no label file for video 02"):
        test2.labels.resolve(3)


def test_shanghaitech_layout(tmp_path: Path, media) -> None:
    media.video(tmp_path / "training/videos/01_001.avi", 3)
    media.frames(tmp_path / "testing/frames/01_0014", ["000.jpg", "001.jpg", "002.jpg"])
    (tmp_path / "testing/test_frame_mask").mkdir(parents=True)
    np.save(tmp_path / "testing/test_frame_mask/01_0014.npy", np.array([0, 1, 1]))
    found = discover(str(tmp_path))
    assert found.layout == "shanghaitech"
    train, test = found.videos
    assert (train.split, train.video_id, train.frames) == ("train", "01_001", ())
    assert (test.split, test.video_id, len(test.frames)) == ("test", "01_0014", 3)
    assert test.labels.resolve(3).tolist() == [0, 1, 1]


def test_videos_layout_recurses_and_ignores_other_files(tmp_path: Path, media) -> None:
    media.video(tmp_path / "cam1/2024/a.mp4", 3)
    media.video(tmp_path / "b.avi", 3)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / ".hidden.mp4").write_text("")
    found = discover(str(tmp_path), videos_split="train")
    assert found.layout == "videos"
    assert [(v.split, v.video_id) for v in found.videos] == [
        ("train", "b"), ("train", "cam1__2024__a"),
    ]  # fmt: skip


def test_unknown_layout_and_missing_source(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(UserError, match="unknown layout"):
        discover(str(tmp_path))
    with pytest.raises(UserError, match="not a folder"):
        discover(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no videos found for layout 'avenue'"):
        discover(str(tmp_path), layout="avenue")


def test_ped2_labels_match_the_m_file(ped2: Path) -> None:
    found = discover(str(ped2))
    tests = [v for v in found.videos if v.split == "test"]
    per_video = parse_ucsd_m((ped2 / "UCSDped2.m").read_text())
    concatenated = np.load(ped2 / "frame_labels_ped2.npy")
    labels = [v.labels.resolve(len(v.frames)) for v in tests]
    for flags, ranges in zip(labels, per_video, strict=True):
        ((start, end),) = ranges
        assert flags[start - 1 : end].all() and flags.sum() == end - start + 1
    np.testing.assert_array_equal(np.concatenate(labels), concatenated)


def test_a_label_file_that_is_not_npy_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "labels.npy").write_text("0 1 1 0\n")
    with pytest.raises(LabelError, match=r"labels\.npy: not a NumPy \.npy file$"):
        read_concatenated(str(tmp_path / "labels.npy"), pafs.LocalFileSystem())
