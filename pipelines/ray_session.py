"""The Ray a stage runs on: the running one (or RAY_ADDRESS), else a local one of its own."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def ray_session(quiet: bool, log_to_driver: bool | None = None) -> Iterator[None]:
    """Connect to the Ray that is running, or start a local one and stop it afterwards.

    ``quiet`` also silences Ray Data's own progress logging for the duration.
    ``log_to_driver`` (default: not quiet) forwards the workers' output to this console.
    """
    import ray
    import ray.data  # noqa: F401  (configures its loggers on import, before the level below)

    started = not ray.is_initialized()
    if started:
        ray.init(
            include_dashboard=False,
            log_to_driver=(not quiet) if log_to_driver is None else log_to_driver,
            logging_level=logging.WARNING,
        )
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    if quiet:
        data_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        data_logger.setLevel(level)
        if started:
            ray.shutdown()
