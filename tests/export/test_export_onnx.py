"""`mnad export --format onnx`: the exported graph run in ONNX Runtime gives the torch model's
prediction, feature distance and update gate, with the memory an input and the test-time
update applied outside the graph (``mnad.memory.updated_items``) frame after frame, as
``mnad.streaming.StreamingScorer`` applies it inside torch; on a tiny trained model (no
shared folder), on a registered version, and on the paper's own checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mnad.checkpoint import load_model
from mnad.clips import model_clips, stack_clips
from mnad.memory import updated_items
from mnad.streaming import StreamingScorer
from pipelines import tracking
from pipelines.cli import main
from pipelines.data import list_shards, read_frames
from pipelines.export import OUTPUTS, ExportConfig, run_export
from tests.tiny_models import TEST, labelled_data, trained_checkpoint

ort = pytest.importorskip("onnxruntime", reason="mnad export needs the export extra")
onnx = pytest.importorskip("onnx", reason="mnad export needs the export extra")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained for 60 steps, and its labelled DATA folder."""
    work = tmp_path_factory.mktemp("export")
    data = labelled_data(work / "data")
    return trained_checkpoint(data, work / "model", 60), data


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, inputs, items, targets) -> dict[str, np.ndarray]:
    feed = {"frames": np.asarray(inputs), "items": np.asarray(items), "target": np.asarray(targets)}
    return dict(zip(OUTPUTS, session.run(list(OUTPUTS), feed), strict=True))


def _stream(
    session, inputs, targets, items, threshold
) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """One clip at a time in ONNX Runtime; after each, where the gate is under ``threshold``,
    the memory updated outside the graph with that clip's queries. The per-frame outputs and
    the memory at the end."""
    rows: dict[str, list] = {k: [] for k in ("psnr", "feature_distance", "point_score", "updated")}
    for k in range(len(inputs)):
        out = _run(session, inputs[k : k + 1], items, targets[k : k + 1])
        for name in ("psnr", "feature_distance", "point_score"):
            rows[name].append(out[name][0])
        updated = bool(out["point_score"][0] < threshold)
        rows["updated"].append(updated)
        if updated:
            items = updated_items(torch.from_numpy(out["queries"][0]), items)
    return {k: np.asarray(v) for k, v in rows.items()}, items


def _clips(data: Path, video: str, model) -> tuple[torch.Tensor, torch.Tensor]:
    """Every clip of a test video, as the model takes them."""
    cfg = model.config
    shard = next(s for s in list_shards(str(data), "test") if s.endswith(f"/{video}.parquet"))
    frames = read_frames(shard, 0, TEST[video])
    starts = np.arange(len(frames) - cfg.clip_length + 1)
    clip = model_clips(stack_clips(frames, starts, cfg.clip_length), cfg)
    return clip.inputs, clip.target


def _threshold_between(point_scores: np.ndarray) -> float:
    """A gate threshold with about half the frames under it, midway between two of them (a
    frame's gate sits nowhere near it, so float rounding cannot flip the decision)."""
    s = np.sort(point_scores)
    i = len(s) // 2
    return float((s[i - 1] + s[i]) / 2)


