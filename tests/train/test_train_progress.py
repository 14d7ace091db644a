"""What the driver does with the workers' events: each epoch reaches MLflow once, even when
the workers restart from a checkpoint older than an epoch they had already reported (a node
died before Ray Train registered the newer checkpoint), and the nodes they ran on are kept."""

from __future__ import annotations

from pathlib import Path

import mlflow

from pipelines.tracking import start_run
from pipelines.train.driver import _Progress


def _record(epoch: int, loss: float) -> dict[str, float]:
    parts = {"prediction_error": loss, "compactness": 0.0, "separateness": 0.0}
    return {"epoch": epoch, "loss": loss, **parts, "lr": 1e-3, "clips_per_s": 10.0}


def test_an_epoch_sent_again_after_a_restart_is_logged_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with start_run(uri, "progress", "restart", {}) as run:
        progress = _Progress(run, epochs=2, quiet=True)
        progress.event({"rank": 0, "node": "node-a"})
        progress.event({"rank": 1, "node": "node-b"})
        progress.event(_record(1, 0.5))
        progress.event({"rank": 1, "node": "node-c"})  # restarted on a fresh node
        progress.event(_record(1, 0.49))  # epoch 1 again, from the older checkpoint
        progress.event(_record(2, 0.4))
    history = mlflow.MlflowClient(uri).get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.4)]
    assert [r["loss"] for r in progress.history()] == [0.49, 0.4]  # the run's own, latest
    assert progress.nodes == {"node-a", "node-b", "node-c"}
