"""Shared fixtures: the read-only benchmark data, a real local Ray, temporary MLflow stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PED2 = SHARED / "datasets" / "ucsd_ped2"

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def paper_fixture_dir() -> Path:
    return Path(os.environ.get("MNAD_PAPER_FIXTURE", str(SHARED / "reference" / "paper_pred_64")))


@pytest.fixture(scope="session")
def ped2() -> Path:
    if not (PED2 / "testing" / "frames").is_dir():
        pytest.skip(f"UCSD Ped2 is not at {PED2}: it ships only beside the project checkout (CI)")
    return PED2


@pytest.fixture(scope="session")
def paper_fixture() -> Path:
    path = paper_fixture_dir()
    if not (path / "golden.pt").is_file():
        pytest.skip(
            f"paper parity fixture not found at {path} (set MNAD_PAPER_FIXTURE); it ships "
            "only beside the project checkout (CI)"
        )
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session, sized for a 2-core CI machine."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=512 * 1024**2,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


class Media:
    """Writes real media files with the ffmpeg binary that imageio-ffmpeg ships."""

    def __init__(self, ffmpeg_exe: str) -> None:
        self.ffmpeg = ffmpeg_exe

    def _run(self, *args: str) -> None:
        import subprocess

        subprocess.run([self.ffmpeg, "-hide_banner", "-v", "error", "-y", *args], check=True)

    def video(
        self,
        path: Path,
        frames: int,
        size: tuple[int, int] = (48, 64),
        rate: str = "25",
        start_s: float = 0.0,
    ) -> Path:
        """An MJPEG AVI (or any container its suffix names) of ``frames`` test-pattern frames
        of size (H, W), at ``rate`` frames per second (``"30000/1001"``), its first frame at
        ``start_s`` seconds."""
        path.parent.mkdir(parents=True, exist_ok=True)
        height, width = size
        offset = ("-output_ts_offset", str(start_s)) if start_s else ()
        self._run(
            "-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={rate}",
            "-frames:v", str(frames), "-c:v", "mjpeg" if path.suffix == ".avi" else "libx264",
            "-pix_fmt", "yuvj444p" if path.suffix == ".avi" else "yuv420p", *offset, str(path),
        )  # fmt: skip
        return path

    def frames(
        self,
        folder: Path,
        names: list[str],
        size: tuple[int, int] = (48, 64),
    ) -> list[Path]:
        """One image per name (format from its suffix: .jpg, .tif, .png), frame i of a test
        pattern in file ``names[i]``."""
        folder.mkdir(parents=True, exist_ok=True)
        height, width = size
        suffix = Path(names[0]).suffix
        self._run(
            "-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate=25",
            "-frames:v", str(len(names)), "-start_number", "0", str(folder / f"tmp%06d{suffix}"),
        )  # fmt: skip
        out = []
        for i, name in enumerate(names):
            target = folder / name
            (folder / f"tmp{i:06d}{suffix}").rename(target)
            out.append(target)
        return out


@pytest.fixture(scope="session")
def media() -> Media:
    """Real media files by ffmpeg: ``media.video(path, n)``, ``media.frames(dir, names)``."""
    import imageio_ffmpeg

    return Media(imageio_ffmpeg.get_ffmpeg_exe())


# --- tiny ingested DATA folders for the train and clip tests ---------------------------------


def write_tiny_data(
    root: Path,
    videos: dict[str, dict[str, int]],
    size: tuple[int, int] = (16, 16),
    dataset: str = "tiny",
    row_group_frames: int = 8,
) -> Path:
    """A DATA folder as `mnad ingest` writes it: ``videos`` maps split -> {video_id: frames}.

    Grey frames of a bright square moving across the frame (learnable by a tiny model);
    pixel (0, 0) holds the video's position in its split and pixel (0, 1) the frame index
    (mod 256), so a test can tell which frame a clip holds.
    """
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.schema import MANIFEST_SCHEMA, FrameShape, frame_batch, shard_schema

    shape = FrameShape(size[0], size[1], 1)
    rows, splits = [], {}
    for split, counts in videos.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for position, (video_id, n) in enumerate(sorted(counts.items())):
            t = np.arange(n)[:, None, None]
            y, x = np.mgrid[: size[0], : size[1]]
            cx = (t * 2 + position * 3) % size[1]
            square = (np.abs(x - cx) <= 2) & (np.abs(y - size[0] // 2) <= 2)  # (n, H, W)
            pixels = np.where(square, 220, 30).astype(np.uint8)
            pixels[:, 0, 0] = position
            pixels[:, 0, 1] = np.arange(n) % 256
            with pq.ParquetWriter(root / split / f"{video_id}.parquet", shard_schema(shape)) as w:
                for start in range(0, n, row_group_frames):
                    chunk = pixels[start : start + row_group_frames]
                    meta = {"dataset": dataset, "split": split, "video_id": video_id}
                    labels = np.zeros(len(chunk), np.int8)
                    pix = chunk.tobytes()
                    w.write_batch(
                        frame_batch(
                            **meta, start_index=start, labels=labels, pixels=pix, shape=shape
                        )
                    )
            rows.append({
                "source": f"/src/{split}/{video_id}", "split": split, "video_id": video_id,
                "content_hash": "sha256:0", "frames": n, "anomalous_frames": 0,
                "height": size[0], "width": size[1], "status": "ok", "error": None,
                "shard": f"{split}/{video_id}.parquet",
            })  # fmt: skip
        splits[split] = {"videos": len(counts), "frames": sum(counts.values()),
                         "anomalous_frames": 0}  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), root / "manifest.parquet")
    summary = {
        "dataset": dataset, "layout": "frames", "height": size[0], "width": size[1],
        "channels": 1, "failed": [], "splits": splits,
    }  # fmt: skip
    (root / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DATA folder: 4 training videos of 9..30 frames at 16x16 grey, 2 test videos."""
    return write_tiny_data(
        tmp_path_factory.mktemp("tiny_data"),
        {
            "train": {"v0": 30, "v1": 21, "v2": 9, "v3": 26},
            "test": {"t0": 12, "t1": 10},
        },
    )
