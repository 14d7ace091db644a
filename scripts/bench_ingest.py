"""Benchmark `mnad ingest` against bare ffmpeg decoding, and its peak memory.

    python scripts/bench_ingest.py throughput [--source DIR] [--size H W] [--cpus N] [--repeat N]
    python scripts/bench_ingest.py memory [--frames-per-video N] [--videos N]
    python scripts/bench_ingest.py long [--long-seconds S] [--segment-seconds S]

Either mode takes ``--json PATH`` to also write the figures it prints to PATH.

``throughput`` decodes the same videos at the same size in one run, on the same cores,
alternately: bare (the same ffmpeg command that ingest runs, N processes in parallel, frames
read from the pipe and dropped), then as the Ray Data ingest job (hash, decode, labels,
Parquet shards, manifest, Ray Data scheduling); it prints both rates and their ratio per run,
and the median ratio. Without ``--source`` it synthesizes a source of long videos first.

``long`` encodes one long video (default an hour of 64x64 at 10 fps, 36 000 frames of
``testsrc2`` in h264, ``--long-size`` for another size; cached in the temporary folder
between runs) and ingests it on 1 core, then on 2 (the process and the Ray it starts pinned
to them, Ray given as many CPUs; workers started by a short ingest first, not timed): the
video is cut into segments decoded in parallel. It prints ``ingest_long_2_vs_1_cores``
(the 1-core time over the 2-core time) and ``ingest_vs_ffmpeg`` (the 2-core ingest rate
over bare ffmpeg decoding the same file in one pass with 2 threads), and checks that both
ingests hold every frame.

``throughput`` prints its median ratio as ``ingest_vs_ffmpeg`` too; ``--json`` writes the
figures under the same keys.

``memory`` synthesizes a source of long videos (20 000+ frames in all) and samples, every
0.1 s while ingest runs, the resident memory of the driver, the Ray workers and their ffmpeg
children; it prints the peaks. Memory is bounded if the peak does not grow with the frames.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio_ffmpeg
import ray

from pipelines.ingest import IngestConfig, run_ingest
from pipelines.ingest.decode import DecodeSettings, FrameReader
from pipelines.ingest.layouts import VideoSource, discover
from pipelines.synth import SynthConfig, synthesize


def bare_decode(video: VideoSource, spec: DecodeSettings, chunk_bytes: int) -> int:
    """Frames of one video decoded by ffmpeg and read from its pipe, nothing else done."""
    with FrameReader(video.path, video.frames, spec) as reader:
        for _ in reader.chunks(chunk_bytes):
            pass
        return reader.frames_read


def bare_rate(
    videos: tuple[VideoSource, ...], spec: DecodeSettings, cpus: int
) -> tuple[int, float]:
    """(frames, frames/s) of bare decoding with ``cpus`` ffmpeg processes at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(cpus) as pool:
        frames = sum(pool.map(lambda v: bare_decode(v, spec, 16 << 20), videos))
    return frames, frames / (time.perf_counter() - start)


def ingest_rate(
    source: str, out: str, size: tuple[int, int] | None, compression: str = "zstd"
) -> tuple[int, float]:
    """(frames, frames/s) of the ingest job, Ray already running (its start-up not counted)."""
    start = time.perf_counter()
    config = IngestConfig(source, out, size=size, compression=compression, quiet=True)
    result = run_ingest(config)
    seconds = time.perf_counter() - start
    if result.exit_status != 0:
        raise SystemExit(f"ingest failed on {source}; see {out}/manifest.parquet")
    frames = sum(s["frames"] for s in result.splits.values())
    return frames, frames / seconds


