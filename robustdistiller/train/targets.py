"""Distillation targets: the teacher's hidden states for the clean audio of a batch.

The targets must be what the teacher gives each utterance *alone* (unpadded). In fairseq/HF the
first CNN block's GroupNorm normalises over the padded length, so padding changed every frame;
the shared blocks here take the lengths (GroupNorm statistics over valid frames, masked
attention, zeroed padded frames before the positional conv), which makes one padded forward pass
equal to per-utterance passes up to float rounding (asserted in tests/train/test_trainer.py).
So the whole batch runs at once, however varied its lengths.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.errors import ConfigError
from robustdistiller.models.precision import use_precision
from robustdistiller.models.teacher import Teacher

log = logging.getLogger(__name__)


def load_frozen_teacher(source: str, device: Any) -> Teacher:
    """``load_teacher(source)`` on ``device``, with the usual failure (offline, not in the cache)
    explained.

    Raises:
        FileNotFoundError: ``source`` is neither a readable local file / folder nor a cached hub id.
    """
    try:
        return load_teacher(source).to(device)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and Path(source).suffix in (".pt", ".ckpt", ".pth"):
            raise
        raise FileNotFoundError(
            f"cannot load teacher {source!r}: {exc}\nIf this is a hub id, the machine needs network access "
            "once (or HF_HUB_OFFLINE unset) to download it into the Hugging Face cache; or set "
            "teacher.source to a local folder / fairseq .pt file."
        ) from None


def set_teacher_precision(teacher: Teacher, requested: str, device: Any) -> None:
    """``train.teacher_precision`` on a CPU run; a GPU teacher stays fp32 (logged if asked otherwise)."""
    if torch.device(device).type == "cpu":
        use_precision(teacher, requested)
    elif requested != "fp32":
        log.info(
            "train.teacher_precision=%s applies to CPU runs; the %s teacher runs in fp32",
            requested,
            torch.device(device).type,
        )


def check_teacher_layers(teacher: Teacher, key: str, layer_ids: Sequence[int]) -> None:
    """Raise a :class:`ConfigError` naming ``key`` when a layer id is not one of the teacher's hidden states."""
    bad = [i for i in layer_ids if not 0 <= i <= teacher.num_layers]
    if bad:
        raise ConfigError(f"{key} {bad} outside the teacher's layers 0..{teacher.num_layers}")


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
    check_teacher_layers(teacher, "teacher layer ids", layer_ids)
    out = teacher(wavs, lengths)
    stacked = torch.stack([out.hidden_states[i] for i in layer_ids], dim=1)  # [B, N, T', D]
    frames = min(stacked.shape[2], num_frames)
    targets = stacked.new_zeros(*stacked.shape[:2], num_frames, stacked.shape[3])
    valid = out.frame_mask[:, None, :frames, None]
    targets[:, :, :frames] = stacked[:, :, :frames].masked_fill(~valid, 0.0)
    return targets
