"""The options of the ingest stage (`mnad ingest`, a spec's ``ingest:`` section), on the driver.

:class:`IngestConfig` is built once at the edge (command line, YAML, a notebook) and passed
down whole; :func:`ingest_settings` is the part of it that decides what the shards hold, so
that a re-run reuses earlier shards only when it is unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from pipelines.errors import OptionError
from pipelines.ingest.layouts import LAYOUTS
from pipelines.options import option
from pipelines.schema import SPLITS

_SLUG = re.compile(r"[^a-z0-9]+")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KNOWN_PREFIXES = ("ucsd_", "ucsd", "cuhk_")  # ucsd_ped2 -> ped2, cuhk_avenue -> avenue
_CODECS = ("zstd", "lz4", "snappy", "none")


@dataclass
class IngestConfig:
    """Options of `mnad ingest`."""

    source: str = option(
        "the data set: a folder or an s3:// / gs:// URI", positional=True, path=True
    )
    out: str = option("DATA folder or URI for the shards, manifest and summary", path=True)
    layout: Literal["auto", "frames", "ucsd", "avenue", "shanghaitech", "videos"] = option(
        "how the source is laid out; auto: tell from its folders", default="auto"
    )
    size: tuple[int, int] | None = option(
        "frame size H W to resize to inside ffmpeg (default: the source's)", default=None
    )
    channels: Literal[1, 3] = option("1: grey, 3: RGB, converted inside ffmpeg", default=1)
    fps: float | None = option(
        "frame rate of frame folders, which carry none (default: unknown); a video file's "
        "own rate is always the one recorded",
        default=None,
    )
    dataset: str | None = option(
        "data set name (default: from the source folder, ucsd_ped2 -> ped2)", default=None
    )
    videos_split: Literal["train", "test"] = option(
        "layout videos: the split its videos go to (train: known normal)", default="test"
    )
    row_group_mib: float = option(
        "target size of a shard's row groups, in MiB of pixels", default=16.0
    )
    compression: Literal["zstd", "lz4", "snappy", "none"] = option(
        "Parquet compression of the shards; on Ped2 frames zstd stores 1.9x less than none "
        "for about the CPU of lz4, none is fastest",
        default="zstd",
    )
    segment_seconds: float = option(
        "a video file longer than this many seconds is cut into segments of this length "
        "(longer ones where that would make more than twice as many as the cluster runs "
        "tasks at once), decoded by parallel tasks and joined into its one shard, frame for "
        "frame as one decode; 0: never cut",
        default=120.0,
        execution=True,
    )
    ffmpeg_threads: int = option(
        "decoder threads per video; each Ray task reserves as many CPUs",
        default=1,
        execution=True,
    )
    ffmpeg: str | None = option(
        "the ffmpeg binary, at this path on every node (default: each node's own: "
        "$IMAGEIO_FFMPEG_EXE, else the one imageio-ffmpeg ships)",
        default=None,
        execution=True,
    )
    progress_every: int = option(
        "print a progress line every this many videos", default=10, execution=True
    )
    quiet: bool = option("no progress lines (errors still print)", default=False, execution=True)

    def __post_init__(self) -> None:
        if not self.source:
            raise OptionError("source", "source is empty")
        if not self.out:
            raise OptionError("out", "--out is empty")
        if self.layout != "auto" and self.layout not in LAYOUTS:
            raise OptionError(
                "layout", f"unknown layout {self.layout!r}: expected auto or one of {LAYOUTS}"
            )
        if self.size is not None:
            self.size = tuple(self.size)
            if len(self.size) != 2 or not all(8 <= s <= 8192 for s in self.size):
                raise OptionError(
                    "size", f"--size must be two numbers H W in 8..8192, got {self.size}"
                )
        if self.ffmpeg is not None and not self.ffmpeg:
            raise OptionError("ffmpeg", "--ffmpeg is empty")
        if self.channels not in (1, 3):
            raise OptionError("channels", f"--channels must be 1 or 3, got {self.channels}")
        if self.dataset is not None and not _DATASET_NAME.match(self.dataset):
            raise OptionError(
                "dataset", f"--dataset {self.dataset!r}: use letters, digits, '_', '.', '-'"
            )
        self._check_numbers()

    def _check_numbers(self) -> None:
        if self.videos_split not in SPLITS:
            raise OptionError(
                "videos_split",
                f"--videos-split must be one of {SPLITS}, got {self.videos_split!r}",
            )
        if not 0 < self.row_group_mib <= 1024:
            raise OptionError(
                "row_group_mib", f"--row-group-mib must be in (0, 1024], got {self.row_group_mib}"
            )
        if self.compression not in _CODECS:
            raise OptionError("compression", f"--compression: unknown codec {self.compression!r}")
        if not 1 <= self.ffmpeg_threads <= 64:
            raise OptionError(
                "ffmpeg_threads", f"--ffmpeg-threads must be in 1..64, got {self.ffmpeg_threads}"
            )
        if not (math.isfinite(self.segment_seconds) and self.segment_seconds >= 0):
            raise OptionError(
                "segment_seconds",
                f"--segment-seconds must be a number >= 0, got {self.segment_seconds}",
            )
        if self.fps is not None:
            if not (isinstance(self.fps, int | float) and math.isfinite(self.fps) and self.fps > 0):
                raise OptionError("fps", f"--fps must be a number > 0, got {self.fps!r}")
            self.fps = float(self.fps)
        if self.progress_every < 1:
            raise OptionError(
                "progress_every", f"--progress-every must be >= 1, got {self.progress_every}"
            )

    @property
    def dataset_name(self) -> str:
        """The data set's name: ``dataset``, else one made from the source folder's name."""
        return self.dataset or default_dataset_name(self.source)


def default_dataset_name(source: str) -> str:
    """A short slug from the source folder's name: ``ucsd_ped2`` -> ``ped2``."""
    name = _SLUG.sub("_", PurePosixPath(source.rstrip("/")).name.lower()).strip("_")
    for prefix in _KNOWN_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
            break
    return name or "data"


def ingest_settings(config: IngestConfig) -> dict[str, Any]:
    """What must not change between runs for earlier shards to be reused."""
    return {
        "dataset": config.dataset_name,
        "requested_size": list(config.size) if config.size else None,
        "channels": config.channels,
    }
