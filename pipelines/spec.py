"""`mnad run SPEC.yaml`: one file describes a whole job; synth, ingest, train and score run
in turn, each skipped when its outputs are already complete.

A spec (``examples/*.yaml``)::

    name: ped2                          # required: names the training run
    output: ../mnad-runs/ped2           # the job's folder or URI (default: mnad-runs/NAME)
    tracking_uri: ../mnad-runs/mlflow.db  # MLflow: a URI, or a sqlite file (default:
                                        #   $MLFLOW_TRACKING_URI, else OUTPUT/mlflow.db)
    experiment: ped2                    # default: the data set's name
    synth: {size: demo}                 # optional: generate the source (`mnad synth`)
    ingest:                             # `mnad ingest` options; out defaults to OUTPUT/data
      source: ../../shared/datasets/ucsd_ped2
      layout: frames
      size: [64, 64]
    train:                              # `mnad train` options; omit it to score score.model
      preset: small
      epochs: 60
      workers: 2
    score:                              # `mnad score` options; out defaults to OUTPUT/scores
      memory: [per-video, paper]        # one scoring job per mode
      model: models:/mnad-ped2@champion # default: the model that `train` registers

Each section takes the options of its stage's config (:class:`IngestConfig`,
:class:`TrainConfig`, :class:`ScoreConfig`, :class:`SynthConfig`) under their field names, and
is parsed into that dataclass, so the spec and the command line share one definition and
one validation. Unknown keys, values of the wrong type and values a stage rejects are
one-line errors naming the spec file and the key, before any work starts. Relative paths are
relative to the spec's folder; URIs (``s3://``, ``gs://``, ``models:/``) are kept.

When is a stage complete (so skipped)?

- synth: ``SOURCE/_SUCCESS.json`` records the same synth options.
- ingest: ``DATA/summary.json`` has the same source and settings, no failed video, and the
  manifest holds every video the source holds now (one listing of the source, no reading).
  Otherwise ingest runs, and itself skips the videos whose bytes it has already ingested.
- train: the training run is named ``NAME-<fingerprint>``, the fingerprint hashing what
  decides the model (the resolved preset and training options, the ingested training
  videos' content hashes, the tracking store). ``OUTPUT/train/<run>/_SUCCESS.json``, written
  after the model is registered, records the MLflow run and the model version. A run that
  has state but no marker (its driver died) is resumed; a changed spec trains a new run.
- score: scores go to ``SCORES/<model>-v<version>/<memory>/``; complete when its
  ``summary.json`` names that model version and mode. A partial one resumes, video by video.

``--force STAGE`` runs a stage again regardless (train and score first delete their state).

Ray: the job joins one Ray when a stage first needs it (a job whose stages are all complete
starts none): $RAY_ADDRESS (set for a driver that `ray job submit` started), else the cluster
that `ray start` began on this machine, else a new local Ray (``--address`` chooses). On a
running cluster, training first asks the autoscaler for its workers' resources and waits for
them (``--wait-for-nodes``), since a cluster that scales from zero has no GPU until asked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import schema
from pipelines.errors import UserError
from pipelines.ingest import IngestConfig
from pipelines.score import ScoreConfig
from pipelines.synth import SynthConfig
from pipelines.train import RUN_RECORD, TrainConfig

MARKER = "_SUCCESS.json"
"""The file whose presence says a stage's outputs are complete, and what made them."""

STAGES = ("synth", "ingest", "train", "score")
SPEC_KEYS = ("name", "output", "tracking_uri", "experiment", *STAGES)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # s3://, gs://, models:/, runs:/

