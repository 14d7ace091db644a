"""The streaming scorer: batched decoding equals frame-by-frame, options, reset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnad import anomaly_score as scores
from mnad import memory as mem
from mnad.config import ModelConfig
from mnad.network import build_model
from mnad.streaming import FrameScores, StreamingScorer

CFG = ModelConfig(height=16, width=24, channels=1, width_mult=1 / 16, memory_size=4)


def _clips(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 5, 16, 24, generator=g) * 2 - 1
    return x[:, :4], x[:, 4:]


def _frame_by_frame(model, inputs, targets, threshold):
    """The paper's evaluation loop, written out: one frame at a time."""
    items = model.memory.items.clone()
    out = []
    for i in range(inputs.shape[0]):
        enc = model.encode(inputs[i : i + 1])
        dec = model.decode(enc, items)
        gate = scores.point_score(dec.prediction, targets[i : i + 1]).item()
        err = scores.prediction_error(dec.prediction, targets[i : i + 1])
        out.append((scores.psnr(err).item(), dec.feature_distance.item(), gate < threshold))
        if gate < threshold:
            items = mem.updated_items(dec.queries, items)
    return out, items


@torch.no_grad()
def test_batched_decoding_equals_frame_by_frame():
    model = build_model(CFG, seed=0).eval()
    inputs, targets = _clips()
    probe = StreamingScorer(model, threshold=0.0).score(inputs, targets)
    threshold = float(np.median(probe.point_score))  # about half the frames update
    expected, items = _frame_by_frame(model, inputs, targets, threshold)
    scorer = StreamingScorer(model, threshold=threshold, max_chunk=8)
    got = FrameScores.concat([scorer.score(inputs[:7], targets[:7]),
                              scorer.score(inputs[7:], targets[7:])])
    assert 3 <= got.updated.sum() <= 17
    np.testing.assert_array_equal(got.updated, [e[2] for e in expected])
    np.testing.assert_allclose(got.psnr, [e[0] for e in expected], rtol=1e-5)
    np.testing.assert_allclose(got.feature_distance, [e[1] for e in expected], rtol=1e-4)
    torch.testing.assert_close(scorer.items, items)


def test_scorer_leaves_the_models_memory_alone_and_resets():
    model = build_model(CFG, seed=0)
    before = model.memory.items.clone()
    inputs, targets = _clips()
    scorer = StreamingScorer(model, threshold=1.0)  # every frame updates
    first = scorer.score(inputs, targets)
    assert first.updated.all() and not torch.equal(scorer.items, before)
    assert torch.equal(model.memory.items, before)
    scorer.reset()
    again = scorer.score(inputs, targets)
    np.testing.assert_allclose(again.psnr, first.psnr)


def test_no_update_and_batch_granularity():
    model = build_model(CFG, seed=0)
    inputs, targets = _clips()
    frozen = StreamingScorer(model, threshold=1.0, update=False)
    res = frozen.score(inputs, targets)
    assert not res.updated.any() and torch.equal(frozen.items, model.memory.items)
    batch = StreamingScorer(model, threshold=1.0, granularity="batch")
    res_b = batch.score(inputs, targets)
    np.testing.assert_allclose(res_b.psnr, res.psnr, rtol=1e-6)  # all read the first memory
    queries = model.decode(model.encode(inputs)).queries
    torch.testing.assert_close(batch.items, mem.updated_items(queries, model.memory.items))


def test_bad_granularity_and_empty_input():
    model = build_model(CFG, seed=0)
    with pytest.raises(ValueError, match="granularity"):
        StreamingScorer(model, granularity="video")
    empty = StreamingScorer(model).score(torch.zeros(0, 4, 16, 24), torch.zeros(0, 1, 16, 24))
    assert empty.psnr.shape == (0,)


def test_bf16_precision_stays_close_to_fp32():
    model = build_model(CFG, seed=0)
    inputs, targets = _clips()
    exact = StreamingScorer(model, threshold=1.0).score(inputs, targets)
    fast_scorer = StreamingScorer(model, threshold=1.0, precision="bf16")
    fast = fast_scorer.score(inputs, targets)
    assert fast_scorer.items.dtype == torch.float32  # the memory stays float32
    assert fast.updated.all() and exact.updated.all()
    np.testing.assert_allclose(fast.psnr, exact.psnr, atol=0.25)  # dB
    assert not np.array_equal(fast.psnr, exact.psnr)  # bf16 did run
    with pytest.raises(ValueError, match="precision"):
        StreamingScorer(model, precision="fp16")
