"""Distillation targets: the teacher's hidden states for the clean audio of a batch.

The targets must be what the teacher gives each utterance *alone* (unpadded). In fairseq/HF the
first CNN block's GroupNorm normalises over the padded length, so padding changed every frame;
the shared blocks here take the lengths (GroupNorm statistics over valid frames, masked
attention, zeroed padded frames before the positional conv), which makes one padded forward pass
equal to per-utterance passes up to float rounding (asserted in tests/train/test_trainer.py).
So the whole batch runs at once, however varied its lengths.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.digest import state_fingerprint, update_with_tensor
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


class TargetMemo:
    """Teacher targets one training run leaves for the next one over the same clean batches.

    The demo trains, per seed, a DistilHuBERT baseline and then a RobustDistiller student whose data
    streams draw the same clean crops (same manifest, data seed and crop length; corruption is planned
    from its own generator), and the frozen teacher only ever sees the clean audio: the second run's
    targets are the first run's. Given a memo, :meth:`targets` returns the entry whose key matches, or
    runs the teacher and stores the result (kept after a hit: a run may draw the same uncropped batch
    twice). The key is a digest of everything the targets depend on (the teacher's weights and
    precision, the clean audio's exact bytes and lengths, the layer ids and the frame count), so a hit
    is bitwise what the teacher would have given, and any other batch, teacher or setting just runs the
    teacher. The first run pays a hash of its batch (0.6 ms for 4 x 1 s); the second skips the
    teacher's forward, a sixth of the robust student's step on a 2-core CPU (4.6 vs 4.0 steps/s).

    Args:
        max_bytes: stored targets beyond this are not kept (the later batches of a long first run then
            run the teacher in the second run too); the demo's 500 steps of 4 x 1 s at 3 layers of 192
            take 226 MB, which it clears after each seed's pair.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, Tensor] = {}
        self._teachers: weakref.WeakKeyDictionary[Teacher, str] = weakref.WeakKeyDictionary()
        self._full_logged = False

    def __len__(self) -> int:
        return len(self._entries)

    def targets(
        self, teacher: Teacher, wavs: Tensor, lengths: Tensor, layer_ids: Sequence[int], num_frames: int
    ) -> Tensor:
        """:func:`teacher_targets` of these arguments, from the memo when an earlier run stored them."""
        key = self._key(teacher, wavs, lengths, layer_ids, num_frames)
        hit = self._entries.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        out = teacher_targets(teacher, wavs, lengths, layer_ids, num_frames)
        if self.stored_bytes + _nbytes(out) <= self.max_bytes:
            self._entries[key] = out
            self.stored_bytes += _nbytes(out)
        elif not self._full_logged:
            self._full_logged = True
            log.info("teacher target memo full (%.0f MB): later batches are not kept", self.max_bytes / 1e6)
        return out

    def clear(self) -> None:
        """Drop every entry. Call it when the pair is done: a finished trainer can stay alive (reference
        cycles) until Python's cyclic garbage collector runs, and with it a memo it was given."""
        self._entries.clear()
        self.stored_bytes = 0

    def _key(self, teacher: Teacher, wavs: Tensor, lengths: Tensor, layer_ids: Sequence[int], num_frames: int) -> str:
        weights = self._teachers.get(teacher)
        if weights is None:  # frozen: its weights are hashed once
            weights = self._teachers[teacher] = state_fingerprint(teacher)
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{weights}\0{teacher.precision}\0{list(layer_ids)}\0{num_frames}\0".encode())
        update_with_tensor(h, wavs)
        update_with_tensor(h, lengths)
        return h.hexdigest()


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()
