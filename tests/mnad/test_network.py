"""The network: shapes, modes, and a golden tensor from a seeded tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mnad.config import ModelConfig, get_preset
from mnad.network import MNAD, EvalOutput, TrainOutput, build_model, fold_batchnorm

GOLDEN = Path(__file__).parent / "data" / "tiny_golden.pt"


def tiny(task="pred", **kw) -> ModelConfig:
    base = dict(height=32, width=48, channels=1, width_mult=1 / 16, memory_size=4)
    base.update(kw)
    return ModelConfig(task=task, input_frames=4 if task == "pred" else 1, **base)


@pytest.mark.parametrize("task", ["pred", "recon"])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_in_both_modes(task, channels):
    cfg = tiny(task, channels=channels)
    model = build_model(cfg, seed=0)
    x = torch.rand(2, channels * cfg.input_frames, 32, 48) * 2 - 1
    out = model.train()(x)
    assert isinstance(out, TrainOutput)
    assert out.prediction.shape == (2, channels, 32, 48)
    assert out.features.shape == (2, cfg.feature_dim, 4, 6)
    assert out.queries.shape == (2 * 4 * 6, cfg.feature_dim)
    assert out.compactness.ndim == 0 and out.separateness.ndim == 0
    ev = model.eval()(x)
    assert isinstance(ev, EvalOutput) and ev.feature_distance.shape == (2,)
    for t in (out.prediction, ev.prediction, out.compactness, out.separateness):
        assert torch.isfinite(t).all()
    assert ev.prediction.abs().max() <= 1.0


def test_any_size_divisible_by_eight_runs_the_same_weights():
    model = build_model(tiny(), seed=0).eval()
    for h, w in [(8, 8), (64, 40)]:
        assert model(torch.zeros(1, 4, h, w)).prediction.shape == (1, 1, h, w)


def test_input_of_the_wrong_shape_is_refused_on_entry():
    model = build_model(tiny(), seed=0)
    with pytest.raises(AssertionError, match=r"input must be \(B, 4, H, W\)"):
        model(torch.zeros(1, 3, 32, 48))
    with pytest.raises(AssertionError, match="divisible by 8"):
        model(torch.zeros(1, 4, 30, 48))


def test_train_mode_updates_memory_eval_mode_does_not():
    model = build_model(tiny(), seed=0)
    x = torch.rand(2, 4, 32, 48) * 2 - 1
    before = model.memory.items.clone()
    model.eval()(x)
    assert torch.equal(model.memory.items, before)
    model.train()(x, update_memory=False)
    assert torch.equal(model.memory.items, before)
    model.train()(x)
    assert not torch.equal(model.memory.items, before)
    torch.testing.assert_close(model.memory.items.norm(dim=1), torch.ones(4))


def test_memory_is_in_the_state_dict_and_not_a_parameter():
    model = build_model(tiny(), seed=0)
    assert "memory.items" in model.state_dict()
    assert all("memory" not in name for name, _ in model.named_parameters())


def test_gradients_reach_encoder_and_decoder():
    model = build_model(tiny(), seed=0).train()
    out = model(torch.rand(2, 4, 32, 48))
    (out.prediction.mean() + out.compactness + out.separateness).backward()
    assert model.encoder.stage1[0].weight.grad.abs().sum() > 0
    assert model.decoder.head[-2].weight.grad.abs().sum() > 0


def test_paper_presets_build_the_paper_widths():
    cfg = get_preset("paper-pred").model
    model = MNAD(cfg)
    assert model.encoder.stage1[0].weight.shape == (64, 12, 3, 3)
    assert model.decoder.bottleneck[0].weight.shape == (512, 1024, 3, 3)
    recon = MNAD(get_preset("paper-recon").model)
    assert recon.decoder.up3[0].weight.shape == (512, 512, 3, 3)


def test_seed_fixes_weights_and_memory():
    a, b = build_model(tiny(), seed=5), build_model(tiny(), seed=5)
    c = build_model(tiny(), seed=6)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.memory.items, c.memory.items)


def _golden_run() -> dict[str, torch.Tensor]:
    model = build_model(tiny(), seed=1234)
    x = torch.rand(3, 4, 32, 48, generator=torch.Generator().manual_seed(99)) * 2 - 1
    out = model.train()(x)
    ev = model.eval()(x)
    return {
        "train_prediction": out.prediction.detach(),
        "compactness": out.compactness.detach(),
        "separateness": out.separateness.detach(),
        "items_after": model.memory.items.clone(),
        "eval_prediction": ev.prediction.detach(),
        "feature_distance": ev.feature_distance.detach(),
    }


def test_golden_tensor_of_a_seeded_tiny_model():
    """Catches silent numeric drift: regenerate only on purpose (MNAD_REGEN_GOLDEN=1)."""
    got = _golden_run()
    if os.environ.get("MNAD_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        torch.save(got, GOLDEN)
    expected = torch.load(GOLDEN, weights_only=True)
    assert expected.keys() == got.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], atol=1e-5, rtol=1e-4, msg=k)


@torch.no_grad()
@pytest.mark.parametrize("task", ["pred", "recon"])
def test_folded_batchnorm_gives_the_same_outputs(task):
    model = build_model(tiny(task), seed=0)
    g = torch.Generator().manual_seed(1)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        # Trained-looking statistics: folding must use them, not the initial 0 / 1.
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy
    x = torch.rand(3, model.config.channels * model.config.input_frames, 32, 48) * 2 - 1
    want, got = model(x), folded(x)
    torch.testing.assert_close(got.prediction, want.prediction, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.queries, want.queries, rtol=1e-4, atol=1e-5)
