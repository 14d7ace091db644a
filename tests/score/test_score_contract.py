"""The score stage's contract without Ray: the result and its summary.json, completion,
actor sizing, and the report's frame pictures."""

from __future__ import annotations

import dataclasses
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
from pipelines.ray_cluster import Need, admit
from pipelines.score import ScoreConfig, ScoreResult, completion, read_result
from pipelines.score.driver import actor_need, plan_actors
from pipelines.score.report import FrameRenderer
from tests.conftest import write_tiny_data

GREY = ModelConfig(height=16, width=16, channels=1, width_mult=1 / 16, memory_size=4)
RGB = ModelConfig(height=16, width=16, channels=3, width_mult=1 / 16, memory_size=4)


def _result(out: str, **kw) -> ScoreResult:
    fields = dict(
        out=out, model="models:/mnad-tiny/3", model_version="3", dataset="tiny", split="test",
        memory="paper", granularity="frame", frames=17, videos=2, failed=(),
        skipped=("t2: too short",), metrics={"micro_auc": 0.75, "frames_per_s": 12.5},
        seconds=1.25, run_id="abc", report=f"{out}/report/index.html", normalise="calibrated",
        normalisations=("calibrated", "per-video"), false_alarm_rate=0.001, smooth=1,
        merge_gap=1.0, threshold=2.5, events=f"{out}/events.parquet",
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
    # Another threshold, smoothing or normalisation: the videos' scores (parts) are reused.
    for other in ({"false_alarm_rate": 0.01}, {"smooth": 5}, {"normalise": "per-video"}):
        again = completion(ScoreConfig(data="d", model=config.model, out=out, memory="paper",
                                       **other))  # fmt: skip
        assert not again.complete and again.partial, other
    assert completion(dataclasses.replace(config, normalise="calibrated")).complete
    (tmp_path / "s" / "summary.json").write_text('{"model": "models:/mnad-tiny/3"}')
    assert completion(config).partial  # a summary this version cannot read: parts go on


def _config(**kw) -> ScoreConfig:
    return ScoreConfig(data="d", model="m", out="o", **kw)


def _plan(config: ScoreConfig, videos: int, nodes: list[dict[str, float]]) -> tuple:
    plan = plan_actors(config, videos, nodes)
    return plan.actors, plan.threads, plan.gpus


def test_actor_plan_follows_the_cluster_size():
    one = [{"CPU": 4.0}]
    assert _plan(_config(), 10, one) == _plan(_config(), 10, [{"CPU": 4.0, "GPU": 1.0}])
    assert _plan(_config(), 10, one) == (4, 1, 0.0)
    assert _plan(_config(), 2, one) == (2, 2, 0.0)  # no more actors than videos
    assert _plan(_config(memory="paper", actors=3), 10, one) == (1, 4, 0.0)
    assert _plan(_config(gpus_per_actor=0.5), 10, [{"CPU": 8.0, "GPU": 2.0}]) == (4, 2, 0.5)
    with pytest.raises(UserError, match=r"^--gpus-per-actor 3: the Ray cluster has 2 GPUs"):
        plan_actors(_config(gpus_per_actor=3), 10, [{"CPU": 8.0, "GPU": 2.0}])


TWO_NODES = [{"CPU": 0.0}, {"CPU": 8.0}, {"CPU": 8.0}]  # a head with no CPUs for work


def test_an_actor_fits_the_largest_node_not_the_cluster():
    # Paper mode on two 8-CPU nodes: one actor of 8 CPUs, not 16 (which no node has).
    assert _plan(_config(memory="paper"), 10, TWO_NODES) == (1, 8, 0.0)
    # Per-video, 3 videos on 2 nodes: 16 // 3 = 5 CPUs each would place only 2 actors.
    actors, threads, _ = _plan(_config(), 3, TWO_NODES)
    assert (actors, threads) == (3, 4)
    assert Need.of(actors, threads).fits(TWO_NODES)
    assert not Need.of(3, 5).fits(TWO_NODES) and not Need.of(1, 16).fits(TWO_NODES)
    assert _plan(_config(), 100, TWO_NODES) == (16, 1, 0.0)  # one per CPU of the workers
    # GPU actors: each on one node with its GPUs, the CPUs of that node shared out.
    gpu_nodes = [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]
    assert _plan(_config(gpus_per_actor=1), 10, gpu_nodes) == (2, 8, 1.0)
    assert _plan(_config(gpus_per_actor=0.5), 10, gpu_nodes) == (4, 4, 0.5)
    # More actors than the nodes hold at once: one line instead of a job that never starts.
    with pytest.raises(UserError, match=r"^20 x \{CPU: 1\} for the scoring actors: .* hold 16"):
        plan_actors(_config(actors=20), 100, TWO_NODES)
    with pytest.raises(UserError, match=r"the Ray cluster has 2 GPUs \(at most 1 on one node\)"):
        plan_actors(_config(gpus_per_actor=2), 10, gpu_nodes)


def test_the_head_alone_with_no_cpus_asks_for_nodes_or_refuses():
    head = [{"CPU": 0.0}]
    need = actor_need(_config(), 5, head)
    assert (need.count, need.bundle) == (1, {"CPU": 1.0})
    assert admit(need, head, can_grow=True) == "grow"
    assert admit(need, head, can_grow=False) == "refuse"
    with pytest.raises(UserError, match="hold 0 of them at once"):
        plan_actors(_config(), 5, head)


def test_gpu_actors_on_a_cluster_without_gpu_nodes_grow_or_refuse():
    cpus_only = [{"CPU": 0.0}, {"CPU": 8.0}]
    need = actor_need(_config(gpus_per_actor=1), 10, cpus_only)
    assert (need.count, need.bundle) == (1, {"CPU": 1.0, "GPU": 1.0})  # what the autoscaler
    assert admit(need, cpus_only, can_grow=True) == "grow"  # is asked for
    assert admit(need, cpus_only, can_grow=False) == "refuse"
    grown = [*cpus_only, {"CPU": 4.0, "GPU": 1.0}]
    assert admit(need, grown, can_grow=False) == "run" and admit(need, grown, True) == "run"
    assert _plan(_config(gpus_per_actor=1), 10, grown) == (1, 4, 1.0)
    with pytest.raises(UserError, match=r"^--gpus-per-actor 1: the Ray cluster has 0 GPUs"):
        plan_actors(_config(gpus_per_actor=1), 10, cpus_only)
    two = actor_need(_config(gpus_per_actor=1, actors=2), 10, cpus_only)
    assert (two.count, two.bundle) == (2, {"CPU": 1.0, "GPU": 1.0})


def test_wait_for_nodes_is_an_execution_option():
    from pipelines import options
    from pipelines.errors import OptionError

    assert _config().wait_for_nodes == 0.0
    assert _config(wait_for_nodes=30).wait_for_nodes == 30
    with pytest.raises(OptionError, match="--wait-for-nodes must be >= 0") as err:
        _config(wait_for_nodes=-1)
    assert err.value.field == "wait_for_nodes"
    assert "checkpoint_dir" not in {f for f in ScoreConfig.__dataclass_fields__}
    assert "wait_for_nodes" in options.names(ScoreConfig, "execution")


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