def throughput(args: argparse.Namespace, tmp: str) -> dict:
    source = args.source or _synthesize(tmp, "small", args)
    size = tuple(args.size) if args.size else None
    videos = discover(source).videos
    spec = DecodeSettings(imageio_ffmpeg.get_ffmpeg_exe(), size=size, channels=1)
    bare_rate(videos[: args.cpus], spec, args.cpus)  # warm the page cache and ffmpeg
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ingest_rate(source, f"{tmp}/warmup", size)  # start Ray's workers once
    ratios, runs = [], []
    for i in range(args.repeat):  # alternate, so that both see the same machine load
        frames_bare, bare = bare_rate(videos, spec, args.cpus)
        frames_ingest, ingest = ingest_rate(source, f"{tmp}/data{i}", size, args.compression)
        assert frames_bare == frames_ingest, (frames_bare, frames_ingest)
        ratios.append(ingest / bare)
        runs.append({"bare_fps": bare, "ingest_fps": ingest, "ratio": ingest / bare})
        print(f"run {i + 1}: bare ffmpeg decode {bare:6.0f} frames/s, "
              f"mnad ingest {ingest:6.0f} frames/s, ratio {ingest / bare:.2f}")  # fmt: skip
    ray.shutdown()
    print(f"source: {source} ({len(videos)} videos, {frames_bare} frames), size {size}, "
          f"{args.cpus} CPUs, compression {args.compression}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"ratio ingest/bare: median {statistics.median(ratios):.2f} of {args.repeat} runs")
    print(f"ingest_vs_ffmpeg {statistics.median(ratios):.2f}")
    return {
        "ingest_vs_ffmpeg": statistics.median(ratios),
        "mode": "throughput", "source": source, "videos": len(videos), "frames": frames_bare,
        "size": size, "cpus": args.cpus, "compression": args.compression,
        "load_average": os.getloadavg()[0], "runs": runs,
        "median_ratio": statistics.median(ratios),
    }  # fmt: skip


def _long_video(seconds: int, size: tuple[int, int] = (64, 64)) -> Path:
    """An h264 video of ``seconds`` of ``testsrc2`` at 10 fps, ``size`` (H, W), encoded once
    and kept in the temporary folder (encoding an hour takes a while)."""
    height, width = size
    path = Path(tempfile.gettempdir()) / f"mnad-bench-long-{seconds}s-{height}x{width}.mp4"
    if not path.exists():
        start = time.perf_counter()
        tmp = path.with_suffix(".tmp.mp4")
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f",
             "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=10", "-t", str(seconds),
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(tmp)],
            check=True,
        )  # fmt: skip
        tmp.rename(path)
        print(f"encoded {path} ({seconds} s) in {time.perf_counter() - start:.1f} s")
    return path


