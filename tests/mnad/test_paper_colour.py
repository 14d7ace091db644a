"""A colour checkpoint of the paper's code takes frames in the order its OpenCV loader read
them (BGR): `mnad import-paper` records it in the config, and the product reverses the RGB
frames that ingest decodes before they reach the model. Old configs read as RGB."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mnad.checkpoint import CONFIG_FILE, load_checkpoint, load_model, save_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.errors import UserError
from mnad.network import build_model
from mnad.paper_import import import_paper_model, read_paper_state
from mnad.streaming import StreamingScorer
from pipelines.cli import main as cli_main
from pipelines.score.actor import video_inputs
from tests.colour_fixtures import colour_frames, paper_colour_checkpoint, write_frames_data

SIZE = 16


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    return paper_colour_checkpoint(tmp_path_factory.mktemp("paper"))


@pytest.fixture(scope="module")
def imported(paper_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "ckpt"
    model_pth, keys_pt = paper_files
    args = ["import-paper", str(model_pth), str(keys_pt), "--out", str(out)]
    assert cli_main([*args, "--size", str(SIZE), str(SIZE)]) == 0
    return out


def test_the_fixture_has_the_paper_key_layout(paper_files, paper_fixture):
    lines = (paper_fixture / "state_dict_keys.txt").read_text().splitlines()
    names = [line.split("\t")[0] for line in lines if line]
    assert sorted(read_paper_state(paper_files[0])) == sorted(names)


def test_importing_a_colour_checkpoint_records_bgr(imported, capsys):
    config = json.loads((imported / CONFIG_FILE).read_text())
    assert config["model"]["channel_order"] == "bgr" and config["model"]["channels"] == 3
    assert load_checkpoint(imported).preset.model.channel_order == "bgr"


def test_importing_prints_the_order(paper_files, tmp_path, capsys):
    model_pth, keys_pt = paper_files
    assert (
        cli_main(["import-paper", str(model_pth), str(keys_pt), "--out", str(tmp_path / "c")]) == 0
    )
    assert "3 channels in BGR order" in capsys.readouterr().out


def test_scoring_rgb_frames_equals_the_paper_network_on_reversed_frames(
    imported, paper_files, tmp_path
):
    frames = colour_frames(12, SIZE, SIZE)  # RGB, as ingest decodes
    data = write_frames_data(tmp_path / "data", {"test": {"v": frames}})
    model, preset = load_model(imported)
    cfg = preset.model
    # The product's scoring reader: clips as the model takes them.
    read = list(video_inputs(str(data / "test" / "v.parquet"), cfg, batch=5))
    inputs = torch.cat([clip.inputs for _, clip in read])
    target = torch.cat([clip.target for _, clip in read])
    got = StreamingScorer(model).score(inputs, target)
    # The paper's network, fed the frames as its OpenCV loader reads them: channels reversed.
    paper_model, _ = import_paper_model(*paper_files, SIZE, SIZE)
    bgr = torch.from_numpy(frames[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    clips = torch.stack([bgr[t - 4 : t + 1].reshape(15, SIZE, SIZE) for t in range(4, 12)])
    torch.testing.assert_close(inputs, clips[:, :12], atol=0, rtol=0)
    torch.testing.assert_close(target, clips[:, 12:], atol=0, rtol=0)
    expected = StreamingScorer(paper_model).score(clips[:, :12], clips[:, 12:])
    np.testing.assert_array_equal(got.psnr, expected.psnr)
    np.testing.assert_array_equal(got.feature_distance, expected.feature_distance)
    # The order matters to this network: RGB frames as they are score otherwise.
    rgb = torch.from_numpy(frames.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    unreversed = torch.stack([rgb[t - 4 : t + 1].reshape(15, SIZE, SIZE) for t in range(4, 12)])
    other = StreamingScorer(paper_model).score(unreversed[:, :12], unreversed[:, 12:])
    assert not np.allclose(other.psnr, expected.psnr, rtol=1e-4)


def test_a_config_without_channel_order_is_rgb(tmp_path):
    preset = Preset("p", ModelConfig(height=16, width=16, width_mult=1 / 16), OptimConfig())
    path = save_checkpoint(tmp_path / "ck", build_model(preset.model), preset)
    config = json.loads((path / CONFIG_FILE).read_text())
    assert "channel_order" not in config["model"]  # as configs were before the field
    assert load_checkpoint(path).preset.model.channel_order == "rgb"
    bgr = Preset.from_json(json.dumps({**config, "model": {**config["model"],
                                                            "channel_order": "bgr"}}))  # fmt: skip
    assert Preset.from_json(bgr.to_json()) == bgr


def test_channel_order_is_validated():
    with pytest.raises(UserError, match="channel_order must be 'rgb' or 'bgr', not 'rbg'"):
        ModelConfig(channel_order="rbg")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="channel_order 'bgr' needs 3 channels, not 1"):
        ModelConfig(channels=1, channel_order="bgr")
