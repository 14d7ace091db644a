"""`mnad demo`: the whole pipeline on one machine, from nothing, in a few minutes.

The demo is a built-in job spec (:data:`DEMO_SPEC`, the same as ``examples/synthetic.yaml``)
written to ``OUT/demo.yaml`` and run by :func:`pipelines.spec.run_spec`: a synthetic street
scene of real video files (``mnad synth``, size ``demo``), ingested at 96x96 grey, the
``small`` preset trained by one Ray Train worker with every CPU and registered in MLflow,
the test videos scored, the report written. Everything lands under OUT (``./mnad-runs`` by
default), the MLflow store at ``OUT/mlflow.db`` (where ``mnad ui`` looks by default), and the
run ends with the AUCs, the report's path and the command that opens the MLflow UI on that
store. Run it again and every stage is skipped; ``mnad run OUT/demo.yaml --force train``
trains anew.

The number of epochs is set so that the demo ends within 10 minutes on 2 cores, with a frame
AUC above 0.9 on the synthetic test videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.options import option, require_local_folder

DEMO_SPEC = """\
# The job of `mnad demo`: a synthetic street scene, end to end on one machine.
# Paths are relative to this file's folder. Run it again with `mnad run demo.yaml`.
name: demo
output: demo
tracking_uri: mlflow.db
experiment: synth-demo
synth:
  size: demo          # 8 training and 6 test videos of 240 frames, 128x128
  seed: 0
ingest:
  size: [96, 96]
  channels: 1
  dataset: synth
train:
  preset: small
  epochs: 5
  workers: 1          # one worker with every CPU: on 2 cores, 2 workers run at half the rate
  cpus_per_worker: 0  # 0: the cluster's CPUs split over the workers
  seed: 0
score:
  memory: [per-video]
"""


@dataclass
class DemoConfig:
    """Options of `mnad demo`."""

    out: str = option(
        "folder that receives everything the demo makes", default="mnad-runs", path=True
    )
    quiet: bool = option("print only errors and the result", default=False, execution=True)

    def __post_init__(self) -> None:
        require_local_folder("out", self.out, "the demo")


def write_demo_spec(out: str | Path) -> Path:
    """Write the demo's spec to ``OUT/demo.yaml`` (replacing an older one); return its path."""
    folder = Path(out).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo.yaml"
    if not path.is_file() or path.read_text(encoding="utf-8") != DEMO_SPEC:
        path.write_text(DEMO_SPEC, encoding="utf-8")
    return path


def run_demo(config: DemoConfig) -> Any:
    """Write the demo spec under ``config.out`` and run it on a new local Ray; the job's
    :class:`~pipelines.spec.JobResult`."""
    from pipelines.spec import RunSpecConfig, run_spec

    path = write_demo_spec(config.out)
    return run_spec(RunSpecConfig(spec=str(path), quiet=config.quiet, address="local"))
