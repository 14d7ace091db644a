"""Parity with the paper's own code: its checkpoint and the outputs it computed from Ped2.

The fixture folder comes from MNAD_PAPER_FIXTURE (default ../shared/reference/paper_pred_64);
every expected value is read from its files, so the test holds for any fixture of that form.
"""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnad.checkpoint import load_model
from mnad.errors import UserError
from mnad.network import inference_copy
from mnad.paper_import import import_paper_model, read_paper_state
from mnad.streaming import StreamingScorer
from pipelines.cli import main as cli_main

ATOL = 1e-5


@pytest.fixture(scope="module")
def golden(paper_fixture):
    return torch.load(paper_fixture / "golden.pt", weights_only=True)


def _imported(paper_fixture, golden):
    size = int(golden.get("resolution", 64))
    model, preset = import_paper_model(
        paper_fixture / "model.pth", paper_fixture / "keys.pt", size, size
    )
    return model, preset


def _split(x: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, :-channels], x[:, -channels:]


def test_training_step_matches_paper(paper_fixture, golden):
    model, preset = _imported(paper_fixture, golden)
    cfg = preset.model
    model.train()
    model.memory.items.copy_(golden["keys_before_train_step"])
    inputs, target = _split(golden["train_input"], cfg.channels)
    out = model(inputs)
    loss = (
        F.mse_loss(out.prediction, target)
        + cfg.lambda_compact * out.compactness
        + cfg.lambda_separate * out.separateness
    )
    torch.testing.assert_close(out.features, golden["train_features"], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(out.prediction, golden["train_output"], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(model.memory.items, golden["train_keys_after"], atol=ATOL, rtol=0)
    for name, value in [
        ("train_compactness", out.compactness),
        ("train_separateness", out.separateness),
        ("train_loss", loss),
    ]:
        assert value.item() == pytest.approx(golden[name].item(), rel=1e-5, abs=1e-7), name


@pytest.mark.parametrize("folded", [False, True], ids=["model", "inference-copy"])
@pytest.mark.parametrize("one_at_a_time", [True, False], ids=["per-frame", "batched"])
def test_eval_sequence_matches_paper(paper_fixture, golden, one_at_a_time, folded):
    model, preset = _imported(paper_fixture, golden)
    model.memory.items.copy_(golden["eval_keys_before"])
    if folded:  # what the scoring actors run: BatchNorm folded, channels_last
        model = inference_copy(model)
    scorer = StreamingScorer(model, threshold=float(golden["eval_threshold"]))
    frames = golden["eval_frames"]
    c = preset.model.channels
    if one_at_a_time:
        results = []
        for frame in frames:
            results.append(scorer.score(*_split(frame["input"], c)))
            torch.testing.assert_close(scorer.items, frame["keys_after"], atol=ATOL, rtol=0)
        from mnad.streaming import FrameScores

        result = FrameScores.concat(results)
    else:
        result = scorer.score(*_split(torch.cat([f["input"] for f in frames]), c))
        torch.testing.assert_close(scorer.items, frames[-1]["keys_after"], atol=ATOL, rtol=0)
    expected_updates = np.array([bool(f["updated"]) for f in frames])
    assert 0 < expected_updates.sum() < len(frames), "the fixture should exercise both branches"
    np.testing.assert_array_equal(result.updated, expected_updates)
    np.testing.assert_allclose(result.psnr, [f["psnr"] for f in frames], atol=1e-4)
    np.testing.assert_allclose(
        result.feature_distance, [f["feature_distance"] for f in frames], rtol=1e-4, atol=1e-9
    )
    np.testing.assert_allclose(
        result.point_score, [f["point_score"] for f in frames], rtol=1e-4, atol=1e-8
    )


def test_paper_output_per_frame(paper_fixture, golden):
    model, preset = _imported(paper_fixture, golden)
    model.memory.items.copy_(golden["eval_keys_before"])
    first = golden["eval_frames"][0]
    out = model(first["input"][:, : -preset.model.channels])
    torch.testing.assert_close(out.prediction, first["output"], atol=ATOL, rtol=1e-4)


def test_import_paper_command_writes_a_loadable_checkpoint(paper_fixture, golden, tmp_path):
    out = tmp_path / "ckpt"
    size = str(int(golden.get("resolution", 64)))
    rc = cli_main(
        ["import-paper", str(paper_fixture / "model.pth"), str(paper_fixture / "keys.pt"),
         "--out", str(out), "--size", size, size]
    )
    assert rc == 0
    model, preset = load_model(out)
    reference, _ = _imported(paper_fixture, golden)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=0, rtol=0)
    assert preset.model.task == "pred" and preset.model.memory_size == 10


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_import_refuses_a_pickle_that_names_foreign_code(tmp_path, capsys):
    path = tmp_path / "model.pth"
    torch.save({"model": _Evil()}, path)
    with pytest.raises(UserError, match=r"refusing to load.*(posix|os)\.system"):
        read_paper_state(path)
    rc = cli_main(["import-paper", str(path), str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and str(path) in err


def test_import_rejects_files_that_are_not_paper_models(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(UserError, match="no convAE"):
        read_paper_state(plain)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match="not a torch.save zip"):
        read_paper_state(legacy)
    truncated = tmp_path / "trunc.pth"
    with zipfile.ZipFile(truncated, "w") as zf:
        zf.writestr("model/data.pkl", b"\x80\x02}q\x00(X")
    with pytest.raises(UserError, match="corrupt pickle"):
        read_paper_state(truncated)
