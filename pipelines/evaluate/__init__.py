"""The registry workflow (`mnad evaluate`, `mnad promote`): a registered version measured on a
labelled split, its figures recorded on the version, and an alias moved to a version only
when it measures at least as well as the one that holds it.

- :mod:`.config` (driver): :class:`EvaluateConfig` and :class:`PromoteConfig`, the options;
- :mod:`.record` (anywhere, pure): the tags a version's evaluations and promotions are
  recorded in, written and read back, and :class:`Comparison`, the decision;
- :mod:`.evaluate` (driver): :func:`run_evaluate`, a labelled split scored by `mnad score`
  and its metrics tagged on the version, with :class:`EvaluateResult`;
- :mod:`.promote` (driver): :func:`run_promote`, the two versions' recorded figures
  (measured first where missing and ``--on DATA`` is given), the alias moved or left, the
  comparison tagged on both, with :class:`PromoteResult`.
"""

from pipelines.stage import exports

_MODULES = {
    "config": ("EvaluateConfig", "PromoteConfig"),
    "evaluate": ("EvaluateResult", "pinned_version", "run_evaluate"),
    "promote": ("PromoteResult", "run_promote"),
    "record": ("Comparison", "METRICS", "eval_tags", "evaluated_datasets", "recorded"),
}

__getattr__ = exports(__name__, _MODULES)
__all__ = sorted(name for names in _MODULES.values() for name in names)
