"""The one Ray module: join or start a Ray, quiet it, size work against it, grow it.

- :class:`RaySession`: the Ray a job or a stage runs on, joined when first needed: the Ray
  this process is already connected to; else ``address`` (None: ``$RAY_ADDRESS``, else the
  cluster `ray start` began on this machine, else a new local Ray, stopped at the end).
  :func:`ray_session` is the same as a context manager that joins at once (one stage).
- :class:`Need`: the resources of N identical workers or actors, checked against what each
  node has (:func:`node_resources`, :meth:`Need.fits`: a bundle never spans two nodes) and
  the cluster's totals (:meth:`Need.shortfall`); :func:`bundle_cpus` sizes a bundle to the
  nodes; :func:`admit` decides whether to run, grow or refuse, and on a cluster that can grow
  :func:`nodes_for` asks its autoscaler for the nodes.

The Ray that :class:`RaySession` starts for itself listens on 127.0.0.1 only (Ray's
loopback-only mode, :data:`LOOPBACK_ENV`), so the embedded default opens no port to the
network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

_EPS = 1e-9

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's loopback-only mode when "0" (its default on macOS and Windows): the node's address,
and so every port its GCS, raylet and workers open, is 127.0.0.1. Ray reads it when it is
first imported."""


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
        """Join (or start) the Ray if not done yet; one started here listens on 127.0.0.1."""
        if self._joined:
            return self
        loopback = self._loopback_if_local()  # before Ray is imported
        import ray
        import ray.data  # configures its loggers on import, before the levels below

        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=self.log_to_driver,
                logging_level=logging.WARNING,
            )
            self._started = True
        loopback()
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

    def _loopback_if_local(self) -> Callable[[], None]:
        """Before Ray is imported: when no address is given (``address``, ``$RAY_ADDRESS``),
        set Ray's loopback-only mode, so that a Ray started here listens on 127.0.0.1 only
        (joining a cluster ``ray start`` began on this machine works in that mode too). The
        mode stays as it was when Ray was imported already (say so if it starts one then).
        Returns what restores the environment once Ray is up (its processes keep the mode)."""
        if self.address or os.environ.get("RAY_ADDRESS") or LOOPBACK_ENV in os.environ:
            return lambda: None
        if "ray" not in sys.modules:
            os.environ[LOOPBACK_ENV] = "0"
            return lambda: os.environ.pop(LOOPBACK_ENV, None)

        def warn() -> None:
            from ray._private import ray_constants

            if self._started and ray_constants.ENABLE_RAY_CLUSTER:
                print(
                    f"mnad: Ray was imported before the session: its local Ray listens on "
                    f"every interface (set {LOOPBACK_ENV}=0 before importing ray)",
                    file=sys.stderr,
                    flush=True,
                )

        return warn

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


Nodes = Sequence[dict[str, float]]
"""What each node has (its total resources), one mapping per alive node."""


def node_resources() -> list[dict[str, float]]:
    """The total resources of each alive node of the cluster (not what is free now)."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def largest_node(nodes: Nodes, resource: str = "CPU") -> float:
    """The most of ``resource`` that one node has (0 without nodes)."""
    return max((node.get(resource, 0.0) for node in nodes), default=0.0)


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

    def per_node(self, node: dict[str, float]) -> int:
        """How many of the bundles ``node`` holds at once."""
        fits = [int(node.get(k, 0.0) / v + _EPS) for k, v in self.bundle.items() if v > 0]
        return min(fits, default=self.count)

    def placeable(self, nodes: Nodes) -> int:
        """How many of the bundles the nodes hold at once (each bundle on one node: for
        identical bundles, the sum of what each node holds is the best packing)."""
        return sum(self.per_node(node) for node in nodes)

    def fits(self, nodes: Nodes) -> bool:
        """Whether all ``count`` bundles can be placed on the nodes at once."""
        return self.placeable(nodes) >= self.count

    def describe(self) -> str:
        """``2 x {CPU: 4, GPU: 1}``."""
        each = ", ".join(f"{k}: {v:g}" for k, v in self.bundle.items())
        return f"{self.count} x {{{each}}}"

    def shortfall(self, have: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
        """``{resource: (needed, the cluster has)}`` for each resource the cluster lacks."""
        have = cluster_resources() if have is None else have
        return {
            k: (v, have.get(k, 0.0))
            for k, v in self.total.items()
            if v > have.get(k, 0.0) + _EPS
        }


def bundle_cpus(count: int, nodes: Nodes, most: float, gpus: float = 0.0) -> int:
    """The most whole CPUs (at most ``most``, at least 1) that each of ``count`` bundles of
    ``gpus`` GPUs can reserve so that all of them fit the nodes at once; 1 when even that
    does not fit (the placement check then says what is missing)."""
    for cpus in range(max(1, int(most + _EPS)), 0, -1):
        if Need.of(count, cpus, gpus).fits(nodes):
            return cpus
    return 1


Admission = Literal["run", "grow", "refuse"]


def admit(need: Need, nodes: Nodes, can_grow: bool) -> Admission:
    """What to do with ``need`` on a cluster of ``nodes``: ``run`` when they hold all its
    bundles at once; else ``grow`` (ask the autoscaler, :func:`nodes_for`) on a cluster that
    can, and ``refuse`` on one that cannot."""
    if need.fits(nodes):
        return "run"
    return "grow" if can_grow else "refuse"


@contextlib.contextmanager
def nodes_for(need: Need, timeout_s: float, say: Callable[[str], Any]) -> Iterator[None]:
    """On a cluster whose nodes cannot hold ``need``, ask its autoscaler for it
    (``ray.autoscaler.sdk.request_resources``) and wait up to ``timeout_s`` for the nodes to
    join; withdraw the request when the block ends. The stage's own check reports what is
    still missing after that."""
    if timeout_s <= 0 or need.fits(node_resources()):
        yield
        return
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[need.bundle] * need.count)
    try:
        say(f"asking the autoscaler for nodes for {need.describe()}; "
            f"waiting up to {timeout_s:.0f} s")  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not need.fits(node_resources()) and time.monotonic() < deadline:
            time.sleep(5.0)
        yield
    finally:
        request_resources(bundles=[])


__all__ = [
    "LOOPBACK_ENV",
    "Admission",
    "Need",
    "Nodes",
    "RaySession",
    "admit",
    "bundle_cpus",
    "cluster_resources",
    "largest_node",
    "node_resources",
    "nodes_for",
    "ray_session",
]
