"""Decoding one video, or one folder of frame files, with ffmpeg into raw uint8 frames.

Runs inside an ingest Ray task (:mod:`pipelines.ingest.video`), one child ffmpeg process
per video.

ffmpeg does all pixel work: decoding, resizing (``scale``, bilinear like the paper's
``cv2.resize``) and conversion to ``gray`` or ``rgb24``. Frames stream from its stdout in
chunks of bounded size, so memory does not grow with the length of the video. A frame folder
goes through ffmpeg's concat demuxer, one file per entry with a duration of one second, so a
frame's timestamp in ffmpeg's log is its index in the folder.

Without ``--size`` the frame size is the source's, read from the output stream line that
ffmpeg logs before it writes the first frame (there is no ffprobe beside the binary that
``imageio-ffmpeg`` ships). The source's clock comes from the same log: the frame rate of the
input's video stream (``25 fps, 25 tbr``: ``fps``, else ``tbr``) and its start time (the
stream's ``start 1.4``, else the input's ``Duration: ..., start: 0.040000``), so that frame
``i`` shows at ``start_s + i / fps`` seconds of the source. A frame folder has no clock of
its own.

A :class:`Window` decodes only the frames of a video file shown in ``[start_s, stop_s)`` of
its source's clock, for the segments of a long video that parallel tasks decode
(:mod:`pipelines.ingest.segments`). ffmpeg seeks (``-ss`` before ``-i``: to the keyframe
before, then it decodes and drops frames up to that time) to a margin before ``start_s``
and keeps the source's timestamps (``-copyts``); its ``trim`` filter passes the frames whose
integer ``pts`` is at least ``start_s`` and ends the decode at the first one at or after
``stop_s``, both bounds turned into the stream's time base once, in integers
(:func:`cut_pts`). Cutting on the stream's own integer timestamps puts every frame in
exactly one of two adjacent windows, however the frame rate varies or the boundary falls,
and frames are scaled only inside the window. Beside the cut, two branches of the graph log
a frame's integer ``pts`` (``showinfo``) for the few frames that prove the cut right, not
for every frame: the first frame decoded and those from just before ``stop_s`` on
(``edge``), and any frame whose timestamp does not increase (``order``: it could fall in
two windows or none, so such a video is not cut). A first frame before ``start_s``
(:attr:`FrameReader.saw_before`) proves that the seek landed before the window, so that its
first frames are those a decode from the first frame gives.

Every failure is a :class:`DecodeError` whose text is one line: the file and the cause.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType

import ffmpeg

from pipelines.schema import FrameShape

_OUTPUT_SIZE = re.compile(r"Video: rawvideo\b.*?, (\d+)x(\d+)\b")
_DURATION = re.compile(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_SHOWINFO = "[showinfo@"  # the window's logging branches (:meth:`FrameReader._window_args`)
_EDGE, _ORDER = "edge", "order"
_SHOWINFO_BRANCH = re.compile(r"^\[showinfo@(\w+) ")
_SHOWINFO_BASE = re.compile(r"config in time_base: (\d+)/(\d+)")
_SHOWINFO_PTS = re.compile(r"\] n:\s*\d+ pts:\s*(\S+)")
_INPUT_START = re.compile(r"^\s*Duration: .*?\bstart: (-?\d+(?:\.\d+)?)")
_INPUT_VIDEO = re.compile(r"^\s*Stream #0:\d+\S*: Video: ")
_RATE = re.compile(r"\b(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_STREAM_START = re.compile(r", start (-?\d+(?:\.\d+)?)")  # a stream's own, when not 0
_ATTACHED_PICTURE = "(attached pic)"  # cover art: a still in a video stream, not the video
_INCOMING = re.compile(r"incoming frame - w: (\d+) h: (\d+).*pts_time: ([-\d.]+)")
_CONTEXT = re.compile(r"filter context - w: (\d+) h: (\d+)")
_ERROR_CODE = re.compile(r"error code: -?\d+ \((.+)\)")
_LOG_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")
_CAUSE_WORDS = ("error", "invalid", "not found", "missing", "corrupt", "failed", "no such")
_DESCRIPTION_LINES = ("Input #", "Output #", "Stream #", "Duration:", "Metadata:")
#: ffmpeg's warning when it guessed the container from content after failing to recognise
#: the file: a damaged header whose frames it may partly decode.
_MISDETECTION = "misdetection possible"
_STDERR_LINES_KEPT = 64
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_BYTES = 1 << 20
_EDGE_LEAD_S = 0.5
"""How long before a window's end the frames' timestamps are logged (a float ``t`` may round
below the integer bound that ``trim`` compares)."""


class DecodeError(Exception):
    """A video or frame that ffmpeg could not decode; ``str()`` is ``'<path>: <cause>'``."""

    def __init__(self, path: str, cause: str) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode: which ffmpeg, target size (None: the source's), channels, threads.

    ``ffmpeg`` None (what the driver passes): the binary is found where ffmpeg runs, in the
    Ray task (:func:`ffmpeg_exe`), since the package that ships it may live elsewhere on each
    node; a path: that binary, on every node (an explicit override).
    """

    ffmpeg: str | None = None  # path of the ffmpeg binary; None: found where it runs
    size: tuple[int, int] | None = None  # (height, width)
    channels: int = 1  # 1: gray, 3: rgb24
    threads: int = 1  # decoder threads

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.size is not None and min(self.size) < 1:
            raise ValueError(f"size must be positive, got {self.size}")

    @property
    def pix_fmt(self) -> str:
        return "gray" if self.channels == 1 else "rgb24"

    def executable(self) -> str:
        """The ffmpeg binary to run in this process: ``ffmpeg``, else :func:`ffmpeg_exe`
        (resolved here, on the node that runs it)."""
        return self.ffmpeg or ffmpeg_exe()


