"""The train stage's contract in: :class:`TrainConfig`, the options of `mnad train` and of a
spec's ``train`` section (driver).

Each field is declared with :func:`pipelines.options.option`; its metadata says whether it
is positional (``data``), a path (``data``, ``output``), execution-only (what the run
identity leaves out: workers, retries, checkpoints, names, logging) or a resume override
(taken from the new invocation when ``--resume`` continues a run; every other option comes
from the run's record). The preset is resolved once, in ``__post_init__``, and kept on the
config (:attr:`TrainConfig.resolved`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mnad.config import Preset, get_preset
from pipelines.errors import OptionError, UserError
from pipelines.options import hidden, option
from pipelines.train.worker import StepProbe

_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,254}")
_RESERVED_ALIAS = re.compile(r"[vV]\d+")  # MLflow's version aliases


def _runtime(help: str, *, default: Any) -> Any:  # noqa: A002 - as option's
    """An option of how the run executes that ``--resume`` takes from the new invocation."""
    return option(help, default=default, execution=True, resume=True)


@dataclass
class TrainConfig:
    """Options of `mnad train`."""

    data: str = option(
        "DATA folder or URI written by `mnad ingest`", positional=True, path=True, execution=True
    )
    preset: str = option(
        "model preset (paper-pred, paper-recon, small, medium) or a preset JSON file",
        default="small",
    )
    epochs: int | None = option("epochs (default: the preset's)", default=None, resume=True)
    batch_size: int | None = option(
        "clips per step over all workers (default: the preset's)", default=None
    )
    lr: float | None = option("Adam learning rate (default: preset)", default=None)
    seed: int | None = option(
        "seed of weights, memory, clip order, val videos (preset)", default=None
    )
    val_fraction: float | None = option(
        "fraction of the training videos held out for a validation loss and the calibration "
        "(default: 1/8 with at least 8 videos, else none)",
        default=None,
    )
    calibrate: bool = option(
        "after training, calibrate the model on the held-out videos (thresholds and events "
        "in `mnad score`)",
        default=True,
    )
    workers: int = _runtime("Ray Train workers (DDP ranks)", default=2)
    cpus_per_worker: float = _runtime(
        "CPUs each worker reserves (0: the cluster's CPUs split over the workers)", default=1.0
    )
    gpus_per_worker: float = _runtime(
        "GPUs each worker reserves; > 0 trains on GPUs (NCCL, bf16)", default=0.0
    )
    experiment: str | None = option(
        "MLflow experiment (default: the data set's name)", default=None
    )
    tracking_uri: str | None = option(
        "MLflow store (default: $MLFLOW_TRACKING_URI, else mnad-runs/mlflow.db)", default=None
    )
    alias: str | None = option(
        "alias to set on the registered version too, e.g. champion", default=None
    )
    output: str = option(
        "folder (or URI) for Ray Train's checkpoints, under OUTPUT/train/NAME",
        default="mnad-runs",
        path=True,
        execution=True,
    )
    name: str | None = option(
        "run name (default: <dataset>-<preset>-<time>; with --resume: the latest)",
        default=None,
        execution=True,
    )
    resume: bool = option(
        "continue the run NAME (default: the latest) from its state",
        default=False,
        execution=True,
    )
    checkpoint_every: int = _runtime(
        "also checkpoint every this many steps (0: each epoch only)", default=0
    )
    keep_checkpoints: int = _runtime("checkpoints to keep", default=3)
    max_failures: int = _runtime("worker failures to recover from (-1: no limit)", default=3)
    input_mode: Literal["auto", "memory", "stream"] = option(
        "memory: every video's frames held once in Ray's object store, the clips of all "
        "videos shuffled together each epoch; stream: clips read from the shards in chunks "
        "(chunks of 8 videos mixed, then --shuffle-buffer), for data that does not fit; "
        "auto: memory when the frames fit in half the smallest node's object store",
        default="auto",
    )
    shuffle_buffer: int = option(
        "streamed input: clips in each worker's local shuffle buffer after the chunks are "
        "mixed (0: off); held in memory the shuffle is global and this is not used",
        default=256,
    )
    chunk_clips: int | None = option(
        "clips per read chunk (default: about 32 MiB of clips)", default=None
    )
    quiet: bool = _runtime("no progress lines", default=False)
    wait_for_nodes: float = _runtime(
        "on a running cluster that can grow, seconds to wait for its autoscaler to add the "
        "workers' nodes (0: do not wait)",
        default=0.0,
    )
    probe: StepProbe | None = hidden()
    """A hook the worker loop calls at its start and after every step (tests, debugging)."""
    _resolved: Preset = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.data:
            raise OptionError("data", "DATA is empty")
        self._check_alias()
        self._check_counts()
        self._resolved = self._resolve_preset()
        if self._resolved.optim.batch_size % self.workers:
            raise OptionError(
                "batch_size",
                f"batch size {self._resolved.optim.batch_size} does not split over "
                f"{self.workers} workers: pass --batch-size as a multiple of {self.workers}",
            )

    def _check_alias(self) -> None:
        if self.alias is not None and (
            not _ALIAS.fullmatch(self.alias)
            or self.alias == "latest"
            or _RESERVED_ALIAS.fullmatch(self.alias)
        ):
            raise OptionError(
                "alias",
                f"--alias {self.alias!r}: use letters, digits, '_' and '-', starting with a "
                "letter; 'latest' and v<number> are reserved by MLflow",
            )

    def _check_counts(self) -> None:
        for name, low in (("workers", 1), ("keep_checkpoints", 1), ("checkpoint_every", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise OptionError(name, f"--{name.replace('_', '-')} must be an integer >= {low}")
        if self.max_failures < -1:
            raise OptionError("max_failures", "--max-failures must be >= -1")
        if self.shuffle_buffer < 0:
            raise OptionError("shuffle_buffer", "--shuffle-buffer must be >= 0")
        if self.chunk_clips is not None and self.chunk_clips < 1:
            raise OptionError("chunk_clips", "--chunk-clips must be >= 1")
        for name in ("cpus_per_worker", "gpus_per_worker"):
            if not getattr(self, name) >= 0:
                raise OptionError(name, "--cpus-per-worker and --gpus-per-worker must be >= 0")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise OptionError(
                "val_fraction", f"--val-fraction must lie in [0, 1), not {self.val_fraction}"
            )
        if not self.wait_for_nodes >= 0:
            raise OptionError(
                "wait_for_nodes", f"--wait-for-nodes must be >= 0, not {self.wait_for_nodes}"
            )

    def _resolve_preset(self) -> Preset:
        """The preset with this config's overrides applied; a bad override names its field."""
        preset = load_preset(self.preset)
        for name in ("epochs", "batch_size", "lr", "seed"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                preset = preset.replace(**{name: value})
            except UserError as err:
                raise OptionError(name, str(err)) from None
        return preset

    @property
    def resolved(self) -> Preset:
        """The preset with this config's overrides (epochs, batch size, lr, seed) applied."""
        return self._resolved

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


def load_preset(name_or_file: str) -> Preset:
    """A named preset, or a preset JSON file (``Preset.to_json``); ``OptionError("preset")``
    for an unknown name or a bad file."""
    try:
        if not name_or_file.endswith(".json"):
            return get_preset(name_or_file)
        try:
            return Preset.from_json(Path(name_or_file).read_text())
        except FileNotFoundError:
            raise UserError(f"preset file {name_or_file} does not exist") from None
        except (ValueError, TypeError) as err:
            raise UserError(f"preset file {name_or_file}: {err}") from None
    except UserError as err:
        raise OptionError("preset", str(err)) from None


__all__ = ["TrainConfig", "load_preset"]
