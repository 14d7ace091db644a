"""The report's pictures, rendered on the cluster rather than on the driver.

After the archive is ranked, the driver knows which few frames the report shows (the peaks
of its top ``TOP_EVENTS`` events, or of each video's top segments); :func:`render_pictures`
renders just those in one Ray task that fetches the model itself, as the scoring actors do
(:func:`pipelines.tracking.fetch_model`, by the :class:`~pipelines.tracking.ModelRef` the
driver found), and runs :class:`~pipelines.score.report.FrameRenderer` on each frame's
clip. The driver never builds the model; what comes back is the small arrays of each
picture's three panels, which the report composes and writes (:class:`Pictures`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipelines.tracking import ModelRef

Panels = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(frame, prediction, error) of one frame, as :data:`pipelines.score.report.Render` gives."""


@dataclass(frozen=True)
class PictureRequest:
    """One frame the report shows, and the shard of DATA its video is in."""

    video_id: str
    frame_index: int
    shard: str


def render_panels(
    checkpoint_dir: str, requests: Sequence[PictureRequest]
) -> dict[tuple[str, int], Panels]:
    """Render each requested frame with the model of ``checkpoint_dir`` (in this process)."""
    from pipelines.score.report import FrameRenderer

    renderer = FrameRenderer(checkpoint_dir, {r.video_id: r.shard for r in requests})
    return {(r.video_id, r.frame_index): renderer(r.video_id, r.frame_index) for r in requests}


def _render_task(
    model: ModelRef, tracking_uri: str, requests: Sequence[PictureRequest]
) -> dict[tuple[str, int], Panels]:
    """What the Ray task runs: fetch the model into a temporary folder and render."""
    import torch

    from pipelines.tracking import fetch_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mnad-pictures-") as tmp:
        return render_panels(fetch_model(model, tracking_uri, dst=tmp), requests)


def render_pictures(
    model: ModelRef, tracking_uri: str, requests: Sequence[PictureRequest]
) -> Pictures:
    """Render ``requests`` in one Ray task of 1 CPU (on the Ray this process has joined);
    none: no task."""
    import ray

    wanted = list(dict.fromkeys(requests))
    if not wanted:
        return Pictures({})
    task = ray.remote(num_cpus=1, max_retries=2)(_render_task)
    return Pictures(ray.get(task.remote(model, tracking_uri, wanted)))


@dataclass(frozen=True)
class Pictures:
    """The report's ``Render`` over pictures rendered beforehand: a frame not requested is a
    ``KeyError`` naming it."""

    panels: Mapping[tuple[str, int], Panels]

    def __call__(self, video_id: str, frame_index: int) -> Panels:
        try:
            return self.panels[(video_id, int(frame_index))]
        except KeyError:
            raise KeyError(f"no picture rendered for {video_id} frame {frame_index}") from None


__all__ = ["PictureRequest", "Pictures", "render_panels", "render_pictures"]
