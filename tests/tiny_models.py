"""Trained models without long training, for the scoring, calibration and registry tests: a
tiny model trained for a few seconds with the library's own loss on the normal videos of a
tiny DATA folder whose test split holds a labelled anomaly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mnad.checkpoint import save_checkpoint, write_calibration
from mnad.clips import model_clips, stack_clips
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.losses import training_losses
from mnad.network import build_model
from pipelines.data import list_shards, read_frames
from tests.conftest import write_tiny_data

PRESET = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=4,
                update_threshold=0.01),
    OptimConfig(),
)  # fmt: skip
NORMAL = {"v0": 40, "v1": 40, "v2": 40}
TEST = {"a_normal": 40, "b_anomalous": 40}
ANOMALY = range(20, 28)  # frames of b_anomalous turned white, labelled 1


def labelled_data(root: Path, anomalous_frames: int = TEST["b_anomalous"]) -> Path:
    """Three normal training videos; test a_normal (the frames of v0) and b_anomalous (those
    of v1, ``anomalous_frames`` long), whose frames ANOMALY are white and labelled (the
    summary says so, as `mnad ingest` writes it)."""
    data = write_tiny_data(
        root, {"train": NORMAL, "test": {**TEST, "b_anomalous": anomalous_frames}}
    )
    path = data / "test" / "b_anomalous.parquet"
    table = pq.read_table(path)
    frames = table.column("frame").to_pylist()
    label = np.zeros(table.num_rows, np.int8)
    for i in ANOMALY:
        if i < table.num_rows:
            frames[i], label[i] = b"\xff" * len(frames[i]), 1
    for name, values in (("frame", pa.array(frames, table.schema.field("frame").type)),
                         ("label", pa.array(label))):  # fmt: skip
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), values)
    pq.write_table(table, path)
    summary = json.loads((data / "summary.json").read_text())
    summary["splits"]["test"]["anomalous_frames"] = int(label.sum())
    (data / "summary.json").write_text(json.dumps(summary))
    return data


def trained_checkpoint(data: Path, folder: Path, steps: int) -> Path:
    """A checkpoint of the tiny model after ``steps`` Adam steps of 8 clips of the normal
    training videos (0: as initialised)."""
    torch.manual_seed(0)
    cfg = PRESET.model
    clips = []
    for shard in list_shards(str(data), "train"):
        frames = read_frames(shard, 0, NORMAL[shard.rsplit("/", 1)[-1].removesuffix(".parquet")])
        starts = np.arange(len(frames) - cfg.clip_length + 1)
        clips.append(model_clips(stack_clips(frames, starts, cfg.clip_length), cfg))
    inputs = torch.cat([c.inputs for c in clips])  # (N, input_frames, 16, 16)
    target = torch.cat([c.target for c in clips])  # (N, 1, 16, 16)
    model = build_model(cfg, seed=0).train()
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(steps):
        batch = torch.randint(0, len(inputs), (8,))
        out = model(inputs[batch])
        loss = training_losses(out.prediction, target[batch], out.compactness,
                               out.separateness, cfg)  # fmt: skip
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    return save_checkpoint(folder, model, PRESET)


def calibrated_checkpoint(data: Path, folder: Path, uri: str, steps: int = 300) -> Path:
    """:func:`trained_checkpoint` calibrated by the real calibration stage (scoring actors,
    a running Ray needed) on the normal training videos, its calibration written into it."""
    from pipelines.calibrate import calibrate_videos

    checkpoint = trained_checkpoint(data, folder / "model", steps)
    calibration = calibrate_videos(
        str(checkpoint), uri, str(data), sorted(NORMAL), out=str(folder / "calibration"),
        alpha=PRESET.model.alpha, quiet=True,
    )  # fmt: skip
    assert calibration.videos == tuple(sorted(NORMAL))
    write_calibration(checkpoint, calibration)
    return checkpoint