#: Keys of each section that the spec sets itself, and where the user sets them instead.
_SET_BY_SPEC: dict[str, dict[str, str]] = {
    "synth": {"quiet": "--quiet"},
    "ingest": {"quiet": "--quiet"},
    "train": {
        "data": "ingest.out",
        "output": "the top-level `output`",
        "name": "the top-level `name`",
        "resume": "nothing: an interrupted run is resumed by itself",
        "tracking_uri": "the top-level `tracking_uri`",
        "experiment": "the top-level `experiment`",
        "quiet": "--quiet",
    },
    "score": {
        "data": "ingest.out",
        "tracking_uri": "the top-level `tracking_uri`",
        "experiment": "the top-level `experiment`",
        "quiet": "--quiet",
    },
}
#: Keys that hold paths, resolved against the spec's folder unless they are URIs.
_PATH_KEYS = {"synth": ("out",), "ingest": ("source", "out"), "score": ("out", "model")}
#: TrainConfig options that change how a run executes, not the model it makes.
_EXECUTION_ONLY = (
    "data", "workers", "cpus_per_worker", "gpus_per_worker", "max_failures", "checkpoint_every",
    "keep_checkpoints", "name", "resume", "output", "quiet",
)  # fmt: skip


class SpecError(UserError):
    """A spec that cannot run, in one line naming the file and the key."""


# --------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """A parsed, validated spec: each stage's config, built once, with paths resolved."""

    path: str  # the spec file
    name: str
    output: str  # absolute folder or URI
    tracking_uri: str
    synth: SynthConfig | None
    ingest: IngestConfig
    train: TrainConfig | None  # None: score ``score_model``
    score: tuple[ScoreConfig, ...]  # one per memory mode; ``model`` and ``out`` set at run time
    score_model: str | None  # the spec's score.model; None: the model ``train`` registers
    score_out: str  # the scores' root: <score_out>/<model>-v<version>/<memory>


def load_spec(path: str | os.PathLike[str], quiet: bool = False) -> JobSpec:
    """Read and validate the spec at ``path``; every error is a one-line :class:`SpecError`."""
    import yaml

    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{where}: cannot read the spec ({err.strerror or err})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise SpecError(f"{where}: not valid YAML{at}: {problem}") from None
    return parse_spec(raw, where, quiet=quiet)


def parse_spec(raw: Any, where: str, quiet: bool = False) -> JobSpec:
    """Build a :class:`JobSpec` from the YAML document ``raw`` of the spec file ``where``."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a spec is a mapping of {', '.join(SPEC_KEYS)}")
    _no_unknown(raw, SPEC_KEYS, where, "")
    base = Path(where).resolve().parent
    name = _top(raw, "name", where, required=True)
    if not _NAME.match(name):
        raise SpecError(f"{where}: name: {name!r}: use letters, digits, '_', '.', '-'")
    output = _location(_top(raw, "output", where) or f"mnad-runs/{name}", base)
    tracking_uri = _tracking_uri(_top(raw, "tracking_uri", where), output, base, where)
    experiment = _top(raw, "experiment", where)
    sections = {}
    for stage in STAGES:
        value = raw.get(stage)
        if value is None:
            value = {} if stage in ("ingest", "score") else None
        elif not isinstance(value, dict):
            raise SpecError(f"{where}: {stage}: expected a mapping of {stage} options")
        sections[stage] = value
    if raw.get("train") is None and not (sections["score"] or {}).get("model"):
        raise SpecError(f"{where}: score.model: required when the spec has no train section")

    synth = None
    if sections["synth"] is not None:
        options = _options(SynthConfig, sections["synth"], "synth", base, where)
        options.setdefault("out", schema.join(output, "source"))
        if "://" in options["out"]:
            raise SpecError(f"{where}: synth.out: synth writes to a local folder, not a URI")
        synth = _build(SynthConfig, {**options, "quiet": quiet}, "synth", where)

    options = _options(IngestConfig, sections["ingest"], "ingest", base, where)
    if synth is not None:
        if "source" in options:
            raise SpecError(f"{where}: ingest.source: not with a synth section (its out is it)")
        options["source"] = synth.out
    if "source" not in options:
        raise SpecError(f"{where}: ingest.source: required (a folder or an s3:// / gs:// URI)")
    options.setdefault("out", schema.join(output, "data"))
    ingest = _build(IngestConfig, {**options, "quiet": quiet}, "ingest", where)

    train = None
    if sections["train"] is not None:
        options = _options(TrainConfig, sections["train"], "train", base, where)
        if str(options.get("preset", "")).endswith(".json"):
            options["preset"] = _location(options["preset"], base)
        values = {
            **options,
            "data": ingest.out,
            "output": output,
            "tracking_uri": tracking_uri,
            "experiment": experiment,
            "quiet": quiet,
        }
        train = _build(TrainConfig, values, "train", where)

    score_section = dict(sections["score"])
    memory = score_section.pop("memory", ["per-video"])
    modes = [memory] if isinstance(memory, str) else memory
    if not isinstance(modes, list) or not modes or len(set(modes)) != len(modes):
        raise SpecError(f"{where}: score.memory: a mode or a list of distinct modes")
    options = _options(ScoreConfig, score_section, "score", base, where)
    score_model = options.pop("model", None)
    score_out = options.pop("out", schema.join(output, "scores"))
    scores = tuple(
        _build(
            ScoreConfig,
            {
                **options,
                "data": ingest.out,
                "model": score_model or "",
                "out": score_out,
                "memory": _check_value(mode, ScoreConfig, "memory", "score", where),
                "tracking_uri": tracking_uri,
                "experiment": experiment,
                "quiet": quiet,
            },
            "score",
            where,
        )
        for mode in modes
    )
    return JobSpec(
        path=str(Path(where).resolve()),
        name=name,
        output=output,
        tracking_uri=tracking_uri,
        synth=synth,
        ingest=ingest,
        train=train,
        score=scores,
        score_model=score_model,
        score_out=score_out,
    )


def _top(raw: dict[str, Any], key: str, where: str, required: bool = False) -> Any:
    value = raw.get(key)
    if value is None:
        if required:
            raise SpecError(f"{where}: {key}: required")
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: {key}: expected a non-empty string, not {value!r}")
    return value


def _no_unknown(raw: Mapping[str, Any], known: typing.Iterable[str], where: str, at: str) -> None:
    unknown = sorted(set(map(str, raw)) - set(known))
    if unknown:
        raise SpecError(
            f"{where}: {at}{unknown[0]}: unknown key; expected one of {', '.join(sorted(known))}"
        )


def _location(value: str, base: Path) -> str:
    """A URI as it is; a path made absolute against the spec's folder."""
    if _SCHEME.match(value):
        return value
    return str((base / Path(value).expanduser()).resolve())


