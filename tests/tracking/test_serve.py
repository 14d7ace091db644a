"""The served model answers what `mnad score` writes: a tiny model trained here on normal
videos, calibrated on them, registered as ``mnad-tiny@champion``; one video's frames sent to
it (loaded in this process, and over HTTP through `mlflow models serve`) answer the rows of
`mnad score`'s frames for that video, scored by the real Ray job with the same
model. The model folder carries the code it runs and no ``mnad`` requirement."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from mnad.calibration import DEFAULT_FALSE_ALARM_RATE, Calibration
from mnad.checkpoint import load_checkpoint
from pipelines import tracking
from pipelines.data import list_shards, read_frames
from pipelines.score import ScoreConfig, run_score
from pipelines.score.result import read_frames as read_scores
from pipelines.tracking.pyfunc import PREDICT_COLUMNS, REQUIREMENTS
from tests.share_nothing.cluster import answers, free_port
from tests.tiny_models import PRESET, TEST, calibrated_checkpoint, labelled_data
from tests.tracking.server import mlflow_server

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
NAME = "mnad-tiny"
CHAMPION = f"models:/{NAME}@champion"
SERVE_START_S = 240  # `mlflow models serve` downloads the model and starts uvicorn
COMPARED = ("psnr", "feature_distance", "point_score", "score_per_video", "score_calibrated")
ATOL = 1e-5
"""Absolute tolerance: `mnad score` decodes videos in lockstep batches, the endpoint one video
alone; float32 convolutions of another batch round differently (about 1e-6 near zero)."""


class Scored(NamedTuple):
    data: Path
    checkpoint: Path  # trained and calibrated
    calibration: Calibration
    uri: str  # the sqlite store the model is registered in, as champion
    frames: pd.DataFrame  # `mnad score`'s frames of the test split


@pytest.fixture(scope="module")
def scored(ray_local, tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """The tiny model trained and calibrated on the normal videos, registered as champion
    in a sqlite store, and the test split scored by `mnad score` with that version."""
    work = tmp_path_factory.mktemp("serve")
    data = labelled_data(work / "data")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    checkpoint = calibrated_checkpoint(data, work, uri)
    with tracking.start_run(uri, "tiny", "train", {"steps": 300}) as run:
        tracking.register_checkpoint(run, os.fspath(checkpoint), NAME, ("latest", "champion"))
    out = work / "scores"
    config = ScoreConfig(data=str(data), model=CHAMPION, out=str(out), tracking_uri=uri,
                         batch_size=8, quiet=True, report=False)  # fmt: skip
    run_score(config)
    frames = read_scores(str(out)).to_pandas()
    return Scored(data, checkpoint, load_checkpoint(checkpoint).calibration, uri, frames)


def video_frames(data: Path, video_id: str) -> np.ndarray:
    """A test video's frames as its shard holds them: uint8 (n, 16, 16, 1)."""
    (shard,) = [s for s in list_shards(str(data), "test") if s.endswith(f"/{video_id}.parquet")]
    return read_frames(shard, 0, TEST[video_id])


def score_rows(frames: pd.DataFrame, video_id: str) -> pd.DataFrame:
    rows = frames[frames["video_id"] == video_id].sort_values("frame_index")
    return rows.reset_index(drop=True)


def assert_rows_equal(answered: pd.DataFrame, expected: pd.DataFrame) -> None:
    """The served rows equal `mnad score`'s rows of the same frames, to float rounding."""
    assert answered["frame_index"].tolist() == expected["frame_index"].tolist()
    assert answered["memory_updated"].tolist() == expected["memory_updated"].tolist()
    for column in COMPARED:
        np.testing.assert_allclose(
            answered[column].to_numpy(np.float64), expected[column].to_numpy(np.float64),
            rtol=1e-5, atol=ATOL, err_msg=column,
        )  # fmt: skip


