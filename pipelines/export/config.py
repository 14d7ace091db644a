"""The export stage's contract in: :class:`ExportConfig`, the options of `mnad export`
(driver)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.errors import OptionError
from pipelines.options import option

FORMATS = ("onnx",)
"""The formats `mnad export` writes."""

OPSET = 17
"""The default ONNX opset: ONNX Runtime runs it from release 1.12 on, and the graph uses
nothing that a newer opset adds (convolutions, pooling, matrix products, softmax,
reductions), so choosing 17 costs the graph nothing and widens the runtimes that load it."""

MIN_OPSET, MAX_OPSET = 15, 20
"""The opsets accepted: 15 is the first with ``CastLike``, which the graph's ``expm1`` is
written with (:mod:`pipelines.export.to_onnx`); 20 the newest that torch's TorchScript
exporter writes."""


@dataclass(frozen=True)
class ExportConfig:
    """Which model to export, to which format and file."""

    model: str = option(
        "registered model URI (models:/mnad-ped2@champion), runs:/ URI, or a checkpoint folder",
        positional=True,
        path=True,
    )
    out: str = option("FILE to write (a local path or an s3:// / gs:// URI)", path=True)
    format: str = option(f"what to write: {', '.join(FORMATS)}", default="onnx")
    opset: int = option(
        f"ONNX opset to target ({MIN_OPSET}..{MAX_OPSET}; the default runs on ONNX Runtime "
        "1.12 and later)",
        default=OPSET,
    )
    verify: bool = option(
        "run the written graph in ONNX Runtime on a sample batch and compare it with torch",
        default=True,
    )
    tracking_uri: str | None = option(
        "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mnad-runs)", default=None
    )
    quiet: bool = option("print only errors and the result", default=False, execution=True)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise OptionError(
                "format", f"--format {self.format!r}: unknown; formats are {', '.join(FORMATS)}"
            )
        if not self.out:
            raise OptionError("out", "--out is empty: give the FILE to write")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise OptionError("opset", f"--opset {self.opset}: must be in {MIN_OPSET}..{MAX_OPSET}")


__all__ = ["FORMATS", "MAX_OPSET", "MIN_OPSET", "OPSET", "ExportConfig"]
