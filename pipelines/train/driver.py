"""`mnad train`: MNAD trained with Ray Train (V2) and PyTorch DDP, tracked in MLflow (driver).

:func:`run_train` checks everything a user can get wrong before any work starts (DATA,
preset, tracking store, run name, worker placement), builds the clip datasets
(:mod:`pipelines.train.data`), starts or resumes an MLflow run (:mod:`pipelines.tracking`),
runs a ``TorchTrainer`` over :func:`pipelines.train.worker.train_loop` and, while it runs,
logs every epoch's metrics and prints one progress line per epoch. At the end it logs the
final checkpoint, registers it as ``mnad-<dataset>`` with the alias ``latest`` and writes
the run's marker (:mod:`pipelines.train.records`).

Ray Train keeps the last ``keep_checkpoints`` checkpoints under OUTPUT/train/NAME and
restarts failed workers from the latest. ``--resume`` continues a run whose driver died:
Ray Train V2 restores a run launched again with the same storage path and name, and the
MLflow run is continued by its id. On a running cluster that can grow, the autoscaler is
given ``wait_for_nodes`` seconds to add the workers' nodes before the placement check.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mnad.calibration import DEFAULT_FALSE_ALARM_RATE
from mnad.clips import fitted_shape, frames_note
from mnad.config import ModelConfig, Preset
from mnad.losses import LOSS_NAMES
from pipelines import options, storage
from pipelines.data import DataSummary, validate_data
from pipelines.errors import UserError
from pipelines.ray_cluster import Need, bundle_cpus, node_resources, nodes_for, ray_session
from pipelines.schema import FrameShape
from pipelines.stage import write_marker
from pipelines.train.config import TrainConfig
from pipelines.train.data import TrainingClips, training_clips
from pipelines.train.records import (
    RunRecord,
    TrainResult,
    find_record,
    resumed_config,
    run_identity,
    runs_folder,
    write_record,
)
from pipelines.train.worker import WorkerPlan, train_loop

if TYPE_CHECKING:
    import ray.train


@dataclass(frozen=True)
class _Job:
    """What the driver settles before any work starts."""

    config: TrainConfig
    record: RunRecord | None  # the run that --resume continues
    summary: DataSummary
    tracking_uri: str
    experiment: str
    name: str
    runs: str  # OUTPUT/train: Ray Train's storage path
    identity: dict[str, Any]  # records.run_identity, kept in the marker


def run_train(config: TrainConfig) -> TrainResult:
    """Train MNAD on DATA's training videos with Ray Train; see the module docstring."""
    job = _prepare(config)
    say = _printer(job.config.quiet)
    with ray_session(job.config.quiet, log_to_driver=False) as session:
        job = dataclasses.replace(job, config=_resolve_cpus(job.config))
        need = _need(job.config)
        wait = job.config.wait_for_nodes if session.can_grow else 0.0
        with nodes_for(need, wait, say):
            _check_placement(job.config, need)
            say(f"asked for {need.describe()} (workers x each one's resources) on a cluster "
                f"of {len(node_resources())} node(s)")  # fmt: skip
            result = _train(job)
            where = ", ".join(n[:12] for n in result.nodes)
            say(f"asked for {need.describe()}; ran on {len(result.nodes)} node(s): {where}")
    marker = {"result": result.to_json(), "identity": job.identity}
    write_marker(storage.join(job.runs, job.name), marker)
    say(
        f"registered {result.model_uri} (aliases {', '.join(_aliases(job.config))}); "
        f"MLflow run {result.run_id}; checkpoint {result.checkpoint}"
    )
    return result


def _prepare(config: TrainConfig) -> _Job:
    """The checks that need no Ray: DATA, frame size, tracking store, the run to continue
    (``--resume``) or the new run's name."""
    from pipelines.tracking import check_tracking, resolve_tracking_uri

    runs = runs_folder(config)
    record = find_record(runs, config.name) if config.resume else None
    if record is not None:
        config = resumed_config(config, record)
    summary = validate_data(config.data, splits=("train",))
    _frames_note(config.resolved, summary.shape, _printer(config.quiet))
    tracking_uri = record.tracking_uri if record else resolve_tracking_uri(config.tracking_uri)
    check_tracking(tracking_uri)
    if record is None:
        experiment = config.experiment or summary.dataset
        name = config.name or _default_name(summary.dataset, config.resolved)
        _check_new_name(runs, name)
    else:
        experiment, name = record.experiment, record.name
    identity = run_identity(config)
    return _Job(config, record, summary, tracking_uri, experiment, name, runs, identity)


