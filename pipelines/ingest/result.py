"""What an ingest run produced (:class:`IngestResult`), and DATA/summary.json, its record.

Built on the driver from the manifest rows the Ray tasks returned (:func:`summarize`),
written as ``summary.json`` beside the shards, and read back from it by
:func:`pipelines.ingest.completion`. Train and score read the same file through
:func:`pipelines.data.read_summary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from pipelines import storage
from pipelines.ingest.config import IngestConfig, ingest_settings
from pipelines.ingest.layouts import Discovery
from pipelines.schema import DATA_SUMMARY_FILE, INGESTED, SPLITS, STATUS_FAILED, STATUS_OK


class Failure(NamedTuple):
    """A video that did not go in."""

    source: str  # the video file or frame folder
    error: str  # one line: the file and the cause


@dataclass(frozen=True)
class IngestResult:
    """What DATA holds after a run: its ``summary.json``, and the folder itself (``data``)."""

    data: str  # the DATA folder or URI
    source: str
    dataset: str
    layout: str
    label_file: str | None
    height: int | None  # None when the videos have different sizes
    width: int | None
    channels: int
    settings: dict[str, Any]  # ingest_settings() of the run
    splits: dict[str, dict[str, int]]  # split -> {"videos", "frames", "anomalous_frames"}
    ingested: int  # videos decoded by this run
    skipped: int  # videos left as an earlier run ingested them
    failures: tuple[Failure, ...]
    seconds: float
    frames_per_second: float | None

    @property
    def failed(self) -> tuple[str, ...]:
        """The one-line errors of the videos that failed."""
        return tuple(f.error for f in self.failures)

    @property
    def exit_status(self) -> int:
        """0 if every video went in, else 1."""
        return 1 if self.failures else 0

    def summary(self) -> dict[str, Any]:
        """The content of ``summary.json`` (everything but the folder it is in)."""
        return {
            "dataset": self.dataset,
            "layout": self.layout,
            "source": self.source,
            "label_file": self.label_file,
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "settings": self.settings,
            "splits": self.splits,
            "ingested": self.ingested,
            "skipped": self.skipped,
            "failed": [f._asdict() for f in self.failures],
            "seconds": self.seconds,
            "frames_per_second": self.frames_per_second,
        }

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, **self.summary()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> IngestResult:
        """From :meth:`to_json`, or from a ``summary.json`` with ``data`` added."""
        fields = {k: doc[k] for k in cls.__dataclass_fields__ if k != "failures"}
        failures = tuple(Failure(f["source"], f["error"]) for f in doc["failed"])
        return cls(**fields, failures=failures)

    def write(self) -> None:
        """Write ``summary.json`` in DATA, atomically."""
        storage.write_json(storage.join(self.data, DATA_SUMMARY_FILE), self.summary())


def read_summary(data: str) -> dict[str, Any] | None:
    """DATA's ``summary.json`` as written, or None if there is none (or it is not JSON)."""
    return storage.read_json(storage.join(data, DATA_SUMMARY_FILE))


def summarize(
    rows: list[dict[str, Any]], found: Discovery, config: IngestConfig, seconds: float
) -> IngestResult:
    """The result of a run, from the manifest rows of all its videos."""
    kept = [r for r in rows if r["status"] in INGESTED]
    splits = {
        split: {
            "videos": sum(1 for r in kept if r["split"] == split),
            "frames": sum(r["frames"] for r in kept if r["split"] == split),
            "anomalous_frames": sum(r["anomalous_frames"] for r in kept if r["split"] == split),
        }
        for split in SPLITS
    }
    sizes = {(r["height"], r["width"]) for r in kept}
    height, width = sizes.pop() if len(sizes) == 1 else (None, None)
    decoded = sum(r["frames"] for r in rows if r["status"] == STATUS_OK)
    ingested = sum(1 for r in rows if r["status"] == STATUS_OK)
    return IngestResult(
        data=config.out,
        source=config.source,
        dataset=config.dataset_name,
        layout=found.layout,
        label_file=found.label_file,
        height=height,
        width=width,
        channels=config.channels,
        settings=ingest_settings(config),
        splits=splits,
        ingested=ingested,
        skipped=len(kept) - ingested,
        failures=tuple(
            Failure(r["source"], r["error"]) for r in rows if r["status"] == STATUS_FAILED
        ),
        seconds=round(seconds, 3),
        frames_per_second=round(decoded / seconds, 1) if seconds > 0 else None,
    )
