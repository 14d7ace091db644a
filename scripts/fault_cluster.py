"""Faults on the share-nothing cluster: nodes killed while scoring and training, the MLflow
server stopped during training, the object store unreachable at the start.

    .venv/bin/python scripts/fault_cluster.py [--only reference score train mlflow store]
        [--keep DIR] [--json PATH]

The cluster is ``tests/share_nothing/cluster.py``'s, built for real on this machine: a moto
S3 server, an MLflow server with S3 artifacts, a 0-CPU Ray head and two 1-CPU worker nodes,
each in a mount namespace of its own (Linux, root, ``unshare``). Every job is ``mnad run``
submitted through the Jobs API, on ``s3://`` paths. Prints one table of checks; exits 1 if
any fails. Every wait is bounded; every process and the temporary folder go at the end.

- ``reference``: an uninterrupted job (ingest, 2-worker training with checkpoints every
  ``CHECKPOINT_EVERY`` steps, scoring in both memory modes): what the others compare with.
- ``score``: the reference's model scored again into a new folder; in each memory mode, once
  the first part file of that mode is in S3, the process tree of a worker node running a
  scoring actor gets SIGKILL and a fresh node joins. Checked: the kill came before the job
  ended and before the last part; the job succeeds; each frames dataset equals the
  reference's (rows, no duplicate frames, every value).
- ``train``: the reference's training under a new name; once epoch 1 is logged and Ray
  Train has a checkpoint in S3, a worker node running a training worker is killed and a fresh
  node joins. Checked: the job succeeds; the MLflow run is FINISHED with one loss per epoch
  (a restart from scratch would log epoch 1 twice); the epochs and steps equal the
  reference's.
- ``mlflow``: a longer training; after its first epoch's line the MLflow server is stopped
  for ``MLFLOW_DOWN_S`` seconds, then started again on the same port and store. Checked: the
  job succeeds with every epoch's metrics and the run FINISHED, or it fails with one line
  and a resubmission completes it (the table says which).
- ``store``: ``tests/test_share_nothing.py``'s unreachable-object-store test, run by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fault_injection import Row, kill_tree, log, print_table  # noqa: E402

from mnad.config import ModelConfig, OptimConfig, Preset  # noqa: E402
from tests.share_nothing import cluster as sn  # noqa: E402

SECTIONS = ("reference", "score", "train", "mlflow", "store")
EPOCHS, MLFLOW_EPOCHS, CHECKPOINT_EVERY = 3, 6, 10
MLFLOW_DOWN_S = 10
JOB_S = 600  # the most any one job may take on a loaded 2-core machine
TINY = Preset(
    "tiny",
    ModelConfig(height=16, width=16, channels=1, input_frames=4, width_mult=1 / 16),
    OptimConfig(lr=2e-3, batch_size=4, epochs=EPOCHS, seed=0),
)
HEAD = """\
name: {name}
output: s3://{bucket}/{name}
tracking_uri: {tracking}
ingest: {{source: s3://{bucket}/source, out: {data}, size: [16, 16], channels: 1, \
dataset: tiny}}
"""
TRAIN = """\
train: {{preset: tiny.json, workers: 2, cpus_per_worker: 1, shuffle_buffer: 16, seed: 0, \
epochs: {epochs}, checkpoint_every: {every}, max_failures: 3}}
"""
SCORE = "score: {{memory: [{memory}], batch_size: 16, report: false{model}}}\n"


@dataclass
class Work:
    root: Path
    cluster: sn.Cluster | None = None
    reference: dict | None = None  # the reference job's result
    fresh: int = 0  # fresh nodes added so far
    figures: dict[str, Any] = field(default_factory=dict)

    def get_cluster(self) -> sn.Cluster:
        if self.cluster is None:
            from pipelines.synth import SynthConfig, synthesize

            log("building the cluster (moto, MLflow, head, 2 workers)")
            source = self.root / "source"
            synthesize(SynthConfig(out=str(source), size="tiny", seed=0, test_videos=8,
                                   frames=120, quiet=True))  # fmt: skip
            self.cluster = sn.start_cluster(sn.Services(self.root), source)
            for key in (*sn.CREDENTIALS, "AWS_ENDPOINT_URL_S3"):
                os.environ[key] = self.cluster.env[key]  # this script reads S3 too
            os.environ["RAY_AUTH_MODE"] = "disabled"
        return self.cluster

    def job(self, name: str, *, epochs: int | None = EPOCHS, memory: str = "per-video, paper",
            model: str | None = None) -> Path:  # fmt: skip
        """A job folder: spec.yaml (DATA: the reference's) and the preset."""
        cluster = self.get_cluster()
        folder = self.root / "jobs" / name
        folder.mkdir(parents=True)
        (folder / "tiny.json").write_text(TINY.to_json())
        data = f"s3://{sn.BUCKET}/reference/data"
        spec = HEAD.format(name=name, bucket=sn.BUCKET, tracking=cluster.tracking, data=data)
        if epochs is not None:
            spec += TRAIN.format(epochs=epochs, every=CHECKPOINT_EVERY)
        spec += SCORE.format(memory=memory, model=f", model: {model}" if model else "")
        (folder / "spec.yaml").write_text(spec)
        return folder

    def get_reference(self) -> dict:
        if self.reference is None:
            log("reference job: ingest, train, score (uninterrupted)")
            t0 = time.monotonic()
            done = sn.submit(self.get_cluster().dashboard, self.job("reference"), JOB_S)
            if done["status"] != "SUCCEEDED" or not done["result"]:
                raise RuntimeError(f"the reference job {done['status']}: {_last(done['logs'])}")
            self.reference = done["result"]
            self.figures["reference_s"] = round(time.monotonic() - t0, 1)
        return self.reference

    def kill_and_replace(self, node: dict[str, str]) -> tuple[int, str]:
        """SIGKILL the process tree of ``node``; a fresh node joins. (processes left, its name)."""
        cluster = self.get_cluster()
        left = kill_tree(cluster.node_proc(node), {}, grace_s=30)
        cluster.workers.remove(node)
        self.fresh += 1
        name = f"fresh{self.fresh}"
        cluster.add_worker(name)
        return left, name


def _last(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def actor_node(cluster: sn.Cluster, job_id: str, cls: str) -> dict[str, str] | None:
    """A live worker node that runs an alive actor of ``job_id`` whose class has ``cls``."""
    from ray.util.state import list_actors

    filters = [("job_id", "=", job_id), ("state", "=", "ALIVE")]
    nodes = {a.node_id for a in list_actors(address=cluster.dashboard, filters=filters,
                                            limit=1000) if cls in a.class_name}  # fmt: skip
    return next((w for w in cluster.workers if w["node_id"] in nodes), None)


def wait_for(what: str, ready: Callable[[], Any], client: Any, sub: str, limit_s: float) -> Any:
    """Poll ``ready()`` until it returns something true; RuntimeError if the job ends first or
    ``limit_s`` passes."""
    deadline = time.monotonic() + limit_s
    while not (found := ready()):
        if client.get_job_status(sub).is_terminal():
            raise RuntimeError(f"the job ended before {what}")
        if time.monotonic() > deadline:
            client.stop_job(sub)
            raise RuntimeError(f"no {what} after {limit_s:g} s")
        time.sleep(0.1)
    return found


# --- a. a node killed while scoring -------------------------------------------------------------


def section_score(work: Work) -> list[Row]:
    cluster, ref = work.get_cluster(), work.get_reference()
    model = ref["train"]["model_uri"]
    client, sub = sn.start_job(cluster.dashboard, work.job("scorekill", epochs=None, model=model))
    job_id = wait_for("a job id", lambda: client.get_job_info(sub).job_id, client, sub, 120)
    rows, kills = [], {}
    videos = len(sn.s3_keys(cluster.s3, "reference/data/test/"))
    for memory in ("per-video", "paper"):
        parts = f"/{memory}/frames/"

        def first_part(parts: str = parts) -> list[str]:
            keys = sn.s3_keys(cluster.s3, "scorekill/scores/")
            return [k for k in keys if parts in k and k.endswith(".parquet")]

        written = wait_for(f"a {memory} part", first_part, client, sub, JOB_S)
        node = actor_node(cluster, job_id, "VideoScorer")
        if node is None:
            raise RuntimeError(f"no live scoring actor on a worker node ({memory})")
        running = not client.get_job_status(sub).is_terminal()
        left, fresh = work.kill_and_replace(node)
        log(f"{memory}: killed node {node['name']} at {len(written)} parts; {fresh} joined")
        kills[memory] = {"node": node["name"], "parts_at_kill": len(written), "left": left,
                         "job_running": running}  # fmt: skip
        rows.append(Row("score", f"{memory}: node killed mid-scoring (SIGKILL, its tree)",
                        f"{node['name']} at {len(written)} of {videos} parts, job running: "
                        f"{running}, {left} processes left; {fresh} added",
                        running and 0 < len(written) < videos and left == 0))  # fmt: skip
    done = sn.finish_job(client, sub, JOB_S)
    rows.append(Row("score", "job after the kills", f"{done['status']}: "
                    f"{_last(done['logs']) if done['status'] != 'SUCCEEDED' else 'completed'}",
                    done["status"] == "SUCCEEDED"))  # fmt: skip
    work.figures["score"] = {"kills": kills, "status": done["status"]}
    if done["result"]:
        rows += _compare_scores(work, ref, done["result"])
    return rows


def _compare_scores(work: Work, ref: dict, got: dict) -> list[Row]:
    import numpy as np

    rows = []
    want = {s["memory"]: s["out"] for s in ref["score"]}
    for s in got["score"]:
        a, b = sn.frames(want[s["memory"]]), sn.frames(s["out"])
        keys = list(zip(b["video_id"].to_pylist(), b["frame_index"].to_pylist(), strict=True))
        dup = len(keys) - len(set(keys))
        same = a.num_rows == b.num_rows and a["video_id"].equals(b["video_id"]) and a[
            "frame_index"].equals(b["frame_index"])  # fmt: skip
        diff = max(float(np.max(np.abs(a[c].to_numpy() - b[c].to_numpy()), initial=0))
                   for c in ("psnr", "feature_distance", "score")) if same else None  # fmt: skip
        identical = a.equals(b)
        work.figures["score"][s["memory"]] = {"rows": b.num_rows, "rows_reference": a.num_rows,
                                              "duplicates": dup, "max_abs_diff": diff,
                                              "identical": identical}  # fmt: skip
        rows.append(Row("score", f"{s['memory']}: frames vs uninterrupted",
                        f"{b.num_rows} / {a.num_rows} rows, {dup} duplicates, max |difference| "
                        f"{'-' if diff is None else f'{diff:.3g}'}, "
                        f"{'identical' if identical else 'NOT identical'}",
                        identical and dup == 0))  # fmt: skip
    return rows


# --- b. a node killed while training ------------------------------------------------------------


def _checkpoints(cluster: sn.Cluster, prefix: str) -> list[str]:
    """The checkpoints Ray Train has registered under ``prefix`` (its snapshot's list)."""
    keys = sn.s3_keys(cluster.s3, prefix)
    snap = next((k for k in keys if k.endswith("checkpoint_manager_snapshot.json")), None)
    if snap is None:
        return []
    body = sn.s3_client(cluster.s3).get_object(Bucket=sn.BUCKET, Key=snap)["Body"].read()
    folders = {k.split("/")[-2] for k in keys if k.split("/")[-2].startswith("checkpoint")}
    return sorted(f for f in folders if f in body.decode())


def section_train(work: Work) -> list[Row]:
    cluster, ref = work.get_cluster(), work.get_reference()
    client, sub = sn.start_job(cluster.dashboard, work.job("trainkill", memory="per-video"))
    job_id = wait_for("a job id", lambda: client.get_job_info(sub).job_id, client, sub, 120)
    # After epoch 1 is logged: a restart from scratch would log its metrics a second time.
    wait_for("the first epoch's line", lambda: "mnad train: epoch 1/" in client.get_job_logs(sub),
             client, sub, JOB_S)  # fmt: skip
    found = wait_for("a checkpoint in S3", lambda: _checkpoints(cluster, "trainkill/train/"),
                     client, sub, JOB_S)  # fmt: skip
    node = actor_node(cluster, job_id, "RayTrainWorker")
    if node is None:
        raise RuntimeError("no live Ray Train worker on a worker node")
    logs = client.get_job_logs(sub)
    epochs_before = logs.count("mnad train: epoch ")
    left, fresh = work.kill_and_replace(node)
    log(f"train: killed node {node['name']} with {len(found)} checkpoint(s); {fresh} joined")
    done = sn.finish_job(client, sub, JOB_S)
    rows = [
        Row("train", "node killed mid-training (SIGKILL, its tree)",
            f"{node['name']} with {len(found)} checkpoint(s) in S3, {epochs_before} epoch(s) "
            f"done, {left} processes left; {fresh} added",
            bool(found) and epochs_before >= 1 and left == 0),
        Row("train", "job after the kill", f"{done['status']}: " + (
            "completed" if done["status"] == "SUCCEEDED" else _last(done["logs"])),
            done["status"] == "SUCCEEDED"),
    ]  # fmt: skip
    work.figures["train"] = {"checkpoints_at_kill": found, "epochs_before_kill": epochs_before,
                             "left": left, "status": done["status"]}  # fmt: skip
    if done["result"]:
        rows += _check_training(work, "train", done["result"]["train"], ref["train"], EPOCHS)
    return rows


def _check_training(work: Work, section: str, got: dict, ref: dict, epochs: int) -> list[Row]:
    """The MLflow run FINISHED with one loss per epoch; epochs and steps as asked."""
    import mlflow

    client = mlflow.MlflowClient(work.get_cluster().tracking)
    run = client.get_run(got["run_id"])
    steps = sorted(m.step for m in client.get_metric_history(got["run_id"], "loss"))
    done = [int(r["epoch"]) for r in got["epochs"]]
    last = int(got["epochs"][-1]["step"])
    want = int(ref["epochs"][-1]["step"]) * epochs // len(ref["epochs"])
    work.figures[section].update(mlflow_status=run.info.status, loss_steps=steps,
                                 epochs=done, steps=last, steps_expected=want)  # fmt: skip
    return [
        Row(section, "MLflow run status, losses logged (steps)",
            f"{run.info.status}, {steps}",
            run.info.status == "FINISHED" and steps == list(range(1, epochs + 1))),
        Row(section, "epochs completed / asked; steps / expected",
            f"{len(done)} / {epochs}; {last} / {want}",
            done == list(range(1, epochs + 1)) and last == want),
    ]  # fmt: skip


# --- c. the MLflow server stopped during training -------------------------------------------


def section_mlflow(work: Work) -> list[Row]:
    cluster, ref = work.get_cluster(), work.get_reference()
    folder = work.job("mlflowdown", epochs=MLFLOW_EPOCHS, memory="per-video")
    client, sub = sn.start_job(cluster.dashboard, folder)
    wait_for("the first epoch's line", lambda: "mnad train: epoch 1/" in client.get_job_logs(sub),
             client, sub, JOB_S)  # fmt: skip
    services = cluster.services
    services.stop(services.proc("mlflow"))
    log(f"mlflow: server stopped for {MLFLOW_DOWN_S} s")
    time.sleep(MLFLOW_DOWN_S)
    t0 = time.monotonic()
    cluster.restart_mlflow()
    start_s = time.monotonic() - t0
    log(f"mlflow: server started again ({start_s:.0f} s)")
    during = client.get_job_logs(sub).count("mnad train: epoch ")
    done = sn.finish_job(client, sub, JOB_S)
    outcome = "completed in the first submission"
    rows = [Row("mlflow", "server stopped after epoch 1, started again on its port and store",
                f"down {MLFLOW_DOWN_S} s (+{start_s:.0f} s to start again); "
                f"{during} epoch line(s) by then", None)]  # fmt: skip
    work.figures["mlflow"] = {"first_status": done["status"]}
    if done["status"] != "SUCCEEDED":
        outcome = f"first failed ({_last(done['logs'])}); resubmitted"
        work.figures["mlflow"]["first_error"] = _last(done["logs"])
        traceback = "Traceback (most recent call last)" in done["logs"]
        rows.append(Row("mlflow", "the failure is one line (no traceback)",
                        _last(done["logs"]), not traceback))  # fmt: skip
        done = sn.submit(cluster.dashboard, folder, JOB_S)
    rows.append(Row("mlflow", "job outcome", f"{outcome}: {done['status']}",
                    done["status"] == "SUCCEEDED"))  # fmt: skip
    if done["result"]:
        rows += _check_training(work, "mlflow", done["result"]["train"], ref["train"],
                                MLFLOW_EPOCHS)  # fmt: skip
    return rows


# --- d. the object store unreachable at the start -------------------------------------------


def section_store(work: Work) -> list[Row]:
    test = ("tests/test_share_nothing.py::"
            "test_an_unreachable_object_store_fails_in_one_line_naming_it_before_any_work")
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    seconds = time.monotonic() - t0
    work.figures["store"] = {"returncode": run.returncode, "seconds": round(seconds, 1)}
    return [Row("store", "unreachable S3 at the start: one line naming it, no Ray started",
                f"pytest: {_last(run.stdout)} ({seconds:.0f} s)", run.returncode == 0)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable)")  # fmt: skip
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the cluster's logs here at the end")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    why = sn.namespaces_unavailable()
    if why and (args.only or SECTIONS) != ["store"]:
        print(f"fault_cluster: the share-nothing cluster cannot run here: {why}")
        return 1
    rows, seconds, start = [], {}, time.monotonic()
    work = Work(Path(tempfile.mkdtemp(prefix="mnad-faultcl-", dir="/tmp")))
    runners = {"reference": lambda: _reference_rows(work), "score": lambda: section_score(work),
               "train": lambda: section_train(work), "mlflow": lambda: section_mlflow(work),
               "store": lambda: section_store(work)}  # fmt: skip
    try:
        for name in args.only or SECTIONS:
            t0 = time.monotonic()
            try:
                rows += runners[name]()
            except Exception as err:  # one section's failure is its row
                rows.append(Row(name, "section error", f"{type(err).__name__}: {err}"
                                .splitlines()[0], False))  # fmt: skip
            seconds[name] = round(time.monotonic() - t0, 1)
            log(f"{name}: {seconds[name]:.0f} s")
    finally:
        _clean_up(work, args.keep)
    wall = time.monotonic() - start
    print_table(rows)
    failed = [r for r in rows if r.ok is False]
    print(f"\n{len(failed)} check(s) failed; sections "
          + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + f"; wall {wall:.0f} s")
    if args.json:
        doc = {"ok": not failed, "wall_s": round(wall, 1), "section_s": seconds,
               "rows": [r._asdict() for r in rows], "figures": work.figures}  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2, default=str))
    return 1 if failed else 0


def _reference_rows(work: Work) -> list[Row]:
    ref = work.get_reference()
    frames = ", ".join(f"{s['memory']} {s['frames']}" for s in ref["score"])
    return [Row("ref", "uninterrupted job", f"{work.figures['reference_s']:.0f} s; "
                f"{len(ref['train']['epochs'])} epochs; frames scored: {frames}", None)]


def _clean_up(work: Work, keep: Path | None) -> None:
    if work.cluster is not None:
        work.cluster.services.close()
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for path in work.root.glob("*.log"):
            shutil.copy(path, keep / path.name)
    shutil.rmtree(work.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
