"""`make bench`'s table, assembled from canned stage JSON (no stage is run)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_all", Path(__file__).resolve().parents[1] / "scripts" / "bench_all.py"
)
bench_all = sys.modules["bench_all"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_all)
StageResult = bench_all.StageResult

MODEL = {
    "torch": "2.13.0+cpu",
    "threads": 2,
    "train": [{"preset": "small", "steps": 20, "clips_per_s": 45.67}],
    "memory_update": [
        {"preset": "small", "n": 1152, "m": 10, "c": 128, "vectorised_ms": 0.4,
         "loop_ms": 1.0, "ratio": 2.5}
    ],
}  # fmt: skip
INGEST = {
    "mode": "throughput", "source": "ped2", "videos": 28, "frames": 4560, "size": [96, 96],
    "cpus": 2, "compression": "zstd", "load_average": 1.0, "median_ratio": 0.8,
    "runs": [
        {"bare_fps": 2000.0, "ingest_fps": 1600.0, "ratio": 0.8},
        {"bare_fps": 2100.0, "ingest_fps": 1500.0, "ratio": 0.714},
        {"bare_fps": 1900.0, "ingest_fps": 1700.0, "ratio": 0.895},
    ],
}  # fmt: skip
TRAIN = {
    "clips": 1176, "preset": "small", "batch": 8, "epochs": 2, "threads": 2,
    "bare_before": {"wall": 41.0, "cpu": 21.0}, "bare_after": {"wall": 39.0, "cpu": 19.0},
    "bare": {"wall": 40.0, "cpu": 20.0},
    "ray_train": [{"workers": 1, "wall": 38.0, "cpu": 19.0, "end_to_end": 20.0,
                   "ratio_wall": 0.95, "ratio_cpu": 0.95, "ratio_end_to_end": 0.5}],
    "ratios": {"train_vs_bare_loop": 0.95},
}  # fmt: skip

LONG = {
    "mode": "long", "frames": 36000, "long_seconds": 3600, "size": [64, 64],
    "segment_seconds": 120.0, "seconds_1_cpu": 4.5, "seconds_2_cpus": 3.0, "bare_fps": 15000.0,
    "load_average": 0.5, "ingest_long_2_vs_1_cores": 1.5, "ingest_vs_ffmpeg": 0.8,
    "ratios": {"ingest_long_2_vs_1_cores": 1.5},
}  # fmt: skip


def _score_row(path: str, threshold: str, fps: float, x_loop, x_bare: float, updated=None):
    return {
        "path": path, "threshold": threshold, "updated": updated, "fps_median": fps,
        "fps_min": fps, "fps_max": fps, "spread": 0.0, "x_loop": x_loop, "x_bare": x_bare,
    }  # fmt: skip


SCORE = {
    "rows": [
        _score_row("bare forward", "-", 300.0, 3.0, 1.0),
        _score_row("per-frame loop (default)", "0.01", 100.0, 1.0, 0.333, 0.0),
        _score_row("scorer frame (default)", "0.01", 280.0, 2.8, 0.933, 0.0),
        _score_row("scorer batch (default)", "0.01", 285.0, 2.85, 0.95, 0.0),
        _score_row("per-frame loop (median)", "0.004", 95.0, 1.0, 0.317, 0.5),
        _score_row("scorer frame (median)", "0.004", 190.0, 2.0, 0.633, 0.5),
        _score_row("scorer batch (median)", "0.004", 266.0, 2.8, 0.887, 0.5),
        _score_row("per-frame loop (all)", "inf", 90.0, 1.0, 0.3, 1.0),
        _score_row("scorer frame (all)", "inf", 135.0, 1.5, 0.45, 1.0),
        _score_row("scorer no-update", "-", 294.0, 2.94, 0.98),
    ],
    "checks": [
        {"threshold": "0.01", "decisions_equal": True, "max_psnr_diff_db": 1e-6},
        {"threshold": "inf", "decisions_equal": False, "max_psnr_diff_db": 2e-6},
    ],
}


BF16_ROWS = [
    _score_row("  bf16 (default)", "0.01", 360.0, 3.6, 1.2, 0.0),
    _score_row("  bf16 no-update", "-", 350.0, 3.5, 1.167),
]
BF16_CHECK = {"threshold": "default, bf16", "decisions_agree": 0.98, "max_psnr_diff_db": 2e-4}


@pytest.mark.parametrize(
    ("ratio", "note", "text"),
    [(1.234, "", "1.23x"), (0.8, "median of 3 runs", "0.80x (median of 3 runs)"),
     (None, "", "-"), (math.nan, "note", "-"), (math.inf, "", "-")],
)  # fmt: skip
def test_ratio_text(ratio, note, text):
    assert bench_all.ratio_text(ratio, note) == text


def test_rows_of_every_stage():
    rows = bench_all.table_rows(
        [StageResult("model", 10.0, MODEL), StageResult("ingest", 40.0, INGEST),
         StageResult("training", 200.0, TRAIN), StageResult("scoring", 80.0, SCORE)]
    )  # fmt: skip
    by_stage = {}
    for row in rows:
        by_stage.setdefault(row.stage, []).append(row)
    assert [len(by_stage[s]) for s in ("model", "ingest", "training", "scoring")] == [2, 1, 3, 6]
    assert not any(row.failed for row in rows)

    train_model, update = by_stage["model"]
    assert train_model.figure.endswith("45.7 clips/s") and train_model.ratio == "-"
    assert "vectorised 0.400 ms" in update.figure and update.baseline.endswith("1.000 ms")
    assert update.ratio == "2.50x"

    (ingest,) = by_stage["ingest"]
    assert "1600 frames/s" in ingest.figure and "4560 frames to 96x96" in ingest.figure
    assert ingest.baseline == "bare ffmpeg decode: 2000 frames/s"  # medians of the runs
    assert ingest.ratio == "0.80x (median of 3 runs)"

    wall, cpu, end_to_end = by_stage["training"]
    assert wall.figure == "Ray Train, 1 worker x 2 threads: 38.0 clips/s"
    assert wall.baseline == "bare loop: 40.0 clips/s (before 41.0, after 39.0)"
    assert cpu.baseline == "bare loop: 20.0 clips/CPU-s"
    assert (wall.ratio, cpu.ratio) == ("0.95x", "0.95x")
    assert end_to_end.ratio.startswith("0.50x (")

    no_update, default, median, every, batch, check = by_stage["scoring"]
    assert no_update.baseline == "bare batched forward: 300 frames/s"
    assert no_update.ratio == "0.98x"
    assert "threshold median (0.004, 50% update): 190 frames/s" in median.figure
    assert median.baseline == "paper's per-frame loop: 95 frames/s" and median.ratio == "2.00x"
    assert (default.ratio, every.ratio, batch.ratio) == ("2.80x", "1.50x", "2.80x")
    assert "DIFFER at threshold inf" in check.figure and check.ratio == "-"
    assert "PSNR within 2.0e-06 dB" in check.figure


def test_scoring_rows_with_bf16():
    score = {"rows": SCORE["rows"] + BF16_ROWS, "checks": SCORE["checks"] + [BF16_CHECK]}
    rows = bench_all.table_rows([StageResult("scoring", 80.0, score)])
    assert len(rows) == 9 and not any(row.failed for row in rows)
    no_update, frame, exact, agree = rows[-4:]
    assert no_update.figure == "scorer, no update, bf16: 350 frames/s"
    assert (no_update.ratio, frame.ratio) == ("1.17x", "3.60x")
    assert frame.baseline == "paper's per-frame loop: 100 frames/s"
    assert "PSNR within 2.0e-06 dB" in exact.figure  # bf16's PSNR gap is not the exact check's
    assert agree.figure == (
        "check, default, bf16: 98.0% of decisions as the loop's, PSNR within 2.0e-04 dB"
    )


def test_failed_stage_and_unreadable_figures():
    rows = bench_all.table_rows(
        [StageResult("model", 10.0, MODEL),
         StageResult("ingest", 3.0, None, "bench_ingest.py: exit 1: RuntimeError: no ffmpeg"),
         StageResult("training", 5.0, {"clips": 3})]
    )  # fmt: skip
    failed = [row for row in rows if row.failed]
    assert [row.stage for row in failed] == ["ingest", "training"]
    assert failed[0].figure == "FAILED: bench_ingest.py: exit 1: RuntimeError: no ffmpeg"
    assert failed[1].figure.startswith("FAILED: figures unreadable (KeyError")

    table = bench_all.format_table(rows).splitlines()
    assert table[0].split() == ["stage", "figure", "baseline", "(same", "run)", "ratio"]
    width = len(table[1])  # the rule under the header spans the fitted columns
    assert any(line.startswith("ingest ") and "FAILED: bench_ingest.py" in line for line in table)
    assert all(len(line) <= width for line in table if "FAILED" not in line)
    assert table[2].endswith("-") and table[3].endswith("2.50x")
    column = table[0].index("figure")  # a failed row keeps the stage column's width
    assert all(line[column:].startswith("FAILED") for line in table if "FAILED" in line)


def test_error_line_takes_the_exception_of_a_traceback():
    log = (
        "$ python scripts/bench_train.py DATA\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "ValueError: DATA/summary.json: no train split\n"
        "(raylet) shutting down\n"
    )
    assert bench_all.error_line(log) == "ValueError: DATA/summary.json: no train split"
    assert bench_all.error_line("mnad ingest: error: /x: not a folder\n") == (
        "mnad ingest: error: /x: not a folder"
    )
    assert bench_all.error_line(log.replace("ValueError", "Exception")).startswith("Exception: ")
    assert bench_all.error_line("") == "no output"


ARCHIVE = {
    "sizes": {
        "small": {"videos": 200, "frames": 6400, "scored": 5600,
                  "ingest_s": 20.0, "ingest_fps": 320.0,
                  "score_s": 40.0, "score_fps": 140.0, "actors_fps": 200.0,
                  "driver_peak_mib": 600.0, "events": 12},
        "large": {"videos": 2000, "frames": 64000, "scored": 56000,
                  "ingest_s": 150.0, "ingest_fps": 426.7,
                  "score_s": 380.0, "score_fps": 168.4, "actors_fps": 210.0,
                  "driver_peak_mib": 630.0, "events": 120},
    },
    "long_video": {"minutes": 60.0, "frames": 90000, "ingest_s": 90.0, "ingest_fps": 1000.0},
    "ratios": {"archive_driver_memory_large_vs_small": 1.05,
               "archive_rate_large_vs_small": 1.203},
}  # fmt: skip


def test_long_rows():
    one_core, versus = bench_all.table_rows([StageResult("long", 30.0, LONG)])
    assert one_core.figure == "mnad ingest, one video of 60 min at 64x64, 2 cores: 3.0 s"
    assert one_core.baseline == "1 core: 4.5 s" and one_core.ratio == "1.50x (target >= 1.5)"
    assert versus.figure == "the same, 2 cores: 12000 frames/s"
    assert versus.ratio == "0.80x (target >= 0.8)"


def test_archive_rows():
    rows = bench_all.table_rows([StageResult("archive", 900.0, ARCHIVE)])
    assert not any(row.failed for row in rows) and len(rows) == 5
    ingest_small, ingest_large, rate, memory, long = rows
    assert ingest_small.figure == "ingest, 200 short videos: 320 frames/s"
    assert rate.figure == "mnad score, 2000 videos: 168 frames/s"
    assert rate.baseline == "200 videos: 140 frames/s" and rate.ratio == "1.20x (target >= 0.8)"
    assert memory.figure == "mnad score, 2000 videos: driver peak 630 MiB"
    assert memory.ratio == "1.05x (memory, target <= 1.2)"
    assert long.figure == "ingest, one video of 60 min: 1000 frames/s"
    without_long = {**ARCHIVE, "long_video": None}
    assert len(bench_all.table_rows([StageResult("archive", 1.0, without_long)])) == 4


def test_ratios_come_from_the_stages_or_are_null_with_the_reason():
    score = {**SCORE, "ratios": {"score_exact_vs_no_update": 0.97,
                                 "score_bf16_vs_paper_loop": None}}  # fmt: skip
    results = [
        StageResult("ingest", 40.0, INGEST),  # no ratios object: its median_ratio
        StageResult("training", 5.0, None, "bench_train.py: exit 1: RuntimeError: boom"),
        StageResult("scoring", 80.0, score),
        StageResult("archive", 900.0, ARCHIVE),
    ]
    ratios, notes = bench_all.collect_ratios(results)
    assert list(ratios) == list(bench_all.RATIOS)
    assert ratios["ingest_vs_ffmpeg"] == 0.8 and ratios["score_exact_vs_no_update"] == 0.97
    assert ratios["archive_driver_memory_large_vs_small"] == 1.05
    assert ratios["archive_rate_large_vs_small"] == 1.203
    assert set(notes) == {k for k, v in ratios.items() if v is None} == {
        "score_bf16_vs_paper_loop", "train_vs_bare_loop", "ingest_long_2_vs_1_cores",
    }  # fmt: skip
    assert notes["train_vs_bare_loop"].startswith("the training stage failed: bench_train.py")
    assert notes["score_bf16_vs_paper_loop"] == (
        "the scoring stage wrote score_bf16_vs_paper_loop as null"
    )
    assert notes["ingest_long_2_vs_1_cores"] == "the long stage was not run"
    ratios, _ = bench_all.collect_ratios([StageResult("long", 9.0, LONG),
                                          StageResult("training", 9.0, TRAIN)])  # fmt: skip
    assert ratios["ingest_long_2_vs_1_cores"] == 1.5 and ratios["train_vs_bare_loop"] == 0.95
    ratios, notes = bench_all.collect_ratios([StageResult("model", 1.0, MODEL)])
    assert all(v is None for v in ratios.values())
    assert notes["archive_rate_large_vs_small"] == "the archive stage was not run"
    odd = {**ARCHIVE, "ratios": {"archive_rate_large_vs_small": "fast"}}
    ratios, notes = bench_all.collect_ratios([StageResult("archive", 1.0, odd)])
    assert ratios["archive_rate_large_vs_small"] is None
    assert "not a number" in notes["archive_rate_large_vs_small"]


def test_json_has_the_ratios_beside_the_table():
    results = [StageResult("ingest", 40.0, INGEST), StageResult("archive", 900.0, ARCHIVE)]
    doc = json.loads(json.dumps(bench_all.json_doc(["h"], {}, bench_all.QUICK, 1.0, results)))
    assert doc["ratios"]["archive_rate_large_vs_small"] == 1.203
    assert doc["ratios"]["ingest_vs_ffmpeg"] == 0.8
    assert doc["ratios"]["train_vs_bare_loop"] is None
    assert doc["ratio_notes"]["train_vs_bare_loop"] == "the training stage was not run"
    assert [r["stage"] for r in doc["rows"]] == ["ingest"] + ["archive"] * 5
    assert doc["sizes"]["archive_large"] == 10 * doc["sizes"]["archive_small"]
