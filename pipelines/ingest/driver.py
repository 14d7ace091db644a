"""`mnad ingest` on the driver: videos and frame folders into Parquet shards, a Ray Data job.

:func:`run_ingest` discovers the videos (:mod:`pipelines.ingest.layouts`), then runs one Ray
task per video (:mod:`pipelines.ingest.video`); each task returns its manifest row. A video
file longer than ``--segment-seconds`` comes back with its segments instead: a second Ray
Data job decodes every such segment in its own task, and a third joins each video's
segments into its shard (:mod:`pipelines.ingest.segments`). The
driver prints progress, writes ``manifest.parquet`` and ``summary.json`` (atomically, through
:mod:`pipelines.storage`) and returns the :class:`~pipelines.ingest.result.IngestResult`.
:func:`completion` says, from those files alone, whether DATA already holds every video of
the source at the config's settings.

A video that fails (unreadable, truncated, labels that disagree) fails alone: one line
``mnad ingest: <path>: <cause>`` on the console, a ``failed`` row in the manifest, and
``exit_status`` 1 in the result.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from pipelines import storage
from pipelines.data import ingested_rows
from pipelines.ingest.config import IngestConfig, ingest_settings
from pipelines.ingest.decode import DecodeSettings
from pipelines.ingest.layouts import VideoSource, discover
from pipelines.ingest.result import IngestResult, read_summary, summarize
from pipelines.ingest.segments import part_uri
from pipelines.ingest.video import (
    NODE,
    SEGMENT_NODES,
    SEGMENTS,
    IngestPlan,
    ingest_row,
    join_row,
    manifest_row,
    segment_row,
    task_cause,
)
from pipelines.ray_cluster import ray_session
from pipelines.schema import MANIFEST_FILE, MANIFEST_SCHEMA, SPLITS, STATUS_FAILED, STATUS_OK
from pipelines.stage import Completion


def run_ingest(config: IngestConfig) -> IngestResult:
    """Ingest ``config.source`` into ``config.out``; its ``exit_status`` is 1 if a video
    failed."""
    found = discover(config.source, config.layout, config.videos_split)
    _prepare_out(config.out)
    previous = _previous_rows(config)
    rows: list[dict[str, Any]] = []
    nodes: set[str] = set()

    def done(row: dict[str, Any]) -> None:
        nodes.add(str(row[NODE]))
        row = {name: row[name] for name in MANIFEST_SCHEMA.names}
        rows.append(row)
        if row["status"] == STATUS_FAILED:
            print(f"mnad ingest: {row['error']}", file=sys.stderr, flush=True)
        if not config.quiet and len(rows) % config.progress_every == 0:
            _print_progress(rows, len(found.videos), time.perf_counter() - start)

    with ray_session(config.quiet):
        start = time.perf_counter()  # throughput counts the job, not Ray's start-up
        plan = _plan(config)  # how far long videos are cut depends on the cluster's CPUs
        items = [
            {"video": v.to_json(), "previous": json.dumps(previous.get((v.split, v.video_id)))}
            for v in found.videos
        ]
        by_key = {f"{v.split}/{v.video_id}": v for v in found.videos}
        long = _Segmented(plan, config, nodes)
        for row in _map(items, ingest_row, plan, config.ffmpeg_threads):
            if row[SEGMENTS]:  # its segments start now, beside the other videos' tasks
                long.submit(row, json.loads(row[SEGMENTS]), by_key)
            else:
                done(row)
        tasks = len(items) + long.wait(done)
    seconds = time.perf_counter() - start
    if not config.quiet:
        where = ", ".join(sorted(n[:12] for n in nodes))
        print(
            f"mnad ingest: asked for {tasks} task(s) of {config.ffmpeg_threads} "
            f"CPU each; ran on {len(nodes)} node(s): {where}",
            flush=True,
        )
    rows.sort(key=lambda r: (SPLITS.index(r["split"]), r["video_id"]))
    manifest = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    storage.write_parquet(manifest, storage.join(config.out, MANIFEST_FILE))
    result = summarize(rows, found, config, seconds)
    result.write()
    if not config.quiet:
        _print_summary(result)
    return result


def _plan(config: IngestConfig) -> IngestPlan:
    decode = DecodeSettings(
        ffmpeg=config.ffmpeg,  # None: each task finds its node's ffmpeg
        size=config.size,
        channels=config.channels,
        threads=config.ffmpeg_threads,
    )
    return IngestPlan(
        source=config.source,
        out=config.out,
        dataset=config.dataset_name,
        decode=decode,
        row_group_bytes=int(config.row_group_mib * 2**20),
        compression=config.compression,
        folder_fps=config.fps,
        segment_seconds=config.segment_seconds,
        max_segments=_max_segments(config.ffmpeg_threads),
    )


SEGMENTS_PER_SLOT = 2
"""Segments of one video per task the cluster runs at once, at most: enough to keep every
slot busy and even out the last ones; more only add ffmpeg and task start-ups."""


def _max_segments(cpus_per_task: int) -> int:
    """How many segments a long video is cut into at most, from the CPUs of the cluster
    (Ray running); 0 when it reports none."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else 0
    return SEGMENTS_PER_SLOT * max(1, cpus // max(1, cpus_per_task)) if cpus else 0


def _prepare_out(out: str) -> None:
    """Create DATA and its split folders; remove the temporaries an interrupted run left."""
    fs, root = storage.resolve(out)
    for split in SPLITS:
        fs.create_dir(storage.join(root, split), recursive=True)
        storage.remove_temporaries(storage.join(out, split))
    storage.remove_temporaries(out)


def _ingested(out: str) -> list[dict[str, Any]] | None:
    """The manifest rows of the videos DATA holds, or None if it has no manifest yet."""
    if not storage.is_file(storage.join(out, MANIFEST_FILE)):
        return None
    return ingested_rows(out)


def _previous_rows(config: IngestConfig) -> dict[tuple[str, str], dict]:
    """Rows of the last manifest that this run may skip: same settings, ingested."""
    summary = read_summary(config.out)
    if summary is None or summary.get("settings") != ingest_settings(config):
        return {}
    return {(r["split"], r["video_id"]): r for r in _ingested(config.out) or []}


class _Segmented:
    """The long videos: each one's segments decoded by Ray tasks (one each) and joined into
    its shard by one task per video, submitted with its segments (it writes each part as
    soon as the segments before it are done). A video's tasks start as soon as its ingest
    task has cut it, while the other videos' ingest tasks still run. Plain tasks rather than
    Ray Data jobs: the items are few and small, and a job's start-up costs more than a
    segment's decode."""

    def __init__(self, plan: IngestPlan, config: IngestConfig, nodes: set[str]):
        self.plan, self.config, self.nodes = plan, config, nodes
        self.joins: dict[Any, tuple[VideoSource, dict[str, Any], list[dict[str, Any]]]] = {}
        self.segments = 0
        self.began = 0.0

    def submit(
        self, first: dict[str, Any], windows: list[dict[str, Any]], videos: dict[str, VideoSource]
    ) -> None:
        """Start the tasks of the video of ``first`` (its ingest task's row), cut into
        ``windows``."""
        import ray

        if not self.joins:
            self.began = time.perf_counter()
        self.nodes.add(str(first[NODE]))
        video = videos[f"{first['split']}/{first['video_id']}"]
        if not self.config.quiet:
            print(
                f"mnad ingest: {video.path} is longer than {self.config.segment_seconds:g} s: "
                f"{len(windows)} segments, decoded in parallel",
                flush=True,
            )
        decode = ray.remote(segment_row).options(num_cpus=self.config.ffmpeg_threads)
        join = ray.remote(join_row).options(num_cpus=0)  # waits mostly: no slot of a segment
        text = video.to_json()
        refs = [
            decode.remote({"video": text, "index": i, "window": json.dumps(w)}, plan=self.plan)
            for i, w in enumerate(windows)
        ]
        item = {"video": text, "content_hash": first["content_hash"], "segments": refs}
        self.joins[join.remote(item, plan=self.plan)] = (video, first, windows)
        self.segments += len(windows)

    def wait(self, done: Callable[[dict[str, Any]], None]) -> int:
        """Hand each long video's manifest row to ``done`` as its join ends; the number of
        tasks they ran."""
        import ray

        videos = len(self.joins)
        while self.joins:
            ready, _ = ray.wait(list(self.joins), num_returns=1)
            video, first, windows = self.joins.pop(ready[0])
            row = _joined(ready[0], video, (first, windows), self.plan)
            self.nodes.update(str(node) for node in row.get(SEGMENT_NODES, ()))
            done(row)
        if videos and not self.config.quiet:
            print(
                f"mnad ingest: {self.segments} segments decoded and joined into {videos} "
                f"shard(s) in {time.perf_counter() - self.began:.1f} s",
                flush=True,
            )
        return self.segments + videos


def _joined(
    ref: Any,
    video: VideoSource,
    pending: tuple[dict[str, Any], list[dict[str, Any]]],
    plan: IngestPlan,
) -> dict[str, Any]:
    """A join task's manifest row; a task that died fails its video, and its parts go."""
    import ray

    first, windows = pending
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        for index in range(len(windows)):
            storage.delete_file(part_uri(plan.out, video, index))
        failed = manifest_row(
            video, STATUS_FAILED, content_hash=first["content_hash"],
            error=f"{video.path}: join task failed ({task_cause(err)})",
        )  # fmt: skip
        return {**failed, NODE: first[NODE]}


def _map(
    items: list[dict[str, Any]], fn: Callable[..., dict[str, Any]], plan: IngestPlan, cpus: int
) -> Iterator[dict[str, Any]]:
    """Run ``fn`` in one Ray task per item; yield its rows as the tasks finish."""
    import ray

    if not items:
        return
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.op_resource_reservation_enabled
    # Progress is one line per N videos, printed by the driver. The job has one operator,
    # so reserving resources per operator only halves the tasks that run at once.
    ctx.enable_progress_bars, ctx.op_resource_reservation_enabled = False, False
    try:
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
            fn, fn_kwargs={"plan": plan}, num_cpus=cpus
        )
        yield from ds.iter_rows()
    finally:
        ctx.enable_progress_bars, ctx.op_resource_reservation_enabled = saved


