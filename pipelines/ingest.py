"""`mnad ingest`: videos and frame folders into Parquet shards, as a Ray Data job.

The driver discovers the videos (:mod:`pipelines.layouts`), then runs one Ray task per
video: the task hashes the input, skips it if an earlier run ingested the same bytes, else
decodes it with ffmpeg (:mod:`pipelines.decode`) and streams its frames into
``DATA/<split>/<video_id>.parquet`` in row groups of bounded size. The shard is written under
a hidden temporary name and renamed once complete, so a reader never sees half a shard. Each
task returns its manifest row; the driver writes ``manifest.parquet`` and ``summary.json``.

A video that fails (unreadable, truncated, labels that disagree) fails alone: one line
``mnad ingest: <path>: <cause>`` on the console, a ``failed`` row in the manifest, and exit
status 1 at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import imageio_ffmpeg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.decode import DecodeError, DecodeSpec, FrameReader
from pipelines.errors import UserError
from pipelines.labels import FrameLabels, LabelError
from pipelines.layouts import LAYOUTS, Discovery, VideoSource, discover
from pipelines.ray_session import ray_session
from pipelines.schema import (
    LABEL_ANOMALOUS,
    LABEL_NORMAL,
    LABEL_UNKNOWN,
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
    SPLITS,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    SUMMARY_FILE,
    FrameShape,
    frame_batch,
    join,
    read_manifest,
    resolve,
    shard_relpath,
    shard_schema,
)

_SLUG = re.compile(r"[^a-z0-9]+")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KNOWN_PREFIXES = ("ucsd_", "ucsd", "cuhk_")  # ucsd_ped2 -> ped2, cuhk_avenue -> avenue
_HASH_BLOCK = 1 << 20
_TMP_MARK = ".tmp-"
# Pixels get neither dictionary encoding nor min/max statistics: both cost as much as the
# compression and serve no reader.
PARQUET_OPTIONS: dict[str, Any] = {
    "use_dictionary": ["dataset", "split", "video_id"],
    "write_statistics": ["dataset", "split", "video_id", "frame_index", "label"],
}


@dataclass
class IngestConfig:
    """Options of `mnad ingest`."""

    source: str = field(
        metadata={
            "positional": True,
            "help": "the data set: a folder or an s3:// / gs:// URI",
        }
    )
    out: str = field(metadata={"help": "DATA folder or URI for the shards, manifest and summary"})
    layout: Literal["auto", "frames", "ucsd", "avenue", "shanghaitech", "videos"] = field(
        default="auto", metadata={"help": "how the source is laid out; auto: tell from its folders"}
    )
    size: tuple[int, int] | None = field(
        default=None,
        metadata={"help": "frame size H W to resize to inside ffmpeg (default: the source's)"},
    )
    channels: Literal[1, 3] = field(
        default=1, metadata={"help": "1: grey, 3: RGB, converted inside ffmpeg"}
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "data set name (default: from the source folder, ucsd_ped2 -> ped2)"},
    )
    videos_split: Literal["train", "test"] = field(
        default="test",
        metadata={"help": "layout videos: the split its videos go to (train: known normal)"},
    )
    row_group_mib: float = field(
        default=16.0, metadata={"help": "target size of a shard's row groups, in MiB of pixels"}
    )
    compression: Literal["zstd", "lz4", "snappy", "none"] = field(
        default="zstd",
        metadata={
            "help": "Parquet compression of the shards; on Ped2 frames zstd stores 1.9x less "
            "than none for about the CPU of lz4, none is fastest"
        },
    )
    ffmpeg_threads: int = field(
        default=1,
        metadata={"help": "decoder threads per video; each Ray task reserves as many CPUs"},
    )
    progress_every: int = field(
        default=10, metadata={"help": "print a progress line every this many videos"}
    )
    quiet: bool = field(default=False, metadata={"help": "no progress lines (errors still print)"})

    def __post_init__(self) -> None:
        if not self.source:
            raise UserError("source is empty")
        if not self.out:
            raise UserError("--out is empty")
        if self.layout != "auto" and self.layout not in LAYOUTS:
            raise UserError(f"unknown layout {self.layout!r}: expected auto or one of {LAYOUTS}")
        if self.size is not None:
            self.size = tuple(self.size)
            if len(self.size) != 2 or not all(8 <= s <= 8192 for s in self.size):
                raise UserError(f"--size must be two numbers H W in 8..8192, got {self.size}")
        if self.channels not in (1, 3):
            raise UserError(f"--channels must be 1 or 3, got {self.channels}")
        if self.dataset is not None and not _DATASET_NAME.match(self.dataset):
            raise UserError(f"--dataset {self.dataset!r}: use letters, digits, '_', '.', '-'")
        if self.videos_split not in SPLITS:
            raise UserError(f"--videos-split must be one of {SPLITS}, got {self.videos_split!r}")
        if not 0 < self.row_group_mib <= 1024:
            raise UserError(f"--row-group-mib must be in (0, 1024], got {self.row_group_mib}")
        if self.compression not in ("zstd", "lz4", "snappy", "none"):
            raise UserError(f"--compression: unknown codec {self.compression!r}")
        if not 1 <= self.ffmpeg_threads <= 64:
            raise UserError(f"--ffmpeg-threads must be in 1..64, got {self.ffmpeg_threads}")
        if self.progress_every < 1:
            raise UserError(f"--progress-every must be >= 1, got {self.progress_every}")

    @property
    def dataset_name(self) -> str:
        return self.dataset or default_dataset_name(self.source)


def default_dataset_name(source: str) -> str:
    """A short slug from the source folder's name: ``ucsd_ped2`` -> ``ped2``."""
    name = _SLUG.sub("_", PurePosixPath(source.rstrip("/")).name.lower()).strip("_")
    for prefix in _KNOWN_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
            break
    return name or "data"


