"""Streaming test-time scoring of one video with the test-time memory update (Sec. 3.4).

Each clip of a video, in order: predict its last frame, take PSNR of the prediction and the
feature distance D of its queries to their nearest items, and, when the update gate
(``mnad.anomaly_score.point_score``) is below the threshold, update the memory with that frame's
queries before the next frame is read. Per-video min-max and the fused score come after the
whole video (``mnad.anomaly_score.fused_abnormality``).

The encoder does not depend on the memory, so it runs once per batch of clips. The decoder
reads the memory, which may change after every frame; it still runs batched: a chunk of
frames is decoded with the current memory, the frames up to and including the first one that
updates the memory are kept (their reads were exact), and decoding resumes after it with the
updated memory. The chunk size follows the gap between updates (carried from call to call),
so frequent updates waste little decoding and rare ones batch fully. The result equals
decoding frame by frame, as the paper's code does.

Options beyond the paper: ``granularity="batch"`` updates the memory once per batch, from
the queries of all of its frames that pass the gate (faster, not the paper's numbers);
``update=False`` never updates; ``precision="bf16"`` runs the convolutions under bfloat16
autocast (the memory, its update and the scores stay float32; faster on CPUs with bf16
instructions and on GPUs, and no longer bit-faithful to the paper's float32 numbers).
``reset()`` restores the memory the scorer started with, which per-video scoring calls at
every video. The scorer runs on the model's device and in its weights' memory format
(``mnad.network.inference_copy`` makes them channels_last); inputs may come from the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from mnad import anomaly_score as scores
from mnad import memory as mem
from mnad.network import MNAD, Encoded

Granularity = Literal["frame", "batch"]
Precision = Literal["fp32", "bf16"]


class FrameScores(NamedTuple):
    """Per-frame results of a run of clips, in order. All arrays have length n."""

    psnr: np.ndarray  # float64, dB on the [0, 1] scale
    feature_distance: np.ndarray  # float64
    point_score: np.ndarray  # float64: the update gate's weighted error
    updated: np.ndarray  # bool: the memory was updated after this frame

    @staticmethod
    def concat(parts: list[FrameScores]) -> FrameScores:
        if not parts:
            empty = np.zeros(0)
            return FrameScores(empty, empty, empty, np.zeros(0, dtype=bool))
        return FrameScores(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))


@dataclass
class StreamingScorer:
    """Scores clips of one video in order, carrying the memory from clip to clip.

    ``model`` is used in eval mode; its own memory buffer is left as it was: the scorer
    keeps the memory it updates in ``items``.
    """

    model: MNAD
    threshold: float | None = None
    granularity: Granularity = "frame"
    update: bool = True
    max_chunk: int = 32
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.granularity not in ("frame", "batch"):
            raise ValueError(f"granularity must be 'frame' or 'batch', not {self.granularity!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {self.precision!r}")
        if self.threshold is None:
            self.threshold = self.model.config.update_threshold
        self.model.eval()
        self.initial_items = self.model.memory.items.detach().clone()
        self.items = self.initial_items.clone()
        self.device = self.initial_items.device
        weight = next(m.weight for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
        channels_last = weight.is_contiguous(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._chunk = self.max_chunk

    def reset(self) -> None:
        """Back to the memory the scorer started with (per-video scoring)."""
        self.items = self.initial_items.clone()
        self._chunk = self.max_chunk

    @torch.no_grad()
    def score(self, inputs: Tensor, targets: Tensor) -> FrameScores:
        """Score clips of one video in order.

        inputs: (n, T*C, H, W) on [-1, 1], the input frames of each clip stacked;
        targets: (n, C, H, W) on [-1, 1], the frame each clip predicts.
        Successive calls continue the same video (or, in the paper's mode, the same run).
        """
        assert inputs.shape[0] == targets.shape[0], (inputs.shape, targets.shape)
        if inputs.shape[0] == 0:
            return FrameScores.concat([])
        inputs = inputs.to(self.device, non_blocking=True, memory_format=self.memory_format)
        targets = targets.to(self.device, non_blocking=True)
        with self._autocast():
            encoded = self.model.encode(inputs)
        if self.granularity == "batch" or not self.update:
            return self._score_batch(encoded, targets)
        return self._score_frames(encoded, targets)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )

    def _decode(self, encoded: Encoded, targets: Tensor) -> tuple[Tensor, FrameScores]:
        with self._autocast():
            dec = self.model.decode(encoded, self.items)
        prediction = dec.prediction.float()
        gate = scores.point_score(prediction, targets)  # (b,)
        err = scores.prediction_error(prediction, targets)  # (b,)
        result = FrameScores(
            psnr=scores.psnr(err).double().cpu().numpy(),
            feature_distance=dec.feature_distance.double().cpu().numpy(),
            point_score=gate.double().cpu().numpy(),
            updated=(gate < self.threshold).cpu().numpy() & self.update,
        )
        return dec.queries, result

    def _score_batch(self, encoded: Encoded, targets: Tensor) -> FrameScores:
        queries, result = self._decode(encoded, targets)
        if result.updated.any():
            per_frame = queries.reshape(targets.shape[0], -1, queries.shape[1])  # (b, hw, c)
            mask = torch.from_numpy(result.updated).to(queries.device)
            chosen = per_frame[mask].reshape(-1, queries.shape[1])
            self.items = mem.updated_items(chosen, self.items)
        return result

    def _score_frames(self, encoded: Encoded, targets: Tensor) -> FrameScores:
        n = targets.shape[0]
        parts: list[FrameScores] = []
        start = 0
        while start < n:
            stop = min(n, start + self._chunk)
            queries, result = self._decode(encoded.select(slice(start, stop)), targets[start:stop])
            hits = np.flatnonzero(result.updated)
            if hits.size == 0:
                parts.append(result)
                start = stop
                self._chunk = min(self.max_chunk, self._chunk * 2)
                continue
            keep = int(hits[0]) + 1  # frames up to the first update read the right memory
            parts.append(FrameScores(*(a[:keep] for a in result)))
            per_frame = queries.reshape(stop - start, -1, queries.shape[1])  # (b, hw, c)
            self.items = mem.updated_items(per_frame[keep - 1], self.items)
            start += keep
            # The next chunk spans the gap just seen between updates: when every frame
            # updates it falls to 1 and no decoding is wasted; when updates are rare it
            # doubles back up to max_chunk.
            self._chunk = keep
        return FrameScores.concat(parts)
