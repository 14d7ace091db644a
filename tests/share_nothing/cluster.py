"""The parts of the share-nothing test cluster, shared by ``tests/test_share_nothing.py`` and
``scripts/fault_cluster.py``; all on 127.0.0.1.

- an S3 endpoint: moto's standalone server over HTTP, reached as AWS is, through the
  environment (``AWS_ENDPOINT_URL_S3`` and ``AWS_*`` credentials; see ``pipelines/storage.py``);
- an MLflow tracking server (sqlite backend) whose artifacts go to ``s3://mnad/mlflow``
  (``--artifacts-destination``: clients upload through the server's proxy); it can be
  stopped and started again on the same port and store (:meth:`Cluster.restart_mlflow`);
- a Ray head with 0 CPUs (the dashboard, the Jobs API, the job's driver) and worker nodes of
  1 CPU, each started by ``tests/share_nothing/node.py`` under ``unshare -m`` with a private
  tmpfs on /tmp, so that no node reads what the driver or another node wrote to local disk;
  nodes can be added while a job runs (:meth:`Cluster.add_worker`). Loopback-only Ray
  (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) keeps every address on 127.0.0.1; token
  authentication is off for this cluster only (``RAY_AUTH_MODE=disabled``).

Jobs are submitted as a user does, through ``JobSubmissionClient`` to the head's dashboard
(:func:`submit`, or :func:`start_job` and :func:`finish_job` to act while one runs). A part
that does not start raises :class:`ClusterError` with the tail of every log.
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
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "tests" / "share_nothing" / "node.py"
BUCKET = "mnad"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
JOB_TIMEOUT_S = 420
#: How soon the head declares a node dead whose raylet stopped answering (Ray's defaults,
#: 3 s x 5 failures after 10 s time-outs, take up to a minute).
HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "3",
}


class ClusterError(RuntimeError):
    """A part of the test cluster did not start or a job did not end in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, timeout: float = 10) -> bool:
    """Whether ``url`` answers 200 to a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def base_env() -> dict[str, str]:
    """This environment without Ray, MLflow or AWS settings, plus the cluster's own."""
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


