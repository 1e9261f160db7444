"""robustdistiller: robust distillation of self-supervised speech models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"


def load(path: str | Path, precision: str = "auto") -> nn.Module:
    """Load a checkpoint file or model directory in any supported format, in eval mode.

    The model offers ``extract(wavs, lengths) -> list[Tensor[B, T, D]]``; see
    ``robustdistiller.checkpoints.load`` for the formats. ``precision="auto"`` (the default) makes
    ``extract`` use bf16 on CPUs where it is faster and accurate, fp32 elsewhere, and logs which;
    ``"fp32"`` is exact, ``"bf16"`` forces bf16 where the CPU has the units. Hidden states are fp32
    either way.
    """
    # Imported here so `import robustdistiller` (and the CLI's start-up) does not pull in torch.
    from robustdistiller.checkpoints.load import load as _load

    return _load(path, precision)
