"""The Ray that the product starts for itself on one machine listens on 127.0.0.1 only.

`RaySession.ensure` with no address and no ``$RAY_ADDRESS`` starts a local Ray; it runs here
in a subprocess (this file run as a script) with its own RAY_TMPDIR, so the session's Ray of
the other tests is untouched, and with Ray's loopback-only variable NOT set, as a user's
shell has it. The subprocess runs a task and a Ray Data map (so worker processes are up),
then lists every listening TCP socket of its descendants (GCS, raylet, workers, agents) with
``psutil.net_connections``. Every one must be on a loopback address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def listening_sockets() -> list[dict]:
    """In the subprocess: the listening TCP sockets of this process's descendants."""
    import psutil

    procs = {p.pid: p for p in psutil.Process().children(recursive=True)}
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in procs:
            name = procs[conn.pid].name()
            found.append({"process": name, "ip": conn.laddr.ip, "port": conn.laddr.port})
    return found


def drive() -> dict:
    """In the subprocess: the product's own Ray, some work on it, its sockets."""
    from pipelines.ray_cluster import LOOPBACK_ENV, RaySession

    assert "ray" not in sys.modules  # as in `mnad`: the session imports Ray
    with RaySession(quiet=True) as session:
        session.ensure()
        import ray

        ray.get(ray.remote(lambda: 1).remote())
        assert ray.data.range(4).map(lambda r: r).count() == 4
        return {
            "sockets": listening_sockets(),
            "can_grow": session.can_grow,
            "env_after": os.environ.get(LOOPBACK_ENV),
        }


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("::") and not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_the_products_own_ray_listens_on_loopback_only() -> None:
    # A short RAY_TMPDIR: Ray's socket paths must stay under the AF_UNIX length limit.
    with tempfile.TemporaryDirectory(prefix="mnad-lb-", dir="/tmp") as tmp:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        }
        env.update(RAY_TMPDIR=str(Path(tmp) / "ray"), PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, __file__, tmp],
            env=env,
            capture_output=True,
            text=True,
            timeout=170,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(Path(tmp, "report.json").read_text())
    sockets = report["sockets"]
    names = {s["process"] for s in sockets}
    assert "gcs_server" in names and "raylet" in names, sockets  # the sockets were seen
    exposed = [s for s in sockets if not is_loopback(s["ip"])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert report["can_grow"] is False  # a local Ray of its own: never waits for nodes
    assert report["env_after"] is None  # the process environment is as it was


if __name__ == "__main__":
    result = drive()
    Path(sys.argv[1], "report.json").write_text(json.dumps(result))
