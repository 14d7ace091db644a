"""`mnad import-paper`: a checkpoint of the paper's code into this project's format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mnad.checkpoint import save_checkpoint
from mnad.errors import UserError
from mnad.paper_import import import_paper_model


@dataclass(frozen=True)
class ImportPaperConfig:
    """Where the paper's files are and where the converted checkpoint goes."""

    model_pth: str = field(
        metadata={"positional": True, "help": "model.pth saved by the paper's Train.py"}
    )
    keys_pt: str = field(
        metadata={"positional": True, "help": "keys.pt (the memory) saved beside it"}
    )
    out: str = field(metadata={"help": "checkpoint directory to write"})
    size: tuple[int, int] = field(
        default=(256, 256), metadata={"help": "input height and width the model is used at"}
    )

    def __post_init__(self) -> None:
        h, w = self.size
        if h % 8 or w % 8 or h < 8 or w < 8:
            raise UserError(f"--size must be two positive multiples of 8, not {h} {w}")


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
    print(
        f"mnad import-paper: wrote {path} ({m.task}, {m.channels} channels, "
        f"{m.input_frames} input frames, widths {m.widths}, memory {m.memory_size}x{m.feature_dim})"
    )
    return path