def _train(job: _Job) -> TrainResult:
    """Build the clips, run the fit inside the MLflow run, register the final checkpoint."""
    from pipelines.tracking import start_run

    config, preset = job.config, job.config.resolved
    clips = training_clips(
        config.data,
        preset.model.clip_length,
        _chunk_shape(job.summary.shape, preset.model),
        seed=preset.optim.seed,
        val_fraction=config.val_fraction,
        chunk_clips=config.chunk_clips,
        fit=preset.model,
        in_memory={"auto": None, "memory": True, "stream": False}[config.input_mode],
    )
    _printer(config.quiet)(
        f"{len(clips.train_videos)} training videos' frames held in the object store, clips "
        "of all videos shuffled together each epoch"
        if clips.in_memory is not None
        else f"{len(clips.train_videos)} training videos' clips streamed from the shards "
        f"in chunks (--input-mode {config.input_mode})"
    )
    _check_enough_clips(clips.num_train_clips, preset.optim.batch_size, config.workers)
    tags = {"mnad.stage": "train", "mnad.ray_run": job.name, "mnad.storage": job.runs}
    run_id = job.record.run_id if job.record else None
    params = _params(job, clips)
    with start_run(job.tracking_uri, job.experiment, job.name, params, tags, run_id=run_id) as run:
        if job.record is None:
            values = options.values(config)
            record = RunRecord(job.name, run.run_id, job.experiment, job.tracking_uri, values)
            write_record(job.runs, record)
        progress = _Progress(run, preset.optim.epochs, config.quiet)
        fitted = _fit(job, clips, progress)
        history = list(fitted.return_value or progress.history())
        info = _register(job, run, fitted.checkpoint, clips)
    return TrainResult(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        tracking_uri=job.tracking_uri,
        name=job.name,
        checkpoint=fitted.checkpoint.path,
        model_name=info.name,
        model_version=info.version,
        model_uri=info.uri,
        epochs=history,
        nodes=tuple(sorted(progress.nodes)),
    )


def _params(job: _Job, clips: TrainingClips) -> dict[str, Any]:
    """The MLflow params: every option, the resolved preset, what the run trains on."""
    return {
        **options.values(job.config),
        "preset": job.config.resolved.to_dict(),
        "dataset": job.summary.dataset,
        "train_videos": len(clips.train_videos),
        "val_videos": ",".join(v.video_id for v in clips.val_videos) or "-",
    }


def _aliases(config: TrainConfig) -> tuple[str, ...]:
    return ("latest",) + ((config.alias,) if config.alias else ())


def _register(job: _Job, run: Any, checkpoint: Any, clips: TrainingClips) -> Any:
    """Log the final checkpoint to the run, calibrate it on the held-out videos, and
    register it (with its calibration) as ``mnad-<dataset>``."""
    from mnad.checkpoint import CALIBRATION_FILE, write_calibration
    from pipelines.tracking import register_checkpoint

    config = job.config
    with checkpoint.as_directory() as final:
        run.log_artifacts(final, "checkpoint")
        calibration = _calibrate(job, run, clips)
        if calibration is not None:
            write_calibration(final, calibration)
            run.log_artifact(os.path.join(final, CALIBRATION_FILE), "checkpoint")
        info = register_checkpoint(
            run,
            final,
            f"mnad-{job.summary.dataset}",
            aliases=_aliases(config),
            step=config.resolved.optim.epochs,
        )
    if calibration is not None:
        from pipelines.calibrate.driver import figures_of, tag_calibration

        tag_calibration(
            job.tracking_uri,
            info.name,
            info.version,
            figures_of(calibration, DEFAULT_FALSE_ALARM_RATE),
        )
    return info