@dataclass(frozen=True)
class Window:
    """The frames of a video file shown in ``[start_s, stop_s)`` seconds of its source's
    clock (the clock of its timestamps, where the first frame shows at the file's start
    time); ``None``: from the first frame, to the last.

    ffmpeg seeks to ``margin_s`` before ``start_s`` (``None``: no seek, decoding from the
    first frame), so that frames before the window come out first and prove that it started
    early enough. ffmpeg's ``-ss`` counts from the file's start time: ``file_start_s``, or
    (None) read from the file first.
    """

    start_s: float | None = None
    stop_s: float | None = None
    margin_s: float | None = 2.0
    file_start_s: float | None = None

    def __post_init__(self) -> None:
        if self.start_s is not None and self.stop_s is not None and self.stop_s <= self.start_s:
            raise ValueError(f"empty window [{self.start_s}, {self.stop_s})")
        if self.margin_s is not None and self.margin_s <= 0:
            raise ValueError(f"margin_s must be > 0, got {self.margin_s}")

    def seek_s(self, file_start_s: float) -> float | None:
        """Where ffmpeg's input ``-ss`` (relative to the file's start time) should seek; None:
        no seek."""
        if self.start_s is None or self.margin_s is None:
            return None
        seek = self.start_s - file_start_s - self.margin_s
        return seek if seek > 0 else None


def cut_text(seconds: float) -> str:
    """A cut as ``trim`` is given it: seconds to the microsecond (ffmpeg reads a duration
    into whole microseconds, exactly, from this text)."""
    return f"{seconds:.6f}"


