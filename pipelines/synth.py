"""`mnad synth`: a synthetic data set of real video files with labelled anomalies (driver).

The scene is a grey street seen from above: a static textured background with mild sensor
noise, and pedestrians (small bright bodies with a head) walking left or right along a
horizontal walkway at walking pace. Test videos add one anomalous event each, cycling
through three kinds:

- ``fast``: a cyclist, low and long, crossing at five times walking pace;
- ``big``: a dark vehicle, several times a pedestrian's area, driving along the walkway;
- ``wrong_direction``: a pedestrian walking vertically, across the walkway and through
  areas where nobody walks in the training videos.

A frame is anomalous while any part of the anomalous object is in view. The videos are
encoded by ffmpeg (Motion-JPEG in AVI) in the Avenue layout that ``mnad ingest`` reads::

    OUT/training_videos/01.avi ...
    OUT/testing_videos/01.avi ...
    OUT/synth.m            UCSD-style ground truth: 1-based inclusive frame ranges per test video
    OUT/_SUCCESS.json      the options and the result, written last (``completion``)

Frames are generated and piped to ffmpeg in chunks, so memory does not grow with the video.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import ffmpeg
import imageio_ffmpeg
import numpy as np

from pipelines.errors import OptionError
from pipelines.options import flag, option, require_local_folder, values
from pipelines.stage import Completion, Result, read_marker, write_marker

ANOMALY_KINDS = ("fast", "big", "wrong_direction")
LABEL_FILE = "synth.m"
_FPS = 25
_CHUNK_FRAMES = 64


@dataclass(frozen=True)
class SynthPreset:
    """How much to generate."""

    train_videos: int
    test_videos: int
    frames: int  # per video
    height: int
    width: int


PRESETS = {
    "tiny": SynthPreset(train_videos=2, test_videos=3, frames=48, height=64, width=64),
    "small": SynthPreset(train_videos=4, test_videos=3, frames=150, height=96, width=96),
    "demo": SynthPreset(train_videos=8, test_videos=6, frames=240, height=128, width=128),
}


@dataclass
class SynthConfig:
    """Options of `mnad synth`."""

    out: str = option("folder to write the data set into (created)", path=True)
    size: Literal["tiny", "small", "demo"] = option(
        "preset: tiny (tests, ~250 frames), small, demo (~3400 frames)", default="small"
    )
    seed: int = option("random seed; same seed, same videos", default=0)
    train_videos: int | None = option(
        "number of training videos (default: the preset's)", default=None
    )
    test_videos: int | None = option("number of test videos (default: the preset's)", default=None)
    frames: int | None = option("frames per video (default: the preset's)", default=None)
    quiet: bool = option("print nothing", default=False, execution=True)

    def __post_init__(self) -> None:
        require_local_folder("out", self.out, "synth")
        if self.size not in PRESETS:
            raise OptionError("size", f"--size must be one of {tuple(PRESETS)}, got {self.size!r}")
        for name in ("train_videos", "test_videos"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 999:
                raise OptionError(name, f"{flag(name)} must be in 1..999, got {value}")
        if self.frames is not None and not 24 <= self.frames <= 100_000:
            raise OptionError("frames", f"--frames must be in 24..100000, got {self.frames}")

    @property
    def preset(self) -> SynthPreset:
        """The preset with this config's overrides applied."""
        base = PRESETS[self.size]
        return SynthPreset(
            train_videos=self.train_videos or base.train_videos,
            test_videos=self.test_videos or base.test_videos,
            frames=self.frames or base.frames,
            height=base.height,
            width=base.width,
        )


@dataclass(frozen=True)
class SynthResult(Result):
    """What was written."""

    out: str
    train_videos: int
    test_videos: int
    frames: int  # in all videos
    anomalous_frames: int


