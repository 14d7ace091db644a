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
