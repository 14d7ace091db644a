"""The MLflow tracking store: which one a job uses, and whether it can be used.

Runs on the driver (and in any process that opens a run, e.g. a Ray Train worker): plain
functions of a URI, no module state. ``resolve_tracking_uri`` is the one policy for turning
what a user gave (a URI, a path, nothing) into the store's URI; ``check_tracking`` fails
fast, in one line, on a store that cannot be reached, before any work starts. With a
sqlite store, artifacts live beside the database (``<db folder>/artifacts/<experiment>``)
rather than in MLflow's default ``./mlruns`` of whatever the current folder happens to be.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import mlflow

from pipelines import storage
from pipelines.errors import OptionError, UserError

DEFAULT_STORE = "mnad-runs/mlflow.db"
"""The sqlite store, relative to the working folder, used when no tracking URI is given."""

HTTP_TIMEOUT_S = 5.0
"""How long ``check_tracking`` waits for an HTTP tracking server to answer."""

_SQLITE = "sqlite:///"


def resolve_tracking_uri(
    uri: str | None, default_db: str | None = None, base: str | os.PathLike[str] = "."
) -> str:
    """The tracking URI of a job: the one policy for every stage, the spec and ``mnad ui``.

    - ``uri`` given: a URI is kept as it is, except that a relative ``sqlite:///file`` is
      made absolute against ``base``; a plain path is a sqlite file (absolute against
      ``base``), unless it is an existing folder (an old MLflow file store, which
      ``check_tracking`` refuses with the sqlite equivalent).
    - ``uri`` None: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<default_db>`` with
      ``default_db`` (default ``mnad-runs/mlflow.db``) absolute against ``base``; that
      database's folder is created. A ``default_db`` that is a URI (an object-store output)
      cannot hold a database: an :class:`OptionError` on ``tracking_uri``.
    """
    if uri:
        return _given(uri, base)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = default_db or DEFAULT_STORE
    if storage.is_uri(db):
        raise OptionError(
            "tracking_uri",
            f"required when the default store {db} is not a local file: give the MLflow "
            "server (http://...) that the jobs report to",
        )
    path = Path(storage.absolute(db, base))
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{_SQLITE}{path}"


def _given(uri: str, base: str | os.PathLike[str]) -> str:
    """A tracking URI a user gave, with relative sqlite files made absolute."""
    if uri.startswith(_SQLITE):
        file, query = _split_query(uri[len(_SQLITE) :])
        if file in ("", ":memory:"):
            return uri
        return f"{_SQLITE}{storage.absolute(file, base)}{query}"
    if storage.is_uri(uri) or uri.startswith(("databricks", "file:")):
        return uri
    path = Path(storage.absolute(uri, base))
    return str(path) if path.is_dir() else f"{_SQLITE}{path}"


def _split_query(rest: str) -> tuple[str, str]:
    """``"x.db?mode=ro"`` -> ``("x.db", "?mode=ro")``."""
    file, sep, query = rest.partition("?")
    return file, sep + query


def client(uri: str) -> mlflow.MlflowClient:
    """A client bound to the store at ``uri`` for both tracking and the model registry."""
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_tracking(uri: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
    """Raise a one-line ``UserError`` when the store at ``uri`` cannot be used.

    - ``http(s)://``: the server must answer an MLflow API request within ``timeout_s``
      seconds (no retries: MLflow's own client would retry for minutes).
    - ``sqlite:///``: the database's folder must be creatable, and the store must open.
    - a plain folder or ``file:`` URI: refused, as MLflow 3 does, with the sqlite equivalent.
    - anything else (a database server, Databricks): opened with a one-request search.
    """
    scheme = uri.split(":", 1)[0].lower() if "://" in uri else ""
    if uri.startswith("databricks"):
        scheme = "databricks"  # `databricks` and `databricks://profile`
    if scheme in ("http", "https"):
        _check_http(uri, timeout_s)
        return
    if scheme in ("", "file"):
        folder = uri[len("file://") :] if scheme == "file" else uri
        raise UserError(
            f"tracking store {uri}: MLflow 3 no longer accepts a plain folder store; use a "
            f"sqlite file, e.g. --tracking-uri sqlite:///{Path(folder).resolve()}/mlflow.db"
        )
    if scheme == "sqlite":
        _ensure_sqlite_folder(uri)
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure to open is the store's fault
        raise UserError(f"tracking store {uri} cannot be opened: {first_line(err)}") from None


def _check_http(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # it answers; credentials are MLflow's business (MLFLOW_TRACKING_TOKEN ...)
        raise UserError(
            f"tracking server {uri} answered HTTP {err.code} to an MLflow API request: "
            "is it an MLflow tracking server?"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(
            f"tracking server {uri} cannot be reached within {timeout_s:g} s: {reason}"
        ) from None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for an in-memory database."""
    rest = uri[len("sqlite://") :].split("?", 1)[0]
    if rest in ("", "/", "/:memory:"):
        return None
    return Path(rest[1:] if rest.startswith("/") else rest).expanduser()


def _ensure_sqlite_folder(uri: str) -> None:
    db = sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"tracking store {uri}: cannot create the folder {db.parent}: {err.strerror or err}"
        ) from None
    if not os.access(db.parent, os.W_OK):
        raise UserError(f"tracking store {uri}: the folder {db.parent} is not writable")


def experiment_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Beside the database for a sqlite store; the store's own default otherwise."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in experiment) or "default"
    return (db.resolve().parent / "artifacts" / slug).as_uri()


def first_line(err: BaseException) -> str:
    """The first line of an MLflow error (its messages run to tracebacks)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


__all__ = [
    "DEFAULT_STORE",
    "HTTP_TIMEOUT_S",
    "check_tracking",
    "client",
    "experiment_artifact_location",
    "first_line",
    "resolve_tracking_uri",
    "sqlite_path",
]
