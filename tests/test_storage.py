"""pipelines.storage: the one path resolver and atomic write, on a real local file system."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import storage


def test_paths_and_uris(tmp_path: Path) -> None:
    assert storage.is_uri("s3://bucket/x") and storage.is_uri("models:/m@champion")
    assert not storage.is_uri("runs/x") and not storage.is_uri("/abs/x")
    assert storage.absolute("s3://bucket/x", tmp_path) == "s3://bucket/x"
    assert storage.absolute("a/../b", tmp_path) == str(tmp_path / "b")
    assert storage.join("s3://bucket/x/", "y", "z.json") == "s3://bucket/x/y/z.json"


def test_a_json_write_is_atomic_and_reads_back(tmp_path: Path) -> None:
    target = str(tmp_path / "deep" / "marker.json")
    assert storage.read_json(target) is None and not storage.exists(target)
    storage.write_json(target, {"b": 2, "a": [1.5, "x"]})
    assert storage.read_json(target) == {"a": [1.5, "x"], "b": 2}
    assert storage.is_file(target) and not storage.is_file(str(tmp_path / "deep"))
    (tmp_path / "deep" / "list.json").write_text("[1, 2]")
    assert storage.read_json(str(tmp_path / "deep" / "list.json")) is None  # not an object


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path: Path) -> None:
    target = str(tmp_path / "part.parquet")
    with pytest.raises(RuntimeError, match="writer died"), storage.atomic_output(target) as sink:
        sink.write(b"half a file")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []
    table = pa.table({"x": [1, 2, 3]})
    storage.write_parquet(table, target)
    assert pq.read_table(target).equals(table)
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]


def test_temporaries_of_interrupted_writers_are_removed(tmp_path: Path) -> None:
    (tmp_path / f".v1.parquet{storage.TMP_MARK}abc").write_bytes(b"x")
    (tmp_path / "v2.parquet").write_bytes(b"kept")
    (tmp_path / ".hidden").write_bytes(b"kept too")
    storage.remove_temporaries(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "v2.parquet"]
    storage.delete_tree(str(tmp_path / "missing"))  # nothing there: nothing to do
    storage.delete_tree(str(tmp_path))
    assert not tmp_path.exists()
