"""The ffmpeg binary is found where ffmpeg runs (the Ray task on its node), not on the driver.

The driver's plan carries no ffmpeg path. A real Ray task whose worker has its own
``IMAGEIO_FFMPEG_EXE`` (a wrapper around the real binary that records each call, standing
for a node whose ffmpeg lives elsewhere) ingests a video with the plan the driver built:
the wrapper must be the ffmpeg that ran.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import imageio_ffmpeg
import pytest

from pipelines.ingest.config import IngestConfig
from pipelines.ingest.decode import DecodeSettings, ffmpeg_exe
from pipelines.ingest.driver import _plan
from pipelines.ingest.layouts import VideoSource
from pipelines.ingest.video import ingest_row


def test_the_drivers_plan_carries_no_ffmpeg_path(tmp_path: Path) -> None:
    plan = _plan(IngestConfig(source=str(tmp_path / "src"), out=str(tmp_path / "out")))
    assert plan.decode.ffmpeg is None
    assert imageio_ffmpeg.get_ffmpeg_exe() not in repr(plan)
    chosen = _plan(IngestConfig(source="s", out="o", ffmpeg="/opt/ffmpeg/bin/ffmpeg"))
    assert chosen.decode.executable() == "/opt/ffmpeg/bin/ffmpeg"  # an explicit override
    assert DecodeSettings().executable() == ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()


@pytest.mark.ray
def test_a_task_uses_its_own_nodes_ffmpeg(ray_local, tmp_path: Path, media) -> None:
    source = tmp_path / "src"
    video = VideoSource("test", "v", str(media.video(source / "v.avi", 6)))
    (tmp_path / "out" / "test").mkdir(parents=True)
    plan = _plan(IngestConfig(source=str(source), out=str(tmp_path / "out"), size=(16, 16)))
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "node-bin" / "ffmpeg"
    wrapper.parent.mkdir()
    real = imageio_ffmpeg.get_ffmpeg_exe()
    wrapper.write_text(f'#!/bin/sh\necho called >> "{calls}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)

    task = ray_local.remote(ingest_row).options(
        runtime_env={"env_vars": {"IMAGEIO_FFMPEG_EXE": str(wrapper)}}
    )
    row = {"video": video.to_json(), "previous": json.dumps(None)}
    result = ray_local.get(task.remote(row, plan=plan), timeout=120)
    assert result["status"] == "ok" and result["frames"] == 6, result
    # the task's own ffmpeg read the video's duration, then decoded it
    assert calls.read_text().splitlines() == ["called", "called"]
