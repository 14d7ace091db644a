"""Colour test material: a checkpoint saved the way the paper's code saves one, and DATA
folders of any frames.

:func:`paper_colour_checkpoint` writes ``model.pth`` and ``keys.pt`` as the paper's
``Train.py`` does: ``torch.save(model)`` of a whole ``convAE`` module whose classes live in
the paper's package (``model.final_future_prediction_with_memory_spatial_sumonly_weight_
ranking_top1`` and ``model.memory_final_spatial_sumonly_weight_ranking_top1``), and the
memory items beside it. The classes here lay out the paper's layers under the paper's
attribute names and positions (the key layout of the reference fixture's
``state_dict_keys.txt``: tests/mnad/test_paper_colour.py checks it), at any widths, with
random weights; they have no forward pass, since the import reads tensors only. They are
written to a temporary package and pickled by a child process, so the test process never
imports them (as a user's would not).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.schema import MANIFEST_SCHEMA, FrameShape, frame_batch, shard_schema

PREDICTION_MODULE = "final_future_prediction_with_memory_spatial_sumonly_weight_ranking_top1"
MEMORY_MODULE = "memory_final_spatial_sumonly_weight_ranking_top1"

_MEMORY_SOURCE = """
from torch import nn


class Memory(nn.Module):
    def __init__(self, memory_size, feature_dim, key_dim, temp_update, temp_gather):
        super().__init__()
        self.memory_size = memory_size
        self.feature_dim = feature_dim
        self.key_dim = key_dim
        self.temp_update = temp_update
        self.temp_gather = temp_gather
"""

_PREDICTION_SOURCE = f"""
from torch import nn

from model.{MEMORY_MODULE} import Memory


def block(c_in, c_out, last=True):
    layers = [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(False),
              nn.Conv2d(c_out, c_out, 3, 1, 1)]
    if last:
        layers += [nn.BatchNorm2d(c_out), nn.ReLU(False)]
    return nn.Sequential(*layers)


def up(c_in, c_out):
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 3, 2, 1, 1), nn.BatchNorm2d(c_out),
                         nn.ReLU(False))


class Encoder(nn.Module):
    def __init__(self, c_in, w):
        super().__init__()
        self.moduleConv1 = block(c_in, w[0])
        self.modulePool1 = nn.MaxPool2d(2, 2)
        self.moduleConv2 = block(w[0], w[1])
        self.modulePool2 = nn.MaxPool2d(2, 2)
        self.moduleConv3 = block(w[1], w[2])
        self.modulePool3 = nn.MaxPool2d(2, 2)
        self.moduleConv4 = block(w[2], w[3], last=False)
        self.moduleBatchNorm = nn.BatchNorm2d(w[3])
        self.moduleReLU = nn.ReLU(False)


class Decoder(nn.Module):
    def __init__(self, c_out, w):
        super().__init__()
        self.moduleConv = block(2 * w[3], w[3])
        self.moduleUpsample4 = up(w[3], w[2])
        self.moduleDeconv3 = block(2 * w[2], w[2])
        self.moduleUpsample3 = up(w[2], w[1])
        self.moduleDeconv2 = block(2 * w[1], w[1])
        self.moduleUpsample2 = up(w[1], w[0])
        self.moduleDeconv1 = nn.Sequential(*block(2 * w[0], w[0]),
                                           nn.Conv2d(w[0], c_out, 3, 1, 1), nn.Tanh())


class convAE(nn.Module):
    def __init__(self, n_channel, t_length, memory_size, widths):
        super().__init__()
        self.encoder = Encoder(n_channel * (t_length - 1), widths)
        self.decoder = Decoder(n_channel, widths)
        self.memory = Memory(memory_size, widths[3], widths[3], 0.1, 0.1)
"""

_SAVE = """
import sys

import torch
import torch.nn.functional as F
from torch import nn

from model.{module} import convAE

