"""The score stage's contract out: the SCORES folder, :class:`ScoreResult`, and whether a
config's scores are there (:func:`completion`) (driver).

::

    SCORES/frames/<video_id>.parquet  one per scored video, written by the actors (resume):
                                      together a Parquet dataset of every scored frame
    SCORES/events.parquet             runs over the threshold, ranked (calibrated models)
    SCORES/report/index.html          the report (and its plots and pictures)
    SCORES/summary.json               the result; written last, so its presence means done

``summary.json`` is :meth:`ScoreResult.summary`: the result without the folder it is in,
with the metrics also at the top level (``micro_auc``...) as before. :func:`completion` reads
it back with :func:`read_result`; nothing else knows its keys.

``frames/`` is the scores themselves, never copied into one file: each video's file is
written once by the actor that scored it (``score`` is already the job's normalisation and
smoothing), so the archive can grow without any one process holding it.
:func:`frames_dataset` opens it as a ``pyarrow.dataset`` (read the columns you need, or
filter by ``video_id``); :func:`read_frames` reads it whole, sorted, for small archives. It
holds every video scored into SCORES, also those of an earlier job with other ``--videos``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.score.config import ScoreConfig
from pipelines.stage import Completion, Result

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads

FRAMES_DIR = "frames"
PARTS_DIR = FRAMES_DIR
"""The actors' per-video files are the frames dataset itself."""
EVENTS_FILE = "events.parquet"
SCORES_SUMMARY_FILE = "summary.json"
REPORT_DIR = "report"
REPORT_INDEX = f"{REPORT_DIR}/index.html"
"""The report's page, relative to SCORES."""
THROUGHPUT = "frames_per_s"
"""The metric that measures the run, not the model: it differs from run to run."""


@dataclass(frozen=True)
class ScoreResult(Result):
    """What a scoring job produced, as its ``summary.json`` records it."""

    out: str  # the SCORES folder or URI
    model: str  # the model scored, as given (config.model)
    model_version: str | None  # its registered version, if it is one
    dataset: str
    split: str
    memory: str
    granularity: str
    frames: int  # frames scored (rows of this job's videos in frames/)
    videos: int  # videos scored
    failed: tuple[str, ...]  # one line per video that could not be scored
    skipped: tuple[str, ...]  # one line per video too short for a clip
    metrics: dict[str, float]  # micro_auc, macro_auc, eer (with labels), frames_per_s
    seconds: float  # the scoring actors' time, this run
    run_id: str | None = None  # the MLflow run
    report: str | None = None  # the report's index.html under SCORES, if one was written
    nodes: tuple[str, ...] = ()  # the Ray nodes the scoring actors ran on, this run
    normalise: str = "per-video"  # what ``score`` is: calibrated | per-video
    normalisations: tuple[str, ...] = ()  # every normalisation written (metrics of each)
    false_alarm_rate: float = 0.0  # the target the threshold was chosen for
    smooth: int = 1  # frames of the trailing mean over ``score``
    merge_gap: float = 0.0  # seconds joining two runs into one event
    threshold: float | None = None  # on the calibrated scale; None: no calibration
    events: str | None = None  # events.parquet under SCORES, if one was written
    scores: str | None = None  # the frames dataset (SCORES/frames) its scores are in
    segment_seconds: float = 0.0  # --segment-seconds: longer videos scored as segments
    segments: int = 0  # segment tasks of this job's long videos (0: every video whole)

    @property
    def exit_status(self) -> int:
        """0 if every video was scored (or too short for a clip), else 1."""
        return 1 if self.failed else 0

    @property
    def model_metrics(self) -> dict[str, float]:
        """The metrics of the scores themselves (AUCs, EER), without the throughput."""
        return {k: v for k, v in self.metrics.items() if k != THROUGHPUT}

    def to_json(self) -> dict[str, Any]:
        doc = super().to_json()
        doc["metrics"] = {k: float(v) for k, v in self.metrics.items()}  # numpy floats too
        return doc

    def summary(self) -> dict[str, Any]:
        """The content of ``summary.json``: everything but the folder it is in (the report
        relative to it), and the metrics at the top level too."""
        doc = self.to_json()
        del doc["out"]
        doc["report"] = REPORT_INDEX if self.report else None
        doc["events"] = EVENTS_FILE if self.events else None
        doc["scores"] = FRAMES_DIR if self.scores else None
        return {**doc, **doc["metrics"]}

    def write(self, uri: str | None = None) -> None:
        """Write :meth:`summary`, atomically, to ``uri`` (default: SCORES/summary.json)."""
        storage.write_json(uri or storage.join(self.out, SCORES_SUMMARY_FILE), self.summary())


