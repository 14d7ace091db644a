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
    (tmp_path / "s" / "frames").mkdir(parents=True)
    (tmp_path / "s" / "frames" / ".t0.parquet.tmp-00").write_bytes(b"")
    assert not completion(config).partial  # a temporary is no scored video
    (tmp_path / "s" / "frames" / "t0.parquet").write_bytes(b"")
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
                 "VideoScorer", "frame_metrics", "FRAMES_DIR", "SCORES_SUMMARY_FILE",
                 "PARTS_DIR", "REPORT_DIR", "read_frames", "frames_dataset"):  # fmt: skip
        assert hasattr(score, name), name
    assert Path(score.__file__).parent.name == "score"


def _part(video_id: str, psnr: np.ndarray, dist: np.ndarray, label: np.ndarray, calibration):
    """One video's file as an actor writes it, ``score`` per-video and unsmoothed."""
    import pyarrow as pa

    from mnad.anomaly_score import fused_abnormality
    from pipelines.schema import SCORES_SCHEMA

    n = len(psnr)
    per_video = fused_abnormality(psnr, dist, 0.6)
    table = pa.table(
        {"dataset": ["d"] * n, "video_id": [video_id] * n,
         "frame_index": np.arange(4, 4 + n, dtype=np.int32), "psnr": psnr,
         "feature_distance": dist, "point_score": per_video, "memory_updated": [False] * n,
         "score": per_video, "label": label.astype(np.int8), "score_per_video": per_video,
         "score_calibrated": calibration.score(psnr, dist)},
        schema=SCORES_SCHEMA,
    )  # fmt: skip
    return table.replace_schema_metadata({b"mnad.score": b"per-video/1"})


def test_the_archive_read_video_by_video_equals_the_whole_table(tmp_path):
    """read_archive's metrics, events and report inputs, one video at a time, are those of
    the archive combined in one table; files with another ``score`` are rewritten first."""
    import pyarrow.parquet as pq

    from mnad.calibration import fit
    from pipelines.score.actor import VideoTask
    from pipelines.score.driver import frame_metrics, read_archive
    from pipelines.score.events import archive_events, choose_scores, event_metrics
    from pipelines.score.report import table_roc

    rng = np.random.default_rng(0)
    normal = {f"n{i}": (30 + rng.normal(0, 1, 40), rng.uniform(0, 1, 40)) for i in range(3)}
    calibration = fit(normal, 0.6)
    tasks, tables = [], []
    for i, video in enumerate(["c", "a", "b", "u"]):  # out of order; u unlabelled
        psnr, dist = 30 + rng.normal(0, 1, 30), rng.uniform(0, 1, 30)
        label = np.zeros(30, np.int8)
        if video != "u":
            psnr[10 + i : 16 + i] -= 6  # an anomaly the calibrated score sees
            label[10 + i : 16 + i] = 1
        else:
            label[:] = -1
        part = tmp_path / "frames" / f"{video}.parquet"
        part.parent.mkdir(exist_ok=True)
        table = _part(video, psnr, dist, label, calibration)
        pq.write_table(table, part)
        tables.append(table)
        tasks.append(VideoTask(video, f"shard-{video}", str(part)))
    tasks.append(VideoTask("gone", "shard-gone", str(tmp_path / "frames" / "gone.parquet")))
    config = ScoreConfig(data="d", model="m", out=str(tmp_path), smooth=3, merge_gap=0.0)
    read = read_archive(config, tasks, "calibrated", calibration, {})

    whole = pa_concat(tables)
    scored = choose_scores(whole, "calibrated", 3)
    threshold = calibration.threshold(config.false_alarm_rate, 3)
    events = archive_events(scored, threshold, 0.0, {})
    assert read.frames == whole.num_rows == 120 and read.threshold == threshold
    assert read.events.equals(events) and events.num_rows > 0
    expected = {
        **frame_metrics(scored),
        **{f"calibrated_{k}": v for k, v in frame_metrics(whole, "score_calibrated").items()},
        **{f"calibrated_smoothed_{k}": v for k, v in frame_metrics(scored).items()},
        **{f"per_video_{k}": v for k, v in frame_metrics(whole, "score_per_video").items()},
        **{f"per_video_smoothed_{k}": v
           for k, v in frame_metrics(choose_scores(whole, "per-video", 3)).items()},
        **event_metrics(scored, events),
    }  # fmt: skip
    for key, value in expected.items():
        assert read.metrics[key] == pytest.approx(value), key
    assert read.metrics["anomalies"] == 3 and "events_per_hour" not in read.metrics  # no fps
    found = read.scores.archive
    assert (found.videos, found.frames, found.ids) == (4, 120, ("a", "b", "c", "u"))
    assert found.labelled == {"a", "b", "c"}
    for got, want in zip(read.scores.roc, table_roc(scored), strict=True):
        np.testing.assert_allclose(got, want)
    b = read.scores.video("b")  # the report reads a plotted video's rows on demand
    assert b.column("score").equals(scored.slice(30, 30).column("score"))
    # The files were rewritten with the job's score and say so.
    file = pq.read_table(tmp_path / "frames" / "a.parquet")
    assert file.schema.metadata[b"mnad.score"] == b"calibrated/3"
    assert file.column("score").equals(scored.slice(0, 30).column("score"))


def pa_concat(tables):
    import pyarrow as pa

    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    return table.sort_by([("video_id", "ascending"), ("frame_index", "ascending")])
