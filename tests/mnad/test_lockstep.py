"""Lockstep scoring: every video's results equal StreamingScorer scoring it alone.

On a tiny trained model (its queries follow the frames, so an update with the wrong frame's
queries shows in the memory) at a gate threshold where most frames update, as a trained
model's do at the paper's threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnad import memory as mem
from mnad.checkpoint import load_model
from mnad.clips import model_clips, stack_clips
from mnad.lockstep import LockstepScorer
from mnad.network import inference_copy
from mnad.streaming import FrameScores, StreamingScorer
from pipelines.data import list_shards, read_frames
from tests.tiny_models import NORMAL, TEST, labelled_data, trained_checkpoint

CUTS = {  # video: (the tiny data's video, first clip, clips)
    "a": ("a_normal", 0, 36), "b": ("b_anomalous", 0, 30), "c": ("v0", 0, 7), "d": ("v1", 3, 1),
    "empty": ("v2", 0, 0), "e": ("v2", 5, 20), "f": ("v1", 0, 15),
}  # fmt: skip
LENGTHS = {key: n for key, (_, _, n) in CUTS.items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny model after 40 steps (inference copy) and the clips of CUTS."""
    work = tmp_path_factory.mktemp("lockstep")
    data = labelled_data(work / "data")
    model, preset = load_model(trained_checkpoint(data, work / "model", steps=40))
    cfg, frames = preset.model, {**NORMAL, **TEST}
    clips = {}
    for split in ("train", "test"):
        for shard in list_shards(str(data), split):
            name = shard.rsplit("/", 1)[-1].removesuffix(".parquet")
            pixels = read_frames(shard, 0, frames[name])
            starts = np.arange(len(pixels) - cfg.clip_length + 1)
            clips[name] = model_clips(stack_clips(pixels, starts, cfg.clip_length), cfg)
    videos = {}
    for key, (name, first, n) in CUTS.items():
        c = clips[name]
        videos[key] = (c.inputs[first : first + n].contiguous(),
                       c.target[first : first + n].contiguous())  # fmt: skip
    return inference_copy(model), videos


@pytest.fixture
def model(trained):
    return trained[0]


@pytest.fixture
def videos(trained):
    return trained[1]


def _runs(clips, size):
    """A video's clips in runs of ``size``, as a reader hands them over."""
    inputs, targets = clips
    for i in range(0, inputs.shape[0], size):
        yield inputs[i : i + size], targets[i : i + size]


def _alone(model, videos, threshold, precision="fp32"):
    """Each video through StreamingScorer from the trained memory, in runs of 8."""
    scorer = StreamingScorer(model, threshold=threshold, precision=precision)
    out = {}
    for key, clips in videos.items():
        scorer.reset()
        parts = [scorer.score(i, t) for i, t in _runs(clips, 8)]
        out[key] = (parts, scorer.items.clone())
    return out


def _realistic_threshold(model, videos):
    """The gate at which about 80 % of the frames update, as a trained model does."""
    probe = StreamingScorer(model, update=False)
    gates = np.concatenate([probe.score(*v).point_score for v in videos.values() if len(v[0])])
    return float(np.quantile(gates, 0.8))


@pytest.mark.parametrize(("slots", "ahead", "run"), [(3, 4, 5), (3, 16, 8), (16, 1, 3)])
def test_every_video_equals_scoring_it_alone(model, videos, slots, ahead, run):
    threshold = _realistic_threshold(model, videos)
    alone = _alone(model, videos, threshold)
    scorer = LockstepScorer(model, threshold=threshold, slots=slots, ahead=ahead)
    finished = list(scorer.score([(k, _runs(v, run)) for k, v in videos.items()]))
    assert sorted(f.key for f in finished) == sorted(videos)  # each once, the empty one too
    got = {f.key: f for f in finished}
    updated = np.concatenate([got[k].scores.updated for k in videos])
    assert 0.5 <= updated.mean() < 1.0, updated.mean()  # updates decide most frames' memory
    for key, (parts, items) in alone.items():
        ref = FrameScores.concat(parts)
        res = got[key].scores
        assert len(res.psnr) == LENGTHS[key]
        np.testing.assert_array_equal(res.updated, ref.updated, err_msg=key)
        np.testing.assert_allclose(res.psnr, ref.psnr, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(res.feature_distance, ref.feature_distance, rtol=1e-4)
        np.testing.assert_allclose(res.point_score, ref.point_score, rtol=1e-5, err_msg=key)
        torch.testing.assert_close(got[key].items, items)
        if ref.updated.any():
            assert not torch.equal(got[key].items, model.memory.items)


def test_a_free_slot_goes_to_the_next_video(model, videos):
    """Two slots, a (36 clips) and c (7) first: c ends first, b takes its slot and ends
    after a; each is reported as it ends, not in the order given."""
    scorer = LockstepScorer(model, threshold=1.0, slots=2, ahead=4)
    given = ["a", "c", "b", "d", "empty", "e", "f"]
    order = [f.key for f in scorer.score([(k, _runs(videos[k], 4)) for k in given])]
    assert order[0] == "c" and order.index("a") < order.index("b")
    assert sorted(order) == sorted(given)


def test_no_update_and_the_models_memory(model, videos):
    before = model.memory.items.clone()
    frozen = LockstepScorer(model, update=False, slots=4, ahead=8)
    got = {f.key: f for f in frozen.score([(k, _runs(v, 8)) for k, v in videos.items()])}
    ref = StreamingScorer(model, update=False)
    for key, (inputs, targets) in videos.items():
        assert not got[key].scores.updated.any()
        torch.testing.assert_close(got[key].items, before, rtol=0, atol=0)
        np.testing.assert_allclose(got[key].scores.psnr, ref.score(inputs, targets).psnr,
                                   rtol=1e-5)  # fmt: skip
    assert torch.equal(model.memory.items, before)


def test_bf16_follows_the_streaming_scorer(model, videos):
    alone = _alone(model, videos, 1.0, precision="bf16")  # every frame updates
    scorer = LockstepScorer(model, threshold=1.0, slots=4, precision="bf16")
    got = {f.key: f for f in scorer.score([(k, _runs(v, 8)) for k, v in videos.items()])}
    for key, (parts, items) in alone.items():
        ref = FrameScores.concat(parts)
        assert got[key].scores.updated.all() and ref.updated.all()
        np.testing.assert_allclose(got[key].scores.psnr, ref.psnr, atol=0.05)  # dB
        torch.testing.assert_close(got[key].items, items, atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="precision"):
        LockstepScorer(model, precision="fp16")


def test_batched_memory_functions_equal_the_per_sample_ones():
    g = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(5, 12, 8, generator=g), dim=2)
    items = torch.stack([mem.init_items(6, 8, g) for _ in range(5)])
    read = mem.read_batched(queries, items)
    dist = mem.distance_batched(queries, items)
    new = mem.updated_items_batched(queries, items)
    for b in range(5):
        torch.testing.assert_close(read[b], mem.read(queries[b], items[b]))
        torch.testing.assert_close(dist[b], mem.distance_per_sample(queries[b], items[b], 1)[0])
        torch.testing.assert_close(new[b], mem.updated_items(queries[b], items[b]))
        assert not torch.equal(new[b], items[b])
