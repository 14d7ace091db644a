"""The graph of :mod:`pipelines.export.graph` as an ONNX model (driver): traced by torch's
TorchScript exporter, checked by ``onnx.checker``, the model's config in its metadata, and
run in ONNX Runtime against torch (:func:`verify`).

The TorchScript exporter, not torch's ``dynamo=True`` one: that needs ``onnxscript``, which
this project does not install, and it gives this fully convolutional graph nothing more.
One operator has no ONNX counterpart: ``expm1``, which the update gate uses for
``1 - exp(-e)``; it is written as ``exp(x) - 1`` computed in float64 and cast back, exact to
float32 rounding for the small errors the gate sees (where float32 ``exp(x) - 1`` would lose
half its digits).

Metadata (``metadata_props``, all strings): ``mnad.preset`` (the checkpoint's config as
JSON), ``mnad.model_uri``, ``mnad.update_threshold``, ``mnad.alpha``, ``mnad.clip_length``,
``mnad.inputs`` and ``mnad.outputs`` (names in order) and, when the model has one,
``mnad.calibration`` (JSON): what a runtime needs to apply the update and to score.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from mnad.checkpoint import Checkpoint
from mnad.network import fold_batchnorm
from pipelines.export.graph import BATCHED, INPUTS, OUTPUTS, ReadGraph

TRACE_BATCH, VERIFY_BATCH = 2, 3
"""The batch the graph is traced with and the (other) batch it is checked with, so that a
size fixed by mistake in the trace shows as a failure."""
TOLERANCE = {"prediction": 1e-4, "queries": 1e-4, "feature_distance": 1e-5, "point_score": 1e-5,
             "psnr": 1e-3}  # fmt: skip
"""The largest absolute difference from torch that :func:`verify` accepts per output: float32
rounding of a different order of the same operations."""


def sample_inputs(checkpoint: Checkpoint, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of the graph for ``batch`` random clips, with the model's own memory."""
    cfg = checkpoint.preset.model
    generator = torch.Generator().manual_seed(seed)
    shape = (cfg.height, cfg.width)
    frames = torch.rand((batch, cfg.channels * cfg.input_frames, *shape), generator=generator)
    target = torch.rand((batch, cfg.channels, *shape), generator=generator)
    items = checkpoint.model_state["memory.items"].float()
    return {"frames": frames * 2 - 1, "items": items.clone(), "target": target * 2 - 1}


def metadata(checkpoint: Checkpoint, model_uri: str) -> dict[str, str]:
    """The ``metadata_props`` of the exported model (see the module docstring)."""
    cfg = checkpoint.preset.model
    props = {
        "mnad.preset": checkpoint.preset.to_json(),
        "mnad.model_uri": model_uri,
        "mnad.update_threshold": repr(float(cfg.update_threshold)),
        "mnad.alpha": repr(float(cfg.alpha)),
        "mnad.clip_length": str(cfg.clip_length),
        "mnad.inputs": ",".join(INPUTS),
        "mnad.outputs": ",".join(OUTPUTS),
    }
    if checkpoint.calibration is not None:
        props["mnad.calibration"] = checkpoint.calibration.to_json()
    return props


def onnx_bytes(checkpoint: Checkpoint, opset: int, props: Mapping[str, str]) -> bytes:
    """The checkpoint's graph as a checked ONNX model, ``props`` in its metadata."""
    import onnx

    graph = ReadGraph(fold_batchnorm(checkpoint.build_model("cpu")))
    example = sample_inputs(checkpoint, TRACE_BATCH)
    buffer = io.BytesIO()
    with _expm1_symbolic(opset), warnings.catch_warnings():
        # The shape asserts on entry are evaluated once, at trace time, which is what they
        # are for; the tracer warns about each.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            graph,
            tuple(example[name] for name in INPUTS),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in BATCHED},
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, dict(props))
    model.doc_string = "MNAD: network and memory read; the test-time update is the runtime's"
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def verify(data: bytes, checkpoint: Checkpoint) -> dict[str, float]:
    """Run the ONNX model ``data`` in ONNX Runtime on a sample batch (of another size than
    the trace's) and return each output's largest absolute difference from the torch model
    (not folded: the model as trained)."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    inputs = sample_inputs(checkpoint, VERIFY_BATCH, seed=1)
    got = session.run(list(OUTPUTS), {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        expected = ReadGraph(checkpoint.build_model("cpu"))(*(inputs[k] for k in INPUTS))
    return {
        name: float(np.max(np.abs(g - e.numpy()))) if g.size else 0.0
        for name, g, e in zip(OUTPUTS, got, expected, strict=True)
    }


def _expm1(g, x):  # noqa: ANN001 - the exporter's graph context and value
    """ONNX for ``aten::expm1``: ``exp(x) - 1`` in float64, cast back to ``x``'s type."""
    wide = g.op("Cast", x, to_i=torch.onnx.TensorProtoDataType.DOUBLE)
    one = g.op("Constant", value_t=torch.tensor(1.0, dtype=torch.float64))
    return g.op("CastLike", g.op("Sub", g.op("Exp", wide), one), x)


@contextlib.contextmanager
def _expm1_symbolic(opset: int) -> Iterator[None]:
    """``aten::expm1`` exportable while the block runs (the registration is global)."""
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::expm1", opset)


__all__ = ["TOLERANCE", "metadata", "onnx_bytes", "sample_inputs", "verify"]