def _tracking_uri(value: str | None, output: str, base: Path, where: str) -> str:
    """The spec's store: a URI, or a sqlite file (relative to the spec's folder)."""
    if value is None:
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        if "://" in output:
            raise SpecError(
                f"{where}: tracking_uri: required when output is a URI ({output}): give the "
                "MLflow server (http://...) that the cluster's jobs report to"
            )
        return f"sqlite:///{Path(output) / 'mlflow.db'}"
    if value.startswith("sqlite:///"):
        file = value[len("sqlite:///") :]
        return f"sqlite:///{_location(file, base)}"
    if _SCHEME.match(value) or value.startswith(("databricks", "file:")):
        return value
    return f"sqlite:///{_location(value, base)}"


def _fields(cls: type, stage: str) -> dict[str, Any]:
    """The options a section may set: the config's fields, less those the spec sets."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if f.init and f.metadata.get("cli") is not False and f.name not in _SET_BY_SPEC[stage]
    }


def _options(
    cls: type, raw: Mapping[str, Any], stage: str, base: Path, where: str
) -> dict[str, Any]:
    """The section's values, type-checked against ``cls``'s fields, with paths resolved."""
    allowed = _fields(cls, stage)
    for key in raw:
        if key in _SET_BY_SPEC[stage]:
            instead = _SET_BY_SPEC[stage][key]
            raise SpecError(f"{where}: {stage}.{key}: set by the spec; use {instead}")
    _no_unknown(raw, allowed, where, f"{stage}.")
    values = {key: _check_value(value, cls, key, stage, where) for key, value in raw.items()}
    for key in _PATH_KEYS.get(stage, ()):
        if values.get(key) is not None:
            values[key] = _location(values[key], base)
    return values


def _check_value(value: Any, cls: type, key: str, stage: str, where: str) -> Any:
    tp = typing.get_type_hints(cls)[key]
    ok, converted = _convert(value, tp)
    if not ok:
        raise SpecError(f"{where}: {stage}.{key}: expected {_describe(tp)}, not {value!r}")
    return converted


def _convert(value: Any, tp: Any) -> tuple[bool, Any]:
    """(True, value as ``tp``) if the YAML value fits the annotation ``tp``, else (False, _)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return True, None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                ok, converted = _convert(value, arg)
                if ok:
                    return True, converted
        return False, None
    if origin is typing.Literal:
        return value in typing.get_args(tp), value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list) or len(value) != len(args):
            return False, None
        parts = [_convert(v, a) for v, a in zip(value, args, strict=True)]
        return all(ok for ok, _ in parts), tuple(v for _, v in parts)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str) and value != "", value
    return False, None


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} numbers"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, str(tp))


