"""`mnad train` through a real Ray Train: bad inputs, and three real fits.

The fits use a 16x16 grey model at 1/16 of the paper's widths on the tiny DATA fixture:
(1) two workers, every step checked against a single-process memory update on the
concatenated queries of both ranks, the loss, MLflow, the registry and the run's marker;
(2) a worker killed mid-epoch, the run resumed from the last checkpoint; (3) ``--resume`` of
that run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from mnad.checkpoint import load_checkpoint
from mnad.memory import updated_items
from pipelines.calibrate import CalibrateConfig, run_calibrate
from pipelines.errors import UserError
from pipelines.tracking import fetch_model, find_model
from pipelines.train import StepRecord, completion, run_train

# --- bad inputs: refused before any work starts -----------------------------------------------


@pytest.mark.ray
def test_bad_inputs_are_refused_before_any_work(
    ray_local, tiny_data: Path, tiny_preset: str, tmp_path: Path, make_config
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "summary.json").write_text('{"something": "else"}')
    cases = [
        ({"data": str(tmp_path / "missing")}, "no summary.json"),
        ({"data": str(tmp_path / "empty")}, "no summary.json"),
        ({"data": str(tmp_path / "foreign")}, "not an mnad summary"),
        ({"workers": 4}, "need 4 CPU; the Ray cluster has 2"),
        ({"tracking_uri": "http://127.0.0.1:9"}, "cannot be reached"),
        ({"resume": True}, "no run to continue"),
    ]
    for changes, message in cases:
        with pytest.raises(UserError, match=message) as err:
            run_train(
                make_config(**{"data": tiny_data, "preset": tiny_preset, **changes}, work=tmp_path)
            )
        assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists()  # nothing started


# --- real Ray Train fits -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileProbe:
    """Writes where each attempt starts and every step's memory to ``folder``.

    With ``kill_step``: rank ``kill_rank`` dies at that step, once (a marker file remembers),
    but only after Ray Train has registered the checkpoint ``kill_after`` in the run's
    snapshot, so that the test knows which checkpoint the restart must come from (the
    controller registers reports when it polls the workers, every couple of seconds).
    """

    folder: str
    record_steps: bool = False
    kill_rank: int | None = None
    kill_step: int | None = None
    kill_after: str = ""  # a checkpoint directory name
    run_dir: str = ""

    def on_start(self, rank: int, epoch: int, step: int) -> None:
        with open(f"{self.folder}/starts-{rank}.jsonl", "a") as f:
            f.write(json.dumps([epoch, step]) + "\n")

    def on_step(self, rank: int, step: int, record: StepRecord) -> None:
        if self.record_steps:
            torch.save(record._asdict(), f"{self.folder}/step-{rank}-{step:05d}.pt")
        marker = Path(self.folder) / "killed"
        if rank == self.kill_rank and step == self.kill_step and not marker.exists():
            snapshot = Path(self.run_dir) / "checkpoint_manager_snapshot.json"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not (
                snapshot.exists() and self.kill_after in snapshot.read_text()
            ):
                time.sleep(0.2)
            marker.touch()
            os._exit(1)  # the worker process dies mid-epoch, as an OOM kill would

    def starts(self, rank: int) -> list[list[int]]:
        lines = Path(self.folder, f"starts-{rank}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def _probe_by_value() -> None:
    """Ship this module's probe to the workers by value: tests/ is not importable there."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_share_one_memory_and_register_the_model(
    ray_local, tiny_data: Path, tiny_preset: str, tmp_path: Path, make_config
) -> None:
    _probe_by_value()
    probe = FileProbe(str(tmp_path), record_steps=True)
    config = make_config(
        tiny_data, tiny_preset, tmp_path, val_fraction=0.25, probe=probe, cpus_per_worker=0
    )
    result = run_train(config)

    # The memory: one state across the job, the paper's update on the whole global batch.
    steps = result.epochs[-1]["step"]
    assert steps == 3 * 16  # v2 held out: 65 clips, 32 a rank, 2 a rank a step
    previous = None
    for step in range(1, steps + 1):
        ranks = [torch.load(tmp_path / f"step-{r}-{step:05d}.pt") for r in (0, 1)]
        gathered = torch.cat([ranks[0]["local_queries"], ranks[1]["local_queries"]])
        assert ranks[0]["local_queries"].shape[0] == 2 * 2 * 2  # 2 clips x (16/8)^2 queries
        for rank in ranks:
            assert torch.equal(rank["gathered_queries"], gathered)
            torch.testing.assert_close(
                rank["items_after"], updated_items(gathered, rank["items_before"]),
                rtol=0, atol=1e-6,
            )  # fmt: skip
            if previous is not None:
                assert torch.equal(rank["items_before"], previous)
        assert torch.equal(ranks[0]["items_after"], ranks[1]["items_after"])  # bit for bit
        previous = ranks[0]["items_after"]
    first = torch.load(tmp_path / "step-0-00001.pt")["items_before"]
    assert not torch.equal(first, previous)  # the memory did move
    final = load_checkpoint(result.checkpoint)
    assert torch.equal(final.model_state["memory.items"], previous)
    assert (final.epoch, final.step) == (3, steps)
    assert result.nodes == (ray_local.get_runtime_context().get_node_id(),)  # one local node

    # The loss falls; every epoch has its metrics and a validation loss.
    assert [r["epoch"] for r in result.epochs] == [1, 2, 3]
    assert result.epochs[-1]["loss"] < result.epochs[0]["loss"]
    assert all("val_loss" in r for r in result.epochs)

    # MLflow: the config as params, per-epoch metrics, the model registered and loadable.
    client = mlflow.MlflowClient(tracking_uri=result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["workers"] == "2" and run.data.params["preset.model.height"] == "16"
    assert run.data.params["cpus_per_worker"] == "1"  # 0: the 2 CPUs split over 2 workers
    for key in ("loss", "prediction_error", "compactness", "separateness", "lr", "val_loss"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [1, 2, 3]
    assert client.list_artifacts(result.run_id, "checkpoint")
    assert result.model_name == "mnad-tiny"
    mv = client.get_model_version_by_alias("mnad-tiny", "latest")
    assert str(mv.version) == result.model_version
    mlflow.set_tracking_uri(result.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(result.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    frames = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 1), dtype=np.uint8)
    scores = model.predict(frames)  # one video's frames: rows from frame T - 1 = 4 on
    assert len(scores) == 3 and np.isfinite(scores["psnr"]).all()

    # The held-out video calibrated the model: in the registered model, on its version.
    held_out = run.data.params["val_videos"].split(",")
    ref = find_model(result.model_uri, result.tracking_uri)
    calibration = load_checkpoint(fetch_model(ref, result.tracking_uri, tmp_path / "m")).calibration
    assert calibration is not None and list(calibration.videos) == held_out
    figures = json.loads(mv.tags["mnad.calibration"])
    assert figures["threshold"] == pytest.approx(calibration.threshold(0.001))
    assert "calibration_threshold" in run.data.metrics

    # `mnad calibrate` of the registered model: a new version, its aliases moved to it.
    client.set_registered_model_alias("mnad-tiny", "champion", result.model_version)
    again = run_calibrate(CalibrateConfig(
        model="models:/mnad-tiny@champion", data=str(tiny_data), videos=("v0", "v1"),
        out=str(tmp_path / "cal"), tracking_uri=result.tracking_uri, quiet=True,
    ))  # fmt: skip
    champion = client.get_model_version_by_alias("mnad-tiny", "champion")
    assert again.model_uri == f"models:/mnad-tiny/{champion.version}"
    assert int(champion.version) == int(result.model_version) + 1
    assert json.loads(champion.tags["mnad.calibration"])["calibrated_from_version"] == "1"
    assert again.videos == ("v0", "v1") and again.frames > 0

    # The marker: completion reads the result back, for the same inputs only.
    state = completion(dataclasses.replace(config, name=result.name))
    assert state.complete and state.result == result
    assert state.reason == f"run {result.name} registered {result.model_uri}"
    assert not completion(dataclasses.replace(config, name=result.name, seed=1)).complete


@pytest.mark.ray
@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_checkpoint_and_resume_continues(
    ray_local, tiny_data: Path, tiny_preset: str, tmp_path: Path, make_config
) -> None:
    _probe_by_value()
    # 70 clips: 35 a rank, 17 steps an epoch. Checkpoints every 5 steps and at epoch ends:
    # 5, 10, 15, 17 | 20, 25, ... Rank 1 dies at step 22, in the middle of epoch 2.
    probe = FileProbe(
        str(tmp_path), kill_rank=1, kill_step=22, kill_after="checkpoint-e0001-s00000020",
        run_dir=str(tmp_path / "runs" / "train" / "faulty"),
    )  # fmt: skip
    config = make_config(
        tiny_data, tiny_preset, tmp_path, epochs=2, checkpoint_every=5, max_failures=1,
        probe=probe, name="faulty",
    )  # fmt: skip
    result = run_train(config)
    assert (tmp_path / "killed").exists()
    assert probe.starts(0) == [[0, 0], [1, 20]]  # resumed mid-epoch 2 from step 20
    assert [r["epoch"] for r in result.epochs] == [1, 2]
    assert result.epochs[-1]["step"] == 34  # as many steps as a run without the failure
    assert load_checkpoint(result.checkpoint).step == 34
    assert completion(config).result == result

    # --resume (as after a dead driver): the same Ray run and MLflow run, one more epoch.
    again = run_train(
        dataclasses.replace(config, resume=True, epochs=3, probe=FileProbe(str(tmp_path)))
    )
    assert probe.starts(0)[-1] == [2, 34]
    assert (again.run_id, again.name) == (result.run_id, "faulty")
    assert [r["epoch"] for r in again.epochs] == [1, 2, 3]
    assert int(again.model_version) == int(result.model_version) + 1
    history = mlflow.MlflowClient(result.tracking_uri).get_metric_history(result.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert completion(dataclasses.replace(config, epochs=3)).result == again
    assert "other inputs" in completion(config).reason  # the marker is the 3-epoch run's
