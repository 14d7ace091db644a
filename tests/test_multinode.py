"""A job on a Ray cluster of two nodes on this machine: `mnad run` connects to it through
RAY_ADDRESS, ingests a tiny synthetic data set, trains with 2 workers that land on different
nodes (asserted from inside the worker loop), scores, and on a second run skips every stage.

The cluster is ``ray.cluster_utils.Cluster``: a head and one worker node, each its own raylet
and object store registered with the head's GCS, started through ``ray._private.node.Node``
as ``ray start`` does. Chosen over two ``ray start`` processes because it tears down exactly
the processes it started (``ray stop`` kills every Ray of this user on the machine, other
sessions' too), and its reaper kills them if the driver dies. Each node has 1 CPU, so the two
training workers cannot share one.

Loopback: on Linux Ray replaces 127.0.0.1 in any address with the machine's routable IP;
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's loopback-only mode, the default on macOS and
Windows) keeps every node, and the driver, on 127.0.0.1. `ray start` refuses worker nodes in
that mode; the cluster utility does not, which is a second reason to use it.

It all runs in a subprocess (this file run as a script) with its own RAY_TMPDIR, so the
session fixture's local Ray of the other tests is untouched, and nothing of this cluster
(its sockets, its ``ray_current_cluster`` address file) is visible to any other Ray on the
machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class NodeProbe:
    """A training probe: each rank writes the Ray node it runs on to ``folder``."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_start(self, rank: int, epoch: int, step: int) -> None:
        import ray

        node = ray.get_runtime_context().get_node_id()
        Path(self.folder, f"rank{rank}.node").write_text(node)

    def on_step(self, rank: int, step: int, record: object) -> None:
        pass


SPEC = """\
name: multinode
output: out
tracking_uri: mlflow.db
synth: {{size: tiny, seed: 0}}
ingest: {{size: [16, 16], channels: 1, dataset: tiny}}
train: {{preset: {preset}, workers: 2, shuffle_buffer: 16}}
score: {{memory: [per-video], batch_size: 16, report: false}}
"""


def drive(work: Path) -> dict:
    """In the subprocess: start the cluster, run the spec twice on it, report what happened."""
    from ray.cluster_utils import Cluster

    from mnad.config import ModelConfig, OptimConfig, Preset
    from pipelines.spec import RunSpecConfig, run_spec

    preset = Preset(
        "tiny",
        ModelConfig(height=16, width=16, channels=1, input_frames=4, width_mult=1 / 16),
        OptimConfig(lr=2e-3, batch_size=4, epochs=1, seed=0),
    )
    (work / "tiny.json").write_text(preset.to_json())
    (work / "spec.yaml").write_text(SPEC.format(preset="tiny.json"))
    (work / "nodes").mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        os.environ["RAY_ADDRESS"] = cluster.address
        runs = []
        for _ in range(2):
            config = RunSpecConfig(
                spec=str(work / "spec.yaml"),
                quiet=True,
                json=True,
                probe=NodeProbe(str(work / "nodes")),
            )
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                status = run_spec(config).exit_status
            runs.append({"status": status, "json": json.loads(out.getvalue())})
        return {
            "nodes": [cluster.head_node.node_id, worker.node_id],
            "addresses": [cluster.head_node.node_ip_address, worker.node_ip_address],
            "ranks": {p.stem: p.read_text() for p in (work / "nodes").glob("rank*.node")},
            "runs": runs,
        }
    finally:
        cluster.shutdown()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(300)
def test_training_spans_two_nodes_and_a_second_run_skips_every_stage() -> None:
    # A short RAY_TMPDIR: Ray's socket paths must stay under the AF_UNIX length limit.
    with tempfile.TemporaryDirectory(prefix="mnad-mn-", dir="/tmp") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.update(
            RAY_TMPDIR=str(work / "ray"),
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every node on 127.0.0.1 (see above)
            PYTHONPATH=str(ROOT),
        )
        (work / "ray").mkdir()
        proc = subprocess.run(
            [sys.executable, __file__, str(work)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        report = json.loads((work / "report.json").read_text())

    head, worker = report["nodes"]
    assert head != worker and report["addresses"] == ["127.0.0.1", "127.0.0.1"]
    assert sorted(report["ranks"]) == ["rank0", "rank1"]
    assert set(report["ranks"].values()) == {head, worker}  # one worker on each node

    first, second = (run["json"] for run in report["runs"])
    assert [run["status"] for run in report["runs"]] == [0, 0]
    assert [first[s]["status"] for s in ("synth", "ingest", "train")] == ["ran"] * 3
    assert first["train"]["model_uri"] == "models:/mnad-tiny/1"
    (scored,) = first["score"]
    assert scored["status"] == "ran" and scored["frames"] > 0
    assert 0.0 <= scored["metrics"]["micro_auc"] <= 1.0
    # The second run finds every output complete, and the same model and scores.
    assert [second[s]["status"] for s in ("synth", "ingest", "train")] == ["skipped"] * 3
    assert second["train"]["model_uri"] == first["train"]["model_uri"]
    assert second["score"][0]["status"] == "skipped"
    assert second["score"][0]["metrics"] == scored["metrics"]


if __name__ == "__main__":
    work = Path(sys.argv[1])
    (work / "report.json").write_text(json.dumps(drive(work)))
