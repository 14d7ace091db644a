"""How many distinct videos a training batch draws its clips from, with each way of feeding
the clips, measured on one epoch of DATA's training videos.

    .venv/bin/python scripts/bench_shuffle.py DATA [--preset small] [--shuffle-buffer 256]

- in memory: the epoch's permutation of all the clips (``epoch_order``), cut into global
  batches (``rank_batches``), as the workers take them when the frames fit;
- streamed, one video a block (``mix_videos=1``: a read block is one chunk of one video,
  then the local shuffle buffer), the layout before blocks mixed videos;
- streamed, ``MIX_VIDEOS`` videos a block, then the same local shuffle buffer.

The streamed cases run real Ray Data datasets (the one consumer sees what one worker does).
Printed: the mean, smallest and largest number of videos per batch and how many videos
there are; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.data import validate_data  # noqa: E402
from pipelines.train import load_preset  # noqa: E402
from pipelines.train.data import (  # noqa: E402
    MIX_VIDEOS,
    ClipSource,
    chunk_clips_for,
    clip_dataset,
    epoch_order,
    list_videos,
    rank_batches,
)


def summary(counts: list[int]) -> str:
    return f"mean {np.mean(counts):5.2f}, min {min(counts)}, max {max(counts)}"


def streamed(videos, clip_length, chunk, batch, buffer, mix, seed) -> list[int]:
    ds = clip_dataset(videos, clip_length, shuffle_seed=seed, chunk_clips=chunk, mix_videos=mix)
    batches = ds.select_columns(["video_index"]).iter_batches(
        batch_size=batch,
        batch_format="numpy",
        drop_last=True,
        local_shuffle_buffer_size=buffer or None,
        local_shuffle_seed=seed,
    )
    return [len(np.unique(b["video_index"])) for b in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="DATA folder written by `mnad ingest`")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--shuffle-buffer", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    preset = load_preset(args.preset)
    t, batch = preset.model.clip_length, preset.optim.batch_size
    videos = list_videos(args.data, "train")
    shape = validate_data(args.data, splits=("train",)).shape
    chunk = chunk_clips_for(shape, t)
    counts = [v.num_clips(t) for v in videos]
    print(f"{len(videos)} videos, {sum(counts)} clips, batch {batch}, chunk {chunk} clips")

    fake = [np.zeros((n + t - 1, 1, 1, 1), np.uint8) for n in counts]  # ids only
    source = ClipSource(fake, counts, t)
    order = epoch_order(source.num_clips, args.seed, 0)
    batches = rank_batches(order, batch, 0, 1, drop_last=True)
    memory = [len(np.unique(source.video_of(ids))) for ids in batches]
    print(f"in memory, global shuffle:           {summary(memory)}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    for mix, name in ((1, "streamed, 1 video a block (before)"),
                      (MIX_VIDEOS, f"streamed, {MIX_VIDEOS} videos a block")):  # fmt: skip
        got = streamed(videos, t, chunk, batch, args.shuffle_buffer, mix, args.seed)
        print(f"{name + ':':37s}{summary(got)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
