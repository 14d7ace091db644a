"""pipelines.tracking.store: the one tracking-URI policy and the fail-fast store check."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from pipelines.errors import OptionError, UserError
from pipelines.tracking import store as tracking_store
from pipelines.tracking.store import check_tracking, resolve_tracking_uri

pytestmark = pytest.mark.usefixtures("no_global_store")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ---- resolve_tracking_uri: one branch each ------------------------------------------------


def test_resolve_tracking_uri_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = resolve_tracking_uri(None, base=tmp_path)
    assert default == f"sqlite:///{tmp_path.resolve()}/mnad-runs/mlflow.db"
    assert (tmp_path / "mnad-runs").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(None, base=tmp_path) == "http://127.0.0.1:1"
    assert resolve_tracking_uri(None, "out/mlflow.db", tmp_path) == "http://127.0.0.1:1"
    # a given URI wins over the environment; a relative sqlite file is made absolute
    assert resolve_tracking_uri("sqlite:///x.db", base=tmp_path) == (
        f"sqlite:///{tmp_path.resolve()}/x.db"
    )


def test_default_store_is_absolute_against_the_working_folder(tmp_path: Path, no_env) -> None:
    # no_global_store runs the test in tmp_path
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mnad-runs/mlflow.db"


def test_default_db_relative_and_absolute(tmp_path: Path, no_env) -> None:
    spec = tmp_path / "spec"
    got = resolve_tracking_uri(None, default_db="out/mlflow.db", base=spec)
    assert got == f"sqlite:///{spec.resolve()}/out/mlflow.db"
    assert (spec / "out").is_dir()  # the database's folder is created
    absolute = tmp_path / "elsewhere" / "runs.db"
    got = resolve_tracking_uri(None, default_db=str(absolute), base=spec)
    assert got == f"sqlite:///{absolute}"
    assert absolute.parent.is_dir()


def test_default_db_that_is_a_uri_needs_a_tracking_uri(no_env) -> None:
    with pytest.raises(OptionError) as err:
        resolve_tracking_uri(None, default_db="s3://bucket/out/mlflow.db")
    assert err.value.field == "tracking_uri"
    assert "s3://bucket/out/mlflow.db" in str(err.value) and "\n" not in str(err.value)


def test_given_sqlite_uris(tmp_path: Path) -> None:
    absolute = f"sqlite:///{tmp_path}/a.db"  # sqlite:////tmp/...: kept as it is
    assert resolve_tracking_uri(absolute, base="/elsewhere") == absolute
    assert resolve_tracking_uri("sqlite:///rel/b.db?timeout=5", base=tmp_path) == (
        f"sqlite:///{tmp_path.resolve()}/rel/b.db?timeout=5"
    )
    for memory in ("sqlite://", "sqlite:///:memory:"):
        assert resolve_tracking_uri(memory, base=tmp_path) == memory
    assert not (tmp_path / "rel").exists()  # a given store's folder is check_tracking's job


def test_given_uris_are_kept(tmp_path: Path) -> None:
    for uri in (
        "http://mlflow:5000",
        "https://mlflow.example.com",
        "postgresql://user@db/mlflow",
        "databricks",
        "databricks://profile",
        "file:///tmp/mlruns",
    ):
        assert resolve_tracking_uri(uri, base=tmp_path) == uri


def test_given_plain_path_is_a_sqlite_file(tmp_path: Path) -> None:
    assert resolve_tracking_uri("runs/mlflow.db", base=tmp_path) == (
        f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    )
    assert resolve_tracking_uri(str(tmp_path / "m.db"), base="/elsewhere") == (
        f"sqlite:///{tmp_path}/m.db"
    )


def test_given_existing_folder_is_left_for_check_tracking_to_refuse(tmp_path: Path) -> None:
    (tmp_path / "old-store").mkdir()  # an MLflow 2 file store, say
    got = resolve_tracking_uri("old-store", base=tmp_path)
    assert got == str((tmp_path / "old-store").resolve())
    with pytest.raises(UserError, match="sqlite:///"):
        check_tracking(got)


# ---- check_tracking -----------------------------------------------------------------------


def test_check_tracking_unreachable_server_fails_fast_in_one_line() -> None:
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        check_tracking(f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - start < tracking_store.HTTP_TIMEOUT_S + 1
    assert "cannot be reached" in str(err.value) and "\n" not in str(err.value)


def test_check_tracking_silent_server_times_out() -> None:
    with socket.socket() as sock:  # accepts connections (backlog), never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(UserError, match="cannot be reached within 0.5 s"):
            check_tracking(uri, timeout_s=0.5)
    assert time.monotonic() - start < 2


def test_check_tracking_refuses_folder_store_and_unwritable_sqlite(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="sqlite:///"):
        check_tracking(os.fspath(tmp_path / "mlruns"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create the folder"):
        check_tracking(f"sqlite:///{blocker}/sub/mlflow.db")


def test_check_tracking_accepts_the_sqlite_store(store: str) -> None:
    check_tracking(store)


# ---- sqlite files and artifact locations ----------------------------------------------------


def test_sqlite_path_and_artifact_location(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/db/mlflow.db?timeout=5"
    assert tracking_store.sqlite_path(uri) == tmp_path / "db" / "mlflow.db"
    assert tracking_store.sqlite_path("sqlite:///:memory:") is None
    location = tracking_store.experiment_artifact_location(uri, "ped2 / test")
    assert location == (tmp_path / "db" / "artifacts" / "ped2___test").as_uri()
    assert tracking_store.experiment_artifact_location("http://mlflow:5000", "ped2") is None
