"""Exact per-video scoring of several videos at once, frame by frame in lockstep.

A trained model updates the memory after most frames (75 to 90 % of Ped2's at the paper's
threshold), and each update must land before the next frame of that video is decoded, so a
single video decodes nearly one frame at a time (``mnad.streaming.StreamingScorer``). Videos
scored per video are independent, though: :class:`LockstepScorer` holds ``slots`` of them at
once, each with its own memory (one (slots, M, C) tensor), and at every step decodes the next
frame of every video as one batch: the memory read, the feature distance and the update run
batched over the videos' own memories (``mnad.memory.read_batched``, ``distance_batched``,
``updated_items_batched``), and each video's update is applied exactly as if it were scored
alone. Each video's results equal ``StreamingScorer`` on that video from a reset memory, to
float rounding (the batches differ, so the convolutions' sums are taken in another order).

Two batching tricks of ``StreamingScorer`` carry over. The encoder does not read the memory,
so each video's next ``ahead`` clips are encoded at once, those of every video that needs
them in one call, and kept in a buffer. The decoder speculates per video: it decodes a chunk
of that video's next frames with its current memory and keeps them up to the first one that
updates it (the frames after it read a stale memory and are decoded again). The batch is
already about ``slots`` frames wide without speculation, so it is cautious: a video's chunk is
one frame until two frames in a row have not updated, then as many frames as have not
updated since the last update (doubling while none does), up to ``ahead``. When most frames
update, almost nothing is decoded twice; when updates are rare the chunks reach ``ahead``.

Videos of different lengths: a video that ends gives its slot to the next video not yet
started, so the slots stay full until the videos run out; then the batch shrinks. Videos
finish in the order they end, each reported with its scores and the memory it left.

``update=False`` never updates (every chunk is ``ahead`` frames); ``precision="bf16"`` runs
the convolutions under bfloat16 autocast as ``StreamingScorer`` does (the memory, its update
and the scores stay float32). Only the paper's per-frame update (``granularity="frame"``) is
done here; the per-batch update and the paper mode's memory carried across videos are
``StreamingScorer``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mnad import anomaly_score as scores
from mnad import memory as mem
from mnad.network import MNAD, Encoded
from mnad.streaming import FrameScores, Precision

K = TypeVar("K")

Clips = tuple[Tensor, Tensor]
"""A run of one video's clips: inputs (n, T*C, H, W) and targets (n, C, H, W), on [-1, 1]."""


@dataclass(frozen=True)
class Finished(Generic[K]):
    """A video that is done: its key, its per-frame results, the memory it left (M, C)."""

    key: K
    scores: FrameScores
    items: Tensor


@dataclass
class _Slot(Generic[K]):
    """One video being scored: where its clips come from and how far it has got."""

    key: K
    source: Iterator[Clips]
    pending: list[Clips] = field(default_factory=list)  # read, not yet encoded
    pending_frames: int = 0
    exhausted: bool = False  # the source has no more clips
    ready: int = 0  # encoded frames in the slot's buffer
    used: int = 0  # of those, the ones decoded and kept
    calm: int = 0  # frames kept since the memory was last updated
    parts: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def read(self, frames: int) -> None:
        """Read clips from the source until ``frames`` are pending or it ends."""
        while not self.exhausted and self.pending_frames < frames:
            clips = next(self.source, None)
            if clips is None:
                self.exhausted = True
            elif clips[0].shape[0]:
                assert clips[0].shape[0] == clips[1].shape[0], (clips[0].shape, clips[1].shape)
                self.pending.append(clips)
                self.pending_frames += clips[0].shape[0]

    def take(self, frames: int) -> Clips:
        """The next ``frames`` pending clips (or all there are), no longer pending."""
        inputs = torch.cat([c[0] for c in self.pending])
        targets = torch.cat([c[1] for c in self.pending])
        rest = (inputs[frames:], targets[frames:])
        self.pending = [rest] if rest[0].shape[0] else []
        self.pending_frames = rest[0].shape[0]
        return inputs[:frames], targets[:frames]

    @property
    def done(self) -> bool:
        return self.used == self.ready and self.exhausted and not self.pending_frames

    def result(self) -> FrameScores:
        if not self.parts:
            return FrameScores.concat([])
        stats = np.concatenate([p[0] for p in self.parts], axis=1)  # (3, n)
        updated = np.concatenate([p[1] for p in self.parts])
        return FrameScores(stats[0], stats[1], stats[2], updated)


