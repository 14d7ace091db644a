"""Long videos scored as segments by parallel actors (``--segment-seconds``), and each one
joined back into its file of the frames dataset (driver).

```
a video of N frames ──K tasks: targets [first, stop) of about N / K frames each──▶ actors
SCORES/frames/.<video_id>.segment-<k>-of-<K>.parquet ──joined in order──▶ <video_id>.parquet
```

Only in calibrated mode with per-video memory: a calibrated score depends on no later frame,
so a segment's scores are the whole video's but for the memory, which is reset to the
trained one at each segment's start (its first frames score slightly differently). A
segment reads the T - 1 frames before its first target too, so every frame that scoring the
video whole scores is scored once, by one segment. Per-video normalisation (a min-max over
the whole video) and paper memory (carried from frame to frame) keep videos whole.

The segments' parts start with a dot, so the frames dataset and :func:`completion
<pipelines.score.result.completion>` do not see them; their names carry no
:data:`~pipelines.storage.TMP_MARK`, so the cleanup of a killed actor's temporaries keeps
them, and a rerun scores only the segments not written yet. Their count is in their names: a
rerun with another ``--segment-seconds`` does not take up segments cut otherwise, and once a
video's own file is there, its parts of any count are deleted. The join
runs on the driver, one video at a time, just before the driver reads each video anyway
(:func:`pipelines.score.driver.read_archive`): it holds one video's scores, a few columns of
floats (about 100 MB for ten hours at 30 fps), and needs no task of its own. It recomputes
``score_per_video`` (the min-max over the joined video) and ``score`` (the job's
normalisation and smoothing, the trailing mean now running across segment boundaries), then
deletes the parts; a joined file there means the video is done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mnad.video import normalised_scores
from pipelines import storage
from pipelines.score.actor import ITEMS_AFTER, VideoTask
from pipelines.score.events import CALIBRATED, COLUMNS, SCORE_CHOICE, choice_key, chosen_score


def segment_count(frames: int, fps: float | None, seconds: float, clip_length: int) -> int:
    """How many segments a video of ``frames`` frames at ``fps`` is scored in: one when it
    is not longer than ``seconds`` (0: never split) or its frame rate is unknown, else
    ``ceil(duration / seconds)``, but never so many that the first segment holds no clip
    (each at least ``clip_length`` frames)."""
    if seconds <= 0 or not fps or frames / fps <= seconds:
        return 1
    return max(1, min(math.ceil(frames / fps / seconds), frames // clip_length))


def segment_part(task: VideoTask, index: int, count: int) -> str:
    """Where segment ``index`` of ``count`` of the video of ``task`` (a whole video's task)
    is written until it is joined: beside the video's own file, its name starting with a
    dot."""
    folder, _, _ = task.part.rpartition("/")
    return storage.join(folder, f".{task.video_id}.segment-{index:05d}-of-{count:05d}.parquet")


def split_task(task: VideoTask, count: int, frames: int) -> list[VideoTask]:
    """A whole video's task as ``count`` segments of equal frame counts (to a frame), in
    order; the task itself when ``count`` is 1."""
    if count <= 1:
        return [task]
    cuts = [round(k * frames / count) for k in range(count + 1)]
    stops: list[int | None] = [*cuts[1:-1], None]
    return [
        VideoTask(task.video_id, task.shard, segment_part(task, k, count), cuts[k], stops[k])
        for k in range(count)
    ]


def whole_tasks(tasks: Iterable[VideoTask]) -> list[VideoTask]:
    """One task per video of ``tasks`` (in their order), its part the video's own file."""
    whole: dict[str, VideoTask] = {}
    for task in tasks:
        if task.video_id not in whole:
            folder, _, _ = task.part.rpartition("/")
            part = storage.join(folder, f"{task.video_id}.parquet") if task.segment else task.part
            whole[task.video_id] = VideoTask(task.video_id, task.shard, part)
    return list(whole.values())


def join_segments(
    tasks: list[VideoTask], alpha: float, normalise: str, window: int
) -> list[VideoTask]:
    """Join each segmented video of ``tasks`` whose segments are all written into its own
    file, then delete its segments (a video with a segment missing, which failed, keeps the
    others for a rerun); one task per video, its part the video's own file (there only when
    it was scored). ``alpha`` weighs PSNR against the feature distance in the per-video
    score, ``normalise`` and ``window`` are the job's ``score``."""
    segments: dict[str, list[VideoTask]] = {}
    for task in tasks:
        if task.segment:
            segments.setdefault(task.video_id, []).append(task)
    whole = whole_tasks(tasks)
    stray = _segment_files(whole)
    for video in whole:
        parts = [t.part for t in sorted(segments.get(video.video_id, []), key=lambda t: t.first)]
        if parts and all(storage.is_file(p) for p in parts):
            storage.write_parquet(_joined(parts, alpha, normalise, window), video.part)
            for part in parts:
                storage.delete_file(part)
        if stray.get(video.video_id) and storage.is_file(video.part):
            for part in stray[video.video_id]:  # cut otherwise by an earlier, interrupted run
                storage.delete_file(part)
    return whole


def _segment_files(videos: list[VideoTask]) -> dict[str, list[str]]:
    """The segment parts in the folders of ``videos``' files, whatever their count, by video."""
    found: dict[str, list[str]] = {}
    for folder in sorted({v.part.rpartition("/")[0] for v in videos}):
        for info in storage.list_dir(folder):
            name = info.base_name
            if name.startswith(".") and ".segment-" in name and name.endswith(".parquet"):
                video_id = name[1:].rsplit(".segment-", 1)[0]
                found.setdefault(video_id, []).append(storage.join(folder, name))
    return found


def _joined(parts: list[str], alpha: float, normalise: str, window: int) -> pa.Table:
    """One video's table from its segments' parts, in order, with its per-video score and
    ``score`` computed over it all."""
    tables = []
    for part in parts:
        fs, path = storage.resolve(part)
        tables.append(pq.read_table(path, filesystem=fs).replace_schema_metadata(None))
    table = pa.concat_tables(tables)
    index = table.column("frame_index").to_numpy()
    if len(index) and not np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        raise ValueError(f"{parts[0]}: the segments' frames do not follow each other")
    psnr = table.column("psnr").to_numpy()
    distance = table.column("feature_distance").to_numpy()
    per_video = normalised_scores(psnr, distance, alpha, None).per_video
    calibrated = table.column(COLUMNS[CALIBRATED]).to_numpy()
    score = chosen_score(per_video, calibrated, normalise, window)
    for name, values in (("score_per_video", per_video), ("score", score)):
        at = table.schema.get_field_index(name)
        table = table.set_column(at, table.schema.field(name), pa.array(values, pa.float64()))
    meta = {ITEMS_AFTER: "null", SCORE_CHOICE: choice_key(normalise, window)}
    return table.replace_schema_metadata(meta)


__all__ = ["join_segments", "segment_count", "segment_part", "split_task", "whole_tasks"]
