"""Study what moves the frame AUC of a preset on UCSD Ped2, with a bare single-process loop.

Trains the preset (with field overrides) on Ped2's training frames for at most MINUTES,
then scores the test split with the streaming scorer in three memory modes (paper: carried
across videos; per-video: reset at each video; none: no test-time update) and prints one
JSON line with the micro and macro AUC of each. Frames are decoded with PIL and cached as
.npy files under --cache. This is a study tool: the product's path is ingest/train/score.

    python scripts/study_ped2.py small 12 '{"epochs": 10, "height": 96, "width": 96}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mnad import anomaly_score as scores
from mnad import metrics
from mnad.config import get_preset
from mnad.network import build_model
from mnad.streaming import StreamingScorer


def load_split(root: Path, split: str, size: int, channels: int, cache: Path) -> list[np.ndarray]:
    """Every video of a split as uint8 (n, H, W, C), resized with PIL (bilinear)."""
    videos = []
    for folder in sorted((root / split / "frames").iterdir()):
        cached = cache / f"ped2_{split}_{folder.name}_{size}_{channels}.npy"
        if not cached.exists():
            mode = "L" if channels == 1 else "RGB"
            frames = [
                np.asarray(Image.open(f).convert(mode).resize((size, size), Image.BILINEAR))
                for f in sorted(folder.glob("*.jpg"))
            ]
            stack = np.stack(frames)
            np.save(cached, stack[..., None] if channels == 1 else stack)
        videos.append(np.load(cached))
    return videos


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(n, H, W, C) uint8 to (n, C, H, W) on [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def clips_of(video: torch.Tensor, starts: list[int], length: int) -> torch.Tensor:
    """Clips (b, T*C, H, W) starting at ``starts``."""
    h, w = video.shape[2:]
    return torch.stack([video[s : s + length].reshape(-1, h, w) for s in starts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("minutes", type=float)
    parser.add_argument("changes", nargs="?", default="{}", help="JSON of preset fields")
    parser.add_argument("--ped2", default="../shared/datasets/ucsd_ped2")
    parser.add_argument("--cache", default="/tmp")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    changes = json.loads(args.changes)
    preset = get_preset(args.preset).replace(**changes)
    cfg, optim = preset.model, preset.optim
    root, cache = Path(args.ped2), Path(args.cache)
    train = [to_tensor(v) for v in load_split(root, "training", cfg.height, cfg.channels, cache)]
    test = [to_tensor(v) for v in load_split(root, "testing", cfg.height, cfg.channels, cache)]
    t_len, c = cfg.clip_length, cfg.channels
    index = [(i, s) for i, v in enumerate(train) for s in range(len(v) - t_len + 1)]

    torch.manual_seed(args.seed)
    model = build_model(cfg, seed=args.seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=optim.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=optim.epochs)
    rng = np.random.default_rng(args.seed)
    t0, epoch = time.time(), 0
    while epoch < optim.epochs and time.time() - t0 < args.minutes * 60:
        order = rng.permutation(len(index))
        total = 0.0
        for b in range(0, len(order) - optim.batch_size + 1, optim.batch_size):
            picked = [index[j] for j in order[b : b + optim.batch_size]]
            x = torch.stack([train[i][s : s + t_len].reshape(-1, *train[i].shape[2:])
                             for i, s in picked])  # fmt: skip
            out = model(x[:, :-c])
            loss = (
                F.mse_loss(out.prediction, x[:, -c:])
                + cfg.lambda_compact * out.compactness
                + cfg.lambda_separate * out.separateness
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        sched.step()
        epoch += 1
        print(f"epoch {epoch} loss {total / (len(order) // optim.batch_size):.4f} "
              f"t={time.time() - t0:.0f}s", flush=True)  # fmt: skip
    train_s = time.time() - t0

    labels = np.load(root / "frame_labels_ped2.npy").reshape(-1)
    result = {}
    for mode in ("paper", "per-video", "none"):
        scorer = StreamingScorer(model.eval(), update=mode != "none")
        abnormal, truth, offset = {}, {}, 0
        for k, video in enumerate(test):
            if mode == "per-video":
                scorer.reset()
            x = clips_of(video, list(range(len(video) - t_len + 1)), t_len)
            r = scorer.score(x[:, :-c], x[:, -c:])
            abnormal[k] = scores.fused_abnormality(r.psnr, r.feature_distance, cfg.alpha)
            truth[k] = labels[offset + t_len - 1 : offset + len(video)]
            offset += len(video)
        result[mode] = [
            round(metrics.micro_auc(abnormal, truth), 4),
            round(metrics.macro_auc(abnormal, truth).value, 4),
        ]
    print(json.dumps({"preset": args.preset, "changes": changes, "epochs": epoch,
                      "train_s": round(train_s), "auc_micro_macro": result}))  # fmt: skip


if __name__ == "__main__":
    main()