def namespaces_unavailable() -> str | None:
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
            stderr=log.open("a"),  # a service started again adds to its log
            start_new_session=True,  # its own process group: close() stops all of it
            **kw,
        )
        self.procs.append((name, proc))
        return proc

    def proc(self, name: str) -> subprocess.Popen:
        """The latest process started as ``name``."""
        return next(p for n, p in reversed(self.procs) if n == name)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in dict.fromkeys(self.logs))

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 30) -> None:
        """Send ``sig`` to the process group of ``proc``; SIGKILL it if it outlives ``wait_s``."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        for _, proc in reversed(self.procs):  # nodes before the services they use
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            self.stop(proc, signal.SIGTERM)


def wait_until(what: str, ready, proc: subprocess.Popen, services: Services, limit_s: float):
    """Poll ``ready()`` until it holds; ClusterError if ``proc`` ends or ``limit_s`` passes."""
    deadline = time.monotonic() + limit_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ClusterError(f"{what} did not start:\n{services.tail()}")
        time.sleep(0.3)


def boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def s3_client(url: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=url, **boto_credentials())


def s3_keys(url: str, prefix: str) -> list[str]:
    """The keys under ``prefix`` in the bucket (every page)."""
    pages = s3_client(url).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def start_s3(services: Services) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = services.start("moto", argv, base_env(), stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until("moto_server", lambda: answers(f"{url}/moto-api/"), proc, services, 60)
    s3_client(url).create_bucket(Bucket=BUCKET)
    return url


def start_mlflow(services: Services, s3_env: dict[str, str], port: int | None = None) -> str:
    """`mlflow server` as cluster/README.md runs it, its artifacts proxied to S3; its store is
    ``services.root/mlflow.db``, so a server started again on ``port`` has the same runs."""
    port = port or free_port()
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{services.root / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{BUCKET}/mlflow",
    ]  # fmt: skip
    proc = services.start("mlflow", argv, s3_env, stdout=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    api = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    wait_until("mlflow server", lambda: answers(api), proc, services, 90)
    return uri


def start_node(
    services: Services, name: str, env: dict[str, str], gcs: str | None = None, **args: int
) -> dict[str, str]:
    """A Ray node in a mount namespace of its own with a private /tmp; its node id etc.
    Its process is ``services.proc(f"node-{name}")``."""
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
        raise ClusterError(f"Ray node {name} did not start:\n{services.tail()}")
    return {**json.loads(line), "name": name}


def upload(folder: Path, s3_url: str, prefix: str) -> None:
    s3 = s3_client(s3_url)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


@dataclass
class Cluster:
    """The running parts: S3, MLflow, the head and the worker nodes."""

    services: Services
    s3: str  # the S3 endpoint's URL
    env: dict[str, str]  # of every node and server: base_env, credentials, the endpoint
    tracking: str  # the MLflow server's URI
    head: dict[str, str]
    dashboard: str
    workers: list[dict[str, str]] = field(default_factory=list)

    def add_worker(self, name: str) -> dict[str, str]:
        """A fresh 1-CPU worker node joined to the head."""
        node = start_node(self.services, name, self.env, gcs=self.head["gcs"])
        self.workers.append(node)
        return node

    def node_proc(self, node: dict[str, str]) -> subprocess.Popen:
        return self.services.proc(f"node-{node['name']}")

    def restart_mlflow(self) -> str:
        """The MLflow server started again on its port and store (after it was stopped)."""
        port = int(self.tracking.rsplit(":", 1)[1])
        return start_mlflow(self.services, self.env, port=port)


def start_cluster(services: Services, source: Path, workers: int = 2) -> Cluster:
    """S3 (``source`` uploaded to ``s3://mnad/source``), MLflow, a 0-CPU head and ``workers``
    1-CPU nodes, every node joined. The caller sets ``AWS_*`` in its own environment (from
    ``Cluster.env``) where it reads from S3 itself."""
    s3 = start_s3(services)
    env = {**base_env(), **CREDENTIALS, "AWS_ENDPOINT_URL_S3": s3, **HEALTH_CHECKS}
    upload(source, s3, "source")
    tracking = start_mlflow(services, env)
    port = free_port()
    head = start_node(services, "head", env, cpus=0, dashboard_port=port, agent_port=free_port())
    cluster = Cluster(services, s3, env, tracking, head, f"http://127.0.0.1:{port}")
    for i in range(1, workers + 1):
        cluster.add_worker(f"w{i}")
    wait_for_nodes(cluster.dashboard, workers + 1)
    return cluster


# --- jobs ------------------------------------------------------------------------------------


def start_job(dashboard: str, job_dir: Path) -> tuple[Any, str]:
    """Submit ``mnad run spec.yaml --json`` from ``job_dir`` as a user does: (client, id)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    for attempt in range(60):  # the head's agent takes a while after the node is up
        try:
            sub = client.submit_job(
                entrypoint=f"{sys.executable} -m pipelines.cli run spec.yaml --json",
                runtime_env={"working_dir": str(job_dir)},
            )
            return client, sub
        except RuntimeError as err:
            if "No available agent" not in str(err) or attempt == 59:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def finish_job(client: Any, sub: str, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """Wait for the job (stopped after ``timeout_s``); its status, result and logs."""
    deadline = time.monotonic() + timeout_s
    while not (status := client.get_job_status(sub)).is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(sub)
            break
        time.sleep(1)
    logs = client.get_job_logs(sub)
    return {
        "status": str(status),
        "job_id": client.get_job_info(sub).job_id,
        "result": last_json(logs),
        "logs": logs,
    }


def submit(dashboard: str, job_dir: Path, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """Submit ``mnad run spec.yaml --json`` and wait for it: :func:`finish_job`."""
    return finish_job(*start_job(dashboard, job_dir), timeout_s=timeout_s)


def wait_for_nodes(dashboard: str, count: int, limit_s: float = 60) -> None:
    """Until ``count`` nodes are alive; ClusterError after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while len(alive_nodes(dashboard)) < count:
        if time.monotonic() > deadline:
            raise ClusterError(f"fewer than {count} Ray nodes joined in {limit_s:g} s")
        time.sleep(0.5)


def alive_nodes(dashboard: str) -> set[str]:
    from ray.util.state import list_nodes

    return {n.node_id for n in list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")])}


def last_json(text: str) -> dict | None:
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
    """A scores folder's frames dataset (local or s3://), sorted by video and frame."""
    from pipelines.score import read_frames

    return read_frames(uri)
