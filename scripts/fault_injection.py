"""Fault injection: corrupt inputs at ingest, a training worker killed, a scoring job killed.

    .venv/bin/python scripts/fault_injection.py [--out DIR] [--json PATH]
        [--only ingest|train|score ...] [--epochs 3] [--memory per-video paper]

Everything runs for real, on this machine: a local Ray of its own (never one that is already
running), videos encoded by the ffmpeg binary of ``imageio-ffmpeg``, an MLflow sqlite store.
Work goes under ``--out`` (default: a temporary folder, removed at the end). Prints one table
and, with ``--json``, writes the figures. Linux only (processes are found through /proc).

Sections, each independent (one that fails gets its one-line error in the table, the others
still run; the exit status is 1 if any check failed):

- ``ingest``: a ShanghaiTech-layout source (training videos as files, test videos as frame
  folders with per-video ``.npy`` labels), built from ``mnad synth`` videos, with good videos
  and one video per kind of bad input: video files that are empty, not a video, cut in the
  middle of a frame, with bytes zeroed inside a frame, with the container header overwritten
  by random bytes, or unreadable (chmod 000; skipped as root, who reads any file); frame
  folders with one frame that is cut short, empty, zeroed inside, not an image or of another
  size; label files that are not NumPy files, of the wrong length or absent. ``mnad ingest``
  runs as a subprocess. Checked: every kind gives a
  ``failed`` manifest row whose error is one line naming the bad file, and the same line on
  stderr; every good video is ingested whole (none lost); nothing of a failed video is left
  in DATA; no Python traceback on stderr; exit status 1. One more input is only reported,
  with what ingest made of it: a video cut exactly after a frame (a valid shorter file,
  which no decoder can tell from a complete one).
- ``train``: the tiny preset of ``tests/test_train.py`` (batch 8) on the ingested training
  videos, 2 Ray Train workers, checkpoints every 10 steps. An unkilled run first, then the
  same config again: once Ray Train has registered a checkpoint of epoch 1 and rank 1 is
  half-way through epoch 2, rank 1's worker process is sent SIGKILL from outside. Checked:
  the failure is recovered from the last checkpoint, the run finishes (MLflow run FINISHED,
  model registered) with every epoch and as many steps as the unkilled run; both are timed.
- ``score``: ``mnad score`` as a subprocess on the ingested test videos with the trained
  checkpoint, in each memory mode: an uninterrupted run; then a run whose process group and
  Ray processes get SIGKILL once its first per-video part file exists, and a rerun into the
  same folder. Checked: the kill left some but not all parts, the rerun resumed those, and
  its frames dataset (``SCORES/frames``) equals the uninterrupted run's (same rows, no
  duplicate frames, max absolute difference of every score column).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import imageio_ffmpeg
import numpy as np

from mnad.config import ModelConfig, OptimConfig, Preset

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("ingest", "train", "score")
TRAIN_VIDEOS, TEST_VIDEOS, FRAMES = 2, 8, 160  # synthetic source: videos and frames each
SIZE = 16  # frames are ingested at SIZE x SIZE grey, the tiny preset's input
TINY = Preset(
    "tiny",
    ModelConfig(height=SIZE, width=SIZE, channels=1, input_frames=4, width_mult=1 / 16),
    OptimConfig(lr=2e-3, batch_size=4, epochs=3, seed=0),
)
CHECKPOINT_EVERY = 10
TRACEBACK = "Traceback (most recent call last)"


class Row(NamedTuple):
    """One line of the table; ``ok`` None: a figure, not a check."""

    section: str
    check: str
    result: str
    ok: bool | None


# --- processes, through /proc ----------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[0] != "Z":
            children.setdefault(st[1], []).append(int(entry.name))
            starts[int(entry.name)] = st[2]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def alive(pid: int, start: int) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs (zombies do not)."""
    st = _stat(pid)
    return st is not None and st[2] == start and st[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill_tree(proc: subprocess.Popen, known: dict[int, int], grace_s: float = 60.0) -> int:
    """SIGKILL the process group of ``proc`` and every process in ``known`` (its descendants
    seen so far: Ray puts its workers in process groups of their own); wait until all are
    gone. Returns how many were still alive after ``grace_s``."""
    known = {**known, **descendants(proc.pid)}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid, start in known.items():
        if alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        left = [pid for pid, start in known.items() if alive(pid, start)]
        if not left:
            return 0
        time.sleep(0.1)
    return len(left)


# --- the source: a ShanghaiTech layout with one video per kind of bad input -----------------


@dataclass(frozen=True)
class Fault:
    """One bad input: the video it is, the file its error must name, what was done.

    ``handled``: the ingest is expected to fail the video; otherwise the input is only
    reported (what the ingest made of it).
    """

    kind: str
    split: str
    video_id: str
    named: str  # path the manifest error must contain
    what: str
    handled: bool = True


@dataclass
class Source:
    root: Path
    good: list[tuple[str, str]]  # (split, video_id), each FRAMES frames
    faults: list[Fault]
    skipped: list[str]  # kinds not injected, and why


def avi_frame_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of the frame chunks in an AVI's ``movi`` list."""
    i = data.index(b"movi") + 4
    chunks = []
    while i + 8 <= len(data) and data[i : i + 4] != b"idx1":
        size = struct.unpack("<I", data[i + 4 : i + 8])[0]
        end = i + 8 + size + (size & 1)
        chunks.append((i, end))
        i = end
    return chunks


def ffmpeg(*args: str) -> None:
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-hide_banner", "-v", "error", "-y", *args], check=True)


def build_source(root: Path) -> Source:
    """Synthetic videos in the ShanghaiTech layout, plus one bad video per kind."""
    from pipelines.ingest.labels import parse_ucsd_m
    from pipelines.synth import SynthConfig, synthesize

    street = root / "synth"
    synthesize(
        SynthConfig(
            out=str(street), size="tiny", train_videos=TRAIN_VIDEOS, test_videos=TEST_VIDEOS,
            frames=FRAMES, quiet=True,
        )
    )  # fmt: skip
    src = root / "source"
    videos, frames_dir = src / "training/videos", src / "testing/frames"
    masks = src / "testing/test_frame_mask"
    for folder in (videos, frames_dir, masks):
        folder.mkdir(parents=True)
    good = []
    for path in sorted((street / "training_videos").glob("*.avi")):
        shutil.copy(path, videos / path.name)
        good.append(("train", path.stem))
    ranges = parse_ucsd_m((street / "synth.m").read_text())
    for path, video_ranges in zip(sorted((street / "testing_videos").glob("*.avi")), ranges,
                                  strict=True):  # fmt: skip
        (frames_dir / path.stem).mkdir()
        ffmpeg("-i", str(path), "-q:v", "3", str(frames_dir / path.stem / "%03d.jpg"))
        labels = np.zeros(FRAMES, np.int8)
        for first, last in video_ranges:
            labels[first - 1 : last] = 1
        np.save(masks / f"{path.stem}.npy", labels)
        good.append(("test", path.stem))

    faults: list[Fault] = []
    skipped: list[str] = []
    avi = (videos / "01.avi").read_bytes()
    chunks = avi_frame_chunks(avi)
    k = len(chunks) // 2  # the frame where the damage goes

    # File names avoid the words that ffmpeg_cause looks for (error, corrupt, missing...).
    def video(kind: str, what: str, data: bytes, handled: bool = True) -> Path:
        path = videos / f"bad_{kind}.avi"
        path.write_bytes(data)
        faults.append(Fault(kind, "train", path.stem, str(path), what, handled))
        return path

    video("video_empty", "zero-byte video file", b"")
    video("video_not_a_video", "text file with a video extension", b"hello, not a video\n")
    mid = (chunks[k][0] + chunks[k][1]) // 2
    video("video_cut_mid_frame", f"video cut in the middle of frame {k + 1}", avi[:mid])
    damaged = bytearray(avi)
    damaged[mid : mid + 256] = bytes(256)
    video("video_bytes_zeroed", f"256 bytes zeroed inside frame {k + 1}", bytes(damaged))
    if os.geteuid() == 0:
        skipped.append("video_unreadable (chmod 000): skipped, running as root")
    else:
        video("video_unreadable", "video file with mode 000", avi).chmod(0)
    header = chunks[0][0]  # everything before the first frame: RIFF, hdrl, movi headers
    noise = random.Random(0).randbytes(header)
    video("video_header_overwritten", f"container header ({header} bytes) overwritten with "
          "random bytes (seed 0)", noise + avi[header:])  # fmt: skip
    # Not detectable as such: a valid shorter file.
    video("video_cut_at_frame_end", f"video cut exactly after frame {k + 1}",
          avi[: chunks[k][1]], handled=False)  # fmt: skip

    good_frames = frames_dir / "01"

    def folder(kind: str, what: str, change: Callable[[Path], Path]) -> None:
        target = frames_dir / f"bad_{kind}"
        shutil.copytree(good_frames, target)
        named = change(target)
        shutil.copy(masks / "01.npy", masks / f"bad_{kind}.npy")  # labels that fit
        faults.append(Fault(kind, "test", target.name, str(named), what))

    def frame(target: Path) -> Path:
        return target / f"{k + 1:03d}.jpg"

    def cut(target: Path) -> Path:
        frame(target).write_bytes(frame(target).read_bytes()[:200])
        return frame(target)

    def zero_inside(target: Path) -> Path:
        data = bytearray(frame(target).read_bytes())
        data[len(data) // 2 : len(data) // 2 + 100] = bytes(100)
        frame(target).write_bytes(bytes(data))
        return frame(target)

    def empty(target: Path) -> Path:
        frame(target).write_bytes(b"")
        return frame(target)

    def text(target: Path) -> Path:
        frame(target).write_text("not an image")
        return frame(target)

    def other_size(target: Path) -> Path:
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24", "-frames:v", "1", str(frame(target)))
        return frame(target)

    folder("frame_cut", f"frame {k + 1} of a folder cut to 200 bytes", cut)
    folder("frame_empty", f"frame {k + 1} of a folder zero bytes", empty)
    folder("frame_bytes_zeroed", f"100 bytes zeroed inside frame {k + 1} of a folder",
           zero_inside)  # fmt: skip
    folder("frame_not_an_image", f"frame {k + 1} of a folder is a text file", text)
    folder("frame_other_size", f"frame {k + 1} of a folder is 24x32, the others 64x64",
           other_size)  # fmt: skip

    def label_file(kind: str, what: str, write: Callable[[Path], None] | None) -> None:
        target = frames_dir / f"bad_{kind}"
        shutil.copytree(good_frames, target)
        mask = masks / f"bad_{kind}.npy"
        if write is not None:
            write(mask)
        named = mask if write is not None else target
        faults.append(Fault(kind, "test", target.name, str(named), what))

    label_file("labels_not_npy", "label file (.npy) that is not a NumPy file",
           lambda p: p.write_text("not numpy"))  # fmt: skip
    label_file("labels_wrong_length", f"label file with {FRAMES - 5} labels for {FRAMES} frames",
           lambda p: np.save(p, np.zeros(FRAMES - 5, np.int8)))  # fmt: skip
    label_file("labels_absent", "no label file for a test video", None)
    return Source(src, good, faults, skipped)


# --- the work folder, shared by the sections -------------------------------------------------


@dataclass
class Work:
    root: Path
    source: Source | None = None
    data: Path | None = None
    ingest_run: subprocess.CompletedProcess | None = None
    checkpoint: str | None = None  # from the train section
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def env(self) -> dict[str, str]:
        """The environment of the `mnad` subprocesses: a local Ray of their own."""
        return {**os.environ, "RAY_ADDRESS": "local"}

    def mnad(self) -> list[str]:
        exe = Path(sys.executable).with_name("mnad")
        return [str(exe)] if exe.is_file() else [sys.executable, "-m", "pipelines.cli"]

    def get_source(self) -> Source:
        if self.source is None:
            log("building the source (mnad synth, ffmpeg, injected faults)")
            self.source = build_source(self.root)
        return self.source

    def get_data(self) -> Path:
        """DATA ingested from the source (the ingest section's, or ingested now)."""
        if self.data is None:
            source = self.get_source()
            data = self.root / "data"
            log(f"mnad ingest {source.root} --out {data}")
            cmd = [*self.mnad(), "ingest", str(source.root), "--out", str(data),
                   "--size", str(SIZE), str(SIZE), "--dataset", "street"]  # fmt: skip
            self.ingest_run = subprocess.run(
                cmd, capture_output=True, text=True, env=self.env(), cwd=ROOT, timeout=1800
            )
            if not (data / "summary.json").is_file():
                raise RuntimeError(f"mnad ingest wrote no summary: {_last_line(self.ingest_run)}")
            self.data = data
        return self.data

    def get_checkpoint(self) -> tuple[str, str]:
        """(checkpoint folder, what it is): the train section's, else an untrained one."""
        if self.checkpoint is not None:
            return self.checkpoint, "trained by the train section"
        from mnad.checkpoint import save_checkpoint
        from mnad.network import build_model

        path = save_checkpoint(self.root / "untrained", build_model(TINY.model, seed=0), TINY)
        return str(path), "untrained, seed 0 (the train section did not run)"


def log(message: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {message}", flush=True)


def _last_line(run: subprocess.CompletedProcess) -> str:
    lines = (run.stderr or "").strip().splitlines() or (run.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {run.returncode}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --- 1. corrupt inputs -------------------------------------------------------------------------


def section_ingest(work: Work) -> list[Row]:
    from pipelines.data import read_manifest

    source = work.get_source()
    data = work.get_data()
    run = work.ingest_run
    assert run is not None
    manifest = read_manifest(str(data))
    if manifest is None:
        raise RuntimeError(f"no manifest in {data}")
    rows = {(r["split"], r["video_id"]): r for r in manifest.to_pylist()}
    console = [line for line in run.stderr.splitlines() if line.startswith("mnad ingest: ")]
    out: list[Row] = []
    kinds = [f for f in source.faults if f.handled]
    reported = [f for f in source.faults if not f.handled]
    per_kind: dict[str, dict[str, Any]] = {}
    for fault in kinds:
        row = rows.get((fault.split, fault.video_id), {})
        error = row.get("error") or ""
        ok = (
            row.get("status") == "failed"
            and "\n" not in error
            and fault.named in error
            and f"mnad ingest: {error}" in console
        )
        per_kind[fault.kind] = {"what": fault.what, "status": row.get("status"),
                                "error": error, "ok": ok}  # fmt: skip
        result = f"failed alone: {_short(_cause(error, fault.named))}" if ok else (
            f"NOT as expected: {row.get('status')}, {_short(error)}"
        )  # fmt: skip
        out.append(Row("ingest", fault.what, result, ok))
    for note in source.skipped:
        out.append(Row("ingest", note.split(":")[0], note.split(": ", 1)[1], None))
    for fault in reported:
        row = rows.get((fault.split, fault.video_id), {})
        per_kind[fault.kind] = {"what": fault.what, "status": row.get("status"),
                                "frames": row.get("frames"), "error": row.get("error")}  # fmt: skip
        result = (
            f"not detected: ingested with {row['frames']} of {FRAMES} frames"
            if row.get("status") == "ok"
            else f"{row.get('status')}: {_short(_cause(row.get('error') or '', fault.named))}"
        )
        out.append(Row("ingest", fault.what, result, None))
    detected = sum(v["ok"] for v in per_kind.values() if "ok" in v)
    good_ok = [
        key for key in source.good
        if rows.get(key, {}).get("status") == "ok" and rows[key]["frames"] == FRAMES
    ]  # fmt: skip
    ingested = [*source.good]
    ingested += [(f.split, f.video_id) for f in reported if per_kind[f.kind]["status"] == "ok"]
    expected_files = {f"{split}/{video_id}.parquet" for split, video_id in ingested}
    files = {f"{p.parent.name}/{p.name}" for s in ("train", "test") for p in (data / s).iterdir()}
    traceback = TRACEBACK in run.stderr
    out += [
        Row("ingest", "kinds injected / failed alone, one-line error naming the file",
            f"{len(kinds)} / {detected}",
            detected == len(kinds)),
        Row("ingest", "good videos ingested whole / given", f"{len(good_ok)} / "
            f"{len(source.good)}" + (" (none lost)" if len(good_ok) == len(source.good) else ""),
            len(good_ok) == len(source.good)),
        Row("ingest", "files of failed videos left in DATA (shards or temporary)",
            str(len(files - expected_files)), files == expected_files),
        Row("ingest", "Python traceback on stderr", _yes(traceback), not traceback),
        Row("ingest", "exit status (1: some input failed)", str(run.returncode),
            run.returncode == 1),
    ]  # fmt: skip
    work.figures["ingest"] = {
        "kinds_injected": len(kinds),
        "kinds_failed_alone": detected,
        "kinds_skipped": source.skipped,
        "good_given": len(source.good),
        "good_ingested": len(good_ok),
        "stray_files": sorted(files - expected_files),
        "traceback_on_stderr": traceback,
        "exit_status": run.returncode,
        "kinds": per_kind,
    }
    return out


def _cause(error: str, named: str) -> str:
    """The cause of a manifest error, without the paths in front of it."""
    cause = error.split(f"{named}: ", 1)[-1]
    while cause.startswith("/") and ": " in cause:  # the label folder of an absent file
        cause = cause.split(": ", 1)[1]
    return cause


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --- 2. a training worker killed ---------------------------------------------------------------


@dataclass(frozen=True)
class PidProbe:
    """Records each rank's process id and starting point, and its last step, in ``folder``."""

    folder: str

    def on_start(self, rank: int, epoch: int, step: int) -> None:
        with open(f"{self.folder}/starts-{rank}.jsonl", "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "epoch": epoch, "step": step}) + "\n")

    def on_step(self, rank: int, step: int, record: Any) -> None:
        Path(f"{self.folder}/step-{rank}").write_text(str(step))

    def starts(self, rank: int) -> list[dict[str, int]]:
        path = Path(self.folder, f"starts-{rank}.jsonl")
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def step(self, rank: int) -> int:
        try:
            return int(Path(self.folder, f"step-{rank}").read_text())
        except (OSError, ValueError):
            return 0


def _killer(
    probe: PidProbe, run_dir: Path, per_epoch: int, done: threading.Event, out: dict[str, Any]
) -> None:
    """Once Ray Train has registered a checkpoint of epoch 1 and rank 1 is half-way through
    epoch 2, SIGKILL rank 1's worker process."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while not done.wait(0.05):
        starts = probe.starts(1)
        if not starts or probe.step(1) < per_epoch + per_epoch // 2:
            continue
        if not (snapshot.is_file() and "checkpoint-e0001-" in snapshot.read_text()):
            continue
        step = probe.step(1)
        pid = starts[0]["pid"]
        title = cmdline(pid)
        if "RayTrainWorker" not in title:
            out["error"] = f"rank 1's process {pid} is not a Ray Train worker: {title[:60]!r}"
            return
        os.kill(pid, signal.SIGKILL)
        out.update(pid=pid, step=step, at=time.monotonic())
        return


def section_train(work: Work, epochs: int) -> list[Row]:
    import mlflow
    import ray

    from mnad.checkpoint import load_checkpoint
    from pipelines.tracking import check_tracking
    from pipelines.train import TrainConfig, run_train

    data = work.get_data()
    preset = work.root / "tiny.json"
    preset.write_text(TINY.to_json())
    check_tracking(work.tracking_uri)  # creates the store: neither timed run pays for it
    log("ray.init (local) for the train section")
    ray.init(
        address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
        log_to_driver=False, object_store_memory=512 * 1024**2,
    )  # fmt: skip
    try:
        results = {}
        for name in ("unkilled", "killed"):
            folder = work.root / f"probe-{name}"
            folder.mkdir()
            probe = PidProbe(str(folder))
            config = TrainConfig(
                data=str(data), preset=str(preset), epochs=epochs, batch_size=8, workers=2,
                output=str(work.root / "runs"), tracking_uri=work.tracking_uri, name=name,
                checkpoint_every=CHECKPOINT_EVERY, max_failures=2, shuffle_buffer=16,
                quiet=True, probe=probe,
            )  # fmt: skip
            done, kill = threading.Event(), {}
            killer = None
            if name == "killed":
                run_dir = work.root / "runs" / "train" / name
                per_epoch = int(results["unkilled"][0].epochs[0]["step"])
                killer = threading.Thread(
                    target=_killer, args=(probe, run_dir, per_epoch, done, kill)
                )
                killer.start()
            log(f"mnad train ({name}): {epochs} epochs, 2 workers")
            load, t0 = os.getloadavg()[0], time.monotonic()
            try:
                result = run_train(config)
            finally:
                done.set()
                if killer is not None:
                    killer.join()
            results[name] = (result, time.monotonic() - t0, probe, kill, load)
    finally:
        ray.shutdown()

    clean, clean_s, _, _, clean_load = results["unkilled"]
    result, seconds, probe, kill, load = results["killed"]
    work.checkpoint = result.checkpoint
    if "error" in kill:
        raise RuntimeError(kill["error"])
    if "pid" not in kill:
        raise RuntimeError("the run ended before the worker could be killed")
    starts = probe.starts(0)
    resumed = starts[1] if len(starts) > 1 else None
    final = load_checkpoint(result.checkpoint)
    run = mlflow.MlflowClient(work.tracking_uri).get_run(result.run_id)
    per_epoch = int(clean.epochs[0]["step"])
    killed_epoch = (kill["step"] - 1) // per_epoch + 1
    epochs_done = [int(r["epoch"]) for r in result.epochs]
    steps, clean_steps = int(result.epochs[-1]["step"]), int(clean.epochs[-1]["step"])
    resumed_text = "did not restart"
    if resumed is not None:
        redone = kill["step"] - resumed["step"]
        resumed_text = (
            f"in epoch {resumed['epoch'] + 1} from step {resumed['step']} ({redone} steps redone)"
        )
    work.figures["train"] = {
        "epochs_asked": epochs,
        "steps_per_epoch": per_epoch,
        "killed_pid": kill["pid"],
        "killed_at_step": kill["step"],
        "killed_in_epoch": killed_epoch,
        "failures_recovered": len(starts) - 1,
        "resumed_from": resumed,
        "epochs_completed": epochs_done,
        "final_checkpoint": {"epoch": final.epoch, "step": final.step},
        "steps": steps,
        "steps_unkilled": clean_steps,
        "mlflow_status": run.info.status,
        "model_version": result.model_version,
        "wall_s": round(seconds, 1),
        "wall_unkilled_s": round(clean_s, 1),
        "load_average_at_start": round(load, 1),
        "load_average_at_start_unkilled": round(clean_load, 1),
    }
    return [
        Row("train", "worker killed (SIGKILL from outside)", f"rank 1, pid {kill['pid']}, at step "
            f"{kill['step']} (epoch {killed_epoch} of {epochs}, {per_epoch} steps an epoch)",
            None),
        Row("train", "failures recovered", str(len(starts) - 1), len(starts) == 2),
        Row("train", "resumed from the last checkpoint", resumed_text,
            resumed is not None and per_epoch <= resumed["step"] <= kill["step"]),
        Row("train", "run finished: MLflow status, model registered",
            f"{run.info.status}, {result.model_uri}",
            run.info.status == "FINISHED" and bool(result.model_version)),
        Row("train", "epochs completed / asked", f"{len(epochs_done)} / {epochs}",
            epochs_done == list(range(1, epochs + 1)) and final.epoch == epochs),
        Row("train", "steps, killed run / unkilled run", f"{steps} / {clean_steps}",
            steps == clean_steps == final.step),
        Row("train", "wall time, killed run / unkilled run (run first)",
            f"{seconds:.0f} s / {clean_s:.0f} s ({seconds / clean_s:.2f}x; load average "
            f"{load:.0f} / {clean_load:.0f} at their starts)", None),
    ]  # fmt: skip


# --- 3. a scoring job killed and rerun ---------------------------------------------------------


def score_command(work: Work, data: Path, checkpoint: str, out: Path, memory: str) -> list[str]:
    return [*work.mnad(), "score", str(data), "--model", checkpoint, "--out", str(out),
            "--memory", memory, "--tracking-uri", work.tracking_uri, "--no-report"]  # fmt: skip


def run_score_cli(work: Work, cmd: list[str]) -> subprocess.CompletedProcess:
    run = subprocess.run(cmd, capture_output=True, text=True, env=work.env(), cwd=ROOT,
                         timeout=1800)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"mnad score exited {run.returncode}: {_last_line(run)}")
    return run


def kill_after_first_part(work: Work, cmd: list[str], parts: Path) -> tuple[int, int, float]:
    """Run ``cmd``; SIGKILL all of it once a part file exists. (parts then, processes left
    after the kill, seconds from start to kill)."""
    log_file = parts.parent.with_name(parts.parent.name + "-killed.log")
    with open(log_file, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=work.env(),
                                cwd=ROOT, start_new_session=True)  # fmt: skip
    t0 = time.monotonic()
    seen: dict[int, int] = {}
    try:
        while not (parts.is_dir() and any(parts.glob("*.parquet"))):
            if proc.poll() is not None:
                raise RuntimeError(f"mnad score ended (status {proc.returncode}) before its "
                                   f"first part; see {log_file}")  # fmt: skip
            if time.monotonic() - t0 > 1800:
                raise RuntimeError("no part file after 30 minutes")
            seen.update(descendants(proc.pid))
            time.sleep(0.02)
    finally:
        killed_at = time.monotonic() - t0
        left = kill_tree(proc, seen)
    return len(list(parts.glob("*.parquet"))), left, killed_at


def compare_frames(a_path: Path, b_path: Path) -> dict[str, Any]:
    """Two SCORES folders' frames datasets, row by row."""
    from pipelines.score import read_frames

    a, b = read_frames(str(a_path)), read_frames(str(b_path))
    keys = list(zip(b["video_id"].to_pylist(), b["frame_index"].to_pylist(), strict=True))
    same_keys = a.num_rows == b.num_rows and all(
        a[c].equals(b[c]) for c in ("video_id", "frame_index", "label", "memory_updated")
    )
    diff = 0.0
    if same_keys:
        for c in ("psnr", "feature_distance", "point_score", "score"):
            diff = max(diff, float(np.max(np.abs(a[c].to_numpy() - b[c].to_numpy()), initial=0)))
    return {
        "rows": b.num_rows,
        "rows_uninterrupted": a.num_rows,
        "duplicates": len(keys) - len(set(keys)),
        "same_frames": same_keys,
        "max_abs_diff": diff if same_keys else None,
        "identical": a.equals(b),
    }


def section_score(work: Work, modes: list[str]) -> list[Row]:
    data = work.get_data()
    checkpoint, what = work.get_checkpoint()
    total = len(list((data / "test").glob("*.parquet")))
    out: list[Row] = [Row("score", "model", what, None)]
    work.figures["score"] = {"model": what, "videos": total}
    for memory in modes:
        ref, again = work.root / f"scores-{memory}", work.root / f"scores-{memory}-rerun"
        log(f"mnad score --memory {memory}: uninterrupted")
        t0 = time.monotonic()
        run_score_cli(work, score_command(work, data, checkpoint, ref, memory))
        ref_s = time.monotonic() - t0
        log(f"mnad score --memory {memory}: killed after its first part, then rerun")
        cmd = score_command(work, data, checkpoint, again, memory)
        parts, left, killed_at = kill_after_first_part(work, cmd, again / "frames")
        t0 = time.monotonic()
        rerun = run_score_cli(work, cmd)
        rerun_s = time.monotonic() - t0
        resumed = sum(": resumed (" in line for line in rerun.stdout.splitlines())
        cmp = compare_frames(ref, again)
        work.figures["score"][memory] = {
            "parts_at_kill": parts, "killed_after_s": round(killed_at, 1),
            "processes_left_after_kill": left, "videos_resumed_by_rerun": resumed,
            "wall_uninterrupted_s": round(ref_s, 1), "wall_rerun_s": round(rerun_s, 1), **cmp,
        }  # fmt: skip
        diff = "-" if cmp["max_abs_diff"] is None else f"{cmp['max_abs_diff']:.3g}"
        out += [
            Row("score", f"{memory}: killed (SIGKILL, process group and Ray workers)",
                f"{parts} of {total} parts written, {left} processes left after the kill",
                0 < parts < total and left == 0),
            Row("score", f"{memory}: rerun resumed the scored videos",
                f"{resumed} of {parts}", resumed == parts),
            Row("score", f"{memory}: rerun vs uninterrupted frames",
                f"{cmp['rows']} / {cmp['rows_uninterrupted']} rows, {cmp['duplicates']} "
                f"duplicates, max |difference| {diff}, "
                f"{'identical' if cmp['identical'] else 'NOT identical'}",
                cmp["identical"] and cmp["duplicates"] == 0),
        ]  # fmt: skip
    return out


# --- main --------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    width = max(len(r.check) for r in rows)
    print(f"\n{'section':<7}  {'check':<{width}}  {'pass':<4}  result")
    for r in rows:
        mark = "-" if r.ok is None else _yes(r.ok)
        print(f"{r.section:<7}  {r.check:<{width}}  {mark:<4}  {r.result}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder, kept (default: a temporary one, removed)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (>= 3)")
    parser.add_argument("--memory", nargs="+", choices=("per-video", "paper"),
                        default=["per-video", "paper"], help="scoring memory modes")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # A loaded machine starts Ray workers slowly; a start-up timeout is not the fault tested.
    os.environ.setdefault("RAY_worker_register_timeout_seconds", "300")
    if args.epochs < 3:
        parser.error("--epochs must be >= 3: the kill lands in epoch 2")

    sections = args.only or list(SECTIONS)
    temp = None
    if args.out is None:
        temp = tempfile.mkdtemp(prefix="mnad-faults-")
        root = Path(temp)
    else:
        root = args.out.resolve()
        if root.exists() and any(root.iterdir()):
            parser.error(f"--out {root} is not empty")
        root.mkdir(parents=True, exist_ok=True)
    work = Work(root)
    runners: dict[str, Callable[[], list[Row]]] = {
        "ingest": lambda: section_ingest(work),
        "train": lambda: section_train(work, args.epochs),
        "score": lambda: section_score(work, args.memory),
    }
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    start = time.monotonic()
    try:
        for name in SECTIONS:
            if name not in sections:
                continue
            t0 = time.monotonic()
            try:
                rows += runners[name]()
            except Exception as err:  # one section's failure is its row
                message = f"{type(err).__name__}: {err}".splitlines()[0]
                errors[name] = message
                rows.append(Row(name, "section error", message, False))
            seconds[name] = time.monotonic() - t0
            log(f"{name}: {seconds[name]:.0f} s")
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    wall = time.monotonic() - start

    print_table(rows)
    failed = [r for r in rows if r.ok is False]
    print(f"\n{len(failed)} check(s) failed; sections "
          + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
          + f"; wall {wall:.0f} s")  # fmt: skip
    if args.json:
        doc = {
            "ok": not failed,
            "wall_s": round(wall, 1),
            "section_s": {k: round(v, 1) for k, v in seconds.items()},
            "errors": errors,
            "rows": [r._asdict() for r in rows],
            "figures": work.figures,
            "machine": {
                "cpus": os.cpu_count(),
                "load_average": list(os.getloadavg()),
                "root": os.geteuid() == 0,
            },  # fmt: skip
        }
        args.json.write_text(json.dumps(doc, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
