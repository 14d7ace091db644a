"""Frame-level ground truth in the formats that the public data sets ship.

- UCSD ``.m`` text: ``TestVideoFile{end+1}.gt_frame = [61:180];`` per test video, 1-based
  inclusive ranges, several per video allowed (``[5:90, 140:200]``).
- ano_pred ``.mat``: ``gt``, one 2xK array of [start; end] (1-based, inclusive) per video.
- Avenue ``testing_label_mask/<n>_label.mat``: ``volLabel``, one pixel mask per frame; a frame
  is anomalous if its mask has any pixel set.
- ShanghaiTech ``test_frame_mask/<video>.npy``: one 0/1 per frame.
- The paper code's ``frame_labels_<name>.npy``: all test frames of all videos concatenated in
  sorted video order, shape (N,) or (1, N).

Each test video gets a :class:`LabelSource` when the layout is discovered, on the driver
(small, it travels with the video to its Ray task). The task (:mod:`pipelines.ingest.video`)
loads it as :class:`FrameLabels`, which hands out labels chunk by chunk while the video
decodes and checks them against the frame count once it is known: that is where a length
that disagrees with the frames is caught.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
import scipy.io

from pipelines.schema import LABEL_UNKNOWN

_GT_FRAME = re.compile(r"gt_frame\s*=\s*\[([^\]]*)\]")
_RANGE = re.compile(r"(\d+)\s*:\s*(\d+)")

Ranges = tuple[tuple[int, int], ...]  # 1-based inclusive (start, end) pairs


class LabelError(Exception):
    """Ground truth that cannot be read or does not fit the video's frames."""


@dataclass(frozen=True)
class LabelSource:
    """One video's ground truth as the source gives it; exactly one field is set.

    ranges: 1-based inclusive anomalous ranges. flags: one 0/1 per frame. mask_file:
    a per-video file (Avenue ``.mat`` masks or ShanghaiTech ``.npy``) read at decode time,
    so that the driver never loads pixel masks. error: the ground truth is known to be
    unusable for this video (the message says why).
    """

    origin: str  # the label file, for messages
    ranges: Ranges | None = None
    flags: tuple[int, ...] | None = None
    mask_file: str | None = None
    error: str | None = None

    def load(self, fs: pafs.FileSystem | None = None) -> FrameLabels:
        """The labels ready to hand out chunk by chunk (reads a per-video file if any)."""
        if self.error is not None:
            raise LabelError(self.error)
        if self.ranges is not None:
            return FrameLabels(self.origin, ranges=self.ranges, fill=0)
        if self.flags is not None:
            return FrameLabels(self.origin, flags=np.asarray(self.flags, dtype=np.int8))
        assert self.mask_file is not None
        return FrameLabels(
            self.origin, flags=read_mask_file(self.mask_file, fs or pafs.LocalFileSystem())
        )

    def resolve(self, n_frames: int, fs: pafs.FileSystem | None = None) -> np.ndarray:
        """One int8 label per frame (1 anomalous, 0 normal); LabelError if they disagree."""
        labels = self.load(fs)
        labels.check(n_frames)
        return labels.chunk(0, n_frames)


@dataclass(frozen=True)
class FrameLabels:
    """One video's labels, handed out chunk by chunk while the video decodes; the frame
    count is checked once it is known (:meth:`check`)."""

    origin: str
    flags: np.ndarray | None = None  # (n,) int8, one per frame, when the source lists them
    ranges: Ranges = ()  # 1-based inclusive anomalous ranges
    fill: int = LABEL_UNKNOWN  # label of the frames that no flag or range covers

    @classmethod
    def constant(cls, label: int) -> FrameLabels:
        """The same label for every frame (0 for training footage, -1 without ground truth)."""
        return cls("", fill=label)

    def chunk(self, start: int, n: int) -> np.ndarray:
        """Labels of frames ``start .. start+n-1`` (0-based), int8 (n,)."""
        if self.flags is not None:
            out = np.full(n, self.fill, dtype=np.int8)
            part = self.flags[start : start + n]
            out[: len(part)] = part
            return out
        index = np.arange(start + 1, start + n + 1)  # (n,) 1-based frame numbers
        out = np.full(n, self.fill, dtype=np.int8)
        for first, last in self.ranges:
            out[(index >= first) & (index <= last)] = 1
        return out

    def check(self, n_frames: int) -> None:
        """LabelError if the labels do not fit a video of ``n_frames`` frames."""
        if self.flags is not None and len(self.flags) != n_frames:
            raise LabelError(f"{self.origin}: {len(self.flags)} labels for {n_frames} frames")
        for first, last in self.ranges:
            if not 1 <= first <= last <= n_frames:
                raise LabelError(
                    f"{self.origin}: range [{first}:{last}] is outside frames 1..{n_frames}"
                )


