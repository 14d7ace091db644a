"""Finding the videos of a data set as users hold it, and their ground truth.

Layouts (``--layout``), each as its public release ships:

- ``frames``: the paper code's layout (UCSD Ped2 in ``../shared/datasets``):
  ``training/frames/<video>/<n>.jpg``, ``testing/frames/<video>/<n>.jpg``, ground truth in a
  UCSD ``.m``, an ano_pred ``.mat`` or a concatenated ``frame_labels_*.npy`` at the top.
- ``ucsd``: the original UCSD release: ``Train/Train001/*.tif``, ``Test/Test001/*.tif``
  (``*_gt`` mask folders skipped), ground truth in ``Test/UCSDped?.m``.
- ``avenue``: ``training_videos/*.avi``, ``testing_videos/*.avi``, masks in
  ``.../testing_label_mask/<n>_label.mat`` (or an ano_pred ``.mat`` / UCSD ``.m`` at the top).
- ``shanghaitech``: ``training/videos/*.avi``, ``testing/frames/<video>/*.jpg``,
  ``testing/test_frame_mask/<video>.npy``.
- ``videos``: any folder of video files, no labels: the archive a user wants scored.

Runs on the ingest driver (and in :func:`pipelines.ingest.completion`). Discovery lists the
source once through a pyarrow file system, so s3:// and gs:// sources work as local folders
do. Frame files are ordered naturally (``2.jpg`` before ``10.jpg``),
whatever their first number and gaps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import pyarrow.fs as pafs

from pipelines.errors import UserError
from pipelines.ingest.labels import (
    LabelError,
    LabelSource,
    read_concatenated,
    read_ranges_file,
    split_concatenated,
)
from pipelines.storage import join, resolve

LAYOUTS = ("frames", "ucsd", "avenue", "shanghaitech", "videos")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_EXTENSIONS = (
    ".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".ts",
)  # fmt: skip

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``2.jpg`` < ``10.jpg``, ``a9`` < ``a10``."""
    return tuple(
        (0, int(part), part) if part.isdigit() else (1, 0, part.lower())
        for part in _DIGITS.split(name)
        if part
    )


def id_key(name: str) -> str:
    """A name with leading zeros dropped from its numbers, to pair ``01.avi`` with
    ``1_label.mat``."""
    return _DIGITS.sub(lambda m: str(int(m.group())), name)


