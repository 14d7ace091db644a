"""Read a checkpoint written by the paper's own code, without running any of it.

The authors' ``Train.py`` saves ``model.pth`` with ``torch.save(model)``: the whole module
pickled, naming classes of their package (``model.final_future_prediction_with_memory_...
.convAE``, ``.Encoder``, ``.Decoder``, ``model.memory_final_....Memory``) and of
``torch.nn``. It saves the memory beside it as ``keys.pt``.

This module lists the pickle's globals first and refuses the file unless every one of them
is such a class or one of the tensor-rebuilding functions that ``torch.load`` allows with
``weights_only=True``. It then unpickles with ``weights_only=True``, standing a plain stub
class (with no code) in for each named class, and takes the parameters and buffers out of the
stubs' state. Nothing of the foreign package is imported, and no foreign code runs.

The paper's loader reads frames with OpenCV, whose colour frames are BGR; ingest decodes
RGB. A 3-channel model is therefore imported with ``channel_order="bgr"``, and every path
that feeds it frames (:func:`mnad.clips.model_frames`) reverses colour frames for it. Grey
frames repeated to 3 channels, as the paper's loader reads grey video, read the same either
way.
"""

from __future__ import annotations

import dataclasses
import os
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from mnad.config import PRESETS, ModelConfig, Preset
from mnad.errors import UserError
from mnad.network import MNAD

#: The classes of the paper's package that a model.pth names (prediction and reconstruction).
PAPER_CLASSES = {"convAE", "Encoder", "Decoder", "Memory"}
#: Globals that torch.load(weights_only=True) rebuilds tensors and containers with.
TENSOR_GLOBALS = re.compile(
    r"^(torch\._utils\._rebuild_\w+|torch\.\w*Storage|collections\.OrderedDict|"
    r"(__builtin__|builtins)\.set|torch\._tensor\._rebuild_from_type_v2|torch\.Size|"
    r"torch\.device|torch\.(float|int|long|uint8|bool)\w*)$"
)

#: This project's name for each module of the paper's model (prefix renames).
RENAMES = [
    ("encoder.moduleConv1.", "encoder.stage1."),
    ("encoder.moduleConv2.", "encoder.stage2."),
    ("encoder.moduleConv3.", "encoder.stage3."),
    ("encoder.moduleConv4.", "encoder.stage4."),
    ("decoder.moduleConv.", "decoder.bottleneck."),
    ("decoder.moduleUpsample4.", "decoder.up3."),
    ("decoder.moduleDeconv3.", "decoder.block3."),
    ("decoder.moduleUpsample3.", "decoder.up2."),
    ("decoder.moduleDeconv2.", "decoder.block2."),
    ("decoder.moduleUpsample2.", "decoder.up1."),
    ("decoder.moduleDeconv1.", "decoder.head."),
]
#: Entries of the paper's model that its forward pass never uses (a BatchNorm defined in
#: the encoder but not called): dropped on import.
UNUSED = ("encoder.moduleBatchNorm.",)


