"""How a model version's evaluations and promotions are recorded (its tags), and the
comparison that decides a promotion. Pure: the tags are read and written by
:mod:`pipelines.tracking`.

An evaluation of a version on split SPLIT of data set DATASET (the name `mnad ingest` gave
it, as in the registered model ``mnad-<dataset>``)::

    mnad.eval.<dataset>.<split>.micro_auc    0.9123   and each other of METRICS the scores have
    mnad.eval.<dataset>.<split>.run_id       the `mnad score` run that measured them
    mnad.eval.<dataset>.<split>.normalise    calibrated | per-video: what ``micro_auc`` scored
    mnad.eval.<dataset>.<split>.data         the DATA folder scored

The registry page then shows each version's AUC on each data set. A promotion's comparison
is the tag ``mnad.promote.<alias>`` (JSON) on both versions compared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

EVAL_PREFIX = "mnad.eval"
PROMOTE_PREFIX = "mnad.promote"

Metric = Literal["micro_auc", "macro_auc", "eer", "calibrated_micro_auc", "per_video_micro_auc"]
METRICS: tuple[str, ...] = (
    "micro_auc", "macro_auc", "eer", "calibrated_micro_auc", "per_video_micro_auc"
)  # fmt: skip
"""The frame metrics of `mnad score` recorded on a version, when the scores have them."""
LOWER_IS_BETTER = frozenset({"eer"})
"""The metrics where a smaller value is the better model (the others: AUCs)."""

RUN_ID, NORMALISE, DATA = "run_id", "normalise", "data"


def key_part(name: str) -> str:
    """``name`` as one part of a tag key: word characters and dashes, the rest ``_`` (a
    dot would split the key)."""
    return re.sub(r"[^\w\-]", "_", name)


def eval_key(dataset: str, split: str, field: str) -> str:
    """``mnad.eval.<dataset>.<split>.<field>``."""
    return f"{EVAL_PREFIX}.{key_part(dataset)}.{key_part(split)}.{field}"


def promote_key(alias: str) -> str:
    """``mnad.promote.<alias>``."""
    return f"{PROMOTE_PREFIX}.{key_part(alias)}"


def eval_tags(
    dataset: str,
    split: str,
    metrics: Mapping[str, float],
    run_id: str | None,
    normalise: str,
    data: str,
) -> dict[str, str]:
    """The tags of one evaluation: each of METRICS in ``metrics`` (full precision), the run,
    the normalisation and the DATA folder."""
    tags = {eval_key(dataset, split, k): repr(float(metrics[k])) for k in METRICS if k in metrics}
    tags[eval_key(dataset, split, RUN_ID)] = run_id or ""
    tags[eval_key(dataset, split, NORMALISE)] = normalise
    tags[eval_key(dataset, split, DATA)] = data
    return tags


def recorded(tags: Mapping[str, str], dataset: str, split: str) -> dict[str, float] | None:
    """The metrics recorded by a version's evaluation on ``dataset``'s ``split``; None when
    it has none (no run recorded)."""
    if eval_key(dataset, split, RUN_ID) not in tags:
        return None
    return {
        k: float(tags[eval_key(dataset, split, k)])
        for k in METRICS
        if eval_key(dataset, split, k) in tags
    }


def recorded_field(tags: Mapping[str, str], dataset: str, split: str, field: str) -> str | None:
    """Another field of a recorded evaluation (``run_id``, ``normalise``, ``data``)."""
    return tags.get(eval_key(dataset, split, field))


def evaluated_datasets(tags: Mapping[str, str], split: str) -> tuple[str, ...]:
    """The data sets (as in the keys) a version has an evaluation of ``split`` recorded on."""
    head, tail = f"{EVAL_PREFIX}.", f".{key_part(split)}.{RUN_ID}"
    return tuple(
        sorted(k[len(head) : -len(tail)] for k in tags if k.startswith(head) and k.endswith(tail))
    )


@dataclass(frozen=True)
class Comparison:
    """A candidate's value of ``metric`` against the incumbent's."""

    metric: str
    candidate: float
    incumbent: float

    @property
    def margin(self) -> float:
        """How far the candidate is ahead, in the metric's units: >= 0 when it is at least as
        good (for ``eer``, lower is better)."""
        ahead = self.candidate - self.incumbent
        return -ahead if self.metric in LOWER_IS_BETTER else ahead

    @property
    def promotes(self) -> bool:
        """At least as good: a tie promotes."""
        return self.margin >= 0

    @property
    def relation(self) -> str:
        """How the candidate's value stands to the incumbent's: ``>=`` or ``<`` (``<=`` or
        ``>`` where lower is better)."""
        lower = self.metric in LOWER_IS_BETTER
        if self.promotes:
            return "<=" if lower else ">="
        return ">" if lower else "<"

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "candidate": self.candidate,
            "incumbent": self.incumbent,
            "margin": self.margin,
        }


__all__ = [
    "EVAL_PREFIX",
    "LOWER_IS_BETTER",
    "METRICS",
    "PROMOTE_PREFIX",
    "Comparison",
    "Metric",
    "eval_key",
    "eval_tags",
    "evaluated_datasets",
    "key_part",
    "promote_key",
    "recorded",
    "recorded_field",
]
