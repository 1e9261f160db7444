"""Distillation targets: the teacher's hidden states for the clean, unpadded audio of a batch.

The teacher's first CNN block normalises each channel over time (GroupNorm), so zero padding
would change every frame of a padded row. Rows are therefore grouped by length and each group
runs unpadded; random crops to ``max_length`` make most rows of a bucket the same length, so this
is usually one or two forward passes per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from robustdistiller.models.teacher import Teacher


def teacher_targets(
    teacher: Teacher,
    wavs: Tensor,
    lengths: Tensor,
    layer_ids: Sequence[int],
    num_frames: int,
) -> Tensor:
    """``[B, len(layer_ids), num_frames, D]`` fp32 targets; frames past a row's own length are 0.

    ``layer_ids`` index the teacher's hidden states (``i`` = output of layer ``i``);
    ``num_frames`` is the student's frame count for the padded batch.
    """
    bad = [i for i in layer_ids if not 0 <= i <= teacher.num_layers]
    if bad:
        raise ValueError(f"pred_layer_id {bad} outside the teacher's layers 0..{teacher.num_layers}")
    batch = wavs.shape[0]
    targets = wavs.new_zeros(batch, len(layer_ids), num_frames, teacher.embed_dim, dtype=torch.float32)
    for length in torch.unique(lengths).tolist():
        rows = torch.nonzero(lengths == length).squeeze(1)
        out = teacher(wavs[rows, :length], lengths[rows])
        stacked = torch.stack([out.hidden_states[i] for i in layer_ids], dim=1)
        frames = min(stacked.shape[2], num_frames)
        targets[rows, :, :frames] = stacked[:, :, :frames]
    return targets