@dataclass(frozen=True)
class Mover:
    """A rectangle of constant intensity moving in a straight line (pixels, frames)."""

    x0: float  # left edge at frame 0
    y0: float  # top edge at frame 0
    vx: float  # pixels per frame
    vy: float
    w: int
    h: int
    intensity: int
    wrap: bool = False  # re-enter on the other side (the steady stream of pedestrians)
    start: int = 0  # first frame it exists in

    def box(self, t: int, width: int, height: int) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) clipped to the frame, or None when out of view."""
        if t < self.start:
            return None
        x = self.x0 + self.vx * (t - self.start)
        y = self.y0 + self.vy * (t - self.start)
        if self.wrap:
            x = (x + self.w) % (width + self.w) - self.w
        top, left = round(y), round(x)
        bottom, right = min(top + self.h, height), min(left + self.w, width)
        top, left = max(top, 0), max(left, 0)
        if bottom <= top or right <= left:
            return None
        return top, bottom, left, right


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static street: a brighter walkway band across the middle, darker textured sides."""
    rows = np.linspace(0.0, 1.0, height)[:, None]  # (H, 1)
    cols = np.linspace(0.0, 1.0, width)[None, :]  # (1, W)
    base = 90 + 20 * np.sin(6.0 * cols + 2.0 * rows)  # (H, W) smooth shading
    band = (rows > 0.3) & (rows < 0.7)  # (H, 1) walkway
    base = base + 30 * band
    texture = rng.normal(0.0, 6.0, size=(height // 4 + 1, width // 4 + 1))
    base = base + np.kron(texture, np.ones((4, 4)))[:height, :width]  # (H, W) blocky texture
    return np.clip(base, 0, 255).astype(np.float32)


def pedestrians(rng: np.random.Generator, height: int, width: int) -> list[Mover]:
    """The normal crowd: 3 to 5 pedestrians walking left or right along the walkway."""
    scale = width / 64
    walkers = []
    for _ in range(int(rng.integers(3, 6))):
        direction = rng.choice([-1.0, 1.0])
        walkers.append(
            Mover(
                x0=float(rng.uniform(0, width)),
                y0=float(rng.uniform(0.32, 0.56) * height),
                vx=float(direction * rng.uniform(0.6, 1.0) * scale),
                vy=0.0,
                w=max(2, round(4 * scale)),
                h=max(4, round(9 * scale)),
                intensity=int(rng.integers(190, 231)),
                wrap=True,
            )
        )
    return walkers


def anomaly(kind: str, rng: np.random.Generator, height: int, width: int, start: int) -> Mover:
    """The anomalous object of one test video, entering the view at frame ``start``."""
    scale = width / 64
    direction = float(rng.choice([-1.0, 1.0]))
    walker_w, walker_h = max(2, round(4 * scale)), max(4, round(9 * scale))
    y = float(rng.uniform(0.35, 0.5) * height)
    if kind == "fast":
        speed, w, h, intensity = 5.0 * scale, round(8 * scale), round(7 * scale), 240
    elif kind == "big":
        speed, w, h, intensity = 1.5 * scale, round(16 * scale), round(12 * scale), 35
    elif kind == "wrong_direction":
        x = float(rng.uniform(0.2, 0.8) * width)
        y0 = -walker_h if direction > 0 else height
        return Mover(x, y0, 0.0, direction * 1.2 * scale, walker_w, walker_h, 220, start=start)
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}")
    x0 = -w if direction > 0 else width
    return Mover(x0, y, direction * speed, 0.0, w, h, intensity, start=start)


def render(
    movers: list[Mover],
    backdrop: np.ndarray,
    rng: np.random.Generator,
    frames: range,
    noise: float = 2.0,
) -> np.ndarray:
    """Frames ``frames`` of the scene as uint8 (n, H, W); objects drawn by slicing."""
    height, width = backdrop.shape
    out = np.repeat(backdrop[None], len(frames), axis=0)  # (n, H, W)
    for i, t in enumerate(frames):
        for mover in movers:
            box = mover.box(t, width, height)
            if box is not None:
                top, bottom, left, right = box
                out[i, top:bottom, left:right] = mover.intensity
                head = max(1, (bottom - top) // 4)
                out[i, top : top + head, left:right] = min(255, mover.intensity + 20)
    out += rng.normal(0.0, noise, size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def visible(mover: Mover, n_frames: int, height: int, width: int) -> np.ndarray:
    """int8 (n,): 1 where any part of ``mover`` is in view."""
    return np.array([mover.box(t, width, height) is not None for t in range(n_frames)], np.int8)


def flags_to_ranges(flags: np.ndarray) -> list[tuple[int, int]]:
    """1-based inclusive ranges of the runs of ones in ``flags``."""
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))  # starts and ends, alternating
    return [(int(s) + 1, int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def ucsd_m_text(ranges_per_video: list[list[tuple[int, int]]]) -> str:
    """Ground truth in the UCSD ``.m`` format that ingest reads."""
    lines = ["TestVideoFile = {};"]
    for ranges in ranges_per_video:
        body = ", ".join(f"{s}:{e}" for s, e in ranges)
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{body}];")
    return "\n".join(lines) + "\n"


def encode(path: str, chunks: Iterator[np.ndarray], height: int, width: int) -> None:
    """Encode grey uint8 frames (chunks of (n, H, W)) to a Motion-JPEG AVI with ffmpeg."""
    process = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="gray", s=f"{width}x{height}", r=_FPS)
        .output(path, vcodec="mjpeg", pix_fmt="yuvj444p", q=2)
        .global_args("-hide_banner", "-loglevel", "error")
        .overwrite_output()
        .run_async(cmd=imageio_ffmpeg.get_ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True)
    )
    try:
        for chunk in chunks:
            process.stdin.write(np.ascontiguousarray(chunk).tobytes())
    finally:
        process.stdin.close()
        error = process.stderr.read().decode(errors="replace").strip()
        if process.wait() != 0:
            raise RuntimeError(f"ffmpeg could not write {path}: {error}")


