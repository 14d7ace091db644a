"""The whole job on a cluster whose parts share nothing but the network and an object store.

Built from real parts, all on 127.0.0.1:

- an S3 endpoint: moto's standalone server over HTTP. The product, Ray Train's storage, the
  MLflow server and the test reach it as they reach AWS, through the environment
  (``AWS_ENDPOINT_URL_S3`` and ``AWS_*`` credentials; see ``pipelines/storage.py``);
- an MLflow tracking server (sqlite backend) whose artifacts go to ``s3://mnad/mlflow``
  (``--artifacts-destination``: clients upload through the server's proxy);
- a Ray head with 0 CPUs (it runs the dashboard, the Jobs API and the job's driver) and two
  worker nodes of 1 CPU, each started by ``tests/share_nothing/node.py`` under
  ``unshare -m`` with a private tmpfs on /tmp and its own RAY_TMPDIR there, so no node can
  read what the driver or another node wrote to local disk. Each node also sees ffmpeg at a
  path of its own, as nodes with their own installs do. Loopback-only Ray
  (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) keeps every address on 127.0.0.1; token
  authentication is off for this cluster only (``RAY_AUTH_MODE=disabled``).

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

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mnad.config import ModelConfig, OptimConfig, Preset

ROOT = Path(__file__).resolve().parents[1]
NODE = ROOT / "tests" / "share_nothing" / "node.py"
BUCKET = "mnad"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
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
JOB_TIMEOUT_S = 150


# --- the parts -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_ADDRESS", "MLFLOW_TRACKING", "AWS_"))
    }
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every node and driver on 127.0.0.1
        RAY_AUTH_MODE="disabled",  # this test cluster only
        RAY_DATA_DISABLE_PROGRESS_BARS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONPATH=str(ROOT),
    )
    return env


def _namespaces_unavailable() -> str | None:
    """Why this machine cannot give each node its own mount namespace, or None."""
    if not sys.platform.startswith("linux"):
        return "mount namespaces are Linux only"
    if shutil.which("unshare") is None:
        return "no `unshare` binary (util-linux)"
    if os.geteuid() != 0:
        return "needs root for `unshare -m` and a tmpfs mount per node"
    probe = subprocess.run(
        ["unshare", "-m", "--", "sh", "-c", "mount -t tmpfs tmpfs /tmp && ls -A /tmp"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip():
        return f"`unshare -m` with a tmpfs on /tmp failed here: {probe.stderr.strip()[:200]}"
    return None


class Services:
    """The processes of the test cluster; ``close`` stops each one that it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.logs: list[Path] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        proc = subprocess.Popen(
            argv,
            env=env,
            stderr=log.open("w"),
            start_new_session=True,  # its own process group: close() stops all of it
            **kw,
        )
        self.procs.append((name, proc))
        return proc

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in self.logs)

    def close(self) -> None:
        for _, proc in reversed(self.procs):  # nodes before the services they use
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait(what: str, ready, proc: subprocess.Popen, services: Services, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start:\n{services.tail()}")
        time.sleep(0.3)


def start_s3(services: Services) -> str:
    port = _free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = services.start("moto", argv, _base_env(), stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait("moto_server", lambda: _answers(f"{url}/moto-api/"), proc, services, 60)
    import boto3

    boto3.client("s3", endpoint_url=url, **_boto_credentials()).create_bucket(Bucket=BUCKET)
    return url


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def start_mlflow(services: Services, s3_env: dict[str, str]) -> str:
    """`mlflow server` as cluster/README.md runs it, its artifacts proxied to S3."""
    port = _free_port()
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{services.root / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{BUCKET}/mlflow",
    ]  # fmt: skip
    proc = services.start("mlflow", argv, s3_env, stdout=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    api = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    _wait("mlflow server", lambda: _answers(api), proc, services, 90)
    return uri


def start_node(
    services: Services, name: str, env: dict[str, str], gcs: str | None = None, **args: int
) -> dict[str, str]:
    """A Ray node in a mount namespace of its own with a private /tmp; its node id etc."""
    import imageio_ffmpeg

    shell = 'mount -t tmpfs -o size=2g tmpfs /tmp && exec "$0" "$@"'
    argv = ["unshare", "-m", "--", "sh", "-c", shell, sys.executable, str(NODE)]
    argv += ["--name", name, "--ffmpeg", imageio_ffmpeg.get_ffmpeg_exe()]
    argv += ["--gcs", gcs] if gcs else []
    for key, value in args.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    proc = services.start(f"node-{name}", argv, env, stdout=subprocess.PIPE, cwd="/")
    ready, _, _ = select.select([proc.stdout], [], [], 90)
    line = proc.stdout.readline() if ready else b""
    if not line:
        pytest.fail(f"Ray node {name} did not start:\n{services.tail()}")
    return json.loads(line)


def upload(folder: Path, s3_url: str, prefix: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_url, **_boto_credentials())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


# --- the job ---------------------------------------------------------------------------------


def submit(dashboard: str, job_dir: Path) -> dict:
    """Submit ``mnad run spec.yaml --json`` as a user does; its status, result and logs."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    for attempt in range(60):  # the head's agent takes a while after the node is up
        try:
            sub = client.submit_job(
                entrypoint=f"{sys.executable} -m pipelines.cli run spec.yaml --json",
                runtime_env={"working_dir": str(job_dir)},
            )
            break
        except RuntimeError as err:
            if "No available agent" not in str(err) or attempt == 59:
                raise
            time.sleep(1)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (status := client.get_job_status(sub)).is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(sub)
            break
        time.sleep(1)
    logs = client.get_job_logs(sub)
    return {
        "status": str(status),
        "job_id": client.get_job_info(sub).job_id,
        "result": _last_json(logs),
        "logs": logs,
    }


def _wait_for_nodes(dashboard: str, count: int, limit_s: float = 60) -> None:
    from ray.util.state import list_nodes

    deadline = time.monotonic() + limit_s
    while len(list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")])) < count:
        assert time.monotonic() < deadline, f"fewer than {count} Ray nodes joined"
        time.sleep(0.5)


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    return None


def placements(dashboard: str, job_id: str) -> dict[str, set[str]]:
    """Class name -> the nodes its actors of job ``job_id`` ran on (Ray's state API)."""
    from ray.util.state import list_actors

    found: dict[str, set[str]] = {}
    for actor in list_actors(address=dashboard, filters=[("job_id", "=", job_id)], limit=1000):
        found.setdefault(actor.class_name, set()).add(actor.node_id)
    return found


def frames(uri: str):
    """A scores folder's frames.parquet (local or s3://), sorted by video and frame."""
    import pyarrow.parquet as pq

    from pipelines import storage

    fs, path = storage.resolve(storage.join(uri, "frames.parquet"))
    table = pq.read_table(path, filesystem=fs)
    return table.sort_by([("video_id", "ascending"), ("frame_index", "ascending")])


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_an_unreachable_object_store_fails_in_one_line_naming_it_before_any_work(
    tmp_path: Path,
) -> None:
    port = _free_port()  # bound and released: nothing listens there
    (tmp_path / "spec.yaml").write_text(
        SPEC.format(
            output=f"s3://{BUCKET}/job", tracking="sqlite:///mlflow.db",
            source=f"s3://{BUCKET}/source",
        )
    )  # fmt: skip
    (tmp_path / "tiny.json").write_text(TINY.to_json())
    env = {**_base_env(), **CREDENTIALS, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}
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
    why = _namespaces_unavailable()
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

    s3 = start_s3(services)
    s3_env = {**_base_env(), **CREDENTIALS, "AWS_ENDPOINT_URL_S3": s3}
    for key, value in (*CREDENTIALS.items(), ("AWS_ENDPOINT_URL_S3", s3)):
        monkeypatch.setenv(key, value)  # the test reads the outputs from S3 too
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    upload(root / "source", s3, "source")
    tracking = start_mlflow(services, s3_env)
    port = _free_port()
    head = start_node(
        services, "head", s3_env, cpus=0, dashboard_port=port, agent_port=_free_port()
    )
    workers = [start_node(services, f"w{i}", s3_env, gcs=head["gcs"]) for i in (1, 2)]
    dashboard = f"http://127.0.0.1:{port}"
    _wait_for_nodes(dashboard, 3)
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
        {**_base_env(), "RAY_TMPDIR": str(root / "local")},
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