@dataclass(frozen=True)
class VideoSource:
    """One input video: a video file, or a folder of frame files in natural order."""

    split: str  # "train" | "test"
    video_id: str
    path: str  # the video file or the frame folder (path inside the source file system)
    frames: tuple[str, ...] = ()  # frame files in order; empty for a video file
    labels: LabelSource | None = None  # None: training footage (normal) or no ground truth

    def to_json(self) -> str:
        """A plain-text form that travels through Ray Data as one string column."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VideoSource:
        raw = json.loads(text)
        labels = raw.pop("labels")
        if labels is not None:
            ranges = labels.pop("ranges")
            flags = labels.pop("flags")
            labels = LabelSource(
                **labels,
                ranges=None if ranges is None else tuple((a, b) for a, b in ranges),
                flags=None if flags is None else tuple(flags),
            )
        return cls(**{**raw, "frames": tuple(raw["frames"])}, labels=labels)


@dataclass(frozen=True)
class Discovery:
    """What a source holds: its layout, its videos in (split, natural id) order."""

    layout: str
    videos: tuple[VideoSource, ...]
    label_file: str | None = None


@dataclass
class Tree:
    """One recursive listing of a source folder, indexed by folder (paths relative to root)."""

    root: str
    files: dict[str, list[str]] = field(default_factory=dict)  # folder -> its file names
    dirs: set[str] = field(default_factory=set)  # every folder that holds a file, at any depth

    @classmethod
    def list(cls, fs: pafs.FileSystem, root: str) -> Tree:
        info = fs.get_file_info(root)
        if info.type != pafs.FileType.Directory:
            raise UserError(f"{root}: not a folder")
        tree = cls(root)
        for entry in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
            rel = entry.path[len(root.rstrip("/")) + 1 :]
            if entry.type == pafs.FileType.File and not _hidden(rel):
                folder, _, name = rel.rpartition("/")
                tree.files.setdefault(folder, []).append(name)
                while folder:
                    tree.dirs.add(folder)
                    folder = folder.rpartition("/")[0]
        return tree

    def has_dir(self, rel: str) -> bool:
        return rel in self.dirs

    def children(self, rel: str, extensions: tuple[str, ...]) -> list[str]:
        """Files directly in ``rel`` with one of ``extensions``, in natural order."""
        names = self.files.get(rel, [])
        return sorted((n for n in names if n.lower().endswith(extensions)), key=natural_key)

    def subdirs(self, rel: str) -> list[str]:
        """Immediate sub-folders of ``rel``, in natural order."""
        prefix = rel + "/"
        names = {d[len(prefix) :] for d in self.dirs if d.startswith(prefix)}
        return sorted((n for n in names if "/" not in n), key=natural_key)

    def walk(self) -> list[str]:
        """Every file, as a path relative to the root."""
        return [f"{d}/{n}" if d else n for d, names in self.files.items() for n in names]

    def abs(self, rel: str) -> str:
        return join(self.root, rel)


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def detect_layout(tree: Tree) -> str:
    """The layout of a source folder, from the folders its release is known by."""
    if tree.has_dir("Train") or tree.has_dir("Test"):
        return "ucsd"
    if tree.has_dir("training_videos") or tree.has_dir("testing_videos"):
        return "avenue"
    if tree.has_dir("training/videos") or tree.has_dir("testing/test_frame_mask"):
        return "shanghaitech"
    if tree.has_dir("training/frames") or tree.has_dir("testing/frames"):
        return "frames"
    if any(f.lower().endswith(VIDEO_EXTENSIONS) for f in tree.walk()):
        return "videos"
    raise UserError(
        f"{tree.root}: unknown layout: found none of Train/ Test/ (ucsd), training_videos/ "
        "(avenue), training/videos/ (shanghaitech), training/frames/ testing/frames/ (frames), "
        "or video files (videos)"
    )


def _frame_folders(tree: Tree, rel: str, split: str, skip_suffix: str = "") -> list[VideoSource]:
    videos = []
    for name in tree.subdirs(rel):
        if skip_suffix and name.endswith(skip_suffix):
            continue
        frames = tree.children(f"{rel}/{name}", IMAGE_EXTENSIONS)
        if frames:
            folder = tree.abs(f"{rel}/{name}")
            videos.append(VideoSource(split, name, folder, tuple(join(folder, f) for f in frames)))
    return videos


def _video_files(tree: Tree, rel: str, split: str) -> list[VideoSource]:
    return [
        VideoSource(split, _stem(name), tree.abs(f"{rel}/{name}"))
        for name in tree.children(rel, VIDEO_EXTENSIONS)
    ]


def _with_ranges(videos: list[VideoSource], path: str, fs: pafs.FileSystem) -> list[VideoSource]:
    """Attach per-video ranges from a ``.m`` / ano_pred ``.mat`` file, matched in order."""
    try:
        per_video = read_ranges_file(path, fs)
    except LabelError as err:
        sources = [LabelSource(path, error=str(err)) for _ in videos]
    else:
        if len(per_video) != len(videos):
            message = f"{path}: ground truth for {len(per_video)} videos, found {len(videos)}"
            sources = [LabelSource(path, error=message) for _ in videos]
        else:
            sources = [LabelSource(path, ranges=r) for r in per_video]
    return [_labelled(v, s) for v, s in zip(videos, sources, strict=True)]


def _with_concatenated(
    videos: list[VideoSource], path: str, fs: pafs.FileSystem
) -> list[VideoSource]:
    """Attach per-video flags cut from a concatenated ``frame_labels_*.npy``."""
    try:
        flags = read_concatenated(path, fs)
    except LabelError as err:
        sources = [LabelSource(path, error=str(err)) for _ in videos]
    else:
        sources = split_concatenated(flags, [len(v.frames) for v in videos], path)
    return [_labelled(v, s) for v, s in zip(videos, sources, strict=True)]


def _with_per_video_files(
    videos: list[VideoSource], tree: Tree, rel: str, suffix: str
) -> list[VideoSource]:
    """Attach a per-video label file ``<rel>/<id><suffix>``, paired by :func:`id_key`."""
    by_key = {id_key(name[: -len(suffix)]): name for name in tree.children(rel, (suffix,))}
    out = []
    for video in videos:
        name = by_key.get(id_key(video.video_id))
        origin = tree.abs(f"{rel}/{name}") if name else tree.abs(rel)
        labels = (
            LabelSource(origin, mask_file=origin)
            if name
            else LabelSource(origin, error=f"{origin}: no label file for video {video.video_id}")
        )
        out.append(_labelled(video, labels))
    return out


def _labelled(video: VideoSource, labels: LabelSource) -> VideoSource:
    return VideoSource(video.split, video.video_id, video.path, video.frames, labels)


def _top_label_file(tree: Tree, patterns: Iterable[Callable[[str], bool]]) -> str | None:
    """The first top-level file matching a pattern, patterns tried in order."""
    names = tree.children("", (".m", ".mat", ".npy"))
    for matches in patterns:
        for name in names:
            if matches(name):
                return name
    return None


def _attach_top_labels(
    tests: list[VideoSource], tree: Tree, fs: pafs.FileSystem, concatenated_ok: bool
) -> tuple[list[VideoSource], str | None]:
    patterns = [lambda n: n.endswith(".m"), lambda n: n.endswith(".mat")]
    if concatenated_ok:
        patterns.append(lambda n: n.startswith("frame_labels_") and n.endswith(".npy"))
    name = _top_label_file(tree, patterns)
    if name is None or not tests:
        return tests, None
    path = tree.abs(name)
    if name.endswith(".npy"):
        return _with_concatenated(tests, path, fs), path
    return _with_ranges(tests, path, fs), path


def _discover_frames(tree: Tree, fs: pafs.FileSystem) -> Discovery:
    train = _frame_folders(tree, "training/frames", "train")
    test = _frame_folders(tree, "testing/frames", "test")
    test, label_file = _attach_top_labels(test, tree, fs, concatenated_ok=True)
    return Discovery("frames", tuple(train + test), label_file)


def _discover_ucsd(tree: Tree, fs: pafs.FileSystem) -> Discovery:
    train = _frame_folders(tree, "Train", "train", skip_suffix="_gt")
    test = _frame_folders(tree, "Test", "test", skip_suffix="_gt")
    label_names = tree.children("Test", (".m",))
    label_file = tree.abs(f"Test/{label_names[0]}") if label_names else None
    if label_file and test:
        test = _with_ranges(test, label_file, fs)
    return Discovery("ucsd", tuple(train + test), label_file)


def _discover_avenue(tree: Tree, fs: pafs.FileSystem) -> Discovery:
    train = _video_files(tree, "training_videos", "train")
    test = _video_files(tree, "testing_videos", "test")
    mask_dirs = sorted(
        (d for d in tree.dirs if d.rpartition("/")[2] == "testing_label_mask"), key=natural_key
    )
    if mask_dirs and test:
        test = _with_per_video_files(test, tree, mask_dirs[0], "_label.mat")
        return Discovery("avenue", tuple(train + test), tree.abs(mask_dirs[0]))
    test, label_file = _attach_top_labels(test, tree, fs, concatenated_ok=False)
    return Discovery("avenue", tuple(train + test), label_file)


def _discover_shanghaitech(tree: Tree, fs: pafs.FileSystem) -> Discovery:
    train = _video_files(tree, "training/videos", "train")
    test = _frame_folders(tree, "testing/frames", "test")
    label_dir = "testing/test_frame_mask"
    if tree.has_dir(label_dir) and test:
        test = _with_per_video_files(test, tree, label_dir, ".npy")
        return Discovery("shanghaitech", tuple(train + test), tree.abs(label_dir))
    return Discovery("shanghaitech", tuple(train + test))


def _discover_videos(tree: Tree, split: str) -> Discovery:
    names = sorted(
        (f for f in tree.walk() if f.lower().endswith(VIDEO_EXTENSIONS)), key=natural_key
    )
    videos = [VideoSource(split, _stem(n).replace("/", "__"), tree.abs(n)) for n in names]
    return Discovery("videos", tuple(videos))


def discover(source: str, layout: str = "auto", videos_split: str = "test") -> Discovery:
    """The videos of ``source`` (local folder or URI) in the given or detected layout.

    UserError if the folder is missing, its layout cannot be told, or it holds no video.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}: expected auto or one of {LAYOUTS}")
    fs, root = resolve(source)
    tree = Tree.list(fs, root)
    chosen = detect_layout(tree) if layout == "auto" else layout
    if chosen == "videos":
        found = _discover_videos(tree, videos_split)
    else:
        finders = {
            "frames": _discover_frames,
            "ucsd": _discover_ucsd,
            "avenue": _discover_avenue,
            "shanghaitech": _discover_shanghaitech,
        }
        found = finders[chosen](tree, fs)
    if not found.videos:
        raise UserError(f"{source}: no videos found for layout {chosen!r}")
    return found