def parse_ucsd_m(text: str) -> list[Ranges]:
    """Ranges per test video from the text of a UCSD ``UCSDped?.m`` file, in file order."""
    videos = []
    for line in text.splitlines():
        code = line.split("%", 1)[0]  # MATLAB comment
        match = _GT_FRAME.search(code)
        if match:
            videos.append(tuple((int(a), int(b)) for a, b in _RANGE.findall(match.group(1))))
    return videos


def ano_pred_ranges(gt: np.ndarray) -> list[Ranges]:
    """Ranges per video from the ``gt`` cell array of an ano_pred ``.mat`` file."""
    videos = []
    for cell in np.asarray(gt, dtype=object).reshape(-1):
        pairs = np.asarray(cell, dtype=np.int64).reshape(2, -1)  # (2, K): [start; end]
        videos.append(tuple((int(s), int(e)) for s, e in pairs.T))
    return videos


def flags_from_masks(masks: np.ndarray) -> np.ndarray:
    """0/1 per frame from Avenue's ``volLabel`` cell of per-frame pixel masks."""
    cells = np.asarray(masks, dtype=object).reshape(-1)
    return np.array([np.any(m) for m in cells], dtype=np.int8)


def concatenated_flags(flags: np.ndarray) -> np.ndarray:
    """The paper code's ``frame_labels_*.npy`` as one 0/1 vector (accepts (N,) or (1, N))."""
    flags = np.asarray(flags)
    if flags.ndim == 2 and 1 in flags.shape:
        flags = flags.reshape(-1)
    if flags.ndim != 1:
        raise LabelError(f"expected shape (N,) or (1, N), got {flags.shape}")
    return (flags != 0).astype(np.int8)


def split_concatenated(
    flags: np.ndarray, frame_counts: list[int], origin: str
) -> list[LabelSource]:
    """Per-video label sources from concatenated flags and the videos' frame counts (in
    sorted order).

    When the total disagrees, every video gets an error source naming both numbers.
    """
    total = sum(frame_counts)
    if len(flags) != total:
        message = (
            f"{origin}: {len(flags)} labels for {total} frames in {len(frame_counts)} test videos"
        )
        return [LabelSource(origin, error=message) for _ in frame_counts]
    bounds = np.cumsum([0, *frame_counts])
    return [
        LabelSource(origin, flags=tuple(int(x) for x in flags[a:b]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def read_bytes(path: str, fs: pafs.FileSystem) -> bytes:
    """The whole content of a (small) file."""
    with fs.open_input_stream(path) as f:
        return f.read()


def read_mat_variable(path: str, fs: pafs.FileSystem, name: str) -> np.ndarray:
    """One variable of a MATLAB ``.mat`` file (LabelError if unreadable or absent)."""
    try:
        mat = scipy.io.loadmat(io.BytesIO(read_bytes(path, fs)), variable_names=[name])
    except (ValueError, OSError, NotImplementedError) as err:
        raise LabelError(f"{path}: cannot read ({err})") from None
    if name not in mat:
        raise LabelError(f"{path}: no {name!r} variable")
    return mat[name]


def read_ranges_file(path: str, fs: pafs.FileSystem) -> list[Ranges]:
    """Ranges per video from a UCSD ``.m`` or an ano_pred ``.mat`` file."""
    if path.endswith(".m"):
        try:
            return parse_ucsd_m(read_bytes(path, fs).decode("utf-8", errors="replace"))
        except OSError as err:
            raise LabelError(f"{path}: cannot read ({err})") from None
    return ano_pred_ranges(read_mat_variable(path, fs, "gt"))


def read_mask_file(path: str, fs: pafs.FileSystem) -> np.ndarray:
    """0/1 per frame from an Avenue ``*_label.mat`` or a ShanghaiTech per-video ``.npy``."""
    if path.endswith(".npy"):
        return read_concatenated(path, fs)
    return flags_from_masks(read_mat_variable(path, fs, "volLabel"))


def read_concatenated(path: str, fs: pafs.FileSystem) -> np.ndarray:
    """0/1 per frame from a concatenated ``frame_labels_*.npy``."""
    try:
        data = read_bytes(path, fs)
        if not data.startswith(b"\x93NUMPY"):  # else np.load guesses a pickle and says so
            raise LabelError(f"{path}: not a NumPy .npy file")
        return concatenated_flags(np.load(io.BytesIO(data), allow_pickle=False))
    except (ValueError, OSError) as err:
        raise LabelError(f"{path}: cannot read ({err})") from None
