"""Distillation targets: the teacher's hidden states for the clean audio of a batch.

The targets must be what the teacher gives each utterance *alone* (unpadded). In fairseq/HF the
first CNN block's GroupNorm normalises over the padded length, so padding changed every frame;
the shared blocks here take the lengths (GroupNorm statistics over valid frames, masked
attention, zeroed padded frames before the positional conv), which makes one padded forward pass
equal to per-utterance passes up to float rounding (asserted in tests/train/test_trainer.py).
So the whole batch runs at once, however varied its lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from robustdistiller.errors import ConfigError
from robustdistiller.models.teacher import Teacher


def teacher_targets(
    teacher: Teacher,
    wavs: Tensor,
    lengths: Tensor,
    layer_ids: Sequence[int],
    num_frames: int,
) -> Tensor:
    """``[B, len(layer_ids), num_frames, D]`` fp32 targets (no grad); frames past a row's own length are 0.

    ``layer_ids`` index the teacher's hidden states (``i`` = output of layer ``i``);
    ``num_frames`` is the student's frame count for the padded batch.
    """
    bad = [i for i in layer_ids if not 0 <= i <= teacher.num_layers]
    if bad:
        raise ConfigError(f"pred_layer_id {bad} outside the teacher's layers 0..{teacher.num_layers}")
    out = teacher(wavs, lengths)
    stacked = torch.stack([out.hidden_states[i] for i in layer_ids], dim=1)  # [B, N, T', D]
    frames = min(stacked.shape[2], num_frames)
    targets = stacked.new_zeros(*stacked.shape[:2], num_frames, stacked.shape[3])
    valid = out.frame_mask[:, None, :frames, None]
    targets[:, :, :frames] = stacked[:, :, :frames].masked_fill(~valid, 0.0)
    return targets
