"""The one Ray module: join or start a Ray, quiet it, size work against it, grow it.

- :class:`RaySession`: the Ray a job or a stage runs on, joined when first needed: the Ray
  this process is already connected to; else ``address`` (None: ``$RAY_ADDRESS``, else the
  cluster `ray start` began on this machine, else a new local Ray, stopped at the end).
  :func:`ray_session` is the same as a context manager that joins at once (one stage).
- :class:`Need`: the resources of N identical workers or actors, checked against the
  cluster's totals (:meth:`Need.shortfall`) and, on a cluster that can grow, requested from
  its autoscaler (:func:`nodes_for`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_EPS = 1e-9


class RaySession:
    """One Ray, joined by :meth:`ensure` (a job whose stages are all complete starts none).

    ``quiet`` turns off Ray Data's progress bars and its executor's log lines, and MLflow's
    store set-up messages, while the session lasts. ``log_to_driver`` (default: not quiet)
    forwards the workers' output to this console.
    """

    def __init__(
        self,
        address: str | None = None,
        quiet: bool = False,
        log_to_driver: bool | None = None,
    ) -> None:
        self.address = address
        self.quiet = quiet
        self.log_to_driver = (not quiet) if log_to_driver is None else log_to_driver
        self.can_grow = False
        """Whether the Ray is a running cluster (whose autoscaler may add nodes) rather
        than a local one of this process's own."""
        self._started = False
        self._joined = False
        self._restore: list[Callable[[], None]] = []

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure(self) -> RaySession:
        """Join (or start) the Ray if not done yet."""
        import ray
        import ray.data  # configures its loggers on import, before the levels below

        if self._joined:
            return self
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=self.log_to_driver,
                logging_level=logging.WARNING,
            )
            self._started = True
        self._joined = True
        self.can_grow = not _started_a_local_ray()
        context = ray.data.DataContext.get_current()
        bars = context.enable_progress_bars
        context.enable_progress_bars = bars and not self.quiet
        self._restore.append(lambda: setattr(context, "enable_progress_bars", bars))
        # Each stage prints its own progress lines: Ray Data's executor reports go (they
        # repeat every few seconds), and with quiet MLflow's store set-up messages too.
        levels = {"ray.data": logging.ERROR if self.quiet else logging.WARNING}
        if self.quiet:
            levels["mlflow"] = logging.WARNING
        for name, level in levels.items():
            logger = logging.getLogger(name)
            self._restore.append(lambda logger=logger, old=logger.level: logger.setLevel(old))
            logger.setLevel(level)
        return self

    def close(self) -> None:
        import ray

        for undo in reversed(self._restore):
            undo()
        self._restore.clear()
        if self._started:
            ray.shutdown()
            self._started = False
        self._joined = False


@contextlib.contextmanager
def ray_session(quiet: bool, log_to_driver: bool | None = None) -> Iterator[RaySession]:
    """A stage's Ray: the one this process is connected to, else a local one of its own."""
    with RaySession(quiet=quiet, log_to_driver=log_to_driver) as session:
        yield session.ensure()


def _started_a_local_ray() -> bool:
    """Whether ``ray.init`` made a new Ray (rather than connecting to a running one). Ray
    says so only on its private node object; without it, assume a local one (never wait)."""
    import ray._private.worker as ray_worker

    node = getattr(ray_worker, "_global_node", None)
    return bool(getattr(node, "head", True))


def cluster_resources() -> dict[str, float]:
    """The cluster's total resources (not what is free now): CPU, GPU, memory..."""
    import ray

    return dict(ray.cluster_resources())


@dataclass(frozen=True)
class Need:
    """``count`` workers or actors that each reserve ``bundle`` (``{"CPU": 2, "GPU": 1}``)."""

    bundle: dict[str, float]
    count: int

    @classmethod
    def of(cls, count: int, cpus: float, gpus: float = 0.0) -> Need:
        bundle = {"CPU": float(cpus)}
        if gpus > 0:
            bundle["GPU"] = float(gpus)
        return cls(bundle, count)

    @property
    def total(self) -> dict[str, float]:
        return {k: v * self.count for k, v in self.bundle.items()}

    def shortfall(self, have: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
        """``{resource: (needed, the cluster has)}`` for each resource the cluster lacks."""
        have = cluster_resources() if have is None else have
        return {
            k: (v, have.get(k, 0.0))
            for k, v in self.total.items()
            if v > have.get(k, 0.0) + _EPS
        }


@contextlib.contextmanager
def nodes_for(need: Need, timeout_s: float, say: Callable[[str], Any]) -> Iterator[None]:
    """On a cluster short of ``need``, ask its autoscaler for it
    (``ray.autoscaler.sdk.request_resources``) and wait up to ``timeout_s`` for the nodes to
    join; withdraw the request when the block ends. The stage's own check reports what is
    still missing after that."""
    if timeout_s <= 0 or not need.shortfall():
        yield
        return
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[need.bundle] * need.count)
    try:
        missing = {k: want - got for k, (want, got) in need.shortfall().items()}
        say(f"asking the autoscaler for {missing}; waiting up to {timeout_s:.0f} s")
        deadline = time.monotonic() + timeout_s
        while need.shortfall() and time.monotonic() < deadline:
            time.sleep(5.0)
        yield
    finally:
        request_resources(bundles=[])


__all__ = ["Need", "RaySession", "cluster_resources", "nodes_for", "ray_session"]
