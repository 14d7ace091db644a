"""`make bench`: every stage benchmark in one run, printed as one table of figures and ratios.

    .venv/bin/python scripts/bench_all.py [--quick] [--out DIR] [--json PATH] [--paper]
        [--synthetic] [--cpus N] [--stages NAME ...] [--stage-timeout S]

Each stage runs as its own process (this interpreter), and each ratio in the table is
measured side by side within that process's run:

- model (``bench_model.py``): training clips/s of the bare ``small`` model; the vectorised
  memory update against a per-item loop (``--paper`` adds ``paper-pred``: about a minute).
- ingest (``bench_ingest.py throughput``): ``mnad ingest`` against bare ffmpeg decode of the
  same videos at the ``small`` preset's size, median of the runs.
- long (``bench_ingest.py long``): ``mnad ingest`` of one video of an hour (64x64) in
  segments, pinned to 1 core and then 2, against bare ffmpeg decoding it in one pass.
- training (``bench_train.py``): ``run_train`` through Ray Train, 1 worker of ``--cpus``
  threads, against a bare loop with as many threads, on a DATA folder that ``mnad ingest``
  writes first from a few training videos.
- scoring (``bench_score.py``): the streaming scorer against a bare batched forward and
  against the paper's per-frame loop (untrained ``small`` model, test frames).
- archive (``bench_archive.py``): ``mnad ingest`` and ``mnad score`` of a synthetic archive
  of short videos at two sizes ten times apart: the larger's scoring rate and the scoring
  driver's peak memory against the smaller's; and ``mnad ingest`` of one long video.

``--json`` writes, beside the table, a ``ratios`` object: each of ``RATIOS`` as the stage's
script wrote it under ``ratios`` in its JSON (the last command's), from this run; a ratio
that no stage of this run wrote is null, and ``ratio_notes`` says why.

Data: UCSD Ped2 at ``../shared/datasets/ucsd_ped2`` if it is there; otherwise, or with
``--synthetic``, a synthetic set written by ``mnad synth``; the header says which. The sizes
are chosen so that the whole run takes about 10 minutes on 2 cores; ``--quick`` takes the
smallest, as a smoke check. A stage that fails shows its one-line error in the table, the
others still run, and the exit status is 1. ``--out`` keeps each stage's JSON and log and
the DATA folder (default: a temporary folder, removed at the end).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnad.config import get_preset  # noqa: E402

SCRIPTS = ROOT / "scripts"
PED2 = ROOT.parent / "shared" / "datasets" / "ucsd_ped2"
STOPPED = "# bench_all: stopped:"
STAGE_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


@dataclass(frozen=True)
class Sizes:
    """How much each stage measures."""

    model_steps: int  # training steps of the bare model
    ingest_repeat: int  # alternating runs of bare decode and ingest
    ingest_all: bool  # ingest bench on the whole data set (else on the training subset)
    train_videos: int  # training videos in the training bench's DATA
    synth_frames: int  # frames per synthetic video (when Ped2 is absent)
    train_epochs: int  # epoch 1 is a warm-up; the rates are over epochs 2..E
    score_clips: int
    score_rounds: int
    archive_small: int = 200  # short videos of the smaller synthetic archive
    archive_large: int = 2000  # and of the larger, ten times as many
    archive_long_minutes: float = 60.0  # one long video, ingested (0: none)
    long_seconds: int = 3600  # the video of the long stage


FULL = Sizes(
    model_steps=20, ingest_repeat=3, ingest_all=True, train_videos=8, synth_frames=150,
    train_epochs=2, score_clips=300, score_rounds=2,
)  # fmt: skip
QUICK = Sizes(
    model_steps=3, ingest_repeat=1, ingest_all=False, train_videos=1, synth_frames=48,
    train_epochs=2, score_clips=48, score_rounds=1, archive_small=10, archive_large=100,
    archive_long_minutes=2.0, long_seconds=120,
)  # fmt: skip


# --- the table (pure functions of the stages' JSON) -------------------------------------------


class Row(NamedTuple):
    stage: str
    figure: str
    baseline: str = "-"
    ratio: str = "-"
    failed: bool = False


def ratio_text(ratio: float | None, note: str = "") -> str:
    """``1.23x`` (the figure over its baseline: above 1 is faster), ``-`` if there is none."""
    if ratio is None or not math.isfinite(ratio):
        return "-"
    return f"{ratio:.2f}x" + (f" ({note})" if note else "")


def model_rows(f: dict) -> list[Row]:
    rows = [
        Row("model", f"training, {t['preset']}, bare model: {t['clips_per_s']:.1f} clips/s")
        for t in f["train"]
    ]
    for m in f["memory_update"]:
        rows.append(
            Row(
                "model",
                f"memory update, {m['preset']} (N={m['n']}): "
                f"vectorised {m['vectorised_ms']:.3f} ms",
                f"per-item loop: {m['loop_ms']:.3f} ms",
                ratio_text(m["ratio"]),
            )
        )
    return rows


def ingest_rows(f: dict) -> list[Row]:
    size = "x".join(map(str, f["size"])) if f["size"] else "source size"
    ingest = statistics.median([r["ingest_fps"] for r in f["runs"]])
    bare = statistics.median([r["bare_fps"] for r in f["runs"]])
    runs = len(f["runs"])
    return [
        Row(
            "ingest",
            f"mnad ingest, {f['frames']} frames to {size}: {ingest:.0f} frames/s",
            f"bare ffmpeg decode: {bare:.0f} frames/s",
            ratio_text(f["median_ratio"], f"median of {runs} run{'s' * (runs > 1)}"),
        )
    ]


def long_rows(f: dict) -> list[Row]:
    size, ratios = "x".join(map(str, f["size"])), f["ratios"]
    return [
        Row(
            "long",
            f"mnad ingest, one video of {f['long_seconds'] / 60:g} min at {size}, 2 cores: "
            f"{f['seconds_2_cpus']:.1f} s",
            f"1 core: {f['seconds_1_cpu']:.1f} s",
            ratio_text(ratios["ingest_long_2_vs_1_cores"], "target >= 1.5"),
        ),
        Row(
            "long",
            f"the same, 2 cores: {f['frames'] / f['seconds_2_cpus']:.0f} frames/s",
            f"bare ffmpeg, one pass: {f['bare_fps']:.0f} frames/s",
            ratio_text(f["ingest_vs_ffmpeg"], "target >= 0.8"),
        ),
    ]


def train_rows(f: dict) -> list[Row]:
    bare, before, after = f["bare"], f["bare_before"], f["bare_after"]
    rows = []
    for r in f["ray_train"]:
        w, t = r["workers"], f["threads"]
        who = f"Ray Train, {w} worker{'s' * (w > 1)} x {t} thread{'s' * (t > 1)}"
        rows += [
            Row(
                "training",
                f"{who}: {r['wall']:.1f} clips/s",
                f"bare loop: {bare['wall']:.1f} clips/s "
                f"(before {before['wall']:.1f}, after {after['wall']:.1f})",
                ratio_text(r["ratio_wall"]),
            ),
            Row(
                "training",
                f"{who}: {r['cpu']:.1f} clips/CPU-s",
                f"bare loop: {bare['cpu']:.1f} clips/CPU-s",
                ratio_text(r["ratio_cpu"]),
            ),
            Row(
                "training",
                f"{who}, end to end: {r['end_to_end']:.1f} clips/s",
                f"bare loop: {bare['wall']:.1f} clips/s",
                ratio_text(r["ratio_end_to_end"], "Ray start-up, MLflow included"),
            ),
        ]
    return rows


def score_rows(f: dict) -> list[Row]:
    paths = {r["path"]: r for r in f["rows"]}

    def fps(path: str) -> str:
        return f"{paths[path]['fps_median']:.0f} frames/s"

    rows = [
        Row(
            "scoring",
            f"scorer, no update: {fps('scorer no-update')}",
            f"bare batched forward: {fps('bare forward')}",
            ratio_text(paths["scorer no-update"]["x_bare"]),
        )
    ]
    for scorer, label in [("frame", "default"), ("frame", "median"), ("frame", "all"),
                          ("batch", "median")]:  # fmt: skip
        row = paths[f"scorer {scorer} ({label})"]
        updated = "" if row["updated"] is None else f", {row['updated']:.0%} update"
        rows.append(
            Row(
                "scoring",
                f"scorer {scorer}, threshold {label} ({row['threshold']}{updated}): "
                f"{fps(row['path'])}",
                f"paper's per-frame loop: {fps(f'per-frame loop ({label})')}",
                ratio_text(row["x_loop"]),
            )
        )
    if "  bf16 no-update" in paths:  # the scorer under --precision bf16, where measured
        no_update, frame = "  bf16 no-update", "  bf16 (default)"
        rows += [
            Row("scoring", f"scorer, no update, bf16: {fps(no_update)}",
                f"bare batched forward: {fps('bare forward')}",
                ratio_text(paths[no_update]["x_bare"])),
            Row("scoring", f"scorer frame, threshold default, bf16: {fps(frame)}",
                f"paper's per-frame loop: {fps('per-frame loop (default)')}",
                ratio_text(paths[frame]["x_loop"])),
        ]  # fmt: skip
    ratios, key = f.get("ratios", {}), f.get("key_threshold", {})
    if ratios:  # exact per-video lockstep scoring, where measured
        label = key["label"]
        at = f"threshold {label} ({key['updated']:.0%} update), {key['slots']} videos at once"
        exact_key, bf16_key = "score_exact_vs_no_update", "score_bf16_vs_paper_loop"
        rows += [
            Row("scoring", f"lockstep, exact, {at}: {fps(f'lockstep ({label})')}",
                f"the same, no update: {fps('lockstep no-update')}",
                ratio_text(ratios[exact_key], exact_key)),
            Row("scoring", f"lockstep, bf16, {at}: {fps(f'  lockstep bf16 ({label})')}",
                f"paper's per-frame loop: {fps(f'per-frame loop ({label})')}",
                ratio_text(ratios[bf16_key], bf16_key)),
        ]  # fmt: skip
    for c in f["checks"]:
        if "lockstep_decisions_equal" in c:
            same = "equal" if c["lockstep_decisions_equal"] else "DIFFER"
            rows.append(Row("scoring", f"check, lockstep vs each video alone: update decisions "
                            f"{same}, PSNR within {c['max_psnr_diff_db']:.1e} dB"))  # fmt: skip
    exact = [c for c in f["checks"] if "decisions_equal" in c]
    differ = [c["threshold"] for c in exact if not c["decisions_equal"]]
    psnr = max((c["max_psnr_diff_db"] for c in exact), default=0.0)
    check = f"DIFFER at threshold {', '.join(differ)}" if differ else "equal"
    figure = f"check, scorer vs loop: update decisions {check}, PSNR within {psnr:.1e} dB"
    rows.append(Row("scoring", figure))
    for c in f["checks"]:
        if "decisions_agree" in c:
            rows.append(
                Row("scoring", f"check, {c['threshold']}: {c['decisions_agree']:.1%} of decisions "
                    f"as the loop's, PSNR within {c['max_psnr_diff_db']:.1e} dB")
            )  # fmt: skip
    return rows


def archive_rows(f: dict) -> list[Row]:
    small, large = f["sizes"]["small"], f["sizes"]["large"]
    ratios = f["ratios"]
    rows = [
        Row("archive", f"ingest, {s['videos']} short videos: {s['ingest_fps']:.0f} frames/s")
        for s in (small, large)
    ]
    rows += [
        Row(
            "archive",
            f"mnad score, {large['videos']} videos: {large['score_fps']:.0f} frames/s",
            f"{small['videos']} videos: {small['score_fps']:.0f} frames/s",
            ratio_text(ratios["archive_rate_large_vs_small"], "target >= 0.8"),
        ),
        Row(
            "archive",
            f"mnad score, {large['videos']} videos: driver peak {large['driver_peak_mib']:.0f} MiB",
            f"{small['videos']} videos: {small['driver_peak_mib']:.0f} MiB",
            ratio_text(ratios["archive_driver_memory_large_vs_small"], "memory, target <= 1.2"),
        ),
    ]
    long = f.get("long_video")
    if long:
        rows.append(
            Row(
                "archive",
                f"ingest, one video of {long['minutes']:g} min: {long['ingest_fps']:.0f} frames/s",
            )
        )
    return rows


ROWS: dict[str, Callable[[dict], list[Row]]] = {
    "model": model_rows,
    "ingest": ingest_rows,
    "long": long_rows,
    "training": train_rows,
    "scoring": score_rows,
    "archive": archive_rows,
}
NO_DATA = ("model", "long", "archive")
"""Stages that make what they measure themselves: no shared DATA is prepared for them."""

RATIOS = {
    "score_exact_vs_no_update": "scoring",
    "score_bf16_vs_paper_loop": "scoring",
    "train_vs_bare_loop": "training",
    "ingest_vs_ffmpeg": "ingest",
    "ingest_long_2_vs_1_cores": "long",
    "archive_driver_memory_large_vs_small": "archive",
    "archive_rate_large_vs_small": "archive",
}
"""The ratios ``--json`` reports, each with the stage whose script writes it."""
RATIO_FALLBACKS = {"ingest_vs_ffmpeg": "median_ratio"}
"""Ratios a script writes under another name of its own (bench_ingest.py's median)."""


def collect_ratios(results: list[StageResult]) -> tuple[dict[str, float | None], dict[str, str]]:
    """(``RATIOS`` -> the value the stage's script wrote in this run, or None; key -> why it
    is None). A value is taken from the stage's ``ratios`` object (or its
    ``RATIO_FALLBACKS`` figure), never derived here."""
    by_stage = {r.name: r for r in results}
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for key, stage in RATIOS.items():
        result = by_stage.get(stage)
        value, why = None, ""
        if result is None:
            why = f"the {stage} stage was not run"
        elif result.error is not None or result.figures is None:
            why = f"the {stage} stage failed: {result.error}"
        else:
            written = result.figures.get("ratios") or {}
            value = written.get(key, result.figures.get(RATIO_FALLBACKS.get(key, ""), None))
            if value is None and key in written:
                why = f"the {stage} stage wrote {key} as null"
            elif value is None:
                why = f"the {stage} stage's script wrote no ratios.{key}"
        if isinstance(value, int | float) and math.isfinite(value):
            values[key] = float(value)
        else:
            values[key] = None
            notes[key] = why or f"the {stage} stage wrote {key} as {value!r}, not a number"
    return values, notes


class StageResult(NamedTuple):
    name: str
    seconds: float
    figures: dict | None
    error: str | None = None


def table_rows(results: list[StageResult]) -> list[Row]:
    """The table's rows: each stage's figures, or one FAILED row with its error."""
    rows = []
    for result in results:
        if result.error is not None:
            rows.append(Row(result.name, f"FAILED: {result.error}", failed=True))
            continue
        try:
            rows += ROWS[result.name](result.figures)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            message = f"FAILED: figures unreadable ({type(err).__name__}: {err})"
            rows.append(Row(result.name, message, failed=True))
    return rows


def format_table(rows: list[Row]) -> str:
    """Aligned columns; a failed row's error runs past them instead of widening them."""
    head = Row("stage", "figure", "baseline (same run)", "ratio")
    fitted = [head] + [r for r in rows if not r.failed]
    widths = [max(len(r.stage) for r in [head, *rows])]
    widths += [max(len(r[i]) for r in fitted) for i in (1, 2)]
    lines = []
    for r in [head, None, *rows]:
        if r is None:
            lines.append("  ".join("-" * w for w in [*widths, len(head.ratio)]))
        elif r.failed:
            lines.append(f"{r.stage:<{widths[0]}}  {r.figure}")
        else:
            cells = [f"{r[i]:<{widths[i]}}" for i in range(3)] + [r.ratio]
            lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def error_line(log: str) -> str:
    """The line of a stage's output that says why it failed: the exception of the last
    traceback if there is one, else the last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b", line):
            return line[:200]
    return lines[-1][:200] if lines else "no output"


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} m {seconds % 60:02.0f} s"


# --- running the stages ---------------------------------------------------------------------


def run_stage(
    name: str, commands: list[list[str]], json_path: Path, log_path: Path, timeout: float
) -> StageResult:
    """Run ``commands`` in order (each in its own process group, output to ``log_path``);
    the stage's figures are the JSON the last one writes."""
    env = {**os.environ, **STAGE_ENV}
    json_path.unlink(missing_ok=True)  # figures of an earlier run in the same --out
    start = time.perf_counter()
    error = None
    with log_path.open("w") as log:
        for cmd in commands:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                start_new_session=True,
            )  # fmt: skip
            left = timeout - (time.perf_counter() - start)
            label = f"mnad {cmd[3]}" if cmd[1] == "-m" else Path(cmd[1]).name
            t0 = time.perf_counter()
            try:
                proc.wait(timeout=max(left, 1))
            except subprocess.TimeoutExpired:
                error = f"{label}: timed out after {timeout:.0f} s"
                log.write(f"{STOPPED} {error}\n")  # what it prints while stopping comes after
                log.flush()
                _stop(proc)
                break
            except KeyboardInterrupt:  # the stage has its own session: Ctrl-C misses it
                _stop(proc)
                raise
            if proc.returncode != 0:
                error = f"{label}: exit {proc.returncode}: {error_line(log_path.read_text())}"
            log.write(f"# {label}: exit {proc.returncode} after {time.perf_counter() - t0:.1f} s\n")
            log.flush()
            if error:
                break
    seconds = time.perf_counter() - start
    if error is None:
        try:
            return StageResult(name, seconds, json.loads(json_path.read_text()))
        except (OSError, ValueError) as err:
            error = f"no figures: {err}"
    return StageResult(name, seconds, None, error)


