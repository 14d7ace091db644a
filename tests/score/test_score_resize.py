"""`mnad score` of DATA ingested at another size than the model's, on a real local Ray: the
frames are resized in the scoring reader (one line says so) and the scores are the model's
on the resized frames; a colour model imported from the paper's code gets them in BGR."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from mnad.checkpoint import load_model
from mnad.clips import model_frames
from mnad.config import ModelConfig
from mnad.paper_import import import_paper_model
from mnad.streaming import StreamingScorer
from pipelines.cli import main as cli_main
from pipelines.score import ScoreConfig, read_frames, run_score
from tests.colour_fixtures import colour_frames, paper_colour_checkpoint, write_frames_data

pytestmark = pytest.mark.ray

SIZE = 16  # the model's
VIDEOS = {"a": colour_frames(12, 24, 40, seed=1), "b": colour_frames(10, 24, 40, seed=2)}


def test_scoring_data_of_another_size_resizes_and_scores_the_model_on_it(
    ray_local, tmp_path, capsys
):
    model_pth, keys_pt = paper_colour_checkpoint(tmp_path / "paper")
    checkpoint = tmp_path / "ckpt"
    args = ["import-paper", str(model_pth), str(keys_pt), "--out", str(checkpoint)]
    assert cli_main([*args, "--size", str(SIZE), str(SIZE)]) == 0
    data = write_frames_data(tmp_path / "data", {"test": VIDEOS}, anomalous={"a": range(8, 12)})
    out = tmp_path / "scores"
    capsys.readouterr()
    run_score(
        ScoreConfig(
            data=str(data),
            model=str(checkpoint),
            out=str(out),
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            batch_size=4,
        )
    )
    printed = capsys.readouterr().out.splitlines()
    line = (
        "mnad score: DATA frames 24x40x3, the model takes 16x16x3: resizing in the clip "
        "pipeline (ingest at --size 16 16 --channels 3 for the fast path)"
    )
    assert printed.count(line) == 1, printed
    frames = read_frames(str(out))
    assert frames.num_rows == (12 - 4) + (10 - 4)
    for column in ("psnr", "feature_distance", "score"):
        assert np.isfinite(frames[column].to_numpy()).all(), column
    # The scores are the paper network's on the resized frames, channels reversed.
    paper_model, preset = import_paper_model(model_pth, keys_pt, SIZE, SIZE)
    assert load_model(checkpoint)[1].model.channel_order == "bgr"
    rgb = ModelConfig(height=SIZE, width=SIZE, channels=3, input_frames=4)
    for video, source in VIDEOS.items():
        bgr = model_frames(source, rgb)[..., ::-1]  # (n, 16, 16, 3)
        x = np.ascontiguousarray(bgr.transpose(0, 3, 1, 2)).astype(np.float32) / 127.5 - 1
        clips = torch.from_numpy(
            np.stack([x[t - 4 : t + 1].reshape(15, SIZE, SIZE) for t in range(4, len(x))])
        )  # (n - 4, 15, 16, 16): 4 input frames then the target, 3 channels each
        expected = StreamingScorer(paper_model).score(clips[:, :12], clips[:, 12:])
        got = frames.filter(pc.equal(frames["video_id"], video))
        np.testing.assert_allclose(got["psnr"].to_numpy(), expected.psnr, rtol=1e-4)
        np.testing.assert_allclose(
            got["feature_distance"].to_numpy(), expected.feature_distance, rtol=1e-3, atol=1e-7
        )
    assert preset.model.channel_order == "bgr"
