"""robustdistiller: robust distillation of self-supervised speech models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"


def load(path: str | Path) -> nn.Module:
    """Load a checkpoint file or model directory in any supported format, in eval mode.

    The model offers ``extract(wavs, lengths) -> list[Tensor[B, T, D]]``; see
    ``robustdistiller.export.load`` for the formats.
    """
    # Imported here so `import robustdistiller` (and the CLI's start-up) does not pull in torch.
    from robustdistiller.export.load import load as _load

    return _load(path)