def _calibrate(job: _Job, run: Any, clips: TrainingClips) -> Any:
    """The calibration of the logged checkpoint on the held-out videos (scored on the
    cluster by actors that fetch ``runs:/<run>/checkpoint``); None without held-out videos
    or with ``--no-calibrate``. Its figures become the run's metrics."""
    from pipelines.calibrate.driver import calibrate_videos, figures_of, warning

    say = _printer(job.config.quiet)
    if not job.config.calibrate:
        return None
    if not clips.val_videos:
        say(
            "no held-out videos, so the model has no calibration (its scores are normalised "
            "per video): pass --val-fraction, or run `mnad calibrate` on normal footage"
        )
        return None
    videos = [v.video_id for v in clips.val_videos]
    say(f"calibrating on the {len(videos)} held-out video(s): {', '.join(videos)}")
    calibration = calibrate_videos(
        f"runs:/{run.run_id}/checkpoint", job.tracking_uri, job.config.data, videos,
        out=storage.join(job.runs, job.name, "calibration"), alpha=job.config.resolved.model.alpha,
        quiet=True,
    )  # fmt: skip
    figures = figures_of(calibration, DEFAULT_FALSE_ALARM_RATE)
    metrics = {k: figures[k] for k in ("threshold", "alarm_rate", "held_out_alarm_rate")}
    run.log_metrics({f"calibration_{k}": v for k, v in metrics.items() if v is not None}, step=0)
    held = figures["held_out_alarm_rate"]
    measured = "one video: no held-out rate" if held is None else f"held out {held:.4f}"
    say(
        f"calibrated: threshold {figures['threshold']:.3f} at a false-alarm rate of "
        f"{DEFAULT_FALSE_ALARM_RATE:g} ({measured})"
    )
    if (line := warning(figures)) is not None:
        say(line)
    return calibration


# --- the fit ---------------------------------------------------------------------------------


def _trainer(job: _Job, clips: TrainingClips, events: Any) -> Any:
    """The ``TorchTrainer`` of the run: the worker plan, resources, storage and datasets."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    config, preset = job.config, job.config.resolved
    plan = WorkerPlan(
        preset=preset,
        batch_per_worker=preset.optim.batch_size // config.workers,
        checkpoint_every=config.checkpoint_every,
        shuffle_buffer=config.shuffle_buffer,
        threads=max(1, int(config.cpus_per_worker)),
        use_gpu=config.use_gpu,
        has_val=bool(clips.val_videos),
        events=events,
        probe=config.probe,
        in_memory=clips.in_memory,
    )
    need = _need(config)
    datasets = clips.datasets()  # none when the clips are in memory
    return TorchTrainer(
        train_loop,
        train_loop_config={"plan": plan},
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers, use_gpu=config.use_gpu, resources_per_worker=need.bundle
        ),
        run_config=ray.train.RunConfig(
            name=job.name,
            storage_path=job.runs,
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
        ),
        datasets=datasets,
    )


def _fit(job: _Job, clips: TrainingClips, progress: _Progress) -> ray.train.Result:
    """Run the TorchTrainer; epoch records reach ``progress`` while it runs."""
    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: a queue on a worker node would die with it, and the fit with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    events = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    trainer = _trainer(job, clips, events)
    try:
        # fit() blocks; it runs in a thread so that this one logs each epoch as it ends.
        with ThreadPoolExecutor(1, thread_name_prefix="mnad-fit") as pool:
            future = pool.submit(trainer.fit)
            for event in _drain(events, future.done):
                progress.event(event)
            return future.result()
    finally:
        events.shutdown()


DRAIN_WAIT_S = 2.0
"""How long the driver's wait for the next record lasts before it looks whether the fit has
ended: each wait is a call to the queue's actor, which costs both processes CPU (at 0.5 s
the queue's actor took 1.8 % of a core, against 0.85 % for an idle actor)."""


