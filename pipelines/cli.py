"""The `mnad` command line: a thin layer over the stage functions.

Every subcommand is one typed function that takes one config dataclass. The dataclass's
fields become the options; each field's ``metadata["help"]`` is its ``--help`` text, and a
field with ``metadata["positional"]`` is a positional argument. Errors that a user can fix
(``UserError``) print one line and exit with status 2; nothing else is caught here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from pipelines.errors import UserError

# name -> (module, config class, function, one-line description). Imported lazily so that
# `mnad --help` does not pay for Ray, MLflow or torch.
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "synth": (
        "pipelines.synth",
        "SynthConfig",
        "synthesize",
        "write a synthetic data set of real video files with labelled anomalies",
    ),
    "ingest": (
        "pipelines.ingest",
        "IngestConfig",
        "run_ingest",
        "decode videos or frame folders into Parquet shards with Ray Data",
    ),
    "train": (
        "pipelines.train",
        "TrainConfig",
        "run_train",
        "train the memory model with Ray Train; track it and register it in MLflow",
    ),
    "score": (
        "pipelines.score",
        "ScoreConfig",
        "run_score",
        "score every frame of a split or archive with a trained model; write the report",
    ),
    "run": (
        "pipelines.spec",
        "RunSpecConfig",
        "run_spec",
        "run a whole job (ingest, train, score) described by one YAML file",
    ),
    "demo": (
        "pipelines.demo",
        "DemoConfig",
        "run_demo",
        "synthesise videos, ingest, train, register, score and report, under ./mnad-runs",
    ),
    "ui": (
        "pipelines.tracking",
        "UiConfig",
        "run_ui",
        "open the MLflow UI on the store that holds the runs and models",
    ),
    "import-paper": (
        "pipelines.import_paper",
        "ImportPaperConfig",
        "import_paper",
        "convert a checkpoint of the paper's code (model.pth + keys.pt) into this project's",
    ),
}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of the dataclass ``cls`` (positional where marked)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        help_text = f.metadata.get("help", "")
        has_default = f.default is not dataclasses.MISSING or (
            f.default_factory is not dataclasses.MISSING
        )
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if has_default else None)
        )
        kwargs: dict[str, Any] = {"help": help_text}
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs["type"] = type(typing.get_args(tp)[0])
        elif origin in (tuple, list):
            args = typing.get_args(tp)
            kwargs["type"] = args[0]
            kwargs["nargs"] = len(args) if origin is tuple and ... not in args else "+"
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
        if f.metadata.get("positional"):
            kwargs.pop("action", None)
            parser.add_argument(f.name, metavar=f.name.upper(), **kwargs)
            continue
        if has_default:
            kwargs["default"] = default
            if tp is not bool and default is not None:
                kwargs["help"] = f"{help_text} (default: {default})"
        elif not optional:
            kwargs["required"] = True
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, dest=f.name, **kwargs)


def dataclass_from_args(cls: type, ns: argparse.Namespace) -> Any:
    values = {}
    for f in dataclasses.fields(cls):
        if f.init and f.metadata.get("cli") is not False and hasattr(ns, f.name):
            value = getattr(ns, f.name)
            if isinstance(value, list) and typing.get_origin(f.type) is not list:
                value = tuple(value)
            values[f.name] = value
    return cls(**values)


def _load(name: str) -> tuple[type, Callable[[Any], Any]]:
    import importlib

    module_name, cls_name, fn_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, cls_name), getattr(module, fn_name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnad", description="MNAD video anomaly detection: ingest, train, score."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, _, description) in COMMANDS.items():
        sub.add_parser(name, help=description, description=description)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command name first, then give that command's parser its real options, so
    # that only the chosen stage is imported.
    if argv and argv[0] in COMMANDS:
        cls, fn = _load(argv[0])
        sub = argparse.ArgumentParser(prog=f"mnad {argv[0]}", description=COMMANDS[argv[0]][3])
        add_dataclass_arguments(sub, cls)
        ns = sub.parse_args(argv[1:])
        try:
            config = dataclass_from_args(cls, ns)
            result = fn(config)
        except UserError as err:
            print(f"mnad {argv[0]}: error: {err}", file=sys.stderr)
            return 2
        if isinstance(result, int) and not isinstance(result, bool):
            return result
        return 0
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
