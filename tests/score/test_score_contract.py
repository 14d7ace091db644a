"""The score stage's contract without Ray: the result and its summary.json, completion,
actor sizing, and the report's frame pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mnad.checkpoint import save_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.network import build_model
from pipelines.errors import UserError
from pipelines.score import ScoreConfig, ScoreResult, completion, read_result
from pipelines.score.driver import plan_actors
from pipelines.score.report import FrameRenderer
from tests.conftest import write_tiny_data

GREY = ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=4)
RGB = ModelConfig(height=16, width=16, channels=3, width_mult=1 / 16, memory_size=4)


def _result(out: str, **kw) -> ScoreResult:
    fields = dict(
        out=out, model="models:/mnad-tiny/3", model_version="3", dataset="tiny", split="test",
        memory="paper", granularity="frame", frames=17, videos=2, failed=(),
        skipped=("t2: too short",), metrics={"micro_auc": 0.75, "frames_per_s": 12.5},
        seconds=1.25, run_id="abc", report=f"{out}/report/index.html",
    )  # fmt: skip
    return ScoreResult(**{**fields, **kw})


def test_the_summary_is_the_result_without_its_folder(tmp_path):
    result = _result(str(tmp_path))
    assert ScoreResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    result.write()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "out" not in summary and summary["report"] == "report/index.html"
    # The metrics stay at the top level too, as summaries had them before.
    assert summary["micro_auc"] == 0.75 and summary["frames_per_s"] == 12.5
    assert summary["dataset"] == "tiny" and summary["granularity"] == "frame"
    assert read_result(str(tmp_path)) == result
    assert result.model_metrics == {"micro_auc": 0.75} and result.exit_status == 0
    assert _result(str(tmp_path), failed=("t1: bad shard",)).exit_status == 1


def test_completion_names_the_model_mode_and_split(tmp_path):
    out = str(tmp_path / "s")
    config = ScoreConfig(data="d", model="models:/mnad-tiny/3", out=out, memory="paper")
    assert completion(config).reason == f"no summary.json in {out} yet"
    (tmp_path / "s" / "parts").mkdir(parents=True)
    (tmp_path / "s" / "parts" / ".t0.parquet.tmp-00").write_bytes(b"")
    assert not completion(config).partial  # a temporary is no scored video
    (tmp_path / "s" / "parts" / "t0.parquet").write_bytes(b"")
    assert completion(config).partial
    _result(out).write()
    done = completion(config)
    assert done.complete and done.result == _result(out)
    assert done.reason == f"{out} holds the scores of models:/mnad-tiny/3"
    for other in ({"model": "models:/mnad-tiny/4"}, {"memory": "per-video"}, {"split": "train"}):
        stale = completion(ScoreConfig(**{"data": "d", "model": config.model, "out": out,
                                          "memory": "paper", **other}))  # fmt: skip
        assert not stale.complete and not stale.partial
    (tmp_path / "s" / "summary.json").write_text('{"model": "models:/mnad-tiny/3"}')
    assert completion(config).partial  # a summary this version cannot read: parts go on


def test_actor_plan_follows_the_cluster_size():
    cpus = {"CPU": 4.0}
    config = ScoreConfig(data="d", model="m", out="o")
    assert plan_actors(config, 10, cpus) == plan_actors(config, 10, {"CPU": 4.0, "GPU": 1.0})
    assert (plan_actors(config, 10, cpus).actors, plan_actors(config, 10, cpus).threads) == (4, 1)
    assert plan_actors(config, 2, cpus).threads == 2  # no more actors than videos
    paper = ScoreConfig(data="d", model="m", out="o", memory="paper", actors=3)
    assert (plan_actors(paper, 10, cpus).actors, plan_actors(paper, 10, cpus).threads) == (1, 4)
    gpu = ScoreConfig(data="d", model="m", out="o", gpus_per_actor=0.5)
    plan = plan_actors(gpu, 10, {"CPU": 8.0, "GPU": 2.0})
    assert (plan.actors, plan.threads, plan.gpus) == (4, 2, 0.5)
    with pytest.raises(UserError, match=r"^--gpus-per-actor 3: the Ray cluster has 2 GPUs"):
        plan_actors(ScoreConfig(data="d", model="m", out="o", gpus_per_actor=3), 10,
                    {"CPU": 8.0, "GPU": 2.0})  # fmt: skip


@pytest.mark.parametrize("model_config", [GREY, RGB], ids=["grey", "grey-data-rgb-model"])
def test_frame_renderer_predicts_the_frame_from_the_clip_before_it(tmp_path, model_config):
    data = write_tiny_data(tmp_path / "data", {"test": {"t0": 9}})
    preset = Preset("tiny", model_config, OptimConfig())
    model = build_model(model_config, seed=0).eval()
    checkpoint = save_checkpoint(tmp_path / "ck", model, preset)
    shard = str(data / "test" / "t0.parquet")
    frame, prediction, error = FrameRenderer(str(checkpoint), {"t0": shard})("t0", 6)

    pixels = np.stack([np.frombuffer(b, np.uint8).reshape(16, 16)
                       for b in pq.read_table(shard)["frame"].to_pylist()])  # fmt: skip
    x = torch.from_numpy(pixels[2:7]).float() / 127.5 - 1  # (5, H, W): frames 2..6
    x = x[:, None].expand(-1, model_config.channels, -1, -1)  # (5, C, H, W)
    with torch.no_grad():
        inputs = x[:-1].reshape(1, -1, 16, 16)
        expected = model.decode(model.encode(inputs)).prediction[0]  # (C, H, W)
    target = (x[-1] + 1) / 2
    predicted = (expected + 1) / 2
    assert frame.shape == prediction.shape == (16, 16, 3) and error.shape == (16, 16)
    np.testing.assert_allclose(frame[:, :, 0], target[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(prediction, predicted.expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1),
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(error, (predicted - target).pow(2).mean(0).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="missing"):
        FrameRenderer(str(checkpoint), {"t0": shard})("t0", 9)  # no frame 9


def test_the_package_exposes_the_contract():
    import pipelines.score as score

    for name in ("ScoreConfig", "ScoreResult", "run_score", "completion", "discard",
                 "VideoScorer", "frame_metrics", "FRAMES_FILE", "SCORES_SUMMARY_FILE",
                 "PARTS_DIR", "REPORT_DIR"):  # fmt: skip
        assert hasattr(score, name), name
    assert Path(score.__file__).parent.name == "score"