def _stop(proc: subprocess.Popen) -> None:
    """End a stage's process group (its Ray too): SIGTERM, then SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


class Data(NamedTuple):
    description: str
    ingest_source: Path  # what the ingest bench reads
    train_source: Path  # what the training bench's DATA is ingested from
    dataset: str
    test_frames: Path  # folders of test frames (jpg) for the scoring bench


def prepare_data(out: Path, sizes: Sizes, ped2: Path, synthetic: bool) -> Data:
    """Ped2 (the first training videos copied for the training DATA) or a synthetic set."""
    if not synthetic and (ped2 / "training" / "frames").is_dir():
        train = out / "ped2-train"
        videos = sorted(p for p in (ped2 / "training" / "frames").iterdir() if p.is_dir())
        for video in videos[: sizes.train_videos]:
            shutil.copytree(video, train / "training" / "frames" / video.name, dirs_exist_ok=True)
        ingest = ped2 if sizes.ingest_all else train
        return Data(
            f"UCSD Ped2 ({ped2}); training DATA from its first {sizes.train_videos} training "
            f"videos; scoring on its test frames; ingest on "
            f"{'all of it' if sizes.ingest_all else 'those training videos'}",
            ingest, train, "ped2", ped2 / "testing" / "frames",
        )  # fmt: skip
    import imageio_ffmpeg

    from pipelines.synth import SynthConfig, synthesize

    synth = out / "synth"
    why = "--synthetic" if synthetic else f"UCSD Ped2 not found at {ped2}"
    config = SynthConfig(
        out=str(synth), size="small", train_videos=sizes.train_videos, test_videos=3,
        frames=sizes.synth_frames, quiet=True,
    )  # fmt: skip
    result = synthesize(config)
    frames = out / "synth-frames" / "testing" / "frames"
    for video in sorted((synth / "testing_videos").glob("*.avi")):
        (frames / video.stem).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(video),
             "-q:v", "2", str(frames / video.stem / "%03d.jpg")],
            check=True,
        )  # fmt: skip
    return Data(
        f"SYNTHETIC ({why}): `mnad synth`, {result.frames} frames in "
        f"{sizes.train_videos} training and 3 test videos of {sizes.synth_frames} frames",
        synth, synth, "synth", frames,
    )  # fmt: skip


def stage_commands(name: str, data: Data, sizes: Sizes, args: argparse.Namespace, out: Path):
    """The commands of one stage; the last one writes ``out/<name>.json``."""
    py, cfg = sys.executable, get_preset("small").model
    size, cpus, json_path = [str(cfg.height), str(cfg.width)], str(args.cpus), out / f"{name}.json"
    if name == "model":
        presets = ["small", "paper-pred"] if args.paper else ["small"]
        steps = [] if args.paper else ["--steps", str(sizes.model_steps)]
        return [[py, str(SCRIPTS / "bench_model.py"), "--presets", *presets, *steps,
                 "--json", str(json_path)]]  # fmt: skip
    if name == "ingest":
        return [[py, str(SCRIPTS / "bench_ingest.py"), "throughput", "--source",
                 str(data.ingest_source), "--size", *size, "--cpus", cpus, "--repeat",
                 str(sizes.ingest_repeat), "--json", str(json_path)]]  # fmt: skip
    if name == "long":
        return [[py, str(SCRIPTS / "bench_ingest.py"), "long", "--long-seconds",
                 str(sizes.long_seconds), "--json", str(json_path)]]  # fmt: skip
    if name == "training":
        train_data = out / "train-data"
        return [
            [py, "-m", "pipelines.cli", "ingest", str(data.train_source), "--out",
             str(train_data), "--size", *size, "--channels", str(cfg.channels), "--dataset",
             data.dataset, "--quiet"],
            [py, str(SCRIPTS / "bench_train.py"), str(train_data), "--preset", "small",
             "--epochs", str(sizes.train_epochs), "--workers", "1", "--threads", cpus,
             "--json", str(json_path)],
        ]  # fmt: skip
    if name == "archive":
        return [[py, str(SCRIPTS / "bench_archive.py"), "--small", str(sizes.archive_small),
                 "--large", str(sizes.archive_large), "--long-minutes",
                 str(sizes.archive_long_minutes), "--json", str(json_path)]]  # fmt: skip
    return [[py, str(SCRIPTS / "bench_score.py"), "--preset", "small", "--frames",
             str(sizes.score_clips), "--rounds", str(sizes.score_rounds), "--threads", cpus,
             "--frames-dir", str(data.test_frames), "--json", str(json_path)]]  # fmt: skip


def json_doc(
    header: list[str], info: dict, sizes: Sizes, wall: float, results: list[StageResult]
) -> dict:
    """What ``--json`` writes: the header, the machine, the sizes, each stage's figures, the
    table's rows and the ``ratios`` (with ``ratio_notes`` for those that are null)."""
    ratios, notes = collect_ratios(results)
    return {
        "header": header, "machine": info, "sizes": asdict(sizes), "wall_s": wall,
        "stages": [r._asdict() for r in results],
        "rows": [r._asdict() for r in table_rows(results)],
        "ratios": ratios, "ratio_notes": notes,
    }  # fmt: skip


