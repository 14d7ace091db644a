"""`mnad export MODEL --format onnx --out FILE` on the driver: MODEL resolved as every
command resolves it (:func:`pipelines.tracking.find_model`, an alias pinned to its version),
fetched, loaded weights-only (:func:`mnad.checkpoint.load_checkpoint`), exported
(:mod:`pipelines.export.to_onnx`), run in ONNX Runtime against torch, and written
atomically to FILE.

The exported network is the model with its BatchNorms folded into the convolutions
(:func:`mnad.network.fold_batchnorm`, what scoring runs): the same function to float
rounding with fewer nodes, and no BatchNorm left that a runtime could mistake for a trainable
one. The channels_last weights of :func:`mnad.network.inference_copy` are left out: they
choose torch's kernels, and an ONNX graph is NCHW whatever the runtime does inside.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from mnad.checkpoint import load_checkpoint
from pipelines import storage
from pipelines.errors import UserError
from pipelines.export.config import ExportConfig
from pipelines.export.graph import INPUTS, OUTPUTS
from pipelines.stage import Result


@dataclass(frozen=True)
class ExportResult(Result):
    """What `mnad export` wrote."""

    model: str  # as given
    model_uri: str  # pinned: models:/<name>/<version>, else as given
    format: str
    out: str
    opset: int
    size_bytes: int
    inputs: dict[str, list[int | str]]  # name -> shape ("batch" for the dynamic axis)
    outputs: dict[str, list[int | str]]
    update_threshold: float  # below it a frame's queries update the memory
    max_abs_error: dict[str, float] | None = None  # per output, ONNX Runtime vs torch
    failed: tuple[str, ...] = field(default=())  # outputs off by more than the tolerance

    @property
    def exit_status(self) -> int:
        """1 when the check in ONNX Runtime found an output off, else 0."""
        return 1 if self.failed else 0


def run_export(config: ExportConfig) -> ExportResult:
    """Export ``config.model`` to ``config.out`` (see the module docstring)."""
    from pipelines import tracking
    from pipelines.export import to_onnx

    _check_writable(config.out)
    _check_installed(config.verify)
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    ref = tracking.find_model(config.model, uri)
    if not ref.local:
        tracking.check_tracking(uri)
    with tempfile.TemporaryDirectory(prefix="mnad-export-") as tmp:
        checkpoint = load_checkpoint(tracking.fetch_model(ref, uri, dst=tmp))
    data = to_onnx.onnx_bytes(checkpoint, config.opset, to_onnx.metadata(checkpoint, ref.pinned))
    errors = to_onnx.verify(data, checkpoint) if config.verify else None
    failed = tuple(k for k, v in (errors or {}).items() if not v <= to_onnx.TOLERANCE[k])
    try:
        with storage.atomic_output(config.out) as sink:
            sink.write(data)
    except OSError as err:
        raise UserError(f"{config.out}: cannot write the export: {err.strerror or err}") from None
    cfg = checkpoint.preset.model
    frames = [cfg.channels * cfg.input_frames, cfg.height, cfg.width]
    image = [cfg.channels, cfg.height, cfg.width]
    queries = [(cfg.height // 8) * (cfg.width // 8), cfg.feature_dim]
    shapes = {
        "frames": ["batch", *frames], "items": [cfg.memory_size, cfg.feature_dim],
        "target": ["batch", *image], "prediction": ["batch", *image],
        "queries": ["batch", *queries], "feature_distance": ["batch"],
        "point_score": ["batch"], "psnr": ["batch"],
    }  # fmt: skip
    result = ExportResult(
        model=config.model, model_uri=ref.pinned, format=config.format, out=config.out,
        opset=config.opset, size_bytes=len(data), inputs={k: shapes[k] for k in INPUTS},
        outputs={k: shapes[k] for k in OUTPUTS}, update_threshold=float(cfg.update_threshold),
        max_abs_error=errors, failed=failed,
    )  # fmt: skip
    _report(config, result)
    return result


def _report(config: ExportConfig, result: ExportResult) -> None:
    if result.failed:
        worst = ", ".join(f"{k} off by {result.max_abs_error[k]:.2e}" for k in result.failed)
        print(f"mnad export: {result.out}: ONNX Runtime disagrees with torch: {worst}", flush=True)
        return
    if config.quiet:
        return
    checked = ""
    if result.max_abs_error is not None:
        worst = max(result.max_abs_error, key=result.max_abs_error.get)
        checked = f"; ONNX Runtime matches torch (largest difference {worst} "
        checked += f"{result.max_abs_error[worst]:.1e})"
    print(
        f"mnad export: {result.model_uri} -> {result.out} (ONNX opset {result.opset}, "
        f"{result.size_bytes / 1e6:.1f} MB; inputs {', '.join(INPUTS)}; the memory update is the "
        f"runtime's, below point_score {result.update_threshold:g}){checked}",
        flush=True,
    )


def _check_writable(out: str) -> None:
    """A one-line UserError, before any work, when a local FILE cannot be written: a folder
    is there, or the nearest folder above it that exists is not writable."""
    if storage.is_uri(out):
        return
    path = os.path.abspath(out)
    if os.path.isdir(path):
        raise UserError(f"{out}: is a folder: give the FILE to write (e.g. {out}/model.onnx)")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{out}: cannot write the export: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{out}: cannot write the export: {parent} is not writable")


def _check_installed(verify: bool) -> None:
    """A one-line UserError when the export's packages are missing."""
    import importlib.util

    missing = [m for m in ("onnx", *(("onnxruntime",) if verify else ())) if not
               importlib.util.find_spec(m)]  # fmt: skip
    if missing:
        raise UserError(
            f"mnad export --format onnx needs {' and '.join(missing)}: pip install 'mnad[export]'"
        )


__all__ = ["ExportResult", "run_export"]
