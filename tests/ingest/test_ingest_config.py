"""IngestConfig (pipelines.ingest.config): validation naming the field, dataset names."""

from __future__ import annotations

import pytest

from pipelines.errors import OptionError
from pipelines.ingest import IngestConfig, default_dataset_name, ingest_settings
from pipelines.options import names


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"size": (0, 64)}, "size", "--size"),
        ({"channels": 2}, "channels", "--channels"),
        ({"dataset": "a b"}, "dataset", "--dataset"),
        ({"layout": "tiles"}, "layout", "unknown layout 'tiles'"),
        ({"row_group_mib": 0}, "row_group_mib", "--row-group-mib"),
        ({"ffmpeg_threads": 0}, "ffmpeg_threads", "--ffmpeg-threads"),
        ({"fps": 0}, "fps", "--fps must be a number > 0"),
        ({"fps": float("nan")}, "fps", "--fps must be a number > 0"),
    ],
)
def test_config_is_validated(kwargs: dict, field: str, message: str) -> None:
    with pytest.raises(OptionError, match=message) as err:
        IngestConfig("src", "out", **kwargs)
    assert err.value.field == field
    with pytest.raises(OptionError, match="--out is empty") as err:
        IngestConfig("src", "")
    assert err.value.field == "out"


def test_dataset_names_and_settings() -> None:
    assert default_dataset_name("/data/ucsd_ped2/") == "ped2"
    assert default_dataset_name("s3://bucket/UCSDped2") == "ped2"
    assert default_dataset_name("/x/My Archive") == "my_archive"
    config = IngestConfig("/data/ucsd_ped2", "out", size=[64, 64])
    assert config.size == (64, 64)
    assert ingest_settings(config) == {
        "dataset": "ped2", "requested_size": [64, 64], "channels": 1,
    }  # fmt: skip
    assert set(names(IngestConfig, "path")) == {"source", "out"}
    assert names(IngestConfig, "positional") == ("source",)
    assert "quiet" in names(IngestConfig, "execution")
