"""`mnad train`: the pieces of the worker loop, bad inputs, and three real Ray Train fits.

The fits use a 16x16 grey model at 1/16 of the paper's widths on the tiny DATA fixture:
(1) two workers, every step checked against a single-process memory update on the
concatenated queries of both ranks, the loss, MLflow and the registry; (2) a worker killed
mid-epoch, the run resumed from the last checkpoint; (3) ``--resume`` of that run.
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
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from mnad.checkpoint import load_checkpoint
from mnad.config import ModelConfig, OptimConfig, Preset
from mnad.memory import updated_items
from pipelines.errors import UserError
from pipelines.train import (
    StepRecord,
    TrainConfig,
    clip_inputs,
    gather_queries,
    retarget_cosine,
    run_train,
    training_losses,
)

TINY = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, input_frames=4, width_mult=1 / 16),
    OptimConfig(lr=2e-3, batch_size=4, epochs=3, seed=0),
)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("preset") / "tiny.json"
    path.write_text(TINY.to_json())
    return str(path)


def _config(data: Path | str, preset: str, work: Path, **changes) -> TrainConfig:
    values = {
        "data": str(data),
        "preset": preset,
        "workers": 2,
        "output": str(work / "runs"),
        "tracking_uri": f"sqlite:///{work}/mlflow.db",
        "quiet": True,
        "shuffle_buffer": 16,
    }
    return TrainConfig(**{**values, **changes})


# --- the pieces, without Ray -----------------------------------------------------------------


def test_clip_inputs_split_inputs_and_target_on_the_model_scale() -> None:
    clips = torch.tensor([0, 51, 102, 204, 255], dtype=torch.uint8).reshape(1, 5, 1, 1)
    x, target = clip_inputs(clips.expand(2, 5, 8, 8).clone(), TINY.model)
    assert x.shape == (2, 4, 8, 8) and target.shape == (2, 1, 8, 8)
    assert x[0, :, 0, 0].tolist() == pytest.approx([-1.0, -0.6, -0.2, 0.6])
    assert target[0, 0, 0, 0].item() == 1.0
    recon = dataclasses.replace(TINY.model, task="recon", input_frames=1)
    x, target = clip_inputs(clips[:, :1].expand(2, 1, 8, 8).clone(), recon)
    assert torch.equal(x, target) and x.shape == (2, 1, 8, 8)


def test_training_loss_is_the_papers_weighted_sum() -> None:
    prediction, target = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    losses = training_losses(prediction, target, torch.tensor(2.0), torch.tensor(3.0), TINY.model)
    assert losses.prediction.item() == pytest.approx(0.25)
    assert losses.total.item() == pytest.approx(0.25 + 0.1 * 2.0 + 0.1 * 3.0)
    assert losses.stacked().shape == (4,)


def test_a_restored_cosine_schedule_follows_a_new_length() -> None:
    def schedule(t_max: int, steps: int) -> torch.optim.lr_scheduler.CosineAnnealingLR:
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
        for _ in range(steps):
            opt.step()
            sched.step()
        return sched

    resumed = schedule(2, 2)  # a finished 2-epoch run: lr 0
    retarget_cosine(resumed, 4)  # continued to 4 epochs
    fresh = schedule(4, 2)
    for _ in range(3):
        lrs = [sched.optimizer.param_groups[0]["lr"] for sched in (resumed, fresh)]
        assert lrs[0] == pytest.approx(lrs[1], abs=1e-12)
        for sched in (resumed, fresh):
            sched.optimizer.step()
            sched.step()


def _gather_worker(rank: int, store: str, counts: list[int], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    local = torch.full((counts[rank], 3), float(rank + 1))
    torch.save(gather_queries(local, counts), f"{out}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("counts", [[4, 4], [5, 2]])
def test_gather_queries_concatenates_unequal_ranks_in_rank_order(
    tmp_path: Path, counts: list[int]
) -> None:
    torch_mp.spawn(_gather_worker, args=(str(tmp_path / "store"), counts, str(tmp_path)), nprocs=2)
    expected = torch.cat([torch.full((counts[0], 3), 1.0), torch.full((counts[1], 3), 2.0)])
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"{rank}.pt"), expected)


def test_config_refuses_bad_values_in_one_line(tiny_data: Path, tiny_preset: str) -> None:
    cases = [
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"preset": "/no/such.json"}, "does not exist"),
        ({"batch_size": 5}, "does not split over 2 workers"),
        ({"workers": 0}, "--workers must be"),
        ({"cpus_per_worker": -1.0}, "--cpus-per-worker and --gpus-per-worker must be >= 0"),
        ({"val_fraction": 1.0}, "--val-fraction"),
        ({"lr": -1.0}, "lr must be > 0"),
    ]
    for changes, message in cases:
        with pytest.raises(UserError, match=message) as err:
            TrainConfig(**{"data": str(tiny_data), "preset": tiny_preset, **changes})
        assert "\n" not in str(err.value)


# --- bad inputs: refused before any work starts -----------------------------------------------


@pytest.mark.ray
def test_bad_inputs_are_refused_before_any_work(
    ray_local, tiny_data: Path, tiny_preset: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "summary.json").write_text('{"something": "else"}')
    cases = [
        ({"data": str(tmp_path / "missing")}, "no summary.json"),
        ({"data": str(tmp_path / "empty")}, "no summary.json"),
        ({"data": str(tmp_path / "foreign")}, "not an mnad summary"),
        ({"preset": "small"}, "frames are 16x16x1, the preset takes 96x96x1"),
        ({"workers": 4}, "need 4 CPU; the Ray cluster has 2"),
        ({"tracking_uri": "http://127.0.0.1:9"}, "cannot be reached"),
        ({"resume": True}, "no run to continue"),
    ]
    for changes, message in cases:
        with pytest.raises(UserError, match=message) as err:
            run_train(
                _config(**{"data": tiny_data, "preset": tiny_preset, **changes}, work=tmp_path)
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
    ray_local, tiny_data: Path, tiny_preset: str, tmp_path: Path
) -> None:
    _probe_by_value()
    probe = FileProbe(str(tmp_path), record_steps=True)
    config = _config(
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
    clips = np.random.default_rng(0).uniform(-1, 1, (3, 5, 16, 16)).astype(np.float32)
    scores = model.predict(clips)
    assert len(scores) == 3 and np.isfinite(scores["psnr"]).all()


@pytest.mark.ray
@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_checkpoint_and_resume_continues(
    ray_local, tiny_data: Path, tiny_preset: str, tmp_path: Path
) -> None:
    _probe_by_value()
    # 70 clips: 35 a rank, 17 steps an epoch. Checkpoints every 5 steps and at epoch ends:
    # 5, 10, 15, 17 | 20, 25, ... Rank 1 dies at step 22, in the middle of epoch 2.
    probe = FileProbe(
        str(tmp_path), kill_rank=1, kill_step=22, kill_after="checkpoint-e0001-s00000020",
        run_dir=str(tmp_path / "runs" / "train" / "faulty"),
    )  # fmt: skip
    config = _config(
        tiny_data, tiny_preset, tmp_path, epochs=2, checkpoint_every=5, max_failures=1,
        probe=probe, name="faulty",
    )  # fmt: skip
    result = run_train(config)
    assert (tmp_path / "killed").exists()
    assert probe.starts(0) == [[0, 0], [1, 20]]  # resumed mid-epoch 2 from step 20
    assert [r["epoch"] for r in result.epochs] == [1, 2]
    assert result.epochs[-1]["step"] == 34  # as many steps as a run without the failure
    assert load_checkpoint(result.checkpoint).step == 34

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