@pytest.fixture
def champion(scored: Scored, monkeypatch: pytest.MonkeyPatch):
    """The champion loaded in this process (MLflow's loaders read the global tracking URI)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", scored.uri)
    return mlflow.pyfunc.load_model(CHAMPION)


@pytest.mark.parametrize("video_id", sorted(TEST))
def test_loaded_model_answers_what_mnad_score_wrote(scored, champion, video_id) -> None:
    out = champion.predict(video_frames(scored.data, video_id))
    assert tuple(out.columns) == PREDICT_COLUMNS
    expected = score_rows(scored.frames, video_id)
    assert len(out) == TEST[video_id] - PRESET.model.clip_length + 1 == len(expected)
    assert_rows_equal(out, expected)
    threshold = scored.calibration.threshold(DEFAULT_FALSE_ALARM_RATE)
    assert out["alarm"].tolist() == (expected["score_calibrated"] > threshold).tolist()
    # the anomaly raises alarms; the normal video (frames of a calibration video) none
    assert out["alarm"].any() == (video_id == "b_anomalous")


def test_a_window_answers_the_first_rows(scored, champion) -> None:
    k = 16
    window = champion.predict(video_frames(scored.data, "b_anomalous")[:k])
    expected = score_rows(scored.frames, "b_anomalous").iloc[: k - PRESET.model.clip_length + 1]
    assert len(window) == len(expected) == k - PRESET.model.clip_length + 1
    for column in ("psnr", "feature_distance", "point_score", "score_calibrated"):
        np.testing.assert_allclose(
            window[column], expected[column], rtol=1e-5, atol=ATOL, err_msg=column
        )
    assert window["memory_updated"].tolist() == expected["memory_updated"].tolist()
    # the per-video score is min-max over the frames sent: the window's own scale
    assert not np.allclose(window["score_per_video"], expected["score_per_video"])


def test_the_false_alarm_rate_is_a_parameter(scored, champion) -> None:
    frames = video_frames(scored.data, "a_normal")
    out = champion.predict(frames, params={"false_alarm_rate": 0.25})
    threshold = scored.calibration.threshold(0.25)
    assert threshold < scored.calibration.threshold(DEFAULT_FALSE_ALARM_RATE)
    assert out["alarm"].tolist() == (out["score_calibrated"] > threshold).tolist()
    assert out["alarm"].any()  # a quarter of normal frames is over it
    with pytest.raises(mlflow.exceptions.MlflowException, match="false alarm rate must be"):
        champion.predict(frames, params={"false_alarm_rate": 1.5})


def test_the_model_folder_carries_its_code_and_no_mnad_requirement(scored, tmp_path) -> None:
    ref = tracking.find_model(CHAMPION, scored.uri)
    model_dir = Path(tracking.fetch_model(ref, scored.uri, dst=tmp_path / "dl")).parents[1]
    pins = (model_dir / "requirements.txt").read_text().split()
    conda = yaml.safe_load((model_dir / "conda.yaml").read_text())
    (pip,) = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict)]
    for listed in (pins, pip):
        names = [re.split(r"[=<>~!\[ ]", line)[0].lower() for line in listed]
        assert "mnad" not in names and not any("mnad" in line for line in listed), listed
        assert set(REQUIREMENTS) <= set(names), listed
        assert all("==" in line for line in listed if line.split("=")[0] in REQUIREMENTS)
    for module in ("mnad/video.py", "mnad/streaming.py", "pipelines/tracking/pyfunc.py"):
        assert (model_dir / "code" / module).read_bytes() == (ROOT / module).read_bytes()
    assert (model_dir / "artifacts" / "checkpoint" / "calibration.json").is_file()

    # Where neither `mnad` nor `pipelines` can be imported, the model still loads and
    # answers: from the code it carries.
    script = (
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        "root = Path(sys.argv[1]).resolve()\n"
        "sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != root]\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if not hasattr(f, 'find_spec')\n"
        "                    or f.find_spec('mnad', None) is None]\n"
        "assert importlib.util.find_spec('mnad') is None, 'mnad importable'\n"
        "assert importlib.util.find_spec('pipelines') is None, 'pipelines importable'\n"
        "import mlflow, numpy as np\n"
        "model = mlflow.pyfunc.load_model(sys.argv[2])\n"
        "out = model.predict(np.zeros((6, 16, 16, 1), np.uint8))\n"
        "print(len(out), sys.modules['pipelines.tracking.pyfunc'].__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), str(model_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows, module_file = done.stdout.split()[-2:]
    assert rows == "2" and Path(module_file).is_relative_to(model_dir / "code")


# --------------------------------------------------------------------------------------------
# Over HTTP: `mlflow models serve` of the champion in a real MLflow server
# --------------------------------------------------------------------------------------------


class Served(NamedTuple):
    url: str
    log: Path


@pytest.fixture(scope="module")
def served(scored: Scored, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`mlflow models serve -m models:/mnad-tiny@champion` of the calibrated model
    registered in a real `mlflow server`; stopped, with its workers, at the end."""
    work = tmp_path_factory.mktemp("http")
    with mlflow_server(work) as (uri, _):
        with tracking.start_run(uri, "tiny", "train", {"steps": 300}) as run:
            version = tracking.register_checkpoint(
                run, os.fspath(scored.checkpoint), NAME, ("latest", "champion")
            )
        assert tracking.alias_version(uri, NAME, "champion") == version.version
        port = free_port()
        log = work / "serve.log"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        with log.open("w") as sink:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION,
                    "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1",
                ],
                cwd=work, env=env, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with its workers
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVE_START_S
            while not answers(f"{url}/ping", 5):
                if proc.poll() is not None:
                    pytest.fail(f"mlflow models serve exited {proc.returncode}: {_tail(log)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve: no /ping in {SERVE_START_S} s: {_tail(log)}")
                time.sleep(1)
            yield Served(url, log)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text()[-chars:]


def invoke(served: Served, body: dict) -> tuple[int, dict]:
    """POST ``body`` as JSON to /invocations: (HTTP status, the JSON answered)."""
    request = urllib.request.Request(
        f"{served.url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
    except (urllib.error.URLError, OSError) as err:
        pytest.fail(f"POST /invocations: {err}; server log: {_tail(served.log)}")


@pytest.mark.slow
def test_served_over_http_answers_what_mnad_score_wrote(scored: Scored, served: Served) -> None:
    frames = video_frames(scored.data, "b_anomalous")
    status, answer = invoke(served, {"inputs": frames.tolist()})
    assert status == 200, f"{answer}; server log: {_tail(served.log)}"
    out = pd.DataFrame(answer["predictions"])
    assert tuple(out.columns) == PREDICT_COLUMNS
    expected = score_rows(scored.frames, "b_anomalous")
    assert_rows_equal(out, expected)
    threshold = scored.calibration.threshold(DEFAULT_FALSE_ALARM_RATE)
    assert out["alarm"].tolist() == (expected["score_calibrated"] > threshold).tolist()
    assert out["alarm"].any()

    # the rate as a request parameter
    body = {"inputs": frames.tolist(), "params": {"false_alarm_rate": 0.25}}
    status, answer = invoke(served, body)
    assert status == 200, answer
    alarm = pd.DataFrame(answer["predictions"])["alarm"]
    lower = scored.calibration.threshold(0.25)
    assert alarm.tolist() == (expected["score_calibrated"] > lower).tolist() and alarm.sum() > 1

    # frames of another size: refused before the model runs, with the reason
    status, answer = invoke(served, {"inputs": frames[:, :8, :8].tolist()})
    assert status == 400 and "does not match expected shape" in answer["message"], answer