def _build(cls: type, values: dict[str, Any], stage: str, where: str) -> Any:
    """``cls(**values)``; its own validation errors come back naming the spec and the key."""
    try:
        return cls(**values)
    except UserError as err:
        text = str(err)
        flag = re.search(r"--([a-z][a-z0-9-]*)", text)
        key = flag.group(1).replace("-", "_") if flag else None
        at = f"{stage}.{key}" if key in values else stage
        raise SpecError(f"{where}: {at}: {text}") from None


# --------------------------------------------------------------------------------------------
# Markers and completeness
# --------------------------------------------------------------------------------------------


def read_json(uri: str) -> dict[str, Any] | None:
    """The JSON object at ``uri`` (a path or URI), or None if there is none or it is not one."""
    fs, path = schema.resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            doc = json.loads(f.read())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json(uri: str, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` at ``uri`` through a temporary name and a move (never half a marker)."""
    fs, path = schema.resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(doc, indent=2, sort_keys=True, default=str).encode())
    fs.move(tmp, path)


def _exists(uri: str) -> bool:
    fs, path = schema.resolve(uri)
    return fs.get_file_info(path).type != schema.pafs.FileType.NotFound


def _delete_tree(uri: str) -> None:
    fs, path = schema.resolve(uri)
    if fs.get_file_info(path).type == schema.pafs.FileType.Directory:
        fs.delete_dir(path)


def ingest_incomplete(config: IngestConfig) -> str | None:
    """Why DATA does not yet hold all of the source at these settings; None if it does."""
    from pipelines.ingest import ingest_settings
    from pipelines.layouts import discover

    summary = read_json(schema.join(config.out, schema.SUMMARY_FILE))
    if summary is None:
        return "no summary.json yet"
    if summary.get("source") != config.source or summary.get("settings") != ingest_settings(config):
        return "the source or the settings changed"
    if summary.get("failed"):
        return f"{len(summary['failed'])} video(s) failed last time"
    manifest = schema.read_manifest(config.out)
    if manifest is None:
        return "no manifest yet"
    done = {
        (r["split"], r["video_id"], r["source"])
        for r in manifest.to_pylist()
        if r["status"] in (schema.STATUS_OK, schema.STATUS_SKIPPED)
    }
    found = discover(config.source, config.layout, config.videos_split).videos
    missing = [v for v in found if (v.split, v.video_id, v.path) not in done]
    if missing:
        return f"{len(missing)} of {len(found)} videos not ingested yet"
    return None


def training_data_digest(data: str) -> str:
    """A hash of what training reads from DATA: its training videos' content hashes and the
    frame shape (so new, changed or re-sized videos give another digest)."""
    summary = schema.read_summary(data)
    manifest = schema.read_manifest(data)
    rows = [] if manifest is None else manifest.to_pylist()
    videos = sorted(
        (r["video_id"], r["content_hash"], r["frames"])
        for r in rows
        if r["split"] == "train" and r["status"] in (schema.STATUS_OK, schema.STATUS_SKIPPED)
    )
    doc = {"dataset": summary.dataset, "shape": summary.shape, "videos": videos}
    return hashlib.sha256(json.dumps(doc, default=list).encode()).hexdigest()


def train_inputs(config: TrainConfig, data_digest: str) -> dict[str, Any]:
    """What decides the model a run makes: the resolved preset, the options that change the
    result, the training data and the store it registers in."""
    params = {k: v for k, v in config.to_params().items() if k not in _EXECUTION_ONLY}
    params["preset"] = config.resolved_preset().to_dict()
    return {**params, "data_digest": data_digest, "tracking_uri": config.tracking_uri}


def fingerprint(doc: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-able mapping."""
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------
# Running a spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageOutcome:
    """What one stage did: ``ran``, ``resumed`` or ``skipped`` (with why), and its outputs."""

    stage: str
    status: str
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobResult:
    """What ``run_spec`` did, stage by stage; ``to_json`` is what ``--json`` prints."""

    spec: str
    name: str
    tracking_uri: str
    data: str
    seconds: float
    stages: tuple[StageOutcome, ...]
    exit_status: int

    def stage(self, name: str) -> list[StageOutcome]:
        return [s for s in self.stages if s.stage == name]

    @property
    def ui_command(self) -> str:
        return f"mnad ui --tracking-uri {self.tracking_uri}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "spec": self.spec,
            "name": self.name,
            "status": "ok" if self.exit_status == 0 else "failed_inputs",
            "exit_status": self.exit_status,
            "tracking_uri": self.tracking_uri,
            "ui": self.ui_command,
            "data": self.data,
            "seconds": round(self.seconds, 1),
        }
        for outcome in self.stages:
            entry = {"status": outcome.status, "seconds": round(outcome.seconds, 1)}
            entry.update(outcome.detail)
            if outcome.stage == "score":
                doc.setdefault("score", []).append(entry)
            else:
                doc[outcome.stage] = entry
        return doc


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class RunSpecConfig:
    """Options of `mnad run`."""

    spec: str = field(metadata=_help("the job's YAML spec (see examples/)", positional=True))
    quiet: bool = field(default=False, metadata=_help("print only errors and the result"))
    json: bool = field(
        default=False,
        metadata=_help("print the result as one JSON object on stdout (progress goes to stderr)"),
    )
    force: tuple[str, ...] = field(
        default=(),
        metadata=_help(f"stages to run again even if complete: {', '.join(STAGES)}"),
    )
    address: str | None = field(
        default=None,
        metadata=_help(
            "Ray cluster: an address, auto, or local (default: $RAY_ADDRESS, else the cluster "
            "`ray start` began on this machine, else a new local Ray)"
        ),
    )
    wait_for_nodes: float = field(
        default=900.0,
        metadata=_help(
            "on an existing cluster, seconds to wait for its autoscaler to add the nodes that "
            "training needs (0: do not wait)"
        ),
    )
    probe: Any = field(default=None, metadata={"cli": False})
    """Passed to ``TrainConfig.probe`` (tests: where each training worker runs)."""

    def __post_init__(self) -> None:
        if not self.spec:
            raise UserError("SPEC is empty")
        self.force = tuple(self.force)
        unknown = sorted(set(self.force) - set(STAGES))
        if unknown:
            raise UserError(f"--force {unknown[0]}: not a stage; stages are {', '.join(STAGES)}")
        if self.wait_for_nodes < 0:
            raise UserError(f"--wait-for-nodes must be >= 0, not {self.wait_for_nodes}")


def run_spec(config: RunSpecConfig) -> int:
    """Run the job of ``config.spec``; print its result; return the exit status (0: all went
    in and ran; 1: some input videos failed to ingest, the rest ran)."""
    spec = load_spec(config.spec, quiet=config.quiet)
    progress = sys.stderr if config.json else sys.stdout
    log = None if config.quiet else _printer(progress)
    with (
        contextlib.redirect_stdout(progress),
        RayConnection(config.address, config.quiet, config.wait_for_nodes) as ray_,
    ):
        result = run_job(spec, config.force, config.probe, log, ray_)
    if config.json:
        print(json.dumps(result.to_json(), default=str), flush=True)
    else:
        print(format_result(result), flush=True)
    return result.exit_status


def _printer(stream: io.TextIOBase | Any) -> Any:
    def log(message: str) -> None:
        print(f"mnad run: {message}", file=stream, flush=True)

    return log


class RayConnection:
    """One Ray for the whole job, joined when a stage first needs it (a job whose stages are
    all complete starts none): the Ray this process is connected to; else ``address``
    (None: $RAY_ADDRESS, else the cluster `ray start` began on this machine, else a new local
    Ray, shut down at the end).

    ``ensure()`` returns how long training may wait for an autoscaler to add nodes:
    ``wait_for_nodes`` on a running cluster, 0 on a Ray of our own, which cannot grow.
    """

    def __init__(self, address: str | None, quiet: bool, wait_for_nodes: float = 0.0):
        self.address = address
        self.quiet = quiet
        self.wait_for_nodes = wait_for_nodes
        self._started = False
        self._grows = False
        self._restore: list[Any] = []

    def __enter__(self) -> RayConnection:
        return self

    def ensure(self) -> float:
        import ray
        import ray.data

        if self._restore:
            return self.wait_for_nodes if self._grows else 0.0
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            self._started = True
        self._grows = not _started_a_local_ray()
        context = ray.data.DataContext.get_current()
        bars = context.enable_progress_bars
        context.enable_progress_bars = bars and not self.quiet
        self._restore.append(lambda: setattr(context, "enable_progress_bars", bars))
        # Each stage prints its own progress lines: Ray Data's executor reports go (they
        # repeat every few seconds), and with --quiet MLflow's store set-up messages too.
        names = ("ray.data", "mlflow") if self.quiet else ("ray.data",)
        for name in names:
            logger = logging.getLogger(name)
            self._restore.append(lambda logger=logger, level=logger.level: logger.setLevel(level))
            logger.setLevel(logging.WARNING)
        return self.wait_for_nodes if self._grows else 0.0

    def __exit__(self, *exc: object) -> None:
        import ray

        for undo in reversed(self._restore):
            undo()
        self._restore.clear()
        if self._started:
            ray.shutdown()
            self._started = False


def _started_a_local_ray() -> bool:
    """Whether ``ray.init`` made a new Ray (rather than connecting to a running one). Ray
    says so only on its private node object; without it, assume a local one (never wait)."""
    import ray._private.worker as ray_worker

    node = getattr(ray_worker, "_global_node", None)
    return bool(getattr(node, "head", True))


def run_job(
    spec: JobSpec,
    force: tuple[str, ...] = (),
    probe: Any = None,
    log: Any = None,
    ray_: RayConnection | None = None,
) -> JobResult:
    """Run the stages of ``spec`` in turn; ``log(message)`` hears what is skipped and why.

    ``ray_`` joins Ray when a stage first needs it (without one, each stage uses the Ray this
    process is connected to or starts its own). On a cluster that can grow, training first
    asks the autoscaler for its workers' resources.
    """
    say = log or (lambda message: None)
    t0 = time.perf_counter()
    stages: list[StageOutcome] = []
    if spec.synth is not None:
        stages.append(_synth_stage(spec.synth, "synth" in force, say))
    connect = ray_.ensure if ray_ is not None else (lambda: 0.0)
    ingest = _ingest_stage(spec.ingest, "ingest" in force, say, connect)
    stages.append(ingest)
    model = spec.score_model
    if spec.train is not None:
        train = _train_stage(spec, "train" in force, probe, say, connect)
        stages.append(train)
        model = train.detail["model_uri"]
    assert model is not None  # parse_spec: score.model is required without a train section
    stages.extend(_score_stages(spec, model, "score" in force, say, connect))
    return JobResult(
        spec=spec.path,
        name=spec.name,
        tracking_uri=spec.tracking_uri,
        data=spec.ingest.out,
        seconds=time.perf_counter() - t0,
        stages=tuple(stages),
        exit_status=int(ingest.detail.get("exit_status", 0)),
    )


def _synth_stage(config: SynthConfig, force: bool, say: Any) -> StageOutcome:
    from pipelines.synth import synthesize

    t0 = time.perf_counter()
    marker = schema.join(config.out, MARKER)
    record = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("quiet", "out")}
    done = read_json(marker)
    if not force and done is not None and done.get("config") == record:
        say(f"synth: skipped, {config.out} holds these videos")
        return StageOutcome("synth", "skipped", time.perf_counter() - t0, {"out": config.out})
    say(f"synth: writing a synthetic data set ({config.size}) to {config.out}")
    result = synthesize(config)
    write_json(marker, {"config": record, "result": dataclasses.asdict(result)})
    detail = {"out": config.out, "videos": result.train_videos + result.test_videos}
    return StageOutcome("synth", "ran", time.perf_counter() - t0, detail)


def _ingest_stage(config: IngestConfig, force: bool, say: Any, connect: Any) -> StageOutcome:
    from pipelines.ingest import run_ingest

    t0 = time.perf_counter()
    reason = "--force" if force else ingest_incomplete(config)
    if reason is None:
        say(f"ingest: skipped, {config.out} holds every video of {config.source}")
        detail = {"data": config.out, "exit_status": 0}
        return StageOutcome("ingest", "skipped", time.perf_counter() - t0, detail)
    say(f"ingest: {config.source} -> {config.out} ({reason})")
    connect()
    status = run_ingest(config)
    summary = read_json(schema.join(config.out, schema.SUMMARY_FILE)) or {}
    detail = {
        "data": config.out,
        "exit_status": status,
        "splits": summary.get("splits"),
        "failed": summary.get("failed", []),
    }
    return StageOutcome("ingest", "ran", time.perf_counter() - t0, detail)


def _train_stage(spec: JobSpec, force: bool, probe: Any, say: Any, connect: Any) -> StageOutcome:
    from pipelines.train import run_train

    assert spec.train is not None
    t0 = time.perf_counter()
    inputs = train_inputs(spec.train, training_data_digest(spec.train.data))
    name = f"{spec.name}-{fingerprint(inputs)}"
    run_dir = schema.join(spec.output, "train", name)
    marker = schema.join(run_dir, MARKER)
    done = read_json(marker)
    if force:
        _delete_tree(run_dir)
        done = None
    if done is not None:
        say(f"train: skipped, run {name} registered {done['model_uri']}")
        return StageOutcome("train", "skipped", time.perf_counter() - t0, done)
    resume = _exists(schema.join(run_dir, RUN_RECORD))
    if not resume:
        _delete_tree(run_dir)  # state of a start that died before its run record: nothing to keep
    say(f"train: {'resuming' if resume else 'starting'} run {name}")
    config = dataclasses.replace(spec.train, name=name, resume=resume, probe=probe)
    with cluster_grown_for(config, connect(), say):
        result = run_train(config)
    detail = {
        "run_name": name,
        "run_id": result.run_id,
        "experiment_id": result.experiment_id,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "model_uri": result.model_uri,
        "checkpoint": result.checkpoint,
        "epochs": len(result.epochs),
        "final_loss": result.epochs[-1].get("loss") if result.epochs else None,
        "inputs": inputs,
    }
    write_json(marker, detail)
    status = "resumed" if resume else "ran"
    return StageOutcome("train", status, time.perf_counter() - t0, detail)


@contextlib.contextmanager
def cluster_grown_for(config: TrainConfig, timeout_s: float, say: Any) -> Iterator[None]:
    """On a cluster short of the training workers' resources, ask its autoscaler for them
    (``ray.autoscaler.sdk.request_resources``) and wait up to ``timeout_s`` for them to join;
    withdraw the request when training ends. Training's own check reports what is still
    missing after that."""
    import ray
    from ray.autoscaler.sdk import request_resources

    bundle = {"CPU": config.cpus_per_worker}
    if config.use_gpu:
        bundle["GPU"] = config.gpus_per_worker
    need = {k: v * config.workers for k, v in bundle.items()}

    def missing() -> dict[str, float]:
        have = ray.cluster_resources()
        return {k: v - have.get(k, 0.0) for k, v in need.items() if have.get(k, 0.0) < v - 1e-9}

    if timeout_s <= 0 or not missing():
        yield
        return
    request_resources(bundles=[bundle] * config.workers)
    try:
        say(f"train: asking the autoscaler for {missing()}; waiting up to {timeout_s:.0f} s")
        deadline = time.monotonic() + timeout_s
        while missing() and time.monotonic() < deadline:
            time.sleep(5.0)
        yield
    finally:
        request_resources(bundles=[])


def _score_stages(
    spec: JobSpec, model: str, force: bool, say: Any, connect: Any
) -> list[StageOutcome]:
    from pipelines.score import SUMMARY_FILE, run_score
    from pipelines.tracking import resolve_model

    resolved = resolve_model(model, spec.tracking_uri)
    if resolved.name and resolved.version:
        pinned = f"models:/{resolved.name}/{resolved.version}"  # an alias moves; a version not
        key = f"{resolved.name}-v{resolved.version}"
    else:
        pinned, key = model, f"model-{fingerprint({'model': model})}"
    outcomes = []
    for base in spec.score:
        t0 = time.perf_counter()
        out = schema.join(spec.score_out, key, base.memory)
        config = dataclasses.replace(base, model=pinned, out=out)
        summary = read_json(schema.join(out, SUMMARY_FILE))
        if force:
            _delete_tree(out)
            summary = None
        complete = (
            summary is not None
            and summary.get("model") == pinned
            and summary.get("memory") == config.memory
            and summary.get("split") == config.split
        )
        report = schema.join(out, "report", "index.html")
        if complete:
            assert summary is not None
            say(f"score ({config.memory}): skipped, {out} holds the scores of {pinned}")
            metrics = {k: summary[k] for k in ("micro_auc", "macro_auc", "eer") if k in summary}
            detail = {
                "memory": config.memory,
                "model": pinned,
                "out": out,
                "frames": summary.get("frames"),
                "report": report if _exists(report) else None,
                "metrics": metrics,
            }
            outcomes.append(StageOutcome("score", "skipped", time.perf_counter() - t0, detail))
            continue
        say(f"score ({config.memory}): {pinned} on {config.data} -> {out}")
        connect()
        result = run_score(config)
        detail = {
            "memory": config.memory,
            "model": pinned,
            "out": out,
            "frames": result.frames,
            "run_id": result.run_id,
            "report": report if result.report else None,
            "metrics": {k: v for k, v in result.metrics.items() if k != "frames_per_s"},
            "frames_per_s": result.metrics.get("frames_per_s"),
            "failed": result.failed,
        }
        outcomes.append(StageOutcome("score", "ran", time.perf_counter() - t0, detail))
    return outcomes


def format_result(result: JobResult) -> str:
    """The result as a few lines for a person."""
    lines = [f"mnad run: {result.name} finished in {_duration(result.seconds)} ({result.spec})"]
    for outcome in result.stages:
        d = outcome.detail
        if outcome.stage == "ingest":
            failed = d.get("failed") or []
            extra = f", {len(failed)} video(s) failed" if failed else ""
            lines.append(f"  data     {d['data']} ({outcome.status}{extra})")
        elif outcome.stage == "train":
            lines.append(
                f"  model    {d['model_uri']} ({outcome.status}; run {d['run_name']}, "
                f"MLflow run {d['run_id']})"
            )
        elif outcome.stage == "score":
            metrics = d.get("metrics") or {}
            aucs = ", ".join(
                f"{label} {metrics[k]:.4f}"
                for k, label in (("micro_auc", "AUC"), ("macro_auc", "macro AUC"), ("eer", "EER"))
                if k in metrics
            )
            lines.append(f"  scores   {d['memory']}: {aucs or 'no labels'} ({outcome.status})")
            lines.append(f"           {d['out']}")
            if d.get("report"):
                lines.append(f"  report   {d['report']}")
    lines.append(f"  MLflow   {result.ui_command}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


__all__ = [
    "JobResult",
    "JobSpec",
    "RunSpecConfig",
    "SpecError",
    "StageOutcome",
    "load_spec",
    "parse_spec",
    "run_job",
    "run_spec",
]
