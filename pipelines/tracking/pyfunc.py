"""A checkpoint as an MLflow pyfunc model: its class, signature, requirements and folder.

``MNADPyfunc`` runs wherever MLflow loads the model (``mlflow.pyfunc.load_model`` in any
process, ``mlflow models serve``) and answers what `mnad score` writes for one video. The
model is saved "from code" (nothing pickled): the code file names
``pipelines.tracking.pyfunc.MNADPyfunc``, and the ``mnad`` and ``pipelines`` packages travel
inside the model folder (``code/``, MLflow's ``code_paths``, put first on ``sys.path`` when
the model loads), so the model needs no ``mnad`` distribution where it is served: only the
pinned third-party requirements of :func:`pip_requirements`. The source folders rather than
a wheel: a wheel would have to be built at every registration and would be a requirement
line of its own, and MLflow already knows how to ship and import code folders.
Loading the model runs that shipped code. ``save_pyfunc`` (driver, at registration) writes
the model folder; ``checkpoint_in_model_dir`` finds the checkpoint inside one again (what
`mnad score` reads: weights only, no code).
"""

from __future__ import annotations

import os
import shutil
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from packaging.version import Version

import mnad
import pipelines
from mnad.calibration import DEFAULT_FALSE_ALARM_RATE, check_rate
from mnad.checkpoint import CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, load_checkpoint
from mnad.config import ModelConfig, Preset
from mnad.streaming import StreamingScorer
from mnad.video import normalised_scores, score_frames, scoring_model
from pipelines.errors import UserError

CHECKPOINT_ARTIFACT = "checkpoint"
"""Key of the checkpoint directory among the pyfunc model's artifacts."""

PREDICT_COLUMNS = (
    "frame_index", "psnr", "feature_distance", "point_score", "memory_updated",
    "score_per_video", "score_calibrated", "alarm",
)  # fmt: skip
"""Columns of ``MNADPyfunc.predict``'s output, one row per scored frame."""
_CALIBRATED = ("score_calibrated", "alarm")  # null without a calibration

FALSE_ALARM_RATE_PARAM = "false_alarm_rate"
"""The predict parameter that sets the alarm threshold's false-alarm rate."""

REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "pyarrow")
"""The distributions the shipped code imports (pyarrow: ``pipelines``' storage module)."""

_PREDICT_CHUNK = 64  # clips per forward pass in MNADPyfunc.predict

_MODEL_CODE = """\
# An mnad checkpoint as an MLflow pyfunc model ("models from code": nothing is pickled).
from mlflow.models import set_model

from pipelines.tracking.pyfunc import MNADPyfunc

set_model(MNADPyfunc())
"""


class MNADPyfunc(mlflow.pyfunc.PythonModel):
    """A checkpoint as an MLflow pyfunc model: one video's frames in, `mnad score`'s rows out.

    Input: the frames of ONE video (or of its first frames, a window), in order, as stored
    in the shards (:mod:`pipelines.schema`): a uint8 array (n, H, W, C) at the model's frame
    size, C = 3 (RGB, as ingest decodes) or 1 (grey). They are made what the model takes as
    `mnad score`'s reader makes them (:func:`mnad.clips.model_frames`: RGB turned grey for
    a grey model, reversed for a BGR model; grey repeated for a colour one). Over HTTP:
    ``{"inputs": <nested lists of 0..255>}``. The signature fixes the dtype, height and
    width, so MLflow refuses other frames before ``predict``.

    Output: one row per scored frame, as in `mnad score`'s SCORES/frames: the first T - 1
    frames get no clip and no row (T = ``clip_length``); ``frame_index`` counts from the
    first frame sent. ``psnr`` (Eq. 11), ``feature_distance`` (Eq. 12), ``point_score``
    (the update gate of Sec. 3.4) and ``memory_updated``, from the clips scored in order
    with the test-time memory update, the memory reset to the trained one at every call;
    ``score_per_video``: Eq. (13), min-max over the frames sent (so it needs the whole
    video); for a calibrated model, ``score_calibrated`` (each frame on the calibration's
    scale: a window's rows equal the whole video's) and ``alarm``: ``score_calibrated``
    over the calibration's threshold at the false-alarm rate of the ``false_alarm_rate``
    parameter (default ``mnad.calibration.DEFAULT_FALSE_ALARM_RATE``, no smoothing); both
    null without a calibration.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the checkpoint among the model's artifacts (on a GPU when there is one)."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        checkpoint = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        self.model = scoring_model(checkpoint, device)
        self.config = checkpoint.preset.model
        self.calibration = checkpoint.calibration

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Score one video's frames; see the class docstring for input and output."""
        frames = np.asarray(model_input)
        cfg = self.config
        if frames.ndim != 4 or frames.shape[1:3] != (cfg.height, cfg.width):
            raise _invalid(
                f"frames must be (n, {cfg.height}, {cfg.width}, C): one video's frames in "
                f"order; got {frames.shape}"
            )
        if frames.shape[3] not in (1, 3) or frames.dtype != np.uint8:
            raise _invalid(
                "frames must be uint8 with C = 3 (RGB) or 1 (grey); "
                f"got {frames.dtype} with C = {frames.shape[3]}"
            )
        rate = float((params or {}).get(FALSE_ALARM_RATE_PARAM, DEFAULT_FALSE_ALARM_RATE))
        try:
            check_rate(rate)
        except ValueError as err:
            raise _invalid(str(err)) from None
        scorer = StreamingScorer(self.model)  # the trained memory: a video of its own
        scored = score_frames(scorer, frames, cfg, batch=_PREDICT_CHUNK)
        psnr, distance = scored.psnr, scored.feature_distance
        fused = normalised_scores(psnr, distance, cfg.alpha, self.calibration)
        n = len(psnr)
        if fused.calibrated is None or self.calibration is None:
            calibrated, alarm = [None] * n, [None] * n
        else:
            calibrated = fused.calibrated
            alarm = calibrated > self.calibration.threshold(rate)
        return pd.DataFrame(
            {
                "frame_index": np.arange(cfg.clip_length - 1, cfg.clip_length - 1 + n),
                "psnr": psnr,
                "feature_distance": distance,
                "point_score": scored.point_score,
                "memory_updated": scored.updated,
                "score_per_video": fused.per_video,
                "score_calibrated": calibrated,
                "alarm": alarm,
            },
            columns=list(PREDICT_COLUMNS),
        )