def write_video(
    path: str,
    movers: list[Mover],
    backdrop: np.ndarray,
    rng: np.random.Generator,
    n_frames: int,
) -> None:
    """Render and encode one video, chunk by chunk."""
    height, width = backdrop.shape
    chunks = (
        render(movers, backdrop, rng, range(start, min(start + _CHUNK_FRAMES, n_frames)))
        for start in range(0, n_frames, _CHUNK_FRAMES)
    )
    encode(path, chunks, height, width)


def synthesize(config: SynthConfig) -> SynthResult:
    """Write the synthetic data set described by ``config``; the same seed gives the same
    videos."""
    p = config.preset
    backdrop = background(np.random.default_rng([config.seed, 0]), p.height, p.width)
    for folder in ("training_videos", "testing_videos"):
        os.makedirs(os.path.join(config.out, folder), exist_ok=True)
    for i in range(p.train_videos):
        rng = np.random.default_rng([config.seed, 1, i])
        path = os.path.join(config.out, "training_videos", f"{i + 1:02d}.avi")
        write_video(path, pedestrians(rng, p.height, p.width), backdrop, rng, p.frames)
    ranges, anomalous = [], 0
    for i in range(p.test_videos):
        rng = np.random.default_rng([config.seed, 2, i])
        kind = ANOMALY_KINDS[i % len(ANOMALY_KINDS)]
        start = int(rng.integers(p.frames // 5, p.frames // 2))
        odd = anomaly(kind, rng, p.height, p.width, start)
        path = os.path.join(config.out, "testing_videos", f"{i + 1:02d}.avi")
        write_video(path, [*pedestrians(rng, p.height, p.width), odd], backdrop, rng, p.frames)
        flags = visible(odd, p.frames, p.height, p.width)
        ranges.append(flags_to_ranges(flags))
        anomalous += int(flags.sum())
    with open(os.path.join(config.out, LABEL_FILE), "w", encoding="utf-8") as f:
        f.write(ucsd_m_text(ranges))
    result = SynthResult(
        out=config.out,
        train_videos=p.train_videos,
        test_videos=p.test_videos,
        frames=(p.train_videos + p.test_videos) * p.frames,
        anomalous_frames=anomalous,
    )
    write_marker(config.out, {"config": _identity(config), "result": result.to_json()})
    if not config.quiet:
        print(
            f"mnad synth: {config.out}: {result.train_videos} training and {result.test_videos} "
            f"test videos of {p.frames} frames at {p.height}x{p.width}, "
            f"{result.anomalous_frames} anomalous frames"
        )
    return result


def _identity(config: SynthConfig) -> dict[str, Any]:
    """The options that decide the videos (not where they go, not how loudly)."""
    return {k: v for k, v in values(config).items() if k not in ("out", "quiet")}


def completion(config: SynthConfig) -> Completion:
    """Complete when OUT's marker records the same options (so the same videos)."""
    done = read_marker(config.out)
    if done is None or done.get("config") != _identity(config):
        return Completion.missing("no videos with these options yet")
    result = SynthResult.from_json(done["result"])
    return Completion.done(result, f"{config.out} holds these videos")
