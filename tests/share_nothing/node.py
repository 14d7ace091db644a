"""One Ray node of the share-nothing test cluster, run under ``unshare -m`` (see node.sh).

The shell wrapper has mounted a private tmpfs on /tmp, so whatever this node (its raylet,
its workers, a job driver on the head) writes under /tmp is invisible to every other node
and to the test. The node is started as ``ray.cluster_utils.Cluster`` starts its nodes,
through ``ray._private.node.Node`` (``ray start`` refuses worker nodes in Ray's loopback
mode, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). It prints one JSON line (node id, GCS
address, dashboard URL) and runs until SIGTERM, when it stops every process it started.

Each node sees ffmpeg at a path of its own (``IMAGEIO_FFMPEG_EXE``, a link in its private
/tmp), as nodes with their own installs do: a path resolved on one node fails on another.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--gcs", help="the head's GCS address; absent: start the head")
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--dashboard-port", type=int, default=0)
    parser.add_argument("--agent-port", type=int, default=0, help="the head's job agent")
    parser.add_argument("--ffmpeg", required=True, help="the ffmpeg binary to link")
    args = parser.parse_args()

    home = Path("/tmp") / f"node-{args.name}"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "ffmpeg").symlink_to(args.ffmpeg)
    (home / "ray").mkdir()
    os.environ["IMAGEIO_FFMPEG_EXE"] = str(home / "bin" / "ffmpeg")
    os.environ["RAY_TMPDIR"] = str(home / "ray")
    os.chdir(home)

    import ray._private.node
    import ray._private.parameter

    params = ray._private.parameter.RayParams(
        num_cpus=args.cpus,
        num_gpus=0,
        resources={f"node:{args.name}": 1.0},
        object_store_memory=100 * 1024 * 1024,
        min_worker_port=0,
        max_worker_port=0,
        node_ip_address="127.0.0.1",
        temp_dir=str(home / "ray"),
    )
    head = args.gcs is None
    if head:
        params.update(
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=args.dashboard_port,
            dashboard_agent_listen_port=args.agent_port,  # its default, 52365, may be taken
        )
    else:
        params.update(gcs_address=args.gcs, include_log_monitor=False, node_manager_port=0)
        params.dashboard_agent_listen_port = None
    node = ray._private.node.Node(params, head=head, shutdown_at_exit=True, spawn_reaper=True)
    if head:
        # As `ray start` and Cluster do: the job supervisor finds its cluster in this file;
        # without it Ray falls back to any gcs_server process it sees (other sessions' too).
        import ray._private.utils

        ray._private.utils.write_ray_address(node.gcs_address, str(home / "ray"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(
        json.dumps({"node_id": node.node_id, "gcs": node.gcs_address, "webui": node.webui_url}),
        flush=True,
    )
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