def usable_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0] if names else cpu
    except OSError:
        pass
    versions = {}
    for package in ("torch", "ray", "mlflow"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable_cores(),
        "python": platform.python_version(), **versions,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes (a smoke check)")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep each stage's JSON and log and the DATA here")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument("--paper", action="store_true",
                        help="model stage: also paper-pred (about a minute)")  # fmt: skip
    parser.add_argument("--synthetic", action="store_true",
                        help="synthetic data even if UCSD Ped2 is there")  # fmt: skip
    parser.add_argument("--ped2", type=Path, default=PED2, help="the UCSD Ped2 folder")
    parser.add_argument("--cpus", type=int, default=usable_cores(),
                        help="ingest processes, training and scoring threads")  # fmt: skip
    parser.add_argument("--stages", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="run only these stages")  # fmt: skip
    parser.add_argument("--stage-timeout", type=float, default=600, help="seconds per stage")
    parser.add_argument("--archive-timeout", type=float, default=5400,
                        help="seconds for the archive stage")  # fmt: skip
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL

    start, load = time.perf_counter(), os.getloadavg()[0]
    info = machine()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="mnad-bench-"))
    results: list[StageResult] = []
    stages = [name for name in ROWS if name in args.stages]
    data, data_error = None, "data: not needed"
    try:
        try:
            if any(name not in NO_DATA for name in stages):
                data, data_error = prepare_data(out, sizes, args.ped2, args.synthetic), None
        except Exception as err:  # a stage that needs data fails with this line
            data_error = f"data: {type(err).__name__}: {err}"
        print(f"data: {data.description if data else data_error}", flush=True)
        for i, name in enumerate(stages, 1):
            if data is None and name not in NO_DATA:
                results.append(StageResult(name, 0.0, None, data_error))
                continue
            commands = stage_commands(name, data, sizes, args, out)
            print(f"[{i}/{len(stages)}] {name} ...", end=" ", flush=True)
            timeout = args.archive_timeout if name == "archive" else args.stage_timeout
            result = run_stage(name, commands, out / f"{name}.json", out / f"{name}.log", timeout)
            results.append(result)
            print(f"{result.seconds:.0f} s" + (f", FAILED: {result.error}" if result.error else ""))
            if result.error:
                log = (out / f"{name}.log").read_text().partition(STOPPED)[0]
                tail = [line for line in log.splitlines() if line.strip()][-15:]
                print("\n".join(f"    | {line}" for line in tail), flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    wall = time.perf_counter() - start

    rows = table_rows(results)
    header = [
        f"mnad stage benchmarks{' (--quick)' if args.quick else ''}, "
        f"{datetime.datetime.now().isoformat(timespec='seconds')}",
        f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"Python {info['python']}, torch {info['torch']}, ray {info['ray']}, "
        f"mlflow {info['mlflow']}; load average {load:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end",
        f"data: {data.description if data else data_error}",
        "ratio: the figure over its baseline, both measured side by side in this run of the "
        "stage (above 1: faster than the baseline)",
    ]
    times = ", ".join(f"{r.name} {r.seconds:.0f} s" for r in results)
    print()
    print("\n".join(header))
    print()
    print(format_table(rows))
    print()
    print(f"stages: {times}; total wall time {minutes(wall)}")
    if args.json:
        doc = json_doc(header, info, sizes, wall, results)
        args.json.write_text(json.dumps(doc, indent=2))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