def read_result(out: str) -> ScoreResult | None:
    """The result that SCORES/summary.json records, or None if there is none (or it is not
    one of this version)."""
    doc = storage.read_json(storage.join(out, SCORES_SUMMARY_FILE))
    if doc is None:
        return None
    report = storage.join(out, doc["report"]) if doc.get("report") else None
    events = storage.join(out, doc["events"]) if doc.get("events") else None
    scores = storage.join(out, doc["scores"]) if doc.get("scores") else None
    try:
        return ScoreResult.from_json(
            {**doc, "out": out, "report": report, "events": events, "scores": scores}
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def completion(config: ScoreConfig) -> Completion:
    """Complete when SCORES/summary.json records the scores of ``config.model`` in
    ``config.memory`` mode on ``config.split``; partial when only part files are there (an
    interrupted job, continued video by video)."""
    result = read_result(config.out)
    if result is not None:
        same = (result.model, result.memory, result.split)
        if same != (config.model, config.memory, config.split):
            return Completion.missing(
                f"{config.out} holds the scores of {result.model} ({result.memory}, "
                f"{result.split}), not of {config.model} ({config.memory}, {config.split})"
            )
        smooth = result.smooth if config.smooth is None else config.smooth  # None: the model's
        asked = (config.false_alarm_rate, smooth, config.merge_gap)
        normalise_same = config.normalise in ("auto", result.normalise)
        if normalise_same and asked == (result.false_alarm_rate, result.smooth, result.merge_gap):
            return Completion.done(result, f"{config.out} holds the scores of {config.model}")
        return Completion.missing(
            f"{config.out} holds the scores of {config.model} with another normalisation, "
            "threshold or smoothing; its videos' scores are reused",
            partial=True,
        )
    parts = [
        p for p in storage.list_dir(storage.join(config.out, PARTS_DIR))
        if p.base_name.endswith(".parquet") and not p.base_name.startswith(".")
    ]  # fmt: skip
    if parts:
        return Completion.missing(
            f"{config.out}: {len(parts)} videos scored by an interrupted job", partial=True
        )
    return Completion.missing(f"no {SCORES_SUMMARY_FILE} in {config.out} yet")


def frames_dataset(out: str) -> pads.Dataset:
    """SCORES/frames as a ``pyarrow.dataset`` (temporaries of a killed actor, whose names
    start with a dot, are not part of it)."""
    import pyarrow.dataset as pads

    fs, path = storage.resolve(storage.join(out, FRAMES_DIR))
    return pads.dataset(path, format="parquet", filesystem=fs)


def read_frames(out: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Every scored frame of SCORES (``columns`` only, when given), sorted by video and frame:
    the whole archive in memory, for small ones and for tests."""
    names = None if columns is None else list(dict.fromkeys(["video_id", "frame_index", *columns]))
    table = frames_dataset(out).to_table(columns=names).replace_schema_metadata(None)
    table = table.sort_by([("video_id", "ascending"), ("frame_index", "ascending")])
    return table if columns is None else table.select(list(columns))


def discard(config: ScoreConfig) -> None:
    """Delete the SCORES folder ``config.out`` and everything in it (``--force``)."""
    storage.delete_tree(config.out)


__all__ = [
    "EVENTS_FILE",
    "FRAMES_DIR",
    "PARTS_DIR",
    "REPORT_DIR",
    "REPORT_INDEX",
    "SCORES_SUMMARY_FILE",
    "THROUGHPUT",
    "ScoreResult",
    "completion",
    "discard",
    "frames_dataset",
    "read_frames",
    "read_result",
]
