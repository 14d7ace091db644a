"""The whole job on a cluster whose parts share nothing but the network and an object store.

Built from real parts, all on 127.0.0.1 (``tests/share_nothing/cluster.py``, which
``scripts/fault_cluster.py`` runs its faults on too): an S3 endpoint (moto's standalone
server), reached by the product, Ray Train's storage, the MLflow server and the test as AWS
is, through the environment; an MLflow tracking server whose artifacts go to
``s3://mnad/mlflow``; a Ray head with 0 CPUs (the dashboard, the Jobs API, the job's driver)
and two 1-CPU worker nodes, each in a mount namespace of its own with a private tmpfs on
/tmp (``tests/share_nothing/node.py``), so no node can read what the driver or another node
wrote to local disk, and each seeing ffmpeg at a path of its own.

The job is submitted as a user does, through ``JobSubmissionClient`` to the head's
dashboard: ``mnad run spec.yaml --json`` on a spec whose source, DATA, training storage and
scores are ``s3://`` URIs and whose tracking URI is the MLflow server. The same spec with
local paths then runs on one machine (a local Ray): it ingests the same videos from local
files and scores them with the model the cluster trained and registered, and the scores
must equal the cluster's to float tolerance. Training itself is compared by what it made,
not bit for bit: two runs of Ray Train with 2 workers are not bit-identical even on one
machine (which clips each worker's streaming split receives depends on timing).

Requires Linux, root and ``unshare`` (for the mount namespaces); skips, saying which is
missing, elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mnad.config import ModelConfig, OptimConfig, Preset
from tests.share_nothing.cluster import (
    BUCKET,
    CREDENTIALS,
    JOB_TIMEOUT_S,
    Services,
    base_env,
    frames,
    free_port,
    namespaces_unavailable,
    placements,
    start_cluster,
    submit,
)

TINY = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, input_frames=4, width_mult=1 / 16),
    OptimConfig(lr=2e-3, batch_size=4, epochs=1, seed=0),
)
SPEC = """\
name: sharenothing
output: {output}
tracking_uri: {tracking}
ingest: {{source: {source}, size: [16, 16], channels: 1, dataset: tiny}}
train: {{preset: tiny.json, workers: 2, cpus_per_worker: 1, shuffle_buffer: 16, seed: 0}}
score: {{memory: [per-video, paper], batch_size: 16, report: true}}
"""
#: The same job on one machine with local paths, scoring the model the cluster registered.
LOCAL_SPEC = """\
name: sharenothing-local
output: out
tracking_uri: {tracking}
experiment: local
ingest: {{source: {source}, size: [16, 16], channels: 1, dataset: tiny}}
score: {{memory: [per-video, paper], batch_size: 16, report: true, model: {model}}}
"""

# --- the tests -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_an_unreachable_object_store_fails_in_one_line_naming_it_before_any_work(
    tmp_path: Path,
) -> None:
    port = free_port()  # bound and released: nothing listens there
    (tmp_path / "spec.yaml").write_text(
        SPEC.format(
            output=f"s3://{BUCKET}/job", tracking="sqlite:///mlflow.db",
            source=f"s3://{BUCKET}/source",
        )
    )  # fmt: skip
    (tmp_path / "tiny.json").write_text(TINY.to_json())
    env = {**base_env(), **CREDENTIALS, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}
    env["RAY_TMPDIR"] = str(tmp_path)  # a Ray started by mistake would leave its session here
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "spec.yaml", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"http://127.0.0.1:{port}" in lines[0] and "cannot be reached" in lines[0]
    assert not list(tmp_path.glob("**/session_*")), "Ray was started before the store was checked"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(420)
def test_the_job_runs_on_a_cluster_whose_nodes_share_nothing(monkeypatch) -> None:
    why = namespaces_unavailable()
    if why:
        pytest.skip(f"share-nothing cluster: {why}")
    with tempfile.TemporaryDirectory(
        prefix="mnad-sn-", dir="/tmp", ignore_cleanup_errors=True
    ) as tmp:
        root = Path(tmp)
        services = Services(root)
        try:
            _run_everything(root, services, monkeypatch)
        finally:
            services.close()


def _run_everything(root: Path, services: Services, monkeypatch) -> None:
    from pipelines.synth import SynthConfig, synthesize

    synthesize(SynthConfig(out=str(root / "source"), size="tiny", seed=0))
    for folder in ("local", "job"):
        (root / folder).mkdir()
        (root / folder / "tiny.json").write_text(TINY.to_json())

    cluster = start_cluster(services, root / "source")
    for key in (*CREDENTIALS, "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(key, cluster.env[key])  # the test reads the outputs from S3 too
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    tracking, dashboard, workers = cluster.tracking, cluster.dashboard, cluster.workers
    (root / "job" / "spec.yaml").write_text(
        SPEC.format(output=f"s3://{BUCKET}/job", tracking=tracking, source=f"s3://{BUCKET}/source")
    )

    first = submit(dashboard, root / "job")
    assert first["status"] == "SUCCEEDED", first["logs"][-6000:]
    # On one machine with local paths, alongside the second submission: the same videos
    # ingested from local files and scored with the model the cluster trained and registered.
    model = (first["result"] or {}).get("train", {}).get("model_uri", "models:/mnad-tiny/1")
    (root / "local" / "spec.yaml").write_text(
        LOCAL_SPEC.format(tracking=tracking, source=root / "source", model=model)
    )
    local = services.start(
        "local-run",
        [sys.executable, "-m", "pipelines.cli", "run", "spec.yaml", "--json", "--quiet"],
        {**base_env(), "RAY_TMPDIR": str(root / "local")},
        cwd=root / "local",
        stdout=subprocess.PIPE,
        text=True,
    )
    second = submit(dashboard, root / "job")
    assert second["status"] == "SUCCEEDED", second["logs"][-6000:]
    local_out, _ = local.communicate(timeout=JOB_TIMEOUT_S)
    assert local.returncode == 0, services.tail()

    _check_first(first, placements(dashboard, first["job_id"]), {w["node_id"] for w in workers})
    _check_second(first["result"], second["result"])
    _check_same_scores(first["result"], json.loads(local_out.strip().splitlines()[-1]))


def _check_first(first: dict, placed: dict[str, set[str]], worker_nodes: set[str]) -> None:
    result = first["result"]
    assert result is not None, first["logs"][-6000:]
    assert result["ingest"]["status"] == "ran" and not result["ingest"]["failed"]
    assert result["train"]["status"] == "ran"
    assert result["train"]["model_uri"] == "models:/mnad-tiny/1"
    scored = {s["memory"]: s for s in result["score"]}
    assert set(scored) == {"per-video", "paper"}
    for s in scored.values():
        assert s["status"] == "ran" and s["frames"] > 0 and s["out"].startswith("s3://")
        assert s["report"] and s["report"].startswith("s3://")
    trainers = placed.get("RayTrainWorker", set())
    assert trainers == worker_nodes, placed  # the two training workers on different nodes
    assert set(result["train"]["nodes"]) == worker_nodes  # as the result says too
    scorers = set().union(*(n for c, n in placed.items() if "VideoScorer" in c))
    assert scorers == worker_nodes, placed  # per-video scoring actors on both nodes
    assert set(scored["per-video"]["nodes"]) == worker_nodes  # as the result says too
    assert len(scored["paper"]["nodes"]) == 1  # one actor, placed on one 1-CPU node


def _check_second(first: dict, second: dict) -> None:
    assert second is not None
    assert [second[s]["status"] for s in ("ingest", "train")] == ["skipped"] * 2
    assert [s["status"] for s in second["score"]] == ["skipped"] * 2
    assert second["train"]["model_uri"] == first["train"]["model_uri"]
    assert [s["metrics"] for s in second["score"]] == [s["metrics"] for s in first["score"]]


def _check_same_scores(cluster: dict, local: dict) -> None:
    import numpy as np

    assert local["ingest"]["status"] == "ran" and "train" not in local
    here = {s["memory"]: s["out"] for s in local["score"]}
    for s in cluster["score"]:
        a, b = frames(s["out"]), frames(here[s["memory"]])
        for column in ("video_id", "frame_index", "label"):
            assert a.column(column).to_pylist() == b.column(column).to_pylist()
        np.testing.assert_allclose(
            a.column("score").to_numpy(), b.column("score").to_numpy(), rtol=1e-5, atol=1e-6
        )
