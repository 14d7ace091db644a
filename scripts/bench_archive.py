"""Benchmark `mnad ingest` and `mnad score` on a synthetic archive at two sizes ten times
apart: does the scoring driver's memory, and the rate, hold as the archive grows?

    .venv/bin/python scripts/bench_archive.py [--small 200] [--large 2000] [--frames 32]
        [--base-videos 20] [--long-minutes 60] [--size 32] [--work DIR] [--json PATH]

The archive is short videos of ``mnad synth`` (real Motion-JPEG AVI files; ``--base-videos``
distinct ones, hard-linked under as many names as each size needs) in the ``videos``
layout, an unlabelled archive as a user holds it. Each size is ingested (``mnad ingest``,
frames of ``--size`` pixels, grey) and scored (``mnad score``) by its own process, the normal
CLI path, with a small untrained model calibrated once (``mnad calibrate`` on three videos of
the small archive), so that the job finds events, ranks them and renders the report's
pictures as a calibrated job does.

Measured per size:

- ingest frames/s: frames over the ``mnad ingest`` process's wall time;
- scoring frames/s: frames over the time from the first video scored to the job's last
  line (the actors, the driver's pass over the frames dataset, events, the report with its
  pictures, the MLflow run; Ray's and the actors' start-up before it, and Ray's shutdown
  after, are the same at every size and not counted), and the actors' own rate from
  summary.json;
- the driver's peak memory: VmHWM of the `mnad score` process itself (read from
  /proc/self/status when its work is done; the Ray workers are other processes, not
  counted).

And the ratios ``archive_driver_memory_large_vs_small`` (target at most 1.2: the driver
does not hold the archive) and ``archive_rate_large_vs_small`` (target at least 0.8), both
from this run. With ``--long-minutes`` > 0, one video that long (a synthetic video looped by
ffmpeg without re-encoding, 25 frames/s) is ingested by ``mnad ingest`` too, and its frames/s
printed. Figures are noisy on a shared machine; the ratios are what travels.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
FIRST_DONE = re.compile(r"^mnad score: \[1/\d+\] ")
"""The line `mnad score` prints when the actors have scored the first video."""
DONE = re.compile(r"^mnad score: \d+ frames of \d+ videos; ")
"""Its last line: scores, events, report and MLflow run written."""
FPS = 25


@dataclass(frozen=True)
class SizeFigures:
    """One archive size's figures."""

    videos: int
    frames: int  # ingested
    scored: int  # scored (the first clip_length - 1 frames of a video have no score)
    ingest_s: float
    ingest_fps: float
    score_s: float  # from the first video scored to the job's last line
    score_fps: float
    actors_fps: float  # summary.json's frames_per_s: the actors alone
    driver_peak_mib: float  # VmHWM of the mnad score process
    events: int


# --- the driver's own peak memory ------------------------------------------------------------


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB; ru_maxrss where /proc is absent."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured_main(peak_file: str, argv: list[str]) -> int:
    """Run ``mnad ARGV`` in this process, then write its peak memory to ``peak_file``."""
    from pipelines.cli import main

    try:
        return main(argv)
    finally:
        Path(peak_file).write_text(json.dumps({"peak_mib": peak_mib()}))


# --- the archive -----------------------------------------------------------------------------


def run(cmd: list[str], log: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run ``cmd`` (output to ``log``); its wall time and its lines with their times since
    the start. A failure ends the benchmark with the command's last lines."""
    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, **ENV},
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            out.write(line)
        proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-15:])
        raise SystemExit(f"{' '.join(cmd[:4])}...: exit {proc.returncode}\n{tail}")
    return wall, lines