def _print_progress(rows: list[dict[str, Any]], total: int, seconds: float) -> None:
    frames = sum(r["frames"] for r in rows if r["status"] == STATUS_OK)
    print(
        f"mnad ingest: {len(rows)}/{total} videos, {frames} frames decoded, "
        f"{frames / max(seconds, 1e-9):.0f} frames/s",
        flush=True,
    )


def _print_summary(result: IngestResult) -> None:
    parts = [
        f"{split} {s['videos']} videos / {s['frames']} frames / {s['anomalous_frames']} anomalous"
        for split, s in result.splits.items()
    ]
    print(
        f"mnad ingest: {result.data}: {'; '.join(parts)}; {result.ingested} ingested, "
        f"{result.skipped} skipped, {len(result.failures)} failed; "
        f"{result.frames_per_second} frames/s",
        flush=True,
    )


def completion(config: IngestConfig) -> Completion:
    """Whether DATA holds every video of the source at these settings, read from DATA's
    summary and manifest (and a listing of the source); the result read back if it does."""
    summary = read_summary(config.out)
    if summary is None:
        return Completion.missing("no summary.json yet")
    if summary.get("source") != config.source or summary.get("settings") != ingest_settings(config):
        return Completion.missing("the source or the settings changed")
    if summary.get("failed"):
        return Completion.missing(f"{len(summary['failed'])} video(s) failed last time", True)
    rows = _ingested(config.out)
    if rows is None:
        return Completion.missing("no manifest yet")
    done = {(r["split"], r["video_id"], r["source"]): r for r in rows}
    found = discover(config.source, config.layout, config.videos_split).videos
    missing = [v for v in found if (v.split, v.video_id, v.path) not in done]
    if missing:
        return Completion.missing(f"{len(missing)} of {len(found)} videos not ingested yet", True)
    # --fps changes no shard, only frame folders' manifest rows: a re-run skips every video
    restamp = [
        v for v in found if v.frames and done[v.split, v.video_id, v.path]["fps"] != config.fps
    ]
    if restamp:
        return Completion.missing(f"{len(restamp)} frame folder(s) ingested at another --fps", True)
    result = IngestResult.from_json({**summary, "data": config.out})
    return Completion.done(result, f"{config.out} holds every video of {config.source}")
