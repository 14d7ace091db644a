"""Configs and presets: the paper's values, validation, JSON round trip."""

from __future__ import annotations

import pytest

from mnad.config import PRESETS, ModelConfig, OptimConfig, Preset, get_preset
from mnad.errors import UserError


def test_paper_pred_preset_has_the_papers_values():
    p = get_preset("paper-pred")
    m, o = p.model, p.optim
    assert (m.task, m.height, m.width, m.channels, m.input_frames) == ("pred", 256, 256, 3, 4)
    assert (m.memory_size, m.feature_dim, m.widths) == (10, 512, (64, 128, 256, 512))
    assert (m.lambda_compact, m.lambda_separate, m.alpha, m.update_threshold) == (
        0.1, 0.1, 0.6, 0.01
    )
    assert (o.lr, o.batch_size, o.epochs) == (2e-4, 4, 60)
    assert m.clip_length == 5


def test_paper_recon_preset_has_the_papers_values():
    m = get_preset("paper-recon").model
    assert (m.task, m.input_frames, m.clip_length) == ("recon", 1, 1)
    assert (m.lambda_compact, m.lambda_separate, m.alpha, m.update_threshold) == (
        0.01, 0.01, 0.7, 0.015
    )


def test_small_preset_is_grey_and_narrow():
    m = get_preset("small").model
    assert m.channels == 1 and m.width_mult < 1 and m.height < 256


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"height": 60}, "height must be a positive multiple of 8"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"task": "detect"}, "task must be"),
        ({"task": "recon", "input_frames": 4}, "recon task takes 1 input frame"),
        ({"memory_size": 1}, "memory_size must be at least 2"),
        ({"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
        ({"width_mult": 0.0}, "width_mult"),
        ({"update_threshold": -1.0}, "update_threshold must be >= 0"),
    ],
)
def test_bad_model_values_are_refused_with_the_field_named(kwargs, match):
    with pytest.raises(UserError, match=match):
        ModelConfig(**kwargs)


def test_bad_optim_values_are_refused():
    with pytest.raises(UserError, match="batch_size"):
        OptimConfig(batch_size=0)
    with pytest.raises(UserError, match="lr"):
        OptimConfig(lr=0)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UserError, match="paper-pred, paper-recon, small"):
        get_preset("huge")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name):
    p = get_preset(name)
    assert Preset.from_json(p.to_json()) == p


def test_replace_changes_either_section_and_validates():
    p = get_preset("small").replace(epochs=3, alpha=0.5)
    assert p.optim.epochs == 3 and p.model.alpha == 0.5
    with pytest.raises(UserError, match="unknown config field"):
        p.replace(colour="red")
    with pytest.raises(UserError, match="unknown ModelConfig field"):
        Preset.from_dict({"name": "x", "model": {"bogus": 1}, "optim": {}})