@dataclass
class LockstepScorer:
    """Scores many videos at once, each as ``StreamingScorer`` from a reset memory would.

    ``slots``: videos advanced together (the decoder's batch is about that many frames);
    ``ahead``: clips of a video encoded at once, and the most frames of it decoded in one
    step. The model is used in eval mode; its own memory is the one every video starts from
    and is left as it was.
    """

    model: MNAD
    threshold: float | None = None
    update: bool = True
    slots: int = 8
    ahead: int = 16
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {self.precision!r}")
        if self.slots < 1 or self.ahead < 1:
            raise ValueError(f"slots and ahead must be >= 1, not {self.slots}, {self.ahead}")
        if self.threshold is None:
            self.threshold = self.model.config.update_threshold
        self.model.eval()
        self.initial_items = self.model.memory.items.detach().clone()  # (M, C)
        self.device = self.initial_items.device
        weight = next(m.weight for m in self.model.modules() if isinstance(m, torch.nn.Conv2d))
        channels_last = weight.is_contiguous(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )

    @torch.no_grad()
    def score(self, videos: Iterable[tuple[K, Iterable[Clips]]]) -> Iterator[Finished[K]]:
        """Score ``videos`` (each a key and its clips in order, in runs of any length) and
        yield each one as it finishes. A video's clips are read only once it has a slot,
        and a run at a time, so a source may be a lazy reader of the video."""
        width = min(self.slots, len(videos)) if isinstance(videos, Sized) else self.slots
        if width == 0:
            return
        queue = iter(videos)
        slots: list[_Slot[K] | None] = [None] * width
        items = self.initial_items.expand(width, -1, -1).clone()  # (S, M, C)
        buffers: _Buffers | None = None
        while True:
            for s in range(width):
                if slots[s] is None:
                    nxt = next(queue, None)
                    if nxt is not None:
                        slots[s] = _Slot(nxt[0], iter(nxt[1]))
                        items[s] = self.initial_items
            buffers = self._encode(slots, buffers)
            finished = [s for s, slot in enumerate(slots) if slot is not None and slot.done]
            for s in finished:
                slot = slots[s]
                assert slot is not None
                slots[s] = None
                yield Finished(slot.key, slot.result(), items[s].clone())
            if finished:
                continue  # give the free slots to the next videos first
            if all(slot is None for slot in slots):
                return
            assert buffers is not None
            self._step(slots, buffers, items)

    def _encode(self, slots: list[_Slot[K] | None], buffers: _Buffers | None) -> _Buffers | None:
        """Encode the next ``ahead`` clips of every video whose buffer is used up, in one
        call, into the buffers (made at the first call, to the encoder's output shapes)."""
        empty: list[tuple[int, _Slot[K]]] = []
        for s, slot in enumerate(slots):
            if slot is not None and slot.used == slot.ready:
                slot.read(self.ahead)
                if slot.pending_frames:
                    empty.append((s, slot))
        if not empty:
            return buffers
        taken = [slot.take(self.ahead) for _, slot in empty]
        inputs = torch.cat([t[0] for t in taken]).to(
            self.device, non_blocking=True, memory_format=self.memory_format
        )
        targets = torch.cat([t[1] for t in taken]).to(self.device, non_blocking=True)
        with self._autocast():
            encoded = self.model.encode(inputs)
        if buffers is None:
            buffers = _Buffers.like(encoded, targets, len(slots), self.ahead)
        start = 0
        for (s, slot), (clips, _) in zip(empty, taken, strict=True):
            n = clips.shape[0]
            buffers.put(s, encoded, targets, slice(start, start + n))
            slot.ready, slot.used = n, 0
            start += n
        return buffers

    def _step(self, slots: list[_Slot[K] | None], buffers: _Buffers, items: Tensor) -> None:
        """Decode a chunk of every video's next frames as one batch, keep each video's up to
        its first update, and apply those updates (each to its own video's memory)."""
        order: list[tuple[int, _Slot[K], int]] = []  # slot, its video, frames decoded
        slot_index: list[int] = []
        frame_index: list[int] = []
        active = sum(slot is not None for slot in slots)
        # Without updates nothing waits, but a decode batch past about two encoder batches
        # only spills the skip features out of cache: each video gets its share of that.
        share = max(1, 2 * self.ahead // max(1, active))
        for s, slot in enumerate(slots):
            if slot is None:
                continue
            left = slot.ready - slot.used
            calm = 1 if slot.calm < 2 else slot.calm
            k = min(self.ahead, calm, left) if self.update else min(share, left)
            order.append((s, slot, k))
            slot_index += [s] * k
            frame_index += range(slot.used, slot.used + k)
        si = torch.tensor(slot_index, device=self.device)
        fi = torch.tensor(frame_index, device=self.device)
        encoded, targets = buffers.get(si, fi, self.memory_format)
        queries, stats, updated = self._decode(encoded, targets, items[si])
        stats_np = stats.cpu().numpy()  # (3, B): psnr, feature distance, gate
        updated_np = updated.cpu().numpy()  # (B,)
        start = 0
        hit_slots: list[int] = []
        hit_rows: list[int] = []
        for s, slot, k in order:
            chunk = updated_np[start : start + k]
            hits = np.flatnonzero(chunk)
            keep = int(hits[0]) + 1 if hits.size else k
            slot.parts.append((stats_np[:, start : start + keep], chunk[:keep]))
            slot.used += keep
            if hits.size:
                hit_slots.append(s)
                hit_rows.append(start + keep - 1)
                slot.calm = 0
            else:
                slot.calm += keep
            start += k
        if hit_slots:
            hs = torch.tensor(hit_slots, device=self.device)
            rows = torch.tensor(hit_rows, device=self.device)
            items[hs] = mem.updated_items_batched(queries[rows], items[hs])

    def _decode(self, encoded: Encoded, targets: Tensor, items: Tensor) -> tuple[Tensor, ...]:
        """``MNAD.decode`` with each frame's own memory (items (B, M, C)), and the scores:
        queries (B, hw, c), stats (3, B) float64 (PSNR, feature distance, gate), updated
        (B,) bool."""
        b, c, h, w = encoded.features.shape
        with self._autocast():
            # The memory runs in float32 also under bf16 autocast, as in MNAD._memory.
            with torch.autocast(self.device.type, enabled=False):
                features = F.normalize(encoded.features.float(), dim=1)  # (B, c, h, w)
                queries = features.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, hw, c)
                r = mem.read_batched(queries, items)  # (B, hw, c)
                both = torch.cat([queries, r], dim=2)  # (B, hw, 2c)
                z = both.reshape(b, h, w, 2 * c).permute(0, 3, 1, 2)  # (B, 2c, h, w)
            z = z.to(encoded.features.dtype)
            prediction = self.model.decoder(z, encoded.s1, encoded.s2, encoded.s3)
            distance = mem.distance_batched(queries, items)  # (B,), as MNAD.decode
        prediction = prediction.float()
        gate = scores.point_score(prediction, targets)  # (B,)
        psnr = scores.psnr(scores.prediction_error(prediction, targets))  # (B,)
        stats = torch.stack([psnr.double(), distance.double(), gate.double()])
        updated = (gate < self.threshold) & self.update
        return queries, stats, updated


