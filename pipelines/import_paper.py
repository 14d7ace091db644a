"""`mnad import-paper`: a checkpoint of the paper's code into this project's format (driver)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnad.checkpoint import save_checkpoint
from mnad.paper_import import import_paper_model
from pipelines.errors import OptionError, UserError
from pipelines.options import option


@dataclass(frozen=True)
class ImportPaperConfig:
    """Where the paper's files are and where the converted checkpoint goes."""

    model_pth: str = option("model.pth saved by the paper's Train.py", positional=True, path=True)
    keys_pt: str = option("keys.pt (the memory) saved beside it", positional=True, path=True)
    out: str = option("checkpoint directory to write", path=True)
    size: tuple[int, int] = option(
        "input height and width the model is used at", default=(256, 256)
    )

    def __post_init__(self) -> None:
        h, w = self.size
        if h % 8 or w % 8 or h < 8 or w < 8:
            raise OptionError("size", f"--size must be two positive multiples of 8, not {h} {w}")


def import_paper(config: ImportPaperConfig) -> Path:
    """Convert the pair of files and write a checkpoint directory; return its path."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    model, preset = import_paper_model(config.model_pth, config.keys_pt, *config.size)
    path = save_checkpoint(
        out, model, preset, extra={"source": "paper", "model_pth": str(config.model_pth)}
    )
    m = preset.model
    order = " in BGR order as the paper's OpenCV loader read them" if m.channels == 3 else ""
    print(
        f"mnad import-paper: wrote {path} ({m.task}, {m.channels} channels{order}, "
        f"{m.input_frames} input frames, widths {m.widths}, memory {m.memory_size}x{m.feature_dim})"
    )
    return path
