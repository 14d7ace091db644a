"""`mnad calibrate` on the driver: normal videos scored on the cluster with the test-time
rules (the memory reset at each video and updated as it goes, as `mnad score` does), the
calibration fitted on their PSNR and feature distances, and stored with the model.

A registered model gets a new version: the same weights with ``calibration.json``, the
aliases of the version it came from moved to it (``models:/...@champion`` then carries its
calibration), and the calibration's figures as the tag ``mnad.calibration`` on the version.
A checkpoint folder gets ``calibration.json`` in place. Which videos: ``--videos``, else
the ones the model's training run held out (recorded on the run), else every video of the
split, with a note that videos the model trained on set a lower threshold than new footage
would.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mnad.calibration import Calibration, fit
from mnad.checkpoint import load_checkpoint, write_calibration
from pipelines import storage
from pipelines.calibrate.config import CalibrateConfig
from pipelines.data import list_shards, validate_data
from pipelines.errors import UserError
from pipelines.stage import Result

TAG = "mnad.calibration"
"""The model version's tag holding the calibration's figures (JSON)."""


@dataclass(frozen=True)
class CalibrateResult(Result):
    """What `mnad calibrate` stored, and what the calibration measures."""

    model: str  # as given
    model_uri: str  # the calibrated model: models:/<name>/<version> or the folder
    videos: tuple[str, ...]
    frames: int
    false_alarm_rate: float
    threshold: float  # at false_alarm_rate, unsmoothed
    alarm_rate: float  # on the calibration frames, at the threshold
    held_out_alarm_rate: float | None  # each video at the others' threshold
    statistics: dict[str, Any]  # Calibration.summary()


def calibrate_videos(
    model: str,
    tracking_uri: str,
    data: str,
    videos: Sequence[str],
    *,
    out: str,
    alpha: float,
    split: str = "train",
    actors: int = 0,
    quiet: bool = False,
) -> Calibration:
    """Score ``videos`` of DATA's ``split`` with ``model`` (per video, the test-time update
    on, parts under ``out``, which is emptied first) and fit the calibration on them."""
    from pipelines import tracking
    from pipelines.score import ScoreConfig
    from pipelines.score.actor import FAILED
    from pipelines.score.driver import score_tasks, score_videos
    from pipelines.score.events import videos as video_rows

    summary = validate_data(data, splits=(split,))
    storage.delete_tree(out)  # parts of another model's calibration are not this one's
    config = ScoreConfig(
        data=data, model=model, out=out, split=split, videos=tuple(videos), report=False,
        normalise="per-video", smooth=1, actors=actors, quiet=quiet,
    )  # fmt: skip  # the calibration keeps raw scores: a threshold is fitted per smoothing
    ref = tracking.find_model(model, tracking_uri)
    scored = score_videos(config, score_tasks(config), ref, tracking_uri, summary.dataset)
    failed = [r["error"] for r in scored.outcomes if r["status"] == FAILED]
    if failed:
        raise UserError(f"calibration footage: {failed[0]}")
    psnr = scored.frames.column("psnr").to_numpy()
    distance = scored.frames.column("feature_distance").to_numpy()
    pairs = {v.video_id: (psnr[v.rows], distance[v.rows]) for v in video_rows(scored.frames)}
    if not pairs:
        raise UserError(f"{data}: the calibration videos are all too short for one clip")
    return fit(pairs, alpha)


def run_calibrate(config: CalibrateConfig) -> CalibrateResult:
    """Calibrate ``config.model`` on normal videos of DATA and store the calibration."""
    from pipelines import tracking

    summary = validate_data(config.data, splits=(config.split,))
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    tracking.check_tracking(uri)
    ref = tracking.find_model(config.model, uri)
    if not ref.local and ref.name is None:
        raise UserError(
            f"{config.model}: calibrate a registered model (models:/<name>@<alias>) or a "
            "checkpoint folder"
        )
    chosen = tuple(config.videos) or _held_out(ref, uri, summary.dataset, config)
    with tempfile.TemporaryDirectory(prefix="mnad-calibrate-") as tmp:
        local = tracking.fetch_model(ref, uri, dst=tmp)
        alpha = load_checkpoint(local).preset.model.alpha
        calibration = calibrate_videos(
            ref.pinned, uri, config.data, chosen, out=config.out, alpha=alpha,
            split=config.split, actors=config.actors, quiet=config.quiet,
        )  # fmt: skip
        write_calibration(local, calibration)
        figures = figures_of(calibration, config.false_alarm_rate)
        if ref.local:
            stored = config.model
        else:
            stored = _register(config, uri, ref, local, summary.dataset, figures)
    result = CalibrateResult(
        model=config.model,
        model_uri=stored,
        videos=calibration.videos,
        frames=calibration.frames,
        **figures,
    )
    _say(config, f"{stored}: threshold {result.threshold:.3f} at a false-alarm rate of "
         f"{result.false_alarm_rate:g} on {result.frames} frames of {len(result.videos)} "
         f"video(s); held out {_rate(result.held_out_alarm_rate)}")  # fmt: skip
    if (line := warning(figures)) is not None:
        _say(config, line)
    return result


def figures_of(calibration: Calibration, rate: float) -> dict[str, Any]:
    """The figures a calibration is reported and tagged with, at false-alarm ``rate``."""
    threshold = calibration.threshold(rate)
    return {
        "false_alarm_rate": rate,
        "threshold": threshold,
        "alarm_rate": calibration.alarm_rate(threshold),
        "held_out_alarm_rate": calibration.held_out_alarm_rate(rate),
        "statistics": calibration.summary(),
    }


WARN_FACTOR = 5.0
"""A held-out alarm rate this many times the target is worth a line of warning."""


def warning(figures: dict[str, Any]) -> str | None:
    """A line when the threshold does not hold on the calibration videos held out in turn
    (too few or too different normal videos), else None."""
    held, rate = figures["held_out_alarm_rate"], figures["false_alarm_rate"]
    if held is None:
        return "one calibration video: the threshold could not be checked on held-out footage"
    if held > WARN_FACTOR * max(rate, 1e-12):
        return (
            f"warning: each calibration video at the others' threshold raises {held:.4f} "
            f"alarms per frame against a target of {rate:g}: calibrate on more normal videos"
        )
    return None


def _rate(rate: float | None) -> str:
    return "n/a (one video)" if rate is None else f"{rate:.4f}"


def _say(config: CalibrateConfig, message: str) -> None:
    if not config.quiet:
        print(f"mnad calibrate: {message}", flush=True)


def _held_out(ref: Any, uri: str, dataset: str, config: CalibrateConfig) -> tuple[str, ...]:
    """The videos the model's training run held out, when it trained on this dataset; else
    every video of the split (with a note)."""
    from pipelines.tracking import store

    if ref.name is not None:
        client = store.client(uri)
        run_id = client.get_model_version(ref.name, ref.version).run_id
        params = client.get_run(run_id).data.params if run_id else {}
        held = params.get("val_videos", "-")
        if params.get("dataset") == dataset and held not in ("-", ""):
            return tuple(held.split(","))
    every = tuple(
        s.rsplit("/", 1)[-1].removesuffix(".parquet")
        for s in list_shards(config.data, config.split)
    )
    _say(config, f"note: no held-out videos recorded for {config.model}; calibrating on all "
         f"{len(every)} {config.split} videos (ones the model trained on set a lower "
         "threshold than new footage would: pass --videos)")  # fmt: skip
    return every


def _register(
    config: CalibrateConfig, uri: str, ref: Any, local: str, dataset: str, figures: dict
) -> str:
    """A new version of the registered model with the calibration; the source version's
    aliases move to it. Its URI."""
    from pipelines import tracking
    from pipelines.tracking import store

    client = store.client(uri)
    aliases = tuple(client.get_model_version(ref.name, ref.version).aliases)
    params = {"model": ref.pinned, "data": config.data, "videos": ",".join(figures_videos(local))}
    tags = {"mnad.stage": "calibrate", "mnad.model_uri": ref.pinned}
    with tracking.start_run(uri, dataset, "calibrate", params, tags) as run:
        tracking.link_model_version(run, ref.name, ref.version)
        run.log_metrics(_metrics(figures), step=0)
        info = tracking.register_checkpoint(run, local, ref.name, aliases=("latest", *aliases))
    tag_calibration(uri, ref.name, info.version, figures, source=ref.version)
    moved = f"; aliases {', '.join(aliases)} moved to it" if aliases else ""
    _say(config, f"registered {info.uri}: version {ref.version} with its calibration{moved}")
    return info.uri


def figures_videos(local: str) -> tuple[str, ...]:
    calibration = load_checkpoint(local).calibration
    return calibration.videos if calibration else ()


def _metrics(figures: dict[str, Any]) -> dict[str, float]:
    keys = ("threshold", "alarm_rate", "held_out_alarm_rate")
    return {f"calibration_{k}": float(figures[k]) for k in keys if figures[k] is not None}


def tag_calibration(
    uri: str, name: str, version: str, figures: dict[str, Any], source: str | None = None
) -> None:
    """The calibration's figures on the model version (the registry page shows them)."""
    from pipelines.tracking import store

    doc = {**figures, **({"calibrated_from_version": source} if source else {})}
    store.client(uri).set_model_version_tag(name, version, TAG, json.dumps(doc))


__all__ = [
    "TAG",
    "CalibrateResult",
    "calibrate_videos",
    "figures_of",
    "warning",
    "run_calibrate",
    "tag_calibration",
]
