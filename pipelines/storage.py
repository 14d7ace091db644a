"""The one way the stages touch files: local paths and object-store URIs alike.

Every path a stage reads or writes is a local path or a URI (``s3://``, ``gs://``) that
pyarrow's file systems open; nothing else in ``pipelines/`` calls ``open`` on a stage's
outputs. Writes that another process may read (shards, markers, summaries, part files) go
through :func:`atomic_output`: bytes land under a hidden temporary name in the same folder
and are moved into place only when complete, so a reader never sees half a file and a
crashed writer leaves only a temporary that :func:`remove_temporaries` clears.

Object stores: credentials and the endpoint come from the environment, as pyarrow, boto3 and
MLflow read them, so one setting serves the product, Ray Train's storage and MLflow's S3
artifacts alike: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or the node's role) and,
for an S3-compatible store that is not AWS (MinIO, Ceph, moto), ``AWS_ENDPOINT_URL_S3``
(or ``AWS_ENDPOINT_URL``), e.g. ``http://minio.storage:9000``; a single URI can carry
pyarrow's own ``?endpoint_override=HOST:PORT&scheme=http`` instead. The first time a process
touches a bucket, :func:`resolve` asks the store for it (:func:`check_reachable`), so a store
that cannot be reached fails in one line naming it before any work is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import UserError

TMP_MARK = ".tmp-"
"""Part of every temporary name: ``.<name>.tmp-<hex>`` beside the file it becomes."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # s3://, gs://, models:/, runs:/

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Where an s3:// URI's store is when it is not AWS, in the order pyarrow and boto3 read them."""

_OBJECT_STORES = ("s3", "gs", "gcs")
_reached: set[tuple[str, str]] = set()  # (endpoint, bucket) pairs that answered this process


def is_uri(location: str) -> bool:
    """Whether ``location`` is a URI (``s3://``, ``models:/``...) rather than a local path."""
    return bool(_SCHEME.match(location))


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system and the path in it, for a local path or an s3:// / gs:// URI."""
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        if uri.split("://", 1)[0].lower() in _OBJECT_STORES:
            _check_once(uri, fs, path)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def endpoint(uri: str) -> str:
    """Where the store of the object-store URI ``uri`` is: its ``endpoint_override``, else
    ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL`` for s3://, else the cloud's own."""
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    if "endpoint_override" in query:
        scheme = query.get("scheme", ["https"])[0]
        return f"{scheme}://{query['endpoint_override'][0]}"
    if parts.scheme.lower() == "s3":
        for name in ENDPOINT_ENV:
            if os.environ.get(name):
                return os.environ[name]
        return "AWS S3"
    return "Google Cloud Storage"


def check_reachable(uri: str) -> None:
    """Raise a one-line ``UserError`` naming the store when the bucket of the object-store
    URI ``uri`` cannot be asked for (no connection, no credentials, access denied).
    A bucket that does not exist is not an error here: writing creates what it needs."""
    if uri.split("://", 1)[0].lower() in _OBJECT_STORES:
        resolve(uri)  # checks, once per process and bucket


def _check_once(uri: str, fs: pafs.FileSystem, path: str) -> None:
    bucket = path.split("/", 1)[0]
    key = (endpoint(uri), bucket)
    if key in _reached:
        return
    try:
        fs.get_file_info(bucket)
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{uri}: the object store at {key[0]} cannot be reached (bucket {bucket}): {reason}"
        ) from None
    _reached.add(key)


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', the separator of every pyarrow file system."""
    return "/".join([base.rstrip("/"), *parts])


def absolute(location: str, base: str | os.PathLike[str] = ".") -> str:
    """A URI as it is; a path made absolute against ``base`` (``~`` expanded)."""
    if is_uri(location):
        return location
    return str((Path(base) / Path(location).expanduser()).resolve())


def kind(uri: str) -> pafs.FileType:
    """What is at ``uri``: ``FileType.File``, ``Directory`` or ``NotFound``."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).type


def exists(uri: str) -> bool:
    """Whether anything (a file or a folder) is at ``uri``."""
    return kind(uri) != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    return kind(uri) == pafs.FileType.File


def list_dir(uri: str) -> list[pafs.FileInfo]:
    """The entries directly under the folder ``uri`` (none if it does not exist)."""
    fs, path = resolve(uri)
    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))


def delete_file(uri: str) -> None:
    """Remove the file ``uri``, if it exists."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def delete_tree(uri: str) -> None:
    """Remove the folder ``uri`` and everything under it, if it exists."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def read_json(uri: str) -> dict[str, Any] | None:
    """The JSON object at ``uri``, or None if there is none or it is not one."""
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            doc = json.loads(f.read())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


@contextlib.contextmanager
def atomic_output(uri: str) -> Iterator[pa.NativeFile]:
    """A stream whose bytes appear at ``uri`` only once the block ends without an error."""
    fs, path = resolve(uri)
    folder, _, name = path.rpartition("/")
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{name}{TMP_MARK}{uuid.uuid4().hex}"
    try:
        with fs.open_output_stream(tmp) as sink:
            yield sink
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


def write_json(uri: str, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` as JSON at ``uri``, atomically."""
    with atomic_output(uri) as sink:
        sink.write(json.dumps(doc, indent=2, sort_keys=True, default=_plain).encode())


def write_parquet(table: pa.Table, uri: str, **options: Any) -> None:
    """Write ``table`` as a Parquet file at ``uri``, atomically."""
    with atomic_output(uri) as sink:
        pq.write_table(table, sink, **options)


def remove_temporaries(uri: str) -> None:
    """Delete the temporaries that interrupted writers left directly under folder ``uri``."""
    fs, _ = resolve(uri)
    for info in list_dir(uri):
        if info.base_name.startswith(".") and TMP_MARK in info.base_name:
            fs.delete_file(info.path)


def copy_tree(local: str | os.PathLike[str], uri: str) -> None:
    """Copy the local folder ``local`` to ``uri`` (a folder or an object-store prefix)."""
    fs, path = resolve(uri)
    pafs.copy_files(os.fspath(local), path, destination_filesystem=fs)


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and everything else ``json`` does not know (as text)."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


__all__ = [
    "TMP_MARK",
    "absolute",
    "ENDPOINT_ENV",
    "atomic_output",
    "check_reachable",
    "copy_tree",
    "delete_tree",
    "endpoint",
    "exists",
    "is_file",
    "is_uri",
    "join",
    "kind",
    "list_dir",
    "read_json",
    "remove_temporaries",
    "resolve",
    "write_json",
    "write_parquet",
]
