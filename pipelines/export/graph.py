"""What the exported graph computes: the network and the memory read for a batch of clips,
with the memory items an input, and the scores the test-time update is decided on (torch).

Inputs (``B`` is dynamic, the rest fixed by the model's config)::

    frames  (B, T*C, H, W)  float32 on [-1, 1]: each clip's input frames stacked on channels
    items   (M, c)          float32 unit rows: the memory to read (the model's own at first)
    target  (B, C, H, W)    float32 on [-1, 1]: the frame each clip predicts (reconstructs)

Outputs::

    prediction        (B, C, H, W)  on [-1, 1]
    queries           (B, h*w, c)   each clip's unit queries: what the memory update takes
    feature_distance  (B,)          D, the compactness of each clip's queries to their items
    point_score       (B,)          the update gate (mnad.anomaly_score.point_score)
    psnr              (B,)          dB on the [0, 1] scale

The update itself is not in the graph: it depends on the gate frame by frame (a loop with
state, which a graph runtime should own). A runtime scoring a video in order runs one clip
(or a batch that it cuts after the first clip that updates, as ``mnad.streaming`` does) and,
where ``point_score < update_threshold`` (the model's metadata), replaces ``items`` by
``mnad.memory.updated_items(queries[k], items)`` before the next clip. The read does not
depend on how many clips are given together (its softmax is over items), so any batch size
gives the same outputs per clip.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from mnad import anomaly_score as scores
from mnad.network import MNAD

INPUTS = ("frames", "items", "target")
OUTPUTS = ("prediction", "queries", "feature_distance", "point_score", "psnr")
BATCHED = ("frames", "target", *OUTPUTS)
"""The inputs and outputs whose first axis is the batch (dynamic in the graph)."""


class GraphOutput(NamedTuple):
    """One pass of the graph, in the order of ``OUTPUTS``."""

    prediction: Tensor  # (B, C, H, W)
    queries: Tensor  # (B, h*w, c)
    feature_distance: Tensor  # (B,)
    point_score: Tensor  # (B,)
    psnr: Tensor  # (B,)


class ReadGraph(nn.Module):
    """``model``'s encoder, memory read and decoder on a given memory, and the frame scores.

    ``model`` should be in eval mode (its BatchNorm statistics fixed); the exporter passes
    ``mnad.network.fold_batchnorm(model)``, which computes the same to float rounding with
    one pass over each activation less.
    """

    def __init__(self, model: MNAD) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, frames: Tensor, items: Tensor, target: Tensor) -> GraphOutput:
        encoded = self.model.encode(frames)  # features (B, c, h, w) and the skips
        decoded = self.model.decode(encoded, items)
        b, c = frames.shape[0], items.shape[1]
        queries = decoded.queries.reshape(b, -1, c)  # (B, h*w, c), position-major per clip
        error = scores.prediction_error(decoded.prediction, target)  # (B,)
        return GraphOutput(
            prediction=decoded.prediction,
            queries=queries,
            feature_distance=decoded.feature_distance,
            point_score=scores.point_score(decoded.prediction, target),
            psnr=scores.psnr(error),
        )


__all__ = ["BATCHED", "INPUTS", "OUTPUTS", "GraphOutput", "ReadGraph"]