def test_tiny_model_in_onnx_runtime_with_the_update_outside(tiny, tmp_path, capsys) -> None:
    checkpoint, data = tiny
    out = tmp_path / "out" / "tiny.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"mnad export: {checkpoint} -> {out} (ONNX opset 17")
    assert "\n" not in line

    model, preset = load_model(checkpoint)
    cfg = preset.model
    proto = onnx.load(os.fspath(out))
    assert proto.opset_import[0].version == 17
    props = {p.key: p.value for p in proto.metadata_props}
    assert float(props["mnad.update_threshold"]) == cfg.update_threshold
    assert props["mnad.outputs"] == ",".join(OUTPUTS) and props["mnad.model_uri"] == str(checkpoint)
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)  # folded
    session = _session(out)
    assert [i.name for i in session.get_inputs()] == ["frames", "items", "target"]
    for value in (*session.get_inputs(), *session.get_outputs()):
        if value.name != "items":
            assert value.shape[0] == "batch", value  # the dynamic batch axis
    assert session.get_inputs()[1].shape == [cfg.memory_size, cfg.feature_dim]

    inputs, targets = _clips(data, "b_anomalous", model)
    items = model.memory.items.clone()
    # The whole video in one batch, memory fixed: the torch model's numbers, frame by frame.
    still = StreamingScorer(model, update=False).score(inputs, targets)
    batch = _run(_session(out), inputs, items, targets)
    with torch.no_grad():
        expected = model.eval()(inputs)
    torch.testing.assert_close(torch.from_numpy(batch["prediction"]), expected.prediction,
                               atol=1e-5, rtol=1e-4)  # fmt: skip
    np.testing.assert_allclose(batch["feature_distance"], still.feature_distance, rtol=1e-5)
    np.testing.assert_allclose(batch["point_score"], still.point_score, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(batch["psnr"], still.psnr, atol=1e-4)
    n, hw = len(inputs), (cfg.height // 8) * (cfg.width // 8)
    assert batch["queries"].shape == (n, hw, cfg.feature_dim)

    # Frame by frame with the test-time update outside the graph = StreamingScorer's update.
    threshold = _threshold_between(still.point_score)
    scorer = StreamingScorer(model, threshold=threshold, update=True)
    streamed = scorer.score(inputs, targets)
    got, items_after = _stream(session, inputs, targets, items, threshold)
    assert 2 <= streamed.updated.sum() <= n - 2, "both branches of the gate should run"
    np.testing.assert_array_equal(got["updated"], streamed.updated)
    np.testing.assert_allclose(got["psnr"], streamed.psnr, atol=1e-4)
    np.testing.assert_allclose(got["feature_distance"], streamed.feature_distance, rtol=1e-5)
    np.testing.assert_allclose(got["point_score"], streamed.point_score, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(items_after, scorer.items, atol=1e-5, rtol=0)
    assert not torch.equal(items_after, items)  # the memory did move


def test_a_registered_version_is_exported_pinned(tiny, tmp_path, monkeypatch) -> None:
    checkpoint, _ = tiny
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking.start_run(uri, "tiny", "train", {"steps": 60}) as run:
        tracking.register_checkpoint(run, os.fspath(checkpoint), "mnad-tiny")
    tracking.set_alias(uri, "mnad-tiny", "champion", "1")
    result = run_export(
        ExportConfig(
            model="models:/mnad-tiny@champion",
            out=str(tmp_path / "m.onnx"),
            tracking_uri=uri,
            quiet=True,
        )  # fmt: skip
    )
    assert result.model_uri == "models:/mnad-tiny/1" and result.exit_status == 0
    assert result.inputs["frames"][0] == "batch" and result.outputs["point_score"] == ["batch"]
    assert result.max_abs_error is not None and max(result.max_abs_error.values()) < 1e-4
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["mnad.model_uri"] == "models:/mnad-tiny/1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "--format 'tflite': unknown; formats are onnx"),
        (["--opset", "9"], "--opset 9: must be in 15..20"),
        ("missing", "no such model"),
        ("folder", "is a folder: give the FILE to write"),
        ("under-a-file", "cannot write the export"),
    ],
)
def test_bad_input_is_one_line(tiny, tmp_path, capsys, args, message) -> None:
    checkpoint, _ = tiny
    model, out = str(checkpoint), str(tmp_path / "m.onnx")
    extra = args if isinstance(args, list) else []
    if args == "missing":
        model = str(tmp_path / "nothing-here")
    elif args == "folder":
        out = str(tmp_path)
    elif args == "under-a-file":
        (tmp_path / "plain").write_text("")
        out = str(tmp_path / "plain" / "m.onnx")
    assert main(["export", model, "--out", out, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("mnad export: error: ") and message in err, err
    assert not Path(out).is_file()


def test_the_paper_checkpoint_in_onnx_runtime(paper_fixture, tmp_path) -> None:
    """The paper's checkpoint (imported by `mnad import-paper`), exported and run in ONNX
    Runtime on the fixture's Ped2 clips one at a time from its memory, the update applied
    outside: the paper code's own PSNR, feature distance, gate, decisions and memory, and the
    torch model's."""
    golden = torch.load(paper_fixture / "golden.pt", weights_only=True)
    size = str(int(golden.get("resolution", 64)))
    checkpoint, out = tmp_path / "paper", tmp_path / "paper.onnx"
    paper = [str(paper_fixture / "model.pth"), str(paper_fixture / "keys.pt")]
    assert main(["import-paper", *paper, "--out", str(checkpoint), "--size", size, size]) == 0
    assert main(["export", str(checkpoint), "--out", str(out), "--quiet"]) == 0
    model, preset = load_model(checkpoint)
    c = preset.model.channels
    frames = golden["eval_frames"]
    clips = torch.cat([f["input"] for f in frames])  # (16, 15, 64, 64)
    inputs, targets = clips[:, :-c], clips[:, -c:]
    threshold = float(golden["eval_threshold"])
    start = golden["eval_keys_before"].float()
    session = _session(out)

    got, items_after = _stream(session, inputs, targets, start, threshold)
    np.testing.assert_array_equal(got["updated"], [bool(f["updated"]) for f in frames])
    np.testing.assert_allclose(got["psnr"], [f["psnr"] for f in frames], atol=1e-4)
    np.testing.assert_allclose(got["feature_distance"], [f["feature_distance"] for f in frames],
                               rtol=1e-4, atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(got["point_score"], [f["point_score"] for f in frames],
                               rtol=1e-4, atol=1e-8)  # fmt: skip
    torch.testing.assert_close(items_after, frames[-1]["keys_after"], atol=1e-5, rtol=0)

    model.memory.items.copy_(start)
    streamed = StreamingScorer(model, threshold=threshold).score(inputs, targets)
    np.testing.assert_array_equal(got["updated"], streamed.updated)
    np.testing.assert_allclose(got["feature_distance"], streamed.feature_distance, rtol=1e-5)
    np.testing.assert_allclose(got["point_score"], streamed.point_score, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got["psnr"], streamed.psnr, atol=1e-4)
    first = _run(session, inputs[:1], start, targets[:1])  # the paper's output of frame 0
    torch.testing.assert_close(torch.from_numpy(first["prediction"]), frames[0]["output"],
                               atol=1e-5, rtol=1e-4)  # fmt: skip
