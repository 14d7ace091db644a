"""`mnad run SPEC.yaml`: the orchestrator of whole jobs.

One YAML file describes a job (``examples/*.yaml``); stages run in this order::

    name: ped2                          # required: names the training run
    output: ../mnad-runs/ped2           # the job's folder or URI (default: mnad-runs/NAME)
    tracking_uri: ../mnad-runs/mlflow.db  # MLflow: a URI, or a sqlite file (default:
                                        #   $MLFLOW_TRACKING_URI, else OUTPUT/mlflow.db)
    experiment: ped2                    # default: the data set's name
    synth: {size: demo}                 # optional: generate the source (`mnad synth`)
    ingest:                             # `mnad ingest` options; out defaults to OUTPUT/data
      source: ../../shared/datasets/ucsd_ped2
      layout: frames
      size: [96, 96]
    train:                              # `mnad train` options; omit it to score score.model
      preset: small
      workers: 1
    evaluate: {split: test}             # `mnad evaluate` options: the trained version on DATA
    promote:                            # `mnad promote` options; on defaults to DATA
      alias: champion                   #   moved only if the version measures at least as well
    score:                              # `mnad score` options; out defaults to OUTPUT/scores
      memory: [per-video, paper]        # one scoring job per mode
      model: models:/mnad-ped2@champion # default: promote's alias, else the model `train`
                                        #   registers

- :mod:`~pipelines.spec.parse`: the YAML into each stage's config (one validation, shared
  with the command line), every error one line naming the file and the key.
- :mod:`~pipelines.spec.plan`: what to do with each stage (skip, resume, run fresh), a
  pure function of the stage's own ``completion`` and ``--force``.
- :mod:`~pipelines.spec.run`: the stages in turn, one Ray for the job, the typed results.
- :mod:`~pipelines.spec.result`: the job's result as JSON (``--json``) and as lines.
"""

from pipelines.spec.parse import STAGES, JobSpec, SpecError, load_spec, parse_spec
from pipelines.spec.plan import Step, decide
from pipelines.spec.result import JobResult, StageOutcome, format_result
from pipelines.spec.run import RunSpecConfig, run_job, run_spec

__all__ = [
    "STAGES",
    "JobResult",
    "JobSpec",
    "RunSpecConfig",
    "SpecError",
    "StageOutcome",
    "Step",
    "decide",
    "format_result",
    "load_spec",
    "parse_spec",
    "run_job",
    "run_spec",
]