out, seed, channels, memory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
widths = tuple(int(w) for w in sys.argv[5].split(","))
torch.manual_seed(seed)
model = convAE(channels, 5, memory, widths)
for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):  # trained-looking statistics, not the identity
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.normal_(0, 0.1)
torch.save(model, out + "/model.pth")
torch.save(F.normalize(torch.rand(memory, widths[3]), dim=1), out + "/keys.pt")
"""


def paper_colour_checkpoint(
    folder: Path,
    widths: tuple[int, int, int, int] = (8, 16, 32, 64),
    memory_size: int = 4,
    channels: int = 3,
    seed: int = 0,
) -> tuple[Path, Path]:
    """``model.pth`` and ``keys.pt`` of a random prediction model (5-frame clips of
    ``channels`` channels) saved as the paper's code saves them, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    package = folder / "paper_code" / "model"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / f"{MEMORY_MODULE}.py").write_text(textwrap.dedent(_MEMORY_SOURCE))
    (package / f"{PREDICTION_MODULE}.py").write_text(textwrap.dedent(_PREDICTION_SOURCE))
    script = _SAVE.format(module=PREDICTION_MODULE)
    args = [str(folder), str(seed), str(channels), str(memory_size), ",".join(map(str, widths))]
    subprocess.run(
        [sys.executable, "-c", script, *args],
        check=True,
        cwd=folder / "paper_code",
        env={"PYTHONPATH": str(folder / "paper_code"), "PATH": "/usr/bin:/bin"},
    )
    return folder / "model.pth", folder / "keys.pt"


def colour_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, H, W, 3) frames whose channels differ: a red and a blue bar moving across
    a green gradient, with noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    frames = np.empty((n, height, width, 3), np.float32)
    for t in range(n):
        frames[t, ..., 0] = np.where(np.abs(x - (2 * t) % width) < width / 6, 220, 40)
        frames[t, ..., 1] = 30 + 180 * y / max(1, height - 1)
        frames[t, ..., 2] = np.where(np.abs(y - (3 * t) % height) < height / 5, 200, 60)
    frames += rng.normal(0, 6, frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_frames_data(
    root: Path,
    videos: dict[str, dict[str, np.ndarray]],
    dataset: str = "frames",
    anomalous: dict[str, range] | None = None,
) -> Path:
    """A DATA folder as `mnad ingest` writes it from ``videos``: split -> {video_id: uint8
    (n, H, W, C) frames}, all of one size; the frames ``anomalous[video_id]`` are labelled
    anomalous, the others normal."""
    shapes = {FrameShape(*f.shape[1:]) for split in videos.values() for f in split.values()}
    assert len(shapes) == 1, shapes
    shape = shapes.pop()
    rows, splits = [], {}
    for split, clips in videos.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for video_id, frames in sorted(clips.items()):
            labels = np.zeros(len(frames), np.int8)
            labels[list((anomalous or {}).get(video_id, ()))] = 1
            with pq.ParquetWriter(root / split / f"{video_id}.parquet", shard_schema(shape)) as w:
                for start in range(0, len(frames), 8):
                    chunk = np.ascontiguousarray(frames[start : start + 8])
                    w.write_batch(
                        frame_batch(
                            dataset=dataset, split=split, video_id=video_id, start_index=start,
                            labels=labels[start : start + 8], pixels=chunk.tobytes(),
                            shape=shape,
                        )
                    )  # fmt: skip
            rows.append({
                "source": f"/src/{split}/{video_id}", "split": split, "video_id": video_id,
                "content_hash": f"sha256:{video_id}", "frames": len(frames),
                "anomalous_frames": int(labels.sum()), "height": shape.height, "width": shape.width,
                "status": "ok", "error": None, "shard": f"{split}/{video_id}.parquet",
            })  # fmt: skip
        marked = sum(len((anomalous or {}).get(v, ())) for v in clips)
        splits[split] = {"videos": len(clips), "frames": sum(len(f) for f in clips.values()),
                         "anomalous_frames": marked}  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), root / "manifest.parquet")
    summary = {
        "dataset": dataset, "layout": "frames", "height": shape.height, "width": shape.width,
        "channels": shape.channels, "failed": [], "splits": splits,
    }  # fmt: skip
    (root / "summary.json").write_text(json.dumps(summary))
    return root
