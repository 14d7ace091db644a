"""The checkpoint directory: round trip of weights, memory, optimizer and scheduler."""

from __future__ import annotations

import pytest
import torch

from mnad.checkpoint import load_checkpoint, load_model, save_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.errors import UserError
from mnad.network import build_model

PRESET = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=3),
    OptimConfig(epochs=2),
)


def test_round_trip_keeps_memory_optimizer_and_scheduler(tmp_path):
    model = build_model(PRESET.model, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    out = model(torch.rand(2, 4, 16, 16))
    (out.prediction.mean() + out.compactness).backward()
    opt.step()
    sched.step()
    path = save_checkpoint(tmp_path / "ck", model, PRESET, opt, sched, epoch=1, step=7)
    ck = load_checkpoint(path)
    assert ck.preset == PRESET and ck.epoch == 1 and ck.step == 7
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model_state[k], v), k
    opt2 = torch.optim.Adam(build_model(PRESET.model).parameters(), lr=1e-3)
    opt2.load_state_dict(ck.optimizer_state)
    assert ck.scheduler_state["last_epoch"] == 1
    loaded, preset = load_model(path)
    assert not loaded.training and torch.equal(loaded.memory.items, model.memory.items)


def test_save_replaces_an_existing_checkpoint_whole(tmp_path):
    a = build_model(PRESET.model, seed=1)
    b = build_model(PRESET.model, seed=2)
    save_checkpoint(tmp_path / "ck", a, PRESET)
    save_checkpoint(tmp_path / "ck", b, PRESET)
    assert torch.equal(load_checkpoint(tmp_path / "ck").model_state["memory.items"],
                       b.memory.items)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "ck", build_model(PRESET.model), PRESET)
    (tmp_path / "ck" / "model.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="model.pt: cannot be read"):
        load_checkpoint(tmp_path / "ck")


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", build_model(PRESET.model), PRESET)
    ck = load_checkpoint(tmp_path / "ck")
    ck.preset = PRESET.replace(memory_size=5)
    with pytest.raises(UserError, match="does not fit"):
        ck.build_model()
