"""What every stage shares with the orchestrator: how it says its outputs are complete.

Each stage package (``ingest``, ``train``, ``score``, and ``synth``) has a typed config in,
a typed result out (``to_json`` / ``from_json``), and ``completion(config)``, which looks at
the stage's outputs and says whether they are there and current for that config, with the
result they hold when they are; ``discard(config)`` deletes those outputs (``--force``, or
the state of a start that died before it could be continued). ``mnad run`` decides what
to run from these alone (:mod:`pipelines.spec.plan`); it never reads a stage's files itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines import storage

MARKER = "_SUCCESS.json"
"""The file whose presence says a stage's outputs are complete, and what made them."""


@dataclass(frozen=True)
class Completion:
    """Whether a stage's outputs for one config are complete.

    ``reason``: why not (``"no summary.json yet"``), or what is there when complete.
    ``result``: the stage's typed result, read back from its outputs, when complete.
    ``partial``: outputs of an interrupted run that a new run continues rather than
    starting over (a training run's state, scored videos).
    """

    complete: bool
    reason: str
    result: Any = None
    partial: bool = False

    @classmethod
    def done(cls, result: Any, reason: str) -> Completion:
        return cls(True, reason, result)

    @classmethod
    def missing(cls, reason: str, partial: bool = False) -> Completion:
        return cls(False, reason, None, partial)


class Result:
    """A stage's typed result (a frozen dataclass) as JSON and back: its fields, tuples as
    lists; keys a newer writer added are ignored on the way back."""

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Any:
        hints = typing.get_type_hints(cls)
        given = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in doc:
                value = doc[f.name]
                tuple_field = typing.get_origin(hints[f.name]) is tuple
                given[f.name] = tuple(value) if tuple_field and value is not None else value
        return cls(**given)


def exports(package: str, modules: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A stage package's ``__getattr__``: each public name (``modules``: module -> names) is
    imported from its module when first asked for, so that a Ray task which imports one
    light module of the package (``pipelines.train.data``) does not import the driver's
    torch, MLflow and matplotlib with it."""
    owner = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in owner:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{owner[name]}"), name)

    return __getattr__


def fingerprint(doc: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-able mapping (what identifies a stage's result)."""
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def read_marker(folder: str) -> dict[str, Any] | None:
    """The marker document in ``folder``, or None if the stage did not complete there."""
    return storage.read_json(storage.join(folder, MARKER))


def write_marker(folder: str, doc: dict[str, Any]) -> None:
    """Say, atomically, that the outputs in ``folder`` are complete and what made them."""
    storage.write_json(storage.join(folder, MARKER), doc)


__all__ = [
    "MARKER", "Completion", "Result", "exports", "fingerprint", "read_marker", "write_marker"
]  # fmt: skip
