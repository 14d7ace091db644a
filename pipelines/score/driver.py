"""`mnad score` on the driver: per-frame anomaly scores of a whole split or archive, as a Ray
Data job, then the combined scores, the metrics, the report and the MLflow run.

```
DATA/<split>/*.parquet ──Ray Data: VideoScorer actors, CPUs or GPUs──▶ SCORES/parts/*.parquet
SCORES/parts ──▶ SCORES/frames.parquet, SCORES/report/, SCORES/summary.json ──▶ MLflow run
```

Memory modes:

- ``per-video`` (default): the memory is reset to the trained one at every video, so videos
  are independent and scored in parallel across actors and nodes. The right mode for bulk
  scoring of archives.
- ``paper``: the memory is carried across all videos in sorted order, as the paper's
  evaluation does; one actor scores them in turn. For exact reproduction.

The model is found once (:func:`pipelines.tracking.find_model`); what travels to the actors
(:mod:`pipelines.score.actor`) is that :class:`~pipelines.tracking.ModelRef` and the tracking
URI, and each actor fetches the model itself (:func:`pipelines.tracking.fetch_model`), so no
actor opens a path on the driver's disk. The driver fetches its own copy for what it does
itself: the frame-size check and the report's pictures. The actors' CPUs and GPUs are sized
to fit the largest nodes (an actor never spans two); on a cluster that can grow, nodes the
actors need are asked of the autoscaler (``--wait-for-nodes``). One line says what was asked
for and which nodes the actors ran on.
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines import options, storage
from pipelines.data import list_shards, validate_data, video_clock
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
from pipelines.schema import SCORES_SCHEMA, FrameShape
from pipelines.score.actor import FAILED, TOO_SHORT, VideoScorer, VideoTask
from pipelines.score.config import ScoreConfig
from pipelines.score.events import (
    CALIBRATED,
    COLUMNS,
    PER_VIDEO,
    Clock,
    archive_events,
    choose_scores,
    event_metrics,
    videos,
)
from pipelines.score.report import FrameRenderer, write_score_report
from pipelines.score.result import (
    EVENTS_FILE,
    FRAMES_FILE,
    PARTS_DIR,
    REPORT_DIR,
    REPORT_INDEX,
    SCORES_SUMMARY_FILE,
    THROUGHPUT,
    ScoreResult,
)

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
    tasks = score_tasks(config)
    assert summary.shape is not None  # validate_data guarantees one frame size
    model = _driver_model(config, ref, uri, summary.shape, tasks)
    normalise = _normalise(config, model.calibration)
    scored = score_videos(config, tasks, ref, uri, summary.dataset)
    outcomes, seconds = scored.outcomes, scored.seconds
    scored_now = sum(int(r["frames"]) for r in outcomes)
    frames = choose_scores(scored.frames, normalise, config.smooth)
    storage.write_parquet(frames, storage.join(config.out, FRAMES_FILE))
    metrics = score_metrics(frames, normalise, model.calibration is not None, config.smooth)
    metrics[THROUGHPUT] = scored_now / seconds if scored_now else 0.0
    found = None
    if model.calibration is not None:
        found = _events(
            config, frames, normalise, model.calibration, video_clock(config.data, config.split)
        )
        storage.write_parquet(found.table, storage.join(config.out, EVENTS_FILE))
        metrics.update(found.metrics)
    report_dir = None
    if model.render is not None:
        title = f"{summary.dataset} {config.split}: memory {config.memory}"
        dest = storage.join(config.out, REPORT_DIR)
        if found is None:
            report_dir = write_score_report(
                frames, dest, title=title, metrics=metrics, render=model.render
            )
        else:  # the report shows the scores the events were found on: calibrated
            report_dir = write_score_report(
                found.scored, dest, title=title, metrics=metrics, render=model.render,
                events=found.table, threshold=found.threshold,
                false_alarm_rate=config.false_alarm_rate, normalise=CALIBRATED,
            )  # fmt: skip
    result = ScoreResult(
        out=config.out,
        model=config.model,
        model_version=ref.version,
        dataset=summary.dataset,
        split=config.split,
        memory=config.memory,
        granularity=config.granularity,
        frames=frames.num_rows,
        videos=len(pc.unique(frames.column("video_id"))),
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
        threshold=None if found is None else found.threshold,
        events=None if found is None else storage.join(config.out, EVENTS_FILE),
    )
    result = _track(config, uri, ref, result, report_dir)
    result.write()  # last: summary.json says the scores are complete
    figures = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    _log(config, f"{result.frames} frames of {result.videos} videos; {figures}; {config.out}")
    return result


@dataclass(frozen=True)
class _DriverModel:
    calibration: Calibration | None
    render: FrameRenderer | None  # the report's pictures; None without a report


def _driver_model(
    config: ScoreConfig, ref: ModelRef, uri: str, shape: FrameShape, tasks: list[VideoTask]
) -> _DriverModel:
    """The driver's own copy of the model, for what the driver does with it: check that the
    frames fit it, read its calibration, and render the report's pictures. Fetched into a
    temporary folder that is gone once the model is loaded; the actors fetch theirs."""
    from mnad.checkpoint import load_checkpoint
    from pipelines import tracking

    with tempfile.TemporaryDirectory(prefix="mnad-score-model-") as tmp:
        checkpoint_dir = tracking.fetch_model(ref, uri, dst=tmp)
        checkpoint = load_checkpoint(checkpoint_dir)
        _check_model_fits(checkpoint.preset, shape, config.data)
        render = None
        if config.report:
            render = FrameRenderer(checkpoint_dir, {t.video_id: t.shard for t in tasks})
        return _DriverModel(checkpoint.calibration, render)


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


def score_tasks(config: ScoreConfig) -> list[VideoTask]:
    """The videos of the split to score (``--videos``: those only), each with its part."""
    tasks = []
    for shard in list_shards(config.data, config.split):
        video_id = shard.rsplit("/", 1)[-1].removesuffix(".parquet")
        part = storage.join(config.out, PARTS_DIR, f"{video_id}.parquet")
        tasks.append(VideoTask(video_id, shard, part))
    if config.videos:
        missing = sorted(set(config.videos) - {t.video_id for t in tasks})
        if missing:
            raise UserError(
                f"{config.data}: no video {', '.join(missing)} in the {config.split} split"
            )
        tasks = [t for t in tasks if t.video_id in set(config.videos)]
    return tasks


@dataclass(frozen=True)
class Scored:
    """What the actors did: one outcome per video, their time, and every part combined."""

    outcomes: list[dict[str, Any]]
    seconds: float
    frames: pa.Table  # SCORES_SCHEMA, sorted by video and frame; ``score`` is per-video


def score_videos(
    config: ScoreConfig, tasks: list[VideoTask], ref: ModelRef, uri: str, dataset: str
) -> Scored:
    """Score ``tasks`` (the videos whose parts are not there yet) on the cluster and combine
    every part."""
    storage.remove_temporaries(storage.join(config.out, PARTS_DIR))  # of a killed actor
    with ray_session(config.quiet) as session:
        outcomes, seconds = _score_videos(config, tasks, ref, uri, dataset, session)
    frames = combine_parts([t for t in tasks if storage.is_file(t.part)])
    return Scored(outcomes, seconds, frames)


def _check_model_fits(preset: Any, shape: FrameShape, data: str) -> None:
    m = preset.model
    if (shape.height, shape.width) != (m.height, m.width) or shape.channels not in (1, m.channels):
        raise UserError(
            f"{data}: frames are {shape.height}x{shape.width}x{shape.channels}, the model "
            f"takes {m.height}x{m.width}x{m.channels}; re-run `mnad ingest` with "
            f"--size {m.height} {m.width} --channels {m.channels}"
        )


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
    session: RaySession,
) -> tuple[list[dict[str, Any]], float]:
    """Run the scoring actors over every video; their outcomes and the seconds it took."""
    import ray

    paper = config.memory == "paper"
    with _placed(config, len(tasks), session.can_grow) as plan, _all_actors_first():
        _log(config, f"{len(tasks)} videos of {config.data} ({config.split}), {plan.describe()}")
        t0 = time.perf_counter()
        items = [asdict(t) for t in tasks]
        ds = ray.data.from_items(items, override_num_blocks=1 if paper else max(1, len(items)))
        outcomes_ds = ds.map_batches(
            VideoScorer,
            fn_constructor_kwargs=_scorer_kwargs(config, ref, tracking_uri, dataset, plan),
            batch_size=None if paper else 1,
            # A task is a whole video: none waits behind another on a busy actor.
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
    config: ScoreConfig, ref: ModelRef, tracking_uri: str, dataset: str, plan: ActorPlan
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
    """All part files in one table, sorted by video and frame."""
    tables = []
    for task in tasks:
        fs, path = storage.resolve(task.part)
        tables.append(pq.read_table(path, filesystem=fs).replace_schema_metadata(None))
    table = pa.concat_tables(tables) if tables else SCORES_SCHEMA.empty_table()
    return table.sort_by([("video_id", "ascending"), ("frame_index", "ascending")])


def frame_metrics(frames: pa.Table, column: str = "score") -> dict[str, float]:
    """Micro AUC (the paper's), macro AUC and EER of ``column`` over the labelled frames,
    when any."""
    from mnad import metrics

    score = frames.column(column).to_numpy()
    label = frames.column("label").to_numpy()
    by_video: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for video in videos(frames):
        s, lab = metrics.known_frames(score[video.rows], label[video.rows])
        if len(lab):
            by_video[video.video_id] = (s, lab)
    pooled = np.concatenate([lab for _, lab in by_video.values()]) if by_video else np.zeros(0)
    if len(np.unique(pooled)) < 2:
        return {}
    scores_by = {k: v[0] for k, v in by_video.items()}
    labels_by = {k: v[1] for k, v in by_video.items()}
    macro = metrics.macro_auc(scores_by, labels_by)
    all_scores = np.concatenate(list(scores_by.values()))
    out = {
        "micro_auc": metrics.micro_auc(scores_by, labels_by),
        "eer": metrics.eer(all_scores, pooled),
    }
    if macro.n_videos:
        out["macro_auc"] = macro.value
    return out


def score_metrics(
    frames: pa.Table, normalise: str, calibrated: bool, window: int
) -> dict[str, float]:
    """The frame metrics of ``score`` (the job's normalisation and smoothing), and of each
    normalisation written, raw and, with ``window`` > 1, smoothed: ``calibrated_micro_auc``,
    ``per_video_smoothed_micro_auc``..."""
    out = frame_metrics(frames)
    for name in (CALIBRATED, PER_VIDEO) if calibrated else (PER_VIDEO,):
        key = name.replace("-", "_")
        out.update({f"{key}_{k}": v for k, v in frame_metrics(frames, COLUMNS[name]).items()})
        if window > 1:
            smoothed = frame_metrics(choose_scores(frames, name, window))
            out.update({f"{key}_smoothed_{k}": v for k, v in smoothed.items()})
    return out


@dataclass(frozen=True)
class _Events:
    table: pa.Table
    threshold: float
    metrics: dict[str, float]
    scored: pa.Table  # the frames with ``score`` calibrated and smoothed, as events saw it


def _events(
    config: ScoreConfig, frames: pa.Table, normalise: str, calibration: Calibration, clock: Clock
) -> _Events:
    """The archive's events at the calibration's threshold for ``--false-alarm-rate``, and
    what they measure: alarm rates, events per hour of footage, and against labels."""
    rate, window = config.false_alarm_rate, config.smooth
    threshold = calibration.threshold(rate, window)
    scored = frames if normalise == CALIBRATED else choose_scores(frames, CALIBRATED, window)
    table = archive_events(scored, threshold, config.merge_gap, clock)
    over = int(pc.sum(pc.greater(scored.column("score"), threshold)).as_py() or 0)
    metrics = {
        "threshold": threshold,
        "events": float(table.num_rows),
        "alarm_rate": over / max(1, scored.num_rows),
        "calibration_alarm_rate": calibration.alarm_rate(threshold, window),
    }
    held_out = calibration.held_out_alarm_rate(rate, window)
    if held_out is not None:
        metrics["calibration_held_out_alarm_rate"] = held_out
    hours = _hours(scored, clock)
    if hours:
        metrics["events_per_hour"] = table.num_rows / hours
    metrics.update(event_metrics(scored, table))
    return _Events(table, threshold, metrics, scored)


def _hours(frames: pa.Table, clock: Clock) -> float:
    """Hours of scored footage in the videos whose frame rate is known."""
    seconds = 0.0
    for video in videos(frames):
        fps = clock.get(video.video_id, (None, 0.0))[0]
        if fps:
            seconds += (video.rows.stop - video.rows.start) / fps
    return seconds / 3600


# --- MLflow ----------------------------------------------------------------------------------


def _track(
    config: ScoreConfig, uri: str, ref: ModelRef, result: ScoreResult, report_dir: str | None
) -> ScoreResult:
    """The MLflow run of the job, linked to the model version: params, metrics, the scores,
    the summary and the report as artifacts. Returns the result with its ``run_id``."""
    from pipelines import tracking

    params = {k: v for k, v in options.values(config).items() if k != "quiet"}
    tags = {"mnad.stage": "score", "mnad.model_uri": ref.uri}
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
        run.log_artifact(_local_file(storage.join(config.out, FRAMES_FILE), tmp))
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
    "ActorPlan",
    "Scored",
    "actor_need",
    "combine_parts",
    "frame_metrics",
    "plan_actors",
    "run_score",
    "score_videos",
]
