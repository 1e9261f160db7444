"""An s3prl upstream ("expert") for our checkpoints, without importing s3prl.

s3prl's ``run_downstream.py -u NAME -k CKPT`` calls ``getattr(s3prl.hub, NAME)(ckpt=..., model_config=...,
refresh=...)`` and then feeds the returned ``nn.Module`` lists of unpadded 1-D 16 kHz waves
(reference-formats.md D). ``robust_distiller_local`` is such an entry; ``docs/interop.md`` shows how to register it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from robustdistiller.checkpoints.load import load
from robustdistiller.export.onnx import as_extractor
from robustdistiller.models.conv import lengths_to_mask
from robustdistiller.models.student import DistillerModel

log = logging.getLogger(__name__)


class RobustDistillerUpstream(nn.Module):
    """Wraps a loaded model in the s3prl expert interface.

    ``forward`` returns ``hidden_states`` (the model's ``extract`` list: for a student the projected
    features, each transformer layer and each prediction head; all ``(B, T, D)``),
    ``last_hidden_state`` (the last entry: the last head for a student), ``pad_mask`` (``(B, T)``
    bool, True = valid frame) and, for a student, ``paper`` (the last transformer layer, the
    representation the DistilHuBERT paper evaluates; select it with ``-s paper``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        strides = [
            m.stride[0] for name, m in model.named_modules() if isinstance(m, nn.Conv1d) and "feature_extractor" in name
        ]
        if not strides:
            raise ValueError(f"{type(model).__name__} has no conv feature extractor to take the frame rate from")
        self.downsample_rate = math.prod(strides)

    def get_downsample_rates(self, key: str) -> int:
        """Samples per frame for every output key (320 = 20 ms for the standard extractor)."""
        return self.downsample_rate

    def forward(self, wavs: list[Tensor]) -> dict[str, Any]:
        if len(wavs) == 0:
            raise ValueError("the upstream needs at least one waveform")
        if any(w.dim() != 1 for w in wavs):
            shapes = [tuple(w.shape) for w in wavs]
            raise ValueError(f"expected 1-D (mono, unpadded) waveforms, got shapes {shapes}")
        device = wavs[0].device
        lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long, device=device)
        padded = pad_sequence([w.float() for w in wavs], batch_first=True)
        model = as_extractor(self.model)
        states = model.extract(padded, lengths)
        frame_lengths = model.frame_lengths(lengths)
        out: dict[str, Any] = {
            "hidden_states": states,
            "last_hidden_state": states[-1],
            "pad_mask": lengths_to_mask(frame_lengths, states[-1].shape[1]),
        }
        if isinstance(self.model, DistillerModel):
            out["paper"] = states[self.model.config.encoder_layers]
        return out


def robust_distiller_local(
    ckpt: str | Path, model_config: str | None = None, refresh: bool = False, **kwargs: Any
) -> RobustDistillerUpstream:
    """s3prl hub entry: ``-u robust_distiller_local -k CKPT`` with any format ``robustdistiller.load`` reads.

    ``model_config`` (``-g``) and ``refresh`` (``-r``) are accepted because s3prl always passes them;
    the checkpoint carries its own config, so they have no effect.
    """
    if not Path(ckpt).exists():
        raise FileNotFoundError(f"robust_distiller_local: checkpoint not found: {ckpt}")
    if model_config:
        log.warning("robust_distiller_local ignores model_config=%s: the checkpoint holds its config", model_config)
    if kwargs:
        log.debug("robust_distiller_local ignores %s", sorted(kwargs))
    # fp32: s3prl downstreams train on these features, often on a GPU, and compare against fp32 numbers.
    return RobustDistillerUpstream(load(ckpt, precision="fp32"))