@dataclass
class _Buffers:
    """Each slot's encoded frames not yet decoded: per part of ``Encoded`` a
    (slots, ahead, h, w, c) tensor (channels last, so that a gathered batch is a
    channels_last view), and the targets (slots, ahead, C, H, W)."""

    parts: list[Tensor]
    targets: Tensor

    @staticmethod
    def like(encoded: Encoded, targets: Tensor, slots: int, ahead: int) -> _Buffers:
        parts = [
            torch.empty((slots, ahead, t.shape[2], t.shape[3], t.shape[1]), dtype=t.dtype,
                        device=t.device)
            for t in encoded
        ]  # fmt: skip
        return _Buffers(parts, targets.new_empty((slots, ahead, *targets.shape[1:])))

    def put(self, slot: int, encoded: Encoded, targets: Tensor, rows: slice) -> None:
        n = rows.stop - rows.start
        for buf, t in zip(self.parts, encoded, strict=True):
            buf[slot, :n] = t[rows].permute(0, 2, 3, 1)
        self.targets[slot, :n] = targets[rows]

    def get(self, si: Tensor, fi: Tensor, fmt: torch.memory_format) -> tuple[Encoded, Tensor]:
        parts = [
            buf[si, fi].permute(0, 3, 1, 2).contiguous(memory_format=fmt) for buf in self.parts
        ]
        return Encoded(*parts), self.targets[si, fi]


__all__ = ["Clips", "Finished", "LockstepScorer"]