def cut_pts(seconds: float | None, time_base: Fraction) -> int | None:
    """The integer timestamp that ``trim`` compares frames with for a cut at ``seconds``:
    :func:`cut_text`'s microseconds rescaled to ``time_base`` and rounded to the nearest,
    halves away from zero, as ffmpeg's ``av_rescale_q`` does. Two tasks that cut at the same
    ``seconds`` get the same integer, so each frame falls on one side of it."""
    if seconds is None:
        return None
    micros = round(Fraction(cut_text(seconds)) * 1_000_000)
    num, den = time_base.denominator, time_base.numerator * 1_000_000
    half = den // 2
    if micros < 0:
        return -((-micros * num + half) // den)
    return (micros * num + half) // den


@dataclass(frozen=True)
class Probe:
    """What ffmpeg's log says of a video file before decoding it."""

    duration_s: float | None  # the container's duration; None when it gives none
    start_s: float  # the video stream's start time (else the input's)
    fps: float | None


def probe(path: str, settings: DecodeSettings) -> Probe:
    """The duration, start time and frame rate of a video file, from the description ffmpeg
    logs of its input (``ffmpeg -i``, no output, no frame decoded). A file ffmpeg cannot
    read gives a duration of None: decoding it reports why."""
    cmd = [settings.executable(), "-hide_banner", "-nostdin", "-i", path]
    done = subprocess.run(cmd, capture_output=True, check=False)
    log = _LogReader(None)
    for raw in done.stderr.splitlines():
        log._parse(raw.decode("utf-8", errors="replace").rstrip())
    return Probe(log.duration_s, log.input_start_s, log.input_fps)


def ffmpeg_exe() -> str:
    """This machine's ffmpeg: ``$IMAGEIO_FFMPEG_EXE`` if set, else the binary that the
    ``imageio-ffmpeg`` package ships (``imageio_ffmpeg.get_ffmpeg_exe``). None found: an
    ``OSError``, which fails each video with one line."""
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        raise FileNotFoundError(
            "no ffmpeg on this node: install imageio-ffmpeg or set IMAGEIO_FFMPEG_EXE"
        ) from None


def concat_list(frames: tuple[str, ...]) -> str:
    """A concat-demuxer script with one entry of one second per frame file."""
    lines = ["ffconcat version 1.0"]
    for path in frames:
        quoted = path.replace("'", "'\\''")
        lines += [f"file '{quoted}'", "duration 1"]
    return "\n".join(lines) + "\n"


def frame_rate(number: str, thousands: bool = False) -> float:
    """A frame rate as ffmpeg's log prints it (``25``, ``29.97``, ``30`` with ``k``).

    ffmpeg rounds a rate to two decimals; a printed rate that is an NTSC rate
    ``n * 1000 / 1001`` so rounded (23.98, 29.97, 59.94) is taken as that rate, so that an
    hour of 23.976 fps video does not drift by half a second.
    """
    rate = float(number) * (1000 if thousands else 1)
    ntsc = round(rate * 1.001) * 1000 / 1001
    if "." in number and not thousands and f"{ntsc:.2f}" == number:
        return ntsc
    return rate


def stream_rate(line: str) -> float | None:
    """The frame rate on a ``Stream #0:0: Video: ...`` line of ffmpeg's log: its ``fps``,
    else its ``tbr``; None when it shows neither (or 0)."""
    rates = {unit: frame_rate(n, k == "k") for n, k, unit in _RATE.findall(line)}
    return rates.get("fps") or rates.get("tbr") or None


def ffmpeg_cause(lines: list[str]) -> str:
    """The most telling line of ffmpeg's log, without its ``[component @ 0x..]`` prefix.

    The stream description (``Input #0, avi, from 'path':``, ``Stream #0:0``, ...) is passed
    over: a cause word in a file name is not a cause."""
    for line in lines:
        text = _LOG_PREFIX.sub("", line).strip()
        if text.startswith(_DESCRIPTION_LINES):
            continue
        if any(word in text.lower() for word in _CAUSE_WORDS):
            code = _ERROR_CODE.search(text)
            return code.group(1) if code else text
    return lines[-1].strip() if lines else "ffmpeg failed without a message"


class _LogReader(threading.Thread):
    """Drains ffmpeg's stderr; finds the input's frame rate and start time, the output frame
    size and the first frame whose size differs from the first one's."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self.lines: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES_KEPT)
        self.first_lines: list[str] = []
        self.output_size: tuple[int, int] | None = None  # (height, width)
        # (index, height, width) of the first frame whose size differs from the first
        # frame's, and that first size (height, width)
        self.size_change: tuple[int, int, int] | None = None
        self.first_size: tuple[int, int] | None = None
        self.misdetection: str | None = None  # ffmpeg's line, when it guessed the container
        self.input_fps: float | None = None  # the input video stream's fps, else its tbr
        self.input_start_s = 0.0  # the video stream's start time (else the input's), seconds
        self.duration_s: float | None = None  # the input's duration, when the log gives one
        self.time_base: Fraction | None = None  # of the timestamps showinfo logs
        # a window's logged timestamps (None: the frame had none), by branch: the first
        # frame and those near the window's end ("edge"), those that do not increase ("order")
        self.pts: dict[str, list[int | None]] = {_EDGE: [], _ORDER: []}
        self.ready = threading.Event()  # set once the output size is known or ffmpeg ended
        self._section = ""  # "input" or "output": the stream description being read
        self._input_video = False  # the input's video stream line was read

    def run(self) -> None:
        try:
            for raw in self._stream:
                line = raw.decode("utf-8", errors="replace").rstrip()
                self._parse(line)
        finally:
            self.ready.set()

    def _parse_showinfo(self, line: str) -> None:
        branch = _SHOWINFO_BRANCH.match(line)
        match = _SHOWINFO_PTS.search(line)
        if match and branch and branch.group(1) in self.pts:
            text = match.group(1)
            self.pts[branch.group(1)].append(int(text) if text.lstrip("-").isdigit() else None)
        elif self.time_base is None:
            base = _SHOWINFO_BASE.search(line)
            if base:
                self.time_base = Fraction(int(base.group(1)), int(base.group(2)))

    def _parse(self, line: str) -> None:
        if line.startswith(_SHOWINFO):  # the window's few frames: kept out of the log
            self._parse_showinfo(line)
            return
        self.lines.append(line)
        if _MISDETECTION in line and self.misdetection is None:
            self.misdetection = _LOG_PREFIX.sub("", line).strip()
        if len(self.first_lines) < _STDERR_LINES_KEPT:
            self.first_lines.append(line)
        if line.startswith("Input #0"):
            self._section = "input"
        elif line.startswith("Output #0"):
            self._section = "output"
        elif line.startswith("Stream mapping:"):
            self._section = ""
        elif self._section == "input":
            self._parse_input(line)
        elif self._section == "output" and self.output_size is None:
            match = _OUTPUT_SIZE.search(line)
            if match:
                self.output_size = (int(match.group(2)), int(match.group(1)))
                self.ready.set()
        incoming, context = _INCOMING.search(line), _CONTEXT.search(line)
        changed = incoming and context and incoming.group(1, 2) != context.group(1, 2)
        if changed and self.size_change is None:
            index = round(float(incoming.group(3)))
            self.size_change = (index, int(incoming.group(2)), int(incoming.group(1)))
            self.first_size = (int(context.group(2)), int(context.group(1)))

    def _parse_input(self, line: str) -> None:
        start = _INPUT_START.search(line)
        duration = _DURATION.search(line)
        if duration:
            hours, minutes, seconds = duration.groups()
            self.duration_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        if start:
            self.input_start_s = float(start.group(1))
        elif _INPUT_VIDEO.search(line) and not self._input_video:
            if _ATTACHED_PICTURE in line:
                return
            self._input_video = True
            self.input_fps = stream_rate(line)
            start = _STREAM_START.search(line)  # the video's start, where the input's differs
            if start:
                self.input_start_s = float(start.group(1))

    def cause(self) -> str:
        """What went wrong, from the first telling line of the log."""
        return ffmpeg_cause([*self.first_lines, *self.lines])


class FrameReader:
    """The frames of one video file or frame folder, decoded by a child ffmpeg process.

    Use as a context manager; :attr:`shape` is the frame size, :attr:`fps` and
    :attr:`start_s` the source's clock, :meth:`chunks` yields the pixels of consecutive
    frames, at most ``max_bytes`` at a time. The process is killed on early exit.

    With a ``window`` (video files only), :meth:`chunks` yields the frames in it alone;
    :attr:`saw_before` says whether a frame before it was decoded, :attr:`reached_stop`
    whether one at or after its end was (decoding stops there).
    """

    def __init__(
        self,
        path: str,
        frames: tuple[str, ...],
        settings: DecodeSettings,
        window: Window | None = None,
    ) -> None:
        if window is not None and frames:
            raise ValueError("a window cuts a video file, not a frame folder")
        self.path = path
        self.frames = frames
        self.settings = settings
        self.window = window
        self.frames_read = 0
        self.saw_before = False
        self.reached_stop = False
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._proc: subprocess.Popen | None = None
        self._log: _LogReader | None = None
        self._shape: FrameShape | None = None

    def __enter__(self) -> FrameReader:
        self._check_files()
        args = self._window_args() if self.window is not None else self._command()
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with contextlib.suppress(OSError):  # Linux: fewer, larger reads from a 1 MiB pipe
            fcntl.fcntl(self._proc.stdout.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        self._log = _LogReader(self._proc.stderr)
        self._log.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc.stdout.close()
        if self._log is not None:
            self._log.join()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _check_files(self) -> None:
        for path in self.frames or (self.path,):
            try:
                size = os.path.getsize(path)
            except OSError as err:
                raise DecodeError(path, f"cannot read ({err.strerror})") from None
            if size == 0:
                raise DecodeError(path, "empty file")

    def _command(self) -> list[str]:
        """The ffmpeg command line of a whole video file or frame folder."""
        input_args = {"err_detect": "explode", "reinit_filter": 0, "threads": self.settings.threads}
        if self.frames:
            self._tmp = tempfile.TemporaryDirectory(prefix="mnad-decode-")
            script = os.path.join(self._tmp.name, "frames.ffconcat")
            with open(script, "w", encoding="utf-8") as f:
                f.write(concat_list(self.frames))
            stream = ffmpeg.input(script, f="concat", safe=0, **input_args)
        else:
            stream = ffmpeg.input(self.path, **input_args)
        video = stream.video
        if self.settings.size is not None:
            height, width = self.settings.size
            video = video.filter("scale", width, height, flags="bilinear")
        out = ffmpeg.output(
            video, "pipe:", format="rawvideo", pix_fmt=self.settings.pix_fmt, fps_mode="passthrough"
        )
        out = out.global_args("-hide_banner", "-nostdin", "-nostats", "-xerror")
        return out.compile(cmd=self.settings.executable())

    def _window_args(self) -> list[str]:
        """The ffmpeg command line of a window: seek, keep the source's timestamps, and split
        the decoded frames two ways: ``trim`` to the window, then scale, to the output; and
        one ``select`` that sends the first frame and those from just before the window's end
        to the ``edge`` log, frames whose timestamp does not increase on the last one's (or
        that have none) to the ``order`` log, and drops the rest. ffmpeg ends once ``trim``
        has passed the window's end."""
        assert self.window is not None
        window, seek = self.window, self.window.seek_s(self._file_start_s())
        bounds = (("start", window.start_s), ("end", window.stop_s))
        trim = [f"{key}={cut_text(at)}" for key, at in bounds if at is not None]
        kept = [f"trim={':'.join(trim)}"] if trim else []
        if self.settings.size is not None:
            height, width = self.settings.size
            kept.append(f"scale={width}:{height}:flags=bilinear")
        edge = "eq(n\\,0)"
        if window.stop_s is not None:
            edge += f"+gte(t\\,{cut_text(window.stop_s - _EDGE_LEAD_S)})"
        # one select, two outputs: 2 (order) for a timestamp that does not increase or is
        # missing, else 1 (edge) for the first frame and those near the end, else dropped
        pick = f"if(lte(pts\\,prev_pts)+isnan(pts)\\,2\\,gt({edge}\\,0))"
        graph = (
            f"[0:v]split=2[win][log];[win]{','.join(kept) or 'null'}[out];"
            f"[log]select@log='{pick}':n=2[{_EDGE}][{_ORDER}];"
            f"[{_EDGE}]showinfo@{_EDGE}=checksum=0,nullsink;"
            f"[{_ORDER}]showinfo@{_ORDER}=checksum=0,nullsink"
        )
        settings = self.settings
        return [
            settings.executable(), "-hide_banner", "-nostdin", "-nostats", "-xerror", "-copyts",
            "-err_detect", "explode", "-reinit_filter", "0", "-threads", str(settings.threads),
            *(["-ss", f"{seek:.6f}"] if seek is not None else []), "-i", self.path,
            "-filter_complex", graph, "-map", "[out]", "-f", "rawvideo",
            "-pix_fmt", settings.pix_fmt, "-fps_mode", "passthrough", "pipe:",
        ]  # fmt: skip

    def _file_start_s(self) -> float:
        """The file's start time (``-ss`` counts from it): the window's, else read from the
        file when the window seeks."""
        assert self.window is not None
        if self.window.file_start_s is not None or self.window.seek_s(0.0) is None:
            return self.window.file_start_s or 0.0
        return probe(self.path, self.settings).start_s

    @property
    def shape(self) -> FrameShape:
        """The size of the frames that :meth:`chunks` yields."""
        if self._shape is None:
            if self.settings.size is not None:
                height, width = self.settings.size
            else:
                assert self._log is not None
                self._log.ready.wait()
                if self._log.output_size is None:
                    self._finish()  # raises with ffmpeg's cause
                    raise DecodeError(self.path, "ffmpeg reported no video stream")
                height, width = self._log.output_size
            self._shape = FrameShape(height, width, self.settings.channels)
        return self._shape

    @property
    def fps(self) -> float | None:
        """The video file's frame rate (its stream's ``fps``, else its ``tbr``); None for a
        frame folder (the rate the concat demuxer reports is its own, not the frames') or
        when ffmpeg knows none."""
        if self.frames:
            return None
        return self._described().input_fps

    @property
    def start_s(self) -> float:
        """The video file's start time in seconds (0.0 for a frame folder): frame ``i`` shows
        at ``start_s + i / fps`` on the source's clock."""
        if self.frames:
            return 0.0
        return self._described().input_start_s

    def _described(self) -> _LogReader:
        """The log, once ffmpeg has described its input (or ended)."""
        assert self._log is not None, "FrameReader is not entered"
        self._log.ready.wait()
        return self._log

    def chunks(self, max_bytes: int) -> Iterator[bytes]:
        """Pixels of consecutive frames, ``k * shape.nbytes`` bytes at a time; checks at the
        end that ffmpeg succeeded and, for a folder, that every file gave one frame of the
        first frame's size."""
        assert self._proc is not None
        frame_bytes = self.shape.nbytes
        per_chunk = max(1, max_bytes // frame_bytes)
        while True:
            data = self._proc.stdout.read(per_chunk * frame_bytes)
            whole = len(data) // frame_bytes
            if whole:
                self.frames_read += whole
                yield data[: whole * frame_bytes] if len(data) % frame_bytes else data
            if len(data) < per_chunk * frame_bytes:
                break
        self._finish()

    def _check_window(self) -> None:
        """After a window's decode: what its logged timestamps say. A frame without one, or
        one that does not increase, is a DecodeError (such a video cannot be cut); else
        :attr:`saw_before` and :attr:`reached_stop` are set."""
        assert self._log is not None and self.window is not None
        edge, order = self._log.pts[_EDGE], self._log.pts[_ORDER]
        if None in edge or None in order:
            raise DecodeError(self.path, "ffmpeg logged no timestamp for a frame")
        if order:
            raise DecodeError(
                self.path,
                f"frame timestamps do not increase (at {order[0]}): it cannot be cut into "
                "segments; ingest it with --segment-seconds 0",
            )
        if not edge:
            return  # no frame decoded: the seek went past the last frame
        if self._log.time_base is None:
            raise DecodeError(self.path, "ffmpeg logged no time base for the frames")
        start = cut_pts(self.window.start_s, self._log.time_base)
        stop = cut_pts(self.window.stop_s, self._log.time_base)
        self.saw_before = start is not None and edge[0] < start
        self.reached_stop = stop is not None and edge[-1] >= stop

    def _finish(self) -> None:
        """Wait for ffmpeg and turn what went wrong into one DecodeError."""
        assert self._proc is not None and self._log is not None
        returncode = self._proc.wait()
        self._log.join()
        if self._log.size_change is not None and self.frames:
            index, height, width = self._log.size_change
            first_height, first_width = self._log.first_size or (0, 0)
            raise DecodeError(
                self.frames[min(index, len(self.frames) - 1)],
                f"frame is {height}x{width} (HxW), the folder's first frame is "
                f"{first_height}x{first_width} (frames of mixed sizes)",
            )
        if self._log.misdetection is not None and not self.frames and self.frames_read:
            # Frames came out of a file ffmpeg did not recognise: some of them, not all.
            raise DecodeError(
                self.path,
                f"damaged container: ffmpeg did not recognise the file and guessed its "
                f"format from its content ({self._log.misdetection})",
            )
        if returncode != 0:
            if self.frames and self.frames_read < len(self.frames):
                bad = self.frames[self.frames_read]
                raise DecodeError(bad, f"unreadable frame ({self._log.cause()})")
            if self.frames_read == 0:
                raise DecodeError(self.path, f"not a readable video ({self._log.cause()})")
            raise DecodeError(
                self.path,
                f"corrupt or truncated video: stopped after {self.frames_read} frames "
                f"({self._log.cause()})",
            )
        if self.frames and self.frames_read != len(self.frames):
            raise DecodeError(
                self.path, f"decoded {self.frames_read} frames from {len(self.frames)} files"
            )
        if self.frames_read == 0 and (self.window is None or self.window.start_s is None):
            raise DecodeError(self.path, "no video frames")
        if self.window is not None:
            self._check_window()
