"""A real `mlflow server` on 127.0.0.1 (sqlite backend, artifacts proxied to a folder), for
the tests that talk to MLflow over HTTP as a cluster does."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.share_nothing.cluster import answers, free_port


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[tuple[str, Path]]:
    """(URI, artifact folder) of an `mlflow server` whose store and artifacts are in
    ``root``; stopped, with its workers, on exit."""
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the finalizer stops it and its workers
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        # An API call, not only /health: the first one waits for the store's tables.
        while not answers(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", 30):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()}")
            time.sleep(0.5)
        yield uri, root / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