@contextlib.contextmanager
def cores(count: int) -> Iterator[None]:
    """This process, and the Ray it starts, on ``count`` of the machine's cores (Ray's
    ``num_cpus`` alone limits its tasks, not the ffmpeg and reader threads they run)."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(allowed)[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def _ingest_long(source: Path, out: str, segment_seconds: float) -> tuple[float, dict]:
    config = IngestConfig(
        str(source), out, layout="videos", segment_seconds=segment_seconds, quiet=True
    )
    start = time.perf_counter()
    result = run_ingest(config)
    seconds = time.perf_counter() - start
    if result.exit_status != 0:
        raise SystemExit(f"ingest of {source}: {result.failed}")
    return seconds, result.splits["test"]


def long_video(args: argparse.Namespace, tmp: str) -> dict:
    size = tuple(args.long_size)
    video = _long_video(args.long_seconds, size)
    source, warm = Path(tmp) / "long", Path(tmp) / "warm"
    source.mkdir()
    warm.mkdir()
    shutil.copy(video, source / "long.mp4")
    shutil.copy(_long_video(40, size), warm / "warm.mp4")
    spec = DecodeSettings(imageio_ffmpeg.get_ffmpeg_exe(), channels=1, threads=2)
    start = time.perf_counter()
    frames = bare_decode(VideoSource("test", "long", str(source / "long.mp4")), spec, 16 << 20)
    bare = frames / (time.perf_counter() - start)
    seconds = {}
    for cpus in (1, 2):
        with cores(cpus):
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            _ingest_long(warm, f"{tmp}/warm{cpus}", 10.0)  # Ray's workers started, not timed
            out = f"{tmp}/data{cpus}"
            seconds[cpus], split = _ingest_long(source, out, args.segment_seconds)
            ray.shutdown()
        if split["frames"] != frames:
            raise SystemExit(f"ingest at {cpus} core(s): {split['frames']} of {frames} frames")
        shutil.rmtree(out)
        print(f"mnad ingest, {cpus} core(s) and Ray with {cpus} CPU: {seconds[cpus]:.1f} s, "
              f"{frames / seconds[cpus]:.0f} frames/s")  # fmt: skip
    ratio, versus = seconds[1] / seconds[2], frames / seconds[2] / bare
    print(f"source: {args.long_seconds} s of {size[0]}x{size[1]} h264 at 10 fps ({frames} "
          f"frames), --segment-seconds {args.segment_seconds:g}; bare ffmpeg one pass, "
          f"2 threads: {bare:.0f} frames/s; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"ingest_long_2_vs_1_cores {ratio:.2f}")
    print(f"ingest_vs_ffmpeg {versus:.2f}")
    return {
        "mode": "long", "frames": frames, "long_seconds": args.long_seconds,
        "size": size, "segment_seconds": args.segment_seconds, "seconds_1_cpu": seconds[1],
        "seconds_2_cpus": seconds[2], "bare_fps": bare, "load_average": os.getloadavg()[0],
        "ingest_long_2_vs_1_cores": ratio, "ingest_vs_ffmpeg": versus,
        "ratios": {"ingest_long_2_vs_1_cores": ratio},
    }  # fmt: skip


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (a local Ray started by ``ray.init`` is below its
    driver: GCS and raylet, then the workers, then their ffmpeg)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _rss_by_kind() -> dict[str, int]:
    """Resident bytes right now of this driver, its Ray workers, their ffmpeg children and
    its Ray daemons (raylet, GCS, agents); other Rays on the machine are not counted."""
    rss = {"driver": _rss_bytes(os.getpid()), "workers": 0, "ffmpeg": 0, "daemons": 0}
    rss["worker processes"] = 0
    for pid in _descendants(os.getpid()):
        cmd = _cmdline(pid)
        if cmd.startswith("ray::") or "default_worker.py" in cmd:
            rss["workers"] += _rss_bytes(pid)
            rss["worker processes"] += 1
        elif "ffmpeg" in cmd:
            rss["ffmpeg"] += _rss_bytes(pid)
        else:
            rss["daemons"] += _rss_bytes(pid)
    return rss


def memory(args: argparse.Namespace, tmp: str) -> dict:
    source = _synthesize(tmp, "small", args)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    peaks = dict.fromkeys(["job", "driver", "workers", "ffmpeg", "daemons", "worker processes"], 0)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = _rss_by_kind()
            now["job"] = now["driver"] + now["workers"] + now["ffmpeg"]
            for kind, value in now.items():
                peaks[kind] = max(peaks[kind], value)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    frames, rate = ingest_rate(source, f"{tmp}/data", tuple(args.size) if args.size else None)
    done.set()
    sampler.join()
    ray.shutdown()
    print(f"source: {frames} frames in {args.videos} videos of {args.frames_per_video} frames")
    print(f"ingest: {rate:.0f} frames/s")
    print(f"peak RSS, driver + Ray workers + ffmpeg: {peaks['job'] / 2**20:.0f} MiB")
    for kind in ("driver", "workers", "ffmpeg", "daemons"):
        print(f"  peak {kind:8s} {peaks[kind] / 2**20:6.0f} MiB")
    print(f"  at most {peaks['worker processes']} Ray worker processes at once")
    return {
        "mode": "memory", "frames": frames, "videos": args.videos, "ingest_fps": rate,
        "peak_mib": {k: v / 2**20 for k, v in peaks.items() if k != "worker processes"},
        "worker_processes": peaks["worker processes"],
    }  # fmt: skip


def _synthesize(tmp: str, size: str, args: argparse.Namespace | None) -> str:
    out = f"{tmp}/synth"
    config = SynthConfig(out=out, size=size, quiet=True)
    if args is not None:
        config = SynthConfig(
            out=out, size=size, quiet=True, train_videos=args.videos - 2, test_videos=2,
            frames=args.frames_per_video,
        )  # fmt: skip
    start = time.perf_counter()
    result = synthesize(config)
    print(f"synthesized {result.frames} frames in {time.perf_counter() - start:.1f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["throughput", "memory", "long"])
    parser.add_argument("--source", help="throughput: a data set folder (default: synthesize)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=3, help="throughput: runs of each")
    parser.add_argument("--compression", default="zstd", help="ingest's --compression")
    parser.add_argument("--videos", type=int, default=12, help="synthetic source: videos")
    parser.add_argument(
        "--frames-per-video", type=int, default=2000, help="synthetic source: frames per video"
    )
    parser.add_argument(
        "--long-seconds", type=int, default=3600, help="long: the video's length in seconds"
    )
    parser.add_argument(
        "--segment-seconds", type=float, default=120.0, help="long: ingest's --segment-seconds"
    )
    parser.add_argument(
        "--long-size",
        type=int,
        nargs=2,
        default=(64, 64),
        metavar=("H", "W"),
        help="long: the video's frame size",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mnad-bench-") as tmp:
        modes = {"throughput": throughput, "memory": memory, "long": long_video}
        figures = modes[args.mode](args, tmp)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