def _invalid(message: str) -> MlflowException:
    """An error in what was sent: ``mlflow models serve`` answers it with status 400."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def model_signature(config: ModelConfig) -> ModelSignature:
    """The pyfunc signature of a model with this config: frames in, per-frame rows out."""
    inputs = Schema(
        # unnamed: a named tensor would reach predict as a dict {name: array}; channels: RGB
        # or grey, whichever the model takes
        [TensorSpec(np.dtype(np.uint8), (-1, config.height, config.width, -1))]
    )
    types = {"frame_index": "long", "memory_updated": "boolean", "alarm": "boolean"}
    outputs = Schema(
        [
            ColSpec(types.get(name, "double"), name, required=name not in _CALIBRATED)
            for name in PREDICT_COLUMNS
        ]
    )
    params = ParamSchema([ParamSpec(FALSE_ALARM_RATE_PARAM, "double", DEFAULT_FALSE_ALARM_RATE)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example(config: ModelConfig) -> np.ndarray:
    """The smallest input that gets a score: T black grey frames (one row out)."""
    return np.zeros((config.clip_length, config.height, config.width, 1), np.uint8)


def pip_requirements() -> list[str]:
    """What the model needs beyond its shipped code, pinned to this environment, so that
    MLflow infers nothing. A local version label (torch's ``+cpu``) is left out: it names
    a package index, not a release."""
    reqs = []
    for dist in REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={Version(importlib_metadata.version(dist)).public}")
        except importlib_metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def code_paths() -> list[str]:
    """The package folders that travel in the model: ``mnad`` and ``pipelines``."""
    return [os.fspath(Path(package.__file__).parent) for package in (mnad, pipelines)]


def save_pyfunc(
    tmp: Path,
    checkpoint_dir: str | os.PathLike[str],
    preset: Preset,
    mlflow_model: Model,
    example: np.ndarray | None = None,
) -> Path:
    """Write the pyfunc model folder of a checkpoint under ``tmp``; returns it.

    Only the inference part of the checkpoint (``config.json``, ``model.pt`` and the
    calibration when there is one) goes in, with the code of :func:`code_paths`;
    ``mlflow_model`` carries the ids of the logged model and run it belongs to. ``example``
    (default :func:`input_example`) is the input example MLflow stores and checks the model
    against.
    """
    weights = tmp / CHECKPOINT_ARTIFACT
    weights.mkdir()
    for name in (CONFIG_FILE, MODEL_FILE, CALIBRATION_FILE):
        if name == CALIBRATION_FILE and not (Path(checkpoint_dir) / name).is_file():
            continue  # a model without a calibration
        shutil.copy2(Path(checkpoint_dir) / name, weights / name)
    code = tmp / "mnad_pyfunc.py"
    code.write_text(_MODEL_CODE)
    local = tmp / "model"
    mlflow.pyfunc.save_model(
        path=os.fspath(local),
        python_model=os.fspath(code),
        artifacts={CHECKPOINT_ARTIFACT: os.fspath(weights)},
        code_paths=code_paths(),
        signature=model_signature(preset.model),
        input_example=input_example(preset.model) if example is None else example,
        pip_requirements=pip_requirements(),
        mlflow_model=mlflow_model,
        metadata={"mnad.preset": preset.name, "mnad.input": "uint8 frames (n, H, W, C)"},
    )
    return local


def checkpoint_in_model_dir(model_dir: Path, uri: str) -> Path:
    """The checkpoint folder in a pyfunc model folder (or ``model_dir`` if it is one).

    ``uri`` names the model in the one-line ``UserError`` for a folder that is neither.
    """
    if (model_dir / CONFIG_FILE).is_file() and (model_dir / MODEL_FILE).is_file():
        return model_dir  # a runs:/ URI pointing at a checkpoint folder itself
    if not (model_dir / "MLmodel").is_file():
        raise UserError(f"{uri}: neither an MLflow model nor a checkpoint folder")
    flavor = Model.load(os.fspath(model_dir)).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT)
    if not entry:
        raise UserError(f"{uri}: an MLflow model, but not one of `mnad` (no checkpoint artifact)")
    return model_dir / entry["path"]


__all__ = [
    "CHECKPOINT_ARTIFACT",
    "FALSE_ALARM_RATE_PARAM",
    "PREDICT_COLUMNS",
    "REQUIREMENTS",
    "MNADPyfunc",
    "checkpoint_in_model_dir",
    "code_paths",
    "input_example",
    "model_signature",
    "pip_requirements",
    "save_pyfunc",
]