class _Stub:
    """Stands in for a foreign class while unpickling: keeps the state, runs nothing."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__["_state"] = state


def _pickle_globals(path: Path) -> set[str]:
    """The globals ("module.name") that the data.pkl of a torch zip file names."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl")), None)
            if pkl is None:
                raise UserError(f"{path}: not a torch.save file (no data.pkl inside)")
            data = zf.read(pkl)
    except zipfile.BadZipFile:
        raise UserError(f"{path}: not a torch.save zip file (legacy or corrupt)") from None
    names: set[str] = set()
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                names.add(str(arg).replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
            elif op.name == "STACK_GLOBAL":
                names.add(f"{strings[-2]}.{strings[-1]}")
    except Exception as err:  # noqa: BLE001 - a broken pickle is the file's fault
        raise UserError(f"{path}: corrupt pickle: {err}") from None
    return names


def _is_module_class(name: str) -> bool:
    module, _, cls = name.rpartition(".")
    if module.startswith("torch.nn.modules."):
        return True
    return module.split(".")[0] == "model" and cls in PAPER_CLASSES


def _stub_for(name: str) -> type:
    module, _, cls = name.rpartition(".")
    return type(cls, (_Stub,), {"__module__": module, "__qualname__": cls})


def _flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of a stubbed module tree, keyed like ``state_dict``."""
    state = getattr(obj, "_state", None)
    if not isinstance(state, dict):
        raise UserError(f"object at {prefix or 'top level'!r} is not a module")
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is not None:
                out[prefix + name] = tensor.detach() if tensor.requires_grad else tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(_flatten(child, f"{prefix}{name}."))
    return out


def read_paper_state(model_pth: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a paper ``model.pth``, under the paper's state_dict names."""
    path = Path(model_pth)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    names = _pickle_globals(path)
    foreign = sorted(n for n in names if not (_is_module_class(n) or TENSOR_GLOBALS.match(n)))
    if foreign:
        raise UserError(
            f"{path}: refusing to load: the pickle names {', '.join(foreign)}, which is not "
            "part of an MNAD model of the paper's code"
        )
    if not any(n.rpartition(".")[2] == "convAE" for n in names):
        raise UserError(f"{path}: not a model of the paper's code (no convAE inside)")
    stubs = [_stub_for(n) for n in names if _is_module_class(n)]
    try:
        with torch.serialization.safe_globals(stubs):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever failed, it is this file
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: cannot be unpickled safely: {line}") from None
    return _flatten(obj)


def read_paper_keys(keys_pt: str | os.PathLike[str]) -> torch.Tensor:
    """The memory items (M, C) that the paper's ``Train.py`` saves as ``keys.pt``."""
    path = Path(keys_pt)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        keys = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a tensor file: {line}") from None
    if not torch.is_tensor(keys) or keys.ndim != 2:
        raise UserError(f"{path}: expected the memory as one (M, C) tensor")
    return keys.float()


def rename_paper_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Paper state_dict names to this project's; unknown names are an error."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in state.items():
        if name.startswith(UNUSED):
            continue
        for old, new in RENAMES:
            if name.startswith(old):
                out[new + name[len(old) :]] = tensor
                break
        else:
            unknown.append(name)
    if unknown:
        raise UserError(f"unexpected entries in the paper model: {', '.join(unknown[:5])}")
    return out


def infer_model_config(
    state: dict[str, torch.Tensor], memory_size: int, height: int, width: int
) -> ModelConfig:
    """The ModelConfig that a paper state_dict (paper names) was built with."""
    try:
        first = state["encoder.moduleConv1.0.weight"]  # (w1, C*T, 3, 3)
        last = state["decoder.moduleDeconv1.6.weight"]  # (C, w1, 3, 3)
        up = state["decoder.moduleUpsample4.0.weight"]  # (w4, w3 or w4, 3, 3)
    except KeyError as err:
        raise UserError(f"not an MNAD model of the paper's code: no {err.args[0]}") from None
    channels = int(last.shape[0])
    width_mult = int(first.shape[0]) / 64
    task = "recon" if up.shape[0] == up.shape[1] else "pred"
    base = PRESETS["paper-recon" if task == "recon" else "paper-pred"].model
    # Losses, alpha and threshold are not in the file: the paper's values for the task.
    return dataclasses.replace(
        base,
        height=height,
        width=width,
        channels=channels,
        channel_order="bgr" if channels == 3 else "rgb",  # OpenCV's order, as it was trained
        input_frames=int(first.shape[1]) // channels,
        width_mult=width_mult,
        memory_size=memory_size,
    )


def import_paper_model(
    model_pth: str | os.PathLike[str],
    keys_pt: str | os.PathLike[str],
    height: int = 256,
    width: int = 256,
) -> tuple[MNAD, Preset]:
    """This project's model (eval mode) with the weights and memory of a paper checkpoint.

    The network is fully convolutional, so ``height`` and ``width`` only set the input size
    the config records; any size divisible by 8 runs.
    """
    paper_state = read_paper_state(model_pth)
    keys = read_paper_keys(keys_pt)
    config = infer_model_config(paper_state, keys.shape[0], height, width)
    if keys.shape[1] != config.feature_dim:
        raise UserError(
            f"{keys_pt}: memory of dimension {keys.shape[1]} does not fit a model whose "
            f"features have {config.feature_dim}"
        )
    preset_name = "paper-recon" if config.task == "recon" else "paper-pred"
    preset = Preset(f"{preset_name}-imported", config, PRESETS[preset_name].optim)
    state = rename_paper_state(paper_state)
    state["memory.items"] = keys
    model = MNAD(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"{model_pth}: does not match the MNAD network: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return model.eval(), preset


__all__ = [
    "import_paper_model",
    "infer_model_config",
    "read_paper_keys",
    "read_paper_state",
    "rename_paper_state",
]
