"""The `mnad` command line: a thin layer over the stage functions.

Every subcommand is one typed function that takes one config dataclass and returns the
stage's typed result. The dataclass's fields become the options (:mod:`pipelines.options`:
each field's help is its ``--help`` text, and a positional field is a positional
argument). The exit status is the result's ``exit_status`` (1 when some inputs failed),
else 0 (``mnad ui`` returns the UI's own). Errors that a user can fix (``UserError``) print
one line and exit with status 2; nothing else is caught here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from pipelines import options
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
    "calibrate": (
        "pipelines.calibrate",
        "CalibrateConfig",
        "run_calibrate",
        "fit a model's score scale on normal footage, for thresholds and events",
    ),
    "score": (
        "pipelines.score",
        "ScoreConfig",
        "run_score",
        "score every frame of a split or archive with a trained model; write the report",
    ),
    "export": (
        "pipelines.export",
        "ExportConfig",
        "run_export",
        "export a model for inference (ONNX): the memory an input, its update the runtime's",
    ),
    "evaluate": (
        "pipelines.evaluate",
        "EvaluateConfig",
        "run_evaluate",
        "score a registered version on a labelled split; record its AUCs on the version",
    ),
    "promote": (
        "pipelines.evaluate",
        "PromoteConfig",
        "run_promote",
        "move an alias to a version only if it measures at least as well as the alias's",
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
        options.add_arguments(sub, cls)
        ns = sub.parse_args(argv[1:])
        try:
            result = fn(options.from_args(cls, ns))
        except UserError as err:
            print(f"mnad {argv[0]}: error: {err}", file=sys.stderr)
            return 2
        if isinstance(result, int) and not isinstance(result, bool):
            return result  # `mnad ui`: the UI's own exit status
        return int(getattr(result, "exit_status", 0))
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