# --- one video: the Ray task ----------------------------------------------------------------


@dataclass(frozen=True)
class IngestPlan:
    """Everything a task needs besides its video; built once by the driver."""

    source: str  # URI or folder of the data set (for its file system)
    out: str  # DATA URI or folder
    dataset: str
    decode: DecodeSpec
    row_group_bytes: int
    compression: str = "zstd"


def manifest_row(
    video: VideoSource,
    status: str,
    *,
    content_hash: str | None = None,
    frames: int = 0,
    anomalous: int = 0,
    shape: FrameShape | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """One row of MANIFEST_SCHEMA."""
    ingested = status in (STATUS_OK, STATUS_SKIPPED)
    return {
        "source": video.path,
        "split": video.split,
        "video_id": video.video_id,
        "content_hash": content_hash,
        "frames": frames,
        "anomalous_frames": anomalous,
        "height": shape.height if shape else 0,
        "width": shape.width if shape else 0,
        "status": status,
        "error": error,
        "shard": shard_relpath(video.split, video.video_id) if ingested else None,
    }


def _hash_stream(digest: Any, stream: Any, sink: Any = None) -> None:
    while block := stream.read(_HASH_BLOCK):
        digest.update(block)
        if sink is not None:
            sink.write(block)


@contextlib.contextmanager
def local_copy(video: VideoSource, fs: pafs.FileSystem) -> Iterator[tuple[VideoSource, str]]:
    """The video with paths that ffmpeg can open, and its content hash.

    The hash covers the file's bytes, or for a frame folder each frame file's name, size and
    bytes in order. A local source is read in place; a remote one is copied to a temporary
    folder while it is hashed.
    """
    digest = hashlib.sha256()
    files = video.frames or (video.path,)
    if isinstance(fs, pafs.LocalFileSystem):
        for path in files:
            _hash_file(digest, fs, path, video.frames)
        yield video, f"sha256:{digest.hexdigest()}"
        return
    with tempfile.TemporaryDirectory(prefix="mnad-ingest-") as tmp:
        local = []
        for i, path in enumerate(files):
            target = f"{tmp}/{i:08d}{PurePosixPath(path).suffix}"
            with open(target, "wb") as sink:
                _hash_file(digest, fs, path, video.frames, sink)
            local.append(target)
        copy = VideoSource(
            video.split,
            video.video_id,
            tmp if video.frames else local[0],
            tuple(local) if video.frames else (),
            video.labels,
        )
        yield copy, f"sha256:{digest.hexdigest()}"


def _hash_file(
    digest: Any, fs: pafs.FileSystem, path: str, named: tuple[str, ...], sink: Any = None
) -> None:
    with fs.open_input_stream(path) as stream:
        if named:  # a frame of a folder: its name and size count too
            size = fs.get_file_info(path).size
            digest.update(f"{PurePosixPath(path).name}\0{size}\0".encode())
        _hash_stream(digest, stream, sink)


def _labels_for(video: VideoSource, fs: pafs.FileSystem) -> FrameLabels:
    if video.split == "train":
        return FrameLabels.constant(LABEL_NORMAL)  # training footage is normal by definition
    if video.labels is None:
        return FrameLabels.constant(LABEL_UNKNOWN)
    return video.labels.load(fs)


def write_shard(
    video: VideoSource, local: VideoSource, labels: FrameLabels, plan: IngestPlan
) -> tuple[int, int, FrameShape]:
    """Decode ``local`` and write its shard atomically; returns (frames, anomalous, shape)."""
    out_fs, out_root = resolve(plan.out)
    final = join(out_root, shard_relpath(video.split, video.video_id))
    tmp = join(out_root, video.split, f".{video.video_id}.parquet{_TMP_MARK}{uuid.uuid4().hex}")
    frames = anomalous = 0
    try:
        with FrameReader(local.path, local.frames, plan.decode) as reader:
            shape = reader.shape
            with (
                out_fs.open_output_stream(tmp) as sink,
                pq.ParquetWriter(
                    sink, shard_schema(shape), compression=plan.compression, **PARQUET_OPTIONS
                ) as w,
            ):
                for pixels in reader.chunks(plan.row_group_bytes):
                    n = len(pixels) // shape.nbytes
                    chunk_labels = labels.chunk(frames, n)  # (n,) int8
                    batch = frame_batch(
                        dataset=plan.dataset,
                        split=video.split,
                        video_id=video.video_id,
                        start_index=frames,
                        labels=chunk_labels,
                        pixels=pixels,
                        shape=shape,
                    )
                    w.write_batch(batch, row_group_size=n)
                    frames += n
                    anomalous += int((chunk_labels == LABEL_ANOMALOUS).sum())
        labels.check(frames)
        out_fs.move(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            out_fs.delete_file(tmp)
        raise
    return frames, anomalous, shape


def ingest_video(video: VideoSource, previous: dict | None, plan: IngestPlan) -> dict[str, Any]:
    """Ingest one video (or skip it if unchanged since ``previous``); its manifest row."""
    fs, _ = resolve(plan.source)
    content_hash = None
    try:
        with local_copy(video, fs) as (local, content_hash):
            if previous is not None and previous["content_hash"] == content_hash:
                out_fs, out_root = resolve(plan.out)
                shard = join(out_root, shard_relpath(video.split, video.video_id))
                if out_fs.get_file_info(shard).type == pafs.FileType.File:
                    return {**previous, "source": video.path, "status": STATUS_SKIPPED}
            labels = _labels_for(video, fs)
            frames, anomalous, shape = write_shard(video, local, labels, plan)
    except (DecodeError, LabelError, OSError) as err:
        error = str(err) if isinstance(err, DecodeError) else f"{video.path}: {err}"
        return manifest_row(video, STATUS_FAILED, content_hash=content_hash, error=error)
    return manifest_row(
        video, STATUS_OK, content_hash=content_hash, frames=frames, anomalous=anomalous,
        shape=shape,
    )  # fmt: skip


def ingest_row(row: dict[str, Any], *, plan: IngestPlan) -> dict[str, Any]:
    """Ray Data map function: one ``{"video", "previous"}`` item to its manifest row."""
    previous = json.loads(row["previous"])
    return ingest_video(VideoSource.from_json(row["video"]), previous, plan)


# --- the driver -----------------------------------------------------------------------------


def ingest_settings(config: IngestConfig) -> dict[str, Any]:
    """What must not change between runs for earlier shards to be reused."""
    return {
        "dataset": config.dataset_name,
        "requested_size": list(config.size) if config.size else None,
        "channels": config.channels,
    }


def _previous_rows(config: IngestConfig) -> dict[tuple[str, str], dict]:
    """Rows of the last manifest that this run may skip: same settings, ingested."""
    fs, root = resolve(config.out)
    try:
        with fs.open_input_stream(join(root, SUMMARY_FILE)) as f:
            old = json.loads(f.read())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    if old.get("settings") != ingest_settings(config):
        return {}
    manifest = read_manifest(config.out)
    if manifest is None:
        return {}
    return {
        (r["split"], r["video_id"]): r
        for r in manifest.to_pylist()
        if r["status"] in (STATUS_OK, STATUS_SKIPPED)
    }


def _prepare_out(out: str) -> None:
    """Create DATA and its split folders; remove temporary shards an interrupted run left."""
    fs, root = resolve(out)
    for split in SPLITS:
        fs.create_dir(join(root, split), recursive=True)
        for info in fs.get_file_info(pafs.FileSelector(join(root, split))):
            if info.base_name.startswith(".") and _TMP_MARK in info.base_name:
                fs.delete_file(info.path)


def _write_atomic(out: str, name: str, write: Any) -> None:
    """Write DATA/<name> through a temporary name and a rename."""
    fs, root = resolve(out)
    tmp = join(root, f".{name}{_TMP_MARK}{uuid.uuid4().hex}")
    with fs.open_output_stream(tmp) as sink:
        write(sink)
    fs.move(tmp, join(root, name))


def summarize(
    rows: list[dict[str, Any]], found: Discovery, config: IngestConfig, seconds: float
) -> dict[str, Any]:
    """The content of summary.json, from the manifest rows of this run."""
    kept = [r for r in rows if r["status"] in (STATUS_OK, STATUS_SKIPPED)]
    splits = {
        split: {
            "videos": sum(1 for r in kept if r["split"] == split),
            "frames": sum(r["frames"] for r in kept if r["split"] == split),
            "anomalous_frames": sum(r["anomalous_frames"] for r in kept if r["split"] == split),
        }
        for split in SPLITS
    }
    sizes = {(r["height"], r["width"]) for r in kept}
    height, width = sizes.pop() if len(sizes) == 1 else (None, None)
    decoded = sum(r["frames"] for r in rows if r["status"] == STATUS_OK)
    return {
        "dataset": config.dataset_name,
        "layout": found.layout,
        "source": config.source,
        "label_file": found.label_file,
        "height": height,
        "width": width,
        "channels": config.channels,
        "settings": ingest_settings(config),
        "splits": splits,
        "ingested": sum(1 for r in rows if r["status"] == STATUS_OK),
        "skipped": sum(1 for r in rows if r["status"] == STATUS_SKIPPED),
        "failed": [
            {"source": r["source"], "error": r["error"]}
            for r in rows
            if r["status"] == STATUS_FAILED
        ],
        "seconds": round(seconds, 3),
        "frames_per_second": round(decoded / seconds, 1) if seconds > 0 else None,
    }


def _run_tasks(
    videos: tuple[VideoSource, ...],
    previous: dict[tuple[str, str], dict],
    plan: IngestPlan,
    config: IngestConfig,
) -> Iterator[dict[str, Any]]:
    """Run one Ray task per video; yield manifest rows as the tasks finish."""
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.op_resource_reservation_enabled
    # Progress is one line per N videos, printed by the driver. The job has one operator,
    # so reserving resources per operator only halves the tasks that run at once.
    ctx.enable_progress_bars, ctx.op_resource_reservation_enabled = False, False
    try:
        items = [
            {"video": v.to_json(), "previous": json.dumps(previous.get((v.split, v.video_id)))}
            for v in videos
        ]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
            ingest_row, fn_kwargs={"plan": plan}, num_cpus=config.ffmpeg_threads
        )
        yield from ds.iter_rows()
    finally:
        ctx.enable_progress_bars, ctx.op_resource_reservation_enabled = saved


def run_ingest(config: IngestConfig) -> int:
    """Ingest ``config.source`` into ``config.out``; 0 if every video went in, else 1."""
    found = discover(config.source, config.layout, config.videos_split)
    _prepare_out(config.out)
    previous = _previous_rows(config)
    plan = IngestPlan(
        source=config.source,
        out=config.out,
        dataset=config.dataset_name,
        decode=DecodeSpec(
            ffmpeg=imageio_ffmpeg.get_ffmpeg_exe(),
            size=config.size,
            channels=config.channels,
            threads=config.ffmpeg_threads,
        ),
        row_group_bytes=int(config.row_group_mib * 2**20),
        compression=config.compression,
    )
    rows: list[dict[str, Any]] = []
    with ray_session(config.quiet):
        start = time.perf_counter()  # throughput counts the job, not Ray's start-up
        for row in _run_tasks(found.videos, previous, plan, config):
            row = {name: row[name] for name in MANIFEST_SCHEMA.names}
            rows.append(row)
            if row["status"] == STATUS_FAILED:
                print(f"mnad ingest: {row['error']}", file=sys.stderr, flush=True)
            if not config.quiet and len(rows) % config.progress_every == 0:
                _print_progress(rows, len(found.videos), time.perf_counter() - start)
    seconds = time.perf_counter() - start
    rows.sort(key=lambda r: (SPLITS.index(r["split"]), r["video_id"]))
    manifest = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    _write_atomic(config.out, MANIFEST_FILE, lambda sink: pq.write_table(manifest, sink))
    summary = summarize(rows, found, config, seconds)
    _write_atomic(
        config.out, SUMMARY_FILE, lambda sink: sink.write(json.dumps(summary, indent=2).encode())
    )
    if not config.quiet:
        _print_summary(summary, config.out)
    return 1 if summary["failed"] else 0


def _print_progress(rows: list[dict[str, Any]], total: int, seconds: float) -> None:
    frames = sum(r["frames"] for r in rows if r["status"] == STATUS_OK)
    print(
        f"mnad ingest: {len(rows)}/{total} videos, {frames} frames decoded, "
        f"{frames / max(seconds, 1e-9):.0f} frames/s",
        flush=True,
    )


def _print_summary(summary: dict[str, Any], out: str) -> None:
    parts = [
        f"{split} {s['videos']} videos / {s['frames']} frames / {s['anomalous_frames']} anomalous"
        for split, s in summary["splits"].items()
    ]
    print(
        f"mnad ingest: {out}: {'; '.join(parts)}; {summary['ingested']} ingested, "
        f"{summary['skipped']} skipped, {len(summary['failed'])} failed; "
        f"{summary['frames_per_second']} frames/s",
        flush=True,
    )
