"""The calibrate stage (`mnad calibrate MODEL DATA`, and the end of `mnad train`): normal
footage scored with the test-time rules, and the scale of the scores fitted on it
(:mod:`mnad.calibration`), stored with the model.

- :mod:`.config` (driver): :class:`CalibrateConfig`, the options;
- :mod:`.driver` (driver): :func:`calibrate_videos` (score the videos on the cluster, fit)
  and :func:`run_calibrate` (a model's calibration, stored: a new registered version, or
  the checkpoint folder itself), with :class:`CalibrateResult`.
"""

from pipelines.stage import exports

_MODULES = {
    "config": ("CalibrateConfig",),
    "driver": ("CalibrateResult", "calibrate_videos", "run_calibrate"),
}

__getattr__ = exports(__name__, _MODULES)
__all__ = sorted(name for names in _MODULES.values() for name in names)
