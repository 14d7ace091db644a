"""`mnad score` on the driver: per-frame anomaly scores of a whole split or archive, as a Ray
Data job, then the combined scores, the metrics, the report and the MLflow run.

```
DATA/<split>/*.parquet ──Ray Data: VideoScorer actors, CPUs or GPUs──▶ SCORES/frames/*.parquet
SCORES/frames ──one video at a time──▶ metrics, SCORES/events.parquet
top events ──a Ray task: their pictures──▶ SCORES/report/, SCORES/summary.json ──▶ MLflow run
```

The driver never holds the archive: the actors write each video's scores (``score``
already the job's normalisation and smoothing) as a file of the frames dataset
SCORES/frames; the driver then reads them one video at a time (:func:`read_archive`),
keeping only the labelled frames' scores the AUCs need and each video's events, ranked over
the archive at the end. The report reads back only the videos it plots, and its pictures
(the top events' peaks) are rendered by a Ray task that fetches the model as the actors do
(:mod:`.pictures`). The MLflow run gets the summary, events and report, and the frames
dataset's location as a tag.

Memory modes:

- ``per-video`` (default): the memory is reset to the trained one at every video, so videos
  are independent and scored in parallel across actors and nodes, and several at once in
  each actor (in lockstep, one batch per frame step: ``_videos_per_call``). The right mode
  for bulk scoring of archives.
- ``paper``: the memory is carried across all videos in sorted order, as the paper's
  evaluation does; one actor scores them in turn. For exact reproduction.

With calibrated scores and per-video memory, ``--segment-seconds`` scores a long video as
segments in parallel, each from the trained memory, joined into its file before the
archive is read (:mod:`.segments`).

The model is found once (:func:`pipelines.tracking.find_model`); what travels to the actors
(:mod:`pipelines.score.actor`) is that :class:`~pipelines.tracking.ModelRef` and the tracking
URI, and each actor fetches the model itself (:func:`pipelines.tracking.fetch_model`), so no
actor opens a path on the driver's disk. The driver fetches its own copy for what it does
itself: the line saying that frames are resized for the model (DATA ingested at another
size) and its calibration. The actors' CPUs and GPUs are sized to fit the largest
nodes (an actor never spans two); on a cluster that can grow, nodes the actors need are
asked of the autoscaler (``--wait-for-nodes``). One line says what was asked for and which
nodes the actors ran on.
``--gpus-per-actor`` puts the actors on GPUs (fractions share one); ``--precision bf16``
runs the convolutions under bfloat16 autocast, faster where the hardware has it, at the cost
of bit-exactness. A job that is interrupted and run again skips the videos already scored
(their part files) and ends with the same output, without duplicate rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mnad.clips import frames_note
from mnad.config import ModelConfig
from pipelines import options, storage
from pipelines.data import ingested_rows, validate_data, video_clock
from pipelines.errors import UserError
from pipelines.ray_cluster import (
    Need,
    Nodes,
    RaySession,
    admit,
    bundle_cpus,
    largest_node,
    node_resources,
    nodes_for,
    ray_session,
)
from pipelines.schema import LABEL_UNKNOWN, SCORES_SCHEMA, FrameShape
from pipelines.score.actor import FAILED, TOO_SHORT, VideoScorer, VideoTask, lockstep_slots
from pipelines.score.config import ScoreConfig
from pipelines.score.events import (
    CALIBRATED,
    COLUMNS,
    PER_VIDEO,
    SCORE_CHOICE,
    Clock,
    archive_events,
    choice_key,
    chosen_score,
    event_counts,
    event_figures,
    rank_events,
    videos,
)
from pipelines.score.pictures import PictureRequest, render_pictures
from pipelines.score.report import (
    Archive,
    ArchiveScores,
    event_frames,
    known_roc,
    segment_frames,
    video_scores,
    write_score_report,
)
from pipelines.score.result import (
    EVENTS_FILE,
    FRAMES_DIR,
    PARTS_DIR,
    REPORT_DIR,
    REPORT_INDEX,
    SCORES_SUMMARY_FILE,
    THROUGHPUT,
    ScoreResult,
)
from pipelines.score.segments import join_segments, segment_count, split_task

if TYPE_CHECKING:
    from mnad.calibration import Calibration
    from pipelines.tracking import ModelRef


def run_score(config: ScoreConfig) -> ScoreResult:
    """Score every video of the split and write scores, report, summary and MLflow run."""
    from pipelines import tracking

    summary = validate_data(config.data, splits=(config.split,))
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    tracking.check_tracking(uri)
    ref = tracking.find_model(config.model, uri)
    assert summary.shape is not None  # validate_data guarantees one frame size
    model, calibration = _driver_model(config, ref, uri, summary.shape)
    if config.smooth is None:  # the model's own: its preset's smoothing
        config = dataclasses.replace(config, smooth=model.smooth)
    normalise = _normalise(config, calibration)
    tasks = score_tasks(config, normalise, model.clip_length)
    _segments_note(config, normalise, tasks)
    with ray_session(config.quiet):
        scored = score_videos(
            config, tasks, ref, uri, summary.dataset, normalise=normalise, combine=False
        )
        outcomes, seconds = scored.outcomes, scored.seconds
        clock = {} if calibration is None else video_clock(config.data, config.split)
        segmented, tasks = tasks, join_segments(tasks, model.alpha, normalise, config.smooth)
        read = read_archive(config, tasks, normalise, calibration, clock)
        metrics = read.metrics
        metrics[THROUGHPUT] = scored.frames_now / seconds if scored.frames_now else 0.0
        if read.events is not None:
            storage.write_parquet(read.events, storage.join(config.out, EVENTS_FILE))
        report_dir = None
        if config.report and read.frames:
            report_dir = _report(config, summary.dataset, read, metrics, ref, uri, tasks)
    result = ScoreResult(
        out=config.out,
        model=config.model,
        model_version=ref.version,
        dataset=summary.dataset,
        split=config.split,
        memory=config.memory,
        granularity=config.granularity,
        frames=read.frames,
        videos=read.scores.archive.videos,
        failed=tuple(str(r["error"]) for r in outcomes if r["status"] == FAILED),
        skipped=tuple(str(r["error"]) for r in outcomes if r["status"] == TOO_SHORT),
        metrics=metrics,
        seconds=round(seconds, 3),
        report=storage.join(config.out, REPORT_INDEX) if report_dir else None,
        nodes=tuple(sorted({str(r["node"]) for r in outcomes if r["node"]})),
        normalise=normalise,
        normalisations=(normalise, *([PER_VIDEO] if normalise == CALIBRATED else [])),
        false_alarm_rate=config.false_alarm_rate,
        smooth=config.smooth,
        merge_gap=config.merge_gap,
        threshold=read.threshold,
        events=None if read.events is None else storage.join(config.out, EVENTS_FILE),
        scores=storage.join(config.out, FRAMES_DIR),
        segment_seconds=config.segment_seconds,
        segments=sum(t.segment for t in segmented),
    )
    result = _track(config, uri, ref, result, report_dir)
    result.write()  # last: summary.json says the scores are complete
    figures = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    _log(config, f"{result.frames} frames of {result.videos} videos; {figures}; {config.out}")
    return result


def _driver_model(
    config: ScoreConfig, ref: ModelRef, uri: str, shape: FrameShape
) -> tuple[ModelConfig, Calibration | None]:
    """What the driver needs of the model: whether the frames are resized for it (one line
    says so), its config (the clip length that segments are cut for, the ``alpha`` of their
    joined per-video score) and its calibration. Read from a temporary folder that is gone
    once read; the model is never built here (the actors fetch theirs, and so does the task
    that renders the report's pictures)."""
    from mnad.checkpoint import load_checkpoint
    from pipelines import tracking

    with tempfile.TemporaryDirectory(prefix="mnad-score-model-") as tmp:
        checkpoint = load_checkpoint(tracking.fetch_model(ref, uri, dst=tmp))
        _frames_note(config, checkpoint.preset.model, shape)
        return checkpoint.preset.model, checkpoint.calibration


def _report(
    config: ScoreConfig,
    dataset: str,
    read: ReadArchive,
    metrics: dict[str, float],
    ref: ModelRef,
    uri: str,
    tasks: list[VideoTask],
) -> str | None:
    """The report, its pictures rendered on the cluster first (:mod:`.pictures`): the peaks
    of the archive's top events, or of each video's top segments."""
    shards = {t.video_id: t.shard for t in tasks}
    wanted = event_frames(read.events) if read.events is not None else read.segment_frames
    render = render_pictures(ref, uri, [PictureRequest(v, f, shards[v]) for v, f in wanted])
    title = f"{dataset} {config.split}: memory {config.memory}"
    dest = storage.join(config.out, REPORT_DIR)
    if read.events is None:
        return write_score_report(read.scores, dest, title=title, metrics=metrics, render=render)
    # The report shows the scores the events were found on: calibrated.
    return write_score_report(
        read.scores, dest, title=title, metrics=metrics, render=render, events=read.events,
        threshold=read.threshold, false_alarm_rate=config.false_alarm_rate,
        normalise=CALIBRATED,
    )  # fmt: skip


def _normalise(config: ScoreConfig, calibration: Calibration | None) -> str:
    """The normalisation of ``score``: ``auto`` is calibrated when the model has a
    calibration, else per-video (with a note)."""
    if calibration is not None:
        return PER_VIDEO if config.normalise == PER_VIDEO else CALIBRATED
    if config.normalise == CALIBRATED:
        raise UserError(
            f"{config.model}: --normalise calibrated, but the model has no calibration: "
            "run `mnad calibrate MODEL DATA` on normal footage first"
        )
    _log(
        config,
        "note: the model has no calibration, so scores are normalised per video (each video "
        "reaches 1.0; videos cannot be compared) and no events are found; `mnad calibrate` "
        "gives it one",
    )
    return PER_VIDEO


def _log(config: ScoreConfig, message: str) -> None:
    if not config.quiet:
        print(f"mnad score: {message}", flush=True)


def score_tasks(
    config: ScoreConfig, normalise: str = PER_VIDEO, clip_length: int = 1
) -> list[VideoTask]:
    """The videos of the split to score (``--videos``: those only), each with its part. With
    ``--segment-seconds``, ``normalise`` calibrated and per-video memory, a video longer
    than that (by the manifest's frames and fps) whose own file is not there yet is
    segments of at least ``clip_length`` frames (:mod:`.segments`)."""
    rows = {}
    for row in ingested_rows(config.data, config.split):
        rows[row["shard"].rsplit("/", 1)[-1].removesuffix(".parquet")] = row
    if config.videos:
        missing = sorted(set(config.videos) - set(rows))
        if missing:
            raise UserError(
                f"{config.data}: no video {', '.join(missing)} in the {config.split} split"
            )
        rows = {v: r for v, r in rows.items() if v in set(config.videos)}
    seconds = config.segment_seconds if _segmenting(config, normalise) else 0.0
    tasks = []
    for video_id, row in rows.items():
        part = storage.join(config.out, PARTS_DIR, f"{video_id}.parquet")
        task = VideoTask(video_id, storage.join(config.data, row["shard"]), part)
        count = segment_count(row["frames"], row["fps"], seconds, clip_length)
        if count > 1 and storage.is_file(part):  # joined by an earlier run: done
            count = 1
        tasks += split_task(task, count, row["frames"])
    return tasks


def _segmenting(config: ScoreConfig, normalise: str) -> bool:
    """Whether long videos are scored as segments: calibrated scores, per-video memory."""
    return config.segment_seconds > 0 and normalise == CALIBRATED and config.memory != "paper"


def _segments_note(config: ScoreConfig, normalise: str, tasks: list[VideoTask]) -> None:
    """One line when ``--segment-seconds`` is given: how many videos are segments, or why
    none is."""
    if config.segment_seconds <= 0:
        return
    given = f"--segment-seconds {config.segment_seconds:g}"
    if not _segmenting(config, normalise):
        why = "paper memory" if config.memory == "paper" else "per-video normalisation"
        _log(config, f"{given}: videos are scored whole ({why} needs each one whole)")
        return
    segments = [t for t in tasks if t.segment]
    if segments:
        videos = len({t.video_id for t in segments})
        _log(
            config,
            f"{given}: {videos} video(s) scored as {len(segments)} segments by parallel "
            "actors, the memory reset at each segment's start (their scores differ slightly "
            "from scoring them whole)",
        )


@dataclass(frozen=True)
class Scored:
    """What the actors did: one outcome per video, their time, and (when asked) every
    video's frames combined."""

    outcomes: list[dict[str, Any]]
    seconds: float
    frames: pa.Table | None  # SCORES_SCHEMA, sorted by video and frame; None: not combined

    @property
    def frames_now(self) -> int:
        """Frames scored by this run (not taken up from an earlier one)."""
        return sum(int(r["frames"]) for r in self.outcomes)


def score_videos(
    config: ScoreConfig,
    tasks: list[VideoTask],
    ref: ModelRef,
    uri: str,
    dataset: str,
    *,
    normalise: str = PER_VIDEO,
    combine: bool = True,
) -> Scored:
    """Score ``tasks`` (the videos whose files are not there yet) on the cluster, their
    ``score`` as ``normalise`` and ``config.smooth`` say; with ``combine``, read every
    video's frames into one table (for a few videos; an archive is read video by video,
    :func:`read_archive`)."""
    storage.remove_temporaries(storage.join(config.out, PARTS_DIR))  # of a killed actor
    with ray_session(config.quiet) as session:
        outcomes, seconds = _score_videos(config, tasks, ref, uri, dataset, normalise, session)
    frames = combine_parts([t for t in tasks if storage.is_file(t.part)]) if combine else None
    return Scored(outcomes, seconds, frames)


def _frames_note(config: ScoreConfig, model: ModelConfig, shape: FrameShape) -> None:
    """Frames of another size than the model's (or colour for a grey model) are made what
    it takes as they are read (:func:`mnad.clips.model_frames`); one line says so."""
    if (note := frames_note(shape, model, "the model")) is not None:
        _log(config, note)


# --- the actors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorPlan:
    """How many scoring actors, and what each reserves."""

    actors: int
    threads: int  # CPUs (and torch threads) per actor
    gpus: float  # GPUs per actor (0: on CPUs)

    def describe(self) -> str:
        gpus = f" and {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.actors} actor(s) of {self.threads} CPU{gpus} each"


def actor_need(config: ScoreConfig, videos: int, nodes: Nodes) -> Need:
    """The actors the job asks for on a cluster of ``nodes`` (each node's totals).

    From the nodes' sizes, not what is free right now, so that a rerun splits the work (and
    the float arithmetic of each actor's threads) the same way. One actor in paper mode;
    else ``--actors``, by default one per CPU (or per GPU share), at least one, at most one
    per video. Each actor's CPUs: the cluster's CPUs shared out, but no more than lets every
    actor fit on one node (an actor never spans nodes: one actor on two 8-CPU nodes takes 8).
    """
    cpus = sum(node.get("CPU", 0.0) for node in nodes)
    gpus = config.gpus_per_actor
    if gpus > 0:
        default = sum(int(node.get("GPU", 0.0) / gpus + 1e-9) for node in nodes)
    else:
        default = int(cpus + 1e-9)
    wanted = 1 if config.memory == "paper" else config.actors or default
    actors = max(1, min(wanted, videos))
    threads = bundle_cpus(actors, nodes, most=max(1.0, cpus // actors), gpus=gpus)
    return Need.of(actors, threads, gpus)


def plan_actors(config: ScoreConfig, videos: int, nodes: Nodes) -> ActorPlan:
    """The actors for ``videos`` videos (:func:`actor_need`); a one-line UserError when the
    nodes cannot hold them all at once."""
    need = actor_need(config, videos, nodes)
    if not need.fits(nodes):
        raise _refusal(config, need, nodes)
    return ActorPlan(need.count, int(need.bundle["CPU"]), config.gpus_per_actor)


def _refusal(config: ScoreConfig, need: Need, nodes: Nodes) -> UserError:
    gpus = config.gpus_per_actor
    if gpus > 0 and largest_node(nodes, "GPU") + 1e-9 < gpus:
        have = sum(node.get("GPU", 0.0) for node in nodes)
        return UserError(
            f"--gpus-per-actor {gpus:g}: the Ray cluster has {have:g} GPUs (at most "
            f"{largest_node(nodes, 'GPU'):g} on one node); score on CPUs "
            "(--gpus-per-actor 0) or join GPU nodes"
        )
    return UserError(
        f"{need.describe()} for the scoring actors: the Ray cluster's nodes hold "
        f"{need.placeable(nodes)} of them at once (the largest has "
        f"{largest_node(nodes):g} CPU, {largest_node(nodes, 'GPU'):g} GPU): pass fewer --actors"
    )


@contextlib.contextmanager
def _placed(config: ScoreConfig, videos: int, can_grow: bool) -> Iterator[ActorPlan]:
    """The actor plan, after asking the autoscaler for the nodes it needs when the cluster
    cannot hold them yet and can grow (``wait_for_nodes``: a cluster scaled to zero GPU nodes
    is asked for one actor of 1 CPU and the GPUs, or ``--actors`` of them); the request
    stands while the block runs. The plan is then made from the nodes there are; a one-line
    UserError if they still cannot hold it."""
    nodes = node_resources()
    need = actor_need(config, videos, nodes)
    grow = can_grow and config.wait_for_nodes > 0
    if admit(need, nodes, grow) == "refuse":
        raise _refusal(config, need, nodes)
    with nodes_for(need, config.wait_for_nodes if grow else 0.0, lambda m: _log(config, m)):
        yield plan_actors(config, videos, node_resources())


def _score_videos(
    config: ScoreConfig,
    tasks: list[VideoTask],
    ref: ModelRef,
    tracking_uri: str,
    dataset: str,
    normalise: str,
    session: RaySession,
) -> tuple[list[dict[str, Any]], float]:
    """Run the scoring actors over every video; their outcomes and the seconds it took."""
    import ray

    paper = config.memory == "paper"
    with _placed(config, len(tasks), session.can_grow) as plan, _all_actors_first():
        videos = len({t.video_id for t in tasks})
        cut = f" in {len(tasks)} tasks" if len(tasks) > videos else ""
        _log(config, f"{videos} videos{cut} of {config.data} ({config.split}), {plan.describe()}")
        t0 = time.perf_counter()
        items = [asdict(t) for t in tasks]
        per_call = len(items) if paper else _videos_per_call(config, len(items), plan)
        blocks = max(1, -(-len(items) // max(1, per_call)))
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        outcomes_ds = ds.map_batches(
            VideoScorer,
            fn_constructor_kwargs=_scorer_kwargs(
                config, ref, tracking_uri, dataset, plan, normalise
            ),
            batch_size=None if paper else per_call,
            # A task is whole videos: none waits behind another on a busy actor.
            compute=ray.data.ActorPoolStrategy(size=plan.actors, max_tasks_in_flight_per_actor=1),
            num_cpus=plan.threads,
            num_gpus=plan.gpus or None,
        )
        outcomes = _collect(config, outcomes_ds.iter_rows(), len(tasks))
        seconds = time.perf_counter() - t0
    nodes = sorted({str(r["node"]) for r in outcomes if r["node"]})
    where = ", ".join(n[:12] for n in nodes) or "none (every video was scored before)"
    _log(config, f"asked for {plan.describe()}; ran on {len(nodes)} node(s): {where}")
    return outcomes, seconds


CALLS_PER_SLOT_FILL = 4
"""A call of a per-video actor hands it up to this many times as many videos as it scores at
once, so that its slots are refilled as videos end (a call's slots drain at its end)."""


def _videos_per_call(config: ScoreConfig, videos: int, plan: ActorPlan) -> int:
    """Videos in each call of a per-video actor. With the per-frame update an actor scores
    several at once (:func:`pipelines.score.actor.lockstep_slots`): the videos are shared
    out evenly over the actors, a few slot-fills per call at most so that outcomes (and a
    rerun's resume) come in steps; with the per-batch update, one video per call."""
    if config.granularity != "frame":
        return 1
    slots = lockstep_slots("cuda" if plan.gpus else "cpu")
    even = -(-videos // max(1, plan.actors))
    return max(1, min(even, CALLS_PER_SLOT_FILL * slots))


ACTORS_START_S = 600
"""How long the job waits for all its actors to start (each fetches and loads the model)
before any video is handed out, so that the videos spread over every actor and node; a pool
that cannot start in that time fails with Ray Data's timeout instead of waiting forever."""


@contextlib.contextmanager
def _all_actors_first() -> Iterator[None]:
    """Ray Data waits for the whole actor pool (``ACTORS_START_S``) while the block runs."""
    import ray

    context = ray.data.DataContext.get_current()
    saved = context.wait_for_min_actors_s
    context.wait_for_min_actors_s = ACTORS_START_S
    try:
        yield
    finally:
        context.wait_for_min_actors_s = saved


def _scorer_kwargs(
    config: ScoreConfig,
    ref: ModelRef,
    tracking_uri: str,
    dataset: str,
    plan: ActorPlan,
    normalise: str = PER_VIDEO,
) -> dict[str, Any]:
    """What each :class:`VideoScorer` is built from: what travels (the model's ref and the
    tracking URI, never a path on the driver's disk) and the plan."""
    return {
        "model": ref,
        "tracking_uri": tracking_uri,
        "dataset": dataset,
        "reset_per_video": config.memory != "paper",
        "granularity": config.granularity,
        "batch_size": config.batch_size,
        "threads": plan.threads,
        "device": "cuda" if plan.gpus else "cpu",
        "precision": config.precision,
        "normalise": normalise,
        "smooth": config.smooth,
    }


def _collect(config: ScoreConfig, rows: Iterator[dict[str, Any]], total: int) -> list[dict]:
    outcomes: list[dict[str, Any]] = []
    for row in rows:
        outcomes.append(row)
        if row["status"] in (FAILED, TOO_SHORT):
            print(f"mnad score: {row['error']}", file=sys.stderr, flush=True)
        else:
            done = f"[{len(outcomes)}/{total}] {row['video_id']}: {row['status']}"
            _log(config, f"{done} ({row['frames']} frames)")
    return outcomes


# --- the scores ------------------------------------------------------------------------------


def combine_parts(tasks: list[VideoTask]) -> pa.Table:
    """All the videos' files in one table, sorted by video and frame (for a few videos)."""
    tables = []
    for task in tasks:
        fs, path = storage.resolve(task.part)
        tables.append(pq.read_table(path, filesystem=fs).replace_schema_metadata(None))
    table = pa.concat_tables(tables) if tables else SCORES_SCHEMA.empty_table()
    return table.sort_by([("video_id", "ascending"), ("frame_index", "ascending")])


class KnownFrames:
    """The labelled frames of an archive, added video by video: their labels and the values
    of each score series the metrics read, nothing else (no other column, no unlabelled
    frame), so what it holds is the column data the AUCs need."""

    def __init__(self) -> None:
        self.labels: dict[str, np.ndarray] = {}  # video_id -> (n,) int8, 0 or 1
        self.scores: dict[str, dict[str, np.ndarray]] = {}  # series -> video_id -> (n,)

    def add(self, video_id: str, label: np.ndarray, series: Mapping[str, np.ndarray]) -> None:
        """One video's labels and its scores, a series per name (all of its frames)."""
        known = label != LABEL_UNKNOWN
        if not known.any():
            return
        self.labels[video_id] = label[known].astype(np.int8)
        for name, values in series.items():
            self.scores.setdefault(name, {})[video_id] = np.asarray(values, np.float64)[known]

    def metrics(self, name: str) -> dict[str, float]:
        """Micro AUC (the paper's), macro AUC and EER of series ``name``, when both classes
        occur."""
        from mnad import metrics

        labels_by = self.labels
        scores_by = {v: self.scores[name][v] for v in labels_by}
        pooled = np.concatenate(list(labels_by.values())) if labels_by else np.zeros(0)
        if len(np.unique(pooled)) < 2:
            return {}
        macro = metrics.macro_auc(scores_by, labels_by)
        out = {
            "micro_auc": metrics.micro_auc(scores_by, labels_by),
            "eer": metrics.eer(np.concatenate(list(scores_by.values())), pooled),
        }
        if macro.n_videos:
            out["macro_auc"] = macro.value
        return out

    def roc(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The pooled ROC of series ``name`` (None unless both classes occur)."""
        if not self.labels:
            return None
        scores = np.concatenate([self.scores[name][v] for v in self.labels])
        return known_roc(scores, np.concatenate(list(self.labels.values())))


def frame_metrics(frames: pa.Table, column: str = "score") -> dict[str, float]:
    """Micro AUC (the paper's), macro AUC and EER of ``column`` over the labelled frames of a
    table sorted by video, when any."""
    score = frames.column(column).to_numpy()
    label = frames.column("label").to_numpy()
    known = KnownFrames()
    for video in videos(frames):
        known.add(video.video_id, label[video.rows], {column: score[video.rows]})
    return known.metrics(column)


@dataclass(frozen=True)
class ReadArchive:
    """What the driver took from the frames dataset, read one video at a time."""

    frames: int
    metrics: dict[str, float]  # the AUCs of each series; with a calibration, the events'
    scores: ArchiveScores  # for the report: counts, its ROC, a video's rows on demand
    events: pa.Table | None  # EVENTS_SCHEMA, ranked over the archive; None: no calibration
    threshold: float | None
    segment_frames: list[tuple[str, int]]  # the per-video report's pictures (no calibration)


def read_archive(
    config: ScoreConfig,
    tasks: list[VideoTask],
    normalise: str,
    calibration: Calibration | None,
    clock: Clock,
) -> ReadArchive:
    """Read each scored video's file of SCORES/frames in turn (its ``score`` rewritten first
    when it was scored with another normalisation or smoothing): the metrics of ``score``
    and of each normalisation written, raw and, with ``--smooth`` > 1, smoothed
    (``calibrated_micro_auc``, ``per_video_smoothed_micro_auc``...); with a calibration,
    each video's events at the threshold for ``--false-alarm-rate``, ranked over the
    archive at the end, and what they measure (alarm rates, events per hour of footage, and
    against labels). What is held is the labelled frames' scores and the events, never a
    whole video past its turn."""
    window = config.smooth
    names = (CALIBRATED, PER_VIDEO) if calibration is not None else (PER_VIDEO,)
    threshold = None
    if calibration is not None:
        threshold = calibration.threshold(config.false_alarm_rate, window)
    events_key = "calibrated_smoothed" if window > 1 else "calibrated"
    parts = {t.video_id: t.part for t in sorted(tasks, key=lambda t: t.video_id)}
    parts = {v: p for v, p in parts.items() if storage.is_file(p)}
    known = KnownFrames()
    found: list[pa.Table] = []
    ids: list[str] = []
    labelled: set[str] = set()
    frames = over = anomalies = overlapped = 0
    seconds = 0.0
    wanted: list[tuple[str, int]] = []
    for video_id, part in parts.items():
        table = _video_frames(part, normalise, window)
        n = table.num_rows
        ids.append(video_id)
        frames += n
        label = table.column("label").to_numpy()
        if (label != LABEL_UNKNOWN).any():
            labelled.add(video_id)
        per_video, calibrated = _raw_scores(table)
        series = {"score": table.column("score").to_numpy()}
        for name in names:
            key = name.replace("-", "_")
            series[key] = per_video if name == PER_VIDEO else calibrated
            if window > 1:
                series[f"{key}_smoothed"] = chosen_score(per_video, calibrated, name, window)
        known.add(video_id, label, series)
        if calibration is not None and threshold is not None:
            score = chosen_score(per_video, calibrated, CALIBRATED, window)
            scored = _with_score(table, score)
            events = archive_events(scored, threshold, config.merge_gap, clock)
            found.append(events)
            over += int((score > threshold).sum())
            a, b = event_counts(scored, events)
            anomalies, overlapped = anomalies + a, overlapped + b
            fps = clock.get(video_id, (None, 0.0))[0]
            seconds += n / fps if fps else 0.0
        elif config.report:
            wanted += segment_frames(video_scores(table))

    metrics = known.metrics("score")
    for name in names:
        key = name.replace("-", "_")
        metrics.update({f"{key}_{k}": v for k, v in known.metrics(key).items()})
        if window > 1:
            smoothed = known.metrics(f"{key}_smoothed")
            metrics.update({f"{key}_smoothed_{k}": v for k, v in smoothed.items()})

    def video(video_id: str) -> pa.Table:
        table = _video_frames(parts[video_id], normalise, window)
        if calibration is None:
            return table
        return _with_score(table, chosen_score(*_raw_scores(table), CALIBRATED, window))

    counts = Archive(len(ids), frozenset(labelled), frames, tuple(ids))
    if calibration is None or threshold is None:
        scores = ArchiveScores(counts, known.roc("score"), video)
        return ReadArchive(frames, metrics, scores, None, None, wanted)
    ranked = rank_events(found)
    metrics.update(
        {
            "threshold": threshold,
            "events": float(ranked.num_rows),
            "alarm_rate": over / max(1, frames),
            "calibration_alarm_rate": calibration.alarm_rate(threshold, window),
        }
    )
    held_out = calibration.held_out_alarm_rate(config.false_alarm_rate, window)
    if held_out is not None:
        metrics["calibration_held_out_alarm_rate"] = held_out
    if seconds:
        metrics["events_per_hour"] = ranked.num_rows / (seconds / 3600)
    metrics.update(event_figures(anomalies, overlapped, ranked))
    scores = ArchiveScores(counts, known.roc(events_key), video)
    return ReadArchive(frames, metrics, scores, ranked, threshold, [])


def _video_frames(part: str, normalise: str, window: int) -> pa.Table:
    """One video's file of SCORES/frames, without its metadata. A file whose ``score`` is
    another normalisation or smoothing than ``normalise`` over ``window`` (scored by an
    earlier job with other options) gets the asked ``score`` and is written back first."""
    fs, path = storage.resolve(part)
    table = pq.read_table(path, filesystem=fs)
    meta = table.schema.metadata or {}
    asked = choice_key(normalise, window)
    if meta.get(SCORE_CHOICE) != asked:
        table = _with_score(table, chosen_score(*_raw_scores(table), normalise, window))
        table = table.replace_schema_metadata({**meta, SCORE_CHOICE: asked})
        storage.write_parquet(table, part)
    return table.replace_schema_metadata(None)


def _raw_scores(table: pa.Table) -> tuple[np.ndarray, np.ndarray | None]:
    """(per-video, calibrated or None without a calibration) scores of one video."""
    calibrated = table.column(COLUMNS[CALIBRATED])
    per_video = table.column(COLUMNS[PER_VIDEO]).to_numpy()
    return per_video, None if calibrated.null_count else calibrated.to_numpy()


def _with_score(table: pa.Table, score: np.ndarray) -> pa.Table:
    at = table.schema.get_field_index("score")
    return table.set_column(at, table.schema.field("score"), pa.array(score, pa.float64()))


# --- MLflow ----------------------------------------------------------------------------------


SCORES_URI_TAG = "mnad.scores_uri"
"""The score run's tag that says where its frames dataset is (absolute path or URI)."""


def _track(
    config: ScoreConfig, uri: str, ref: ModelRef, result: ScoreResult, report_dir: str | None
) -> ScoreResult:
    """The MLflow run of the job, linked to the model version: params, metrics, the summary,
    the events and the report as artifacts, and where the scores are (tag
    ``mnad.scores_uri``: the frames dataset, never copied into the run). Returns the result
    with its ``run_id``."""
    from pipelines import tracking

    params = {k: v for k, v in options.values(config).items() if k != "quiet"}
    tags = {
        "mnad.stage": "score",
        "mnad.model_uri": ref.uri,
        SCORES_URI_TAG: storage.absolute(storage.join(config.out, FRAMES_DIR)),
    }
    experiment = config.experiment or result.dataset
    with (
        tracking.start_run(uri, experiment, f"score-{config.memory}", params, tags) as run,
        tempfile.TemporaryDirectory(prefix="mnad-score-") as tmp,
    ):
        if ref.name and ref.version:
            tracking.link_model_version(run, ref.name, ref.version)
        run.log_metrics(result.metrics, step=0)
        result = dataclasses.replace(result, run_id=run.run_id)
        summary = os.path.join(tmp, SCORES_SUMMARY_FILE)
        result.write(summary)  # the summary SCORES will hold, logged before it is written
        if result.events:
            run.log_artifact(_local_file(result.events, tmp))
        run.log_artifact(summary)
        if report_dir:
            run.log_artifacts(report_dir, REPORT_DIR)
    return result


def _local_file(uri: str, folder: str) -> str:
    """``uri`` itself if it is a local path, else a copy of it in the local ``folder``."""
    if not storage.is_uri(uri):
        return uri
    fs, path = storage.resolve(uri)
    local = os.path.join(folder, path.rsplit("/", 1)[-1])
    pafs.copy_files(
        path, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
    )
    return local


__all__ = [
    "SCORES_URI_TAG",
    "ActorPlan",
    "KnownFrames",
    "ReadArchive",
    "Scored",
    "actor_need",
    "combine_parts",
    "frame_metrics",
    "plan_actors",
    "read_archive",
    "run_score",
    "score_videos",
]