def mnad(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def base_videos(work: Path, count: int, frames: int) -> list[Path]:
    """``count`` distinct synthetic test videos of ``frames`` frames."""
    from pipelines.synth import SynthConfig, synthesize

    out = work / "synth"
    synthesize(SynthConfig(out=str(out), size="tiny", train_videos=1, test_videos=count,
                           frames=frames, quiet=True))  # fmt: skip
    return sorted((out / "testing_videos").glob("*.avi"))


def archive_source(work: Path, name: str, base: list[Path], videos: int) -> Path:
    """A ``videos``-layout folder of ``videos`` files, hard links to the base videos in
    turn (a copy where links are refused)."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(videos):
        dest = folder / f"v{i:05d}.avi"
        try:
            os.link(base[i % len(base)], dest)
        except OSError:
            shutil.copyfile(base[i % len(base)], dest)
    return folder


def data_frames(data: Path) -> int:
    """Frames ingested into DATA, from its summary."""
    summary = json.loads((data / "summary.json").read_text())
    return int(sum(s["frames"] for s in summary["splits"].values()))


def ingest(source: Path, data: Path, size: int, log: Path) -> tuple[int, float]:
    """(frames, wall seconds) of `mnad ingest` of ``source`` into ``data``."""
    wall, _ = run(mnad("ingest", str(source), "--out", str(data), "--layout", "videos",
                       "--size", str(size), str(size), "--channels", "1", "--dataset",
                       "archive", "--quiet"), log)  # fmt: skip
    return data_frames(data), wall


def make_model(work: Path, size: int) -> Path:
    """A small untrained checkpoint for ``size`` x ``size`` grey frames."""
    from mnad.checkpoint import save_checkpoint
    from mnad.config import ModelConfig, OptimConfig, Preset
    from mnad.network import build_model

    cfg = ModelConfig(height=size, width=size, channels=1, width_mult=1 / 16, memory_size=4)
    preset = Preset("archive-bench", cfg, OptimConfig())
    return save_checkpoint(work / "model", build_model(cfg, seed=0).eval(), preset)


def score_size(
    work: Path, name: str, data: Path, model: Path, uri: str, log: Path
) -> tuple[float, float, dict]:
    """(seconds from the first video scored to the last line, the driver's peak MiB,
    summary.json) of one `mnad score` process."""
    out, peak = work / f"scores-{name}", work / f"peak-{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--driver-peak", str(peak), "--",
           "score", str(data), "--model", str(model), "--out", str(out), "--tracking-uri",
           uri, "--experiment", "archive-bench"]  # fmt: skip
    wall, lines = run(cmd, log)
    first = next((t for t, line in lines if FIRST_DONE.match(line)), 0.0)
    done = next((t for t, line in lines if DONE.match(line)), wall)
    summary = json.loads((out / "summary.json").read_text())
    return done - first, json.loads(peak.read_text())["peak_mib"], summary


def measure_size(
    work: Path, name: str, videos: int, base: list[Path], args: argparse.Namespace,
    model: Path | None, uri: str, log: Path,
) -> tuple[SizeFigures, Path, Path]:  # fmt: skip
    """Ingest and score one archive size; its figures, DATA and model."""
    source = archive_source(work, f"source-{name}", base, videos)
    data = work / f"data-{name}"
    frames, ingest_s = ingest(source, data, args.size, log)
    if model is None:  # calibrated once, on three videos of the first archive
        model = make_model(work, args.size)
        run(mnad("calibrate", str(model), str(data), "--split", "test", "--videos",
                 "v00000", "v00001", "v00002", "--out", str(work / "calibration"),
                 "--tracking-uri", uri, "--quiet"), log)  # fmt: skip
    score_s, peak, summary = score_size(work, name, data, model, uri, log)
    figures = SizeFigures(
        videos=videos, frames=frames, scored=int(summary["frames"]), ingest_s=round(ingest_s, 2),
        ingest_fps=frames / ingest_s, score_s=round(score_s, 2),
        score_fps=summary["frames"] / score_s if score_s else 0.0,
        actors_fps=float(summary["metrics"].get("frames_per_s", 0.0)),
        driver_peak_mib=round(peak, 1), events=int(summary["metrics"].get("events", 0)),
    )  # fmt: skip
    return figures, data, model


def long_video(work: Path, minutes: float, size: int, log: Path) -> dict:
    """Ingest one video of ``minutes`` (a synthetic video looped by ffmpeg, stream copy)."""
    import imageio_ffmpeg

    from pipelines.synth import SynthConfig, synthesize

    clip = 600  # frames of the looped video: 24 s
    out = work / "synth-long"
    synthesize(SynthConfig(out=str(out), size="tiny", train_videos=1, test_videos=1,
                           frames=clip, quiet=True))  # fmt: skip
    loops = max(1, round(minutes * 60 * FPS / clip))
    source = work / "source-long"
    source.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-stream_loop",
         str(loops - 1), "-i", str(out / "testing_videos" / "01.avi"), "-c", "copy",
         str(source / "long.avi")],
        check=True,
    )  # fmt: skip
    frames, wall = ingest(source, work / "data-long", size, log)
    return {"minutes": round(frames / FPS / 60, 1), "frames": frames,
            "ingest_s": round(wall, 2), "ingest_fps": frames / wall}  # fmt: skip


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def main() -> int:
    if "--driver-peak" in sys.argv:  # the measured `mnad score` process
        at = sys.argv.index("--driver-peak")
        return measured_main(sys.argv[at + 1], sys.argv[sys.argv.index("--") + 1 :])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=200, help="videos of the small archive")
    parser.add_argument("--large", type=int, default=2000, help="videos of the large archive")
    parser.add_argument("--frames", type=int, default=32, help="frames per video (24..)")
    parser.add_argument("--base-videos", type=int, default=20, help="distinct synthetic videos")
    parser.add_argument("--size", type=int, default=32, help="frame height and width ingested")
    parser.add_argument("--long-minutes", type=float, default=60.0,
                        help="one video this long, ingested (0: none)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="keep everything here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if not 3 <= args.small < args.large:
        parser.error("--small must be at least 3 and below --large")

    work = args.work or Path(tempfile.mkdtemp(prefix="mnad-bench-archive-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench_archive.log"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    try:
        base = base_videos(work, min(args.base_videos, args.small), args.frames)
        small, _, model = measure_size(work, "small", args.small, base, args, None, uri, log)
        large, _, _ = measure_size(work, "large", args.large, base, args, model, uri, log)
        long = long_video(work, args.long_minutes, args.size, log) if args.long_minutes else None
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    ratios = {
        "archive_driver_memory_large_vs_small": ratio(large.driver_peak_mib, small.driver_peak_mib),
        "archive_rate_large_vs_small": ratio(large.score_fps, small.score_fps),
    }
    for s in (small, large):
        print(f"{s.videos} videos, {s.frames} frames ({s.scored} scored): ingest "
              f"{s.ingest_fps:.0f} frames/s; score {s.score_fps:.0f} frames/s ({s.score_s:.1f} s "
              f"from the first video to the end; actors {s.actors_fps:.0f} frames/s), "
              f"{s.events} events; driver peak {s.driver_peak_mib:.0f} MiB")  # fmt: skip
    if long:
        print(f"one video of {long['minutes']} min ({long['frames']} frames): ingest "
              f"{long['ingest_fps']:.0f} frames/s")  # fmt: skip
    mem, rate = ratios.values()
    print(f"archive_driver_memory_large_vs_small {mem:.2f} (target <= 1.2)")
    print(f"archive_rate_large_vs_small {rate:.2f} (target >= 0.8)")
    if args.json:
        args.json.write_text(json.dumps({
            "sizes": {"small": asdict(small), "large": asdict(large)}, "long_video": long,
            "frames_per_video": args.frames, "frame_size": args.size, "ratios": ratios,
        }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
