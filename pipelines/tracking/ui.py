"""`mnad ui`: the MLflow UI on the store that holds the runs and the registered models.

Runs on the driver: ``run_ui`` starts ``mlflow ui`` as a child process on this machine and
waits for it (Ctrl-C stops it). It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import OptionError, UserError
from pipelines.options import option
from pipelines.tracking.store import DEFAULT_STORE, check_tracking, resolve_tracking_uri


@dataclass
class UiConfig:
    """Options of `mnad ui`."""

    tracking_uri: str | None = option(
        "MLflow store to open (default: $MLFLOW_TRACKING_URI, else "
        f"sqlite:///WORKDIR/{DEFAULT_STORE})",
        default=None,
    )
    host: str = option(
        "address to listen on (0.0.0.0 exposes the UI to the network)", default="127.0.0.1"
    )
    port: int = option("port to listen on", default=5000)
    workers: int = option("server processes (one serves a person; each takes seconds)", default=1)
    workdir: str = option(
        "working folder whose mnad-runs/ holds the default store", default=".", path=True
    )

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise OptionError("port", f"port must be an integer in 1..65535, not {self.port!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise OptionError(
                "workers", f"workers must be a positive integer, not {self.workers!r}"
            )


def ui_command(config: UiConfig) -> list[str]:
    """The `mlflow ui` command line that ``run_ui`` runs."""
    default_db = str(Path(config.workdir) / DEFAULT_STORE)
    uri = resolve_tracking_uri(config.tracking_uri, default_db=default_db)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--workers",
        str(config.workers),
    ]


def run_ui(config: UiConfig) -> int:
    """Serve the MLflow UI on the store until Ctrl-C; returns mlflow's exit status."""
    command = ui_command(config)
    uri = command[command.index("--backend-store-uri") + 1]
    if uri.startswith(("http://", "https://")):
        raise UserError(f"{uri} is a tracking server with its own UI: open it in a browser")
    check_tracking(uri)
    print(f"MLflow UI on {uri}: http://{config.host}:{config.port}  (Ctrl-C stops it)")
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


__all__ = ["UiConfig", "run_ui", "ui_command"]