def _drain(events: Any, finished: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    """Records from the queue until ``finished()`` and the queue is empty."""
    from ray.util.queue import Empty

    while True:
        done = finished()
        try:
            yield events.get(timeout=DRAIN_WAIT_S)
        except Empty:
            if done:
                return


class _Progress:
    """What the workers send while they run: each rank's node, and per epoch the MLflow
    metrics and the one-line progress report."""

    def __init__(self, run: Any, epochs: int, quiet: bool):
        self.run = run
        self.epochs = epochs
        self.quiet = quiet
        self.records: dict[int, dict[str, float]] = {}  # epoch -> its latest record
        self.nodes: set[str] = set()
        self.last = time.monotonic()

    def event(self, event: dict[str, Any]) -> None:
        if "node" in event:
            self.nodes.add(str(event["node"]))
        else:
            self.epoch(event)

    def epoch(self, record: dict[str, float]) -> None:
        k = int(record["epoch"])
        again = k in self.records
        self.records[k] = record
        if again:
            # The workers restarted from a checkpoint older than this epoch (a node died
            # before Ray Train registered the newer one): MLflow keeps the first record.
            if not self.quiet:
                print(f"mnad train: epoch {k} ran again after a restart", flush=True)
            return
        keys = (*LOSS_NAMES, "lr", "clips_per_s", "val_loss")
        metrics = {name: record[name] for name in keys if name in record}
        self.run.log_metrics(metrics, step=k)
        now = time.monotonic()
        seconds, self.last = now - self.last, now
        if self.quiet:
            return
        val = f"  val {record['val_loss']:.4f}" if "val_loss" in record else ""
        print(
            f"mnad train: epoch {k}/{self.epochs}  loss {record['loss']:.4f} "
            f"(pred {record['prediction_error']:.4f}, compact {record['compactness']:.4f}, "
            f"separate {record['separateness']:.4f}){val}  {record['clips_per_s']:.0f} clips/s"
            f"  {_duration(seconds * (self.epochs - k))} left",
            flush=True,
        )

    def history(self) -> list[dict[str, float]]:
        return [self.records[k] for k in sorted(self.records)]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _printer(quiet: bool) -> Callable[[str], None]:
    """A line of ``mnad train`` output, or nothing when quiet."""

    def say(message: str) -> None:
        if not quiet:
            print(f"mnad train: {message}", flush=True)

    return say


# --- checks before any work -------------------------------------------------------------------


def _frames_note(preset: Preset, shape: Any, say: Callable[[str], None]) -> None:
    """Frames of another size (or colour for a grey preset) are made what the preset takes
    in the clip pipeline (:func:`mnad.clips.model_frames`); one line says so."""
    if (note := frames_note(shape, preset.model, f"preset {preset.name}")) is not None:
        say(note)


def _chunk_shape(shape: FrameShape, model: ModelConfig) -> FrameShape:
    """The frame size that sizes the clip chunks: the larger of DATA's frames (what a chunk
    reads) and the model's (what its clips hold)."""
    fitted = FrameShape(*fitted_shape(shape, model))
    return max(shape, fitted, key=lambda s: s.nbytes)


def _resolve_cpus(config: TrainConfig) -> TrainConfig:
    """``cpus_per_worker`` 0: the cluster's CPUs split evenly over the workers (at least 1),
    but no more than lets every worker fit on one node (a worker never spans nodes)."""
    if config.cpus_per_worker:
        return config
    nodes = node_resources()
    most = sum(node.get("CPU", 0.0) for node in nodes) // config.workers
    cpus = bundle_cpus(config.workers, nodes, most=most, gpus=config.gpus_per_worker)
    return dataclasses.replace(config, cpus_per_worker=cpus)


def _need(config: TrainConfig) -> Need:
    """The resources of the training workers."""
    return Need.of(config.workers, config.cpus_per_worker, config.gpus_per_worker)


def _check_placement(config: TrainConfig, need: Need) -> None:
    """UserError if the cluster cannot place the workers: its totals, then its nodes (each
    worker's bundle on one node)."""
    for resource, (needed, has) in need.shortfall().items():
        raise UserError(
            f"{config.workers} workers x {need.bundle[resource]:g} {resource} need "
            f"{needed:g} {resource}; the Ray cluster has {has:g}: pass fewer --workers"
        )
    nodes = node_resources()
    if not need.fits(nodes):
        raise UserError(
            f"{need.describe()} for the training workers: the Ray cluster's nodes hold "
            f"{need.placeable(nodes)} of them at once (a worker never spans nodes): pass "
            "fewer --workers or a smaller --cpus-per-worker"
        )


def _check_enough_clips(clips: int, batch_size: int, workers: int) -> None:
    if clips // workers < batch_size // workers:
        raise UserError(
            f"{clips} training clips are fewer than one batch of {batch_size}: "
            "pass a smaller --batch-size or more data"
        )


def _default_name(dataset: str, preset: Preset) -> str:
    return f"{dataset}-{preset.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_new_name(runs: str, name: str) -> None:
    if storage.exists(storage.join(runs, name)):
        raise UserError(
            f"a run named {name!r} exists under {runs}: pass --resume to continue it, "
            "or another --name"
        )


__all__ = ["run_train"]
