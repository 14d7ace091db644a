"""pipelines.tracking.ui: the `mlflow ui` command line of `mnad ui` and its options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.errors import OptionError, UserError
from pipelines.tracking.ui import UiConfig, ui_command

pytestmark = pytest.mark.usefixtures("no_global_store")


def test_ui_command_listens_on_loopback_by_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    command = ui_command(UiConfig(None, workdir=os.fspath(tmp_path)))
    assert command[1:4] == ["-m", "mlflow", "ui"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--workers") + 1] == "1"
    assert command[command.index("--backend-store-uri") + 1].endswith("mnad-runs/mlflow.db")
    assert command[command.index("--backend-store-uri") + 1] == (
        f"sqlite:///{tmp_path.resolve()}/mnad-runs/mlflow.db"
    )
    with pytest.raises(UserError, match="port"):
        UiConfig(None, port=0)


def test_ui_options_name_their_field() -> None:
    with pytest.raises(OptionError, match="port must be an integer in 1..65535") as err:
        UiConfig(None, port=70000)
    assert err.value.field == "port"
    with pytest.raises(OptionError, match="workers must be a positive integer") as err:
        UiConfig(None, workers=0)
    assert err.value.field == "workers"


def test_ui_command_of_a_given_store(tmp_path: Path) -> None:
    command = ui_command(UiConfig(f"sqlite:///{tmp_path}/x.db", port=5001))
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/x.db"
    assert command[command.index("--port") + 1] == "5001"
