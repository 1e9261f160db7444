"""Student-from-teacher initialisation (s3prl's ``init_teacher_conv_layers`` / ``init_teacher_encoder_layers``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..errors import UnsupportedTeacherError
from .student import DistillerModel
from .teacher import Teacher

# WavLM-only tensors of a teacher layer; the student's attention is vanilla (reference-formats.md B.2).
_WAVLM_ONLY = re.compile(r"self_attn\.(relative_attention_bias\.weight|grep_linear\.(weight|bias)|grep_a)$")


@dataclass
class InitReport:
    copied: list[str] = field(default_factory=list)
    """Student tensors overwritten with the teacher's values."""
    skipped: list[str] = field(default_factory=list)
    """Teacher tensors not copied (other layers, feature/encoder LayerNorms, WavLM relative position)."""
    not_initialised: list[str] = field(default_factory=list)
    """Student tensors that keep their own initialisation (encoder LayerNorm, prediction heads, ...)."""


def _copy_scope(key: str, layers: int, conv: bool, encoder: bool) -> bool:
    if conv and key.startswith(("feature_extractor.", "post_extract_proj.")):
        return True
    if encoder and key.startswith("encoder.pos_conv."):
        return True
    m = re.match(r"encoder\.layers\.(\d+)\.", key)
    return encoder and m is not None and int(m.group(1)) < layers and not _WAVLM_ONLY.search(key)


def init_student_from_teacher(
    student: DistillerModel,
    teacher: Teacher,
    *,
    conv_layers: bool | None = None,
    encoder_layers: bool | None = None,
) -> InitReport:
    """Copy the CNN + projection (``conv_layers``) and the pos-conv + first L layers (``encoder_layers``)
    of ``teacher`` into ``student``. Both flags default to the student config's ``init_teacher_*``.

    Raises ``ValueError`` naming the key and both shapes on a shape mismatch, or when the teacher
    lacks a tensor the student needs (e.g. fewer layers).
    """
    cfg = student.config
    conv = cfg.init_teacher_conv_layers if conv_layers is None else conv_layers
    enc = cfg.init_teacher_encoder_layers if encoder_layers is None else encoder_layers
    layers = cfg.encoder_layers
    if enc and layers > teacher.num_layers:
        raise UnsupportedTeacherError(f"the student has {layers} layers but the teacher only {teacher.num_layers}")
    source = teacher.model.state_dict()
    target = student.state_dict()
    report = InitReport()
    updates: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if not _copy_scope(key, layers, conv, enc):
            report.skipped.append(key)
            continue
        if key not in target:
            raise UnsupportedTeacherError(
                f"teacher tensor {key} {tuple(value.shape)} has no counterpart in the student"
            )
        if target[key].shape != value.shape:
            raise UnsupportedTeacherError(
                f"shape mismatch for {key}: student {tuple(target[key].shape)} vs teacher {tuple(value.shape)}"
            )
        updates[key] = value
    needed = [k for k in target if _copy_scope(k, layers, conv, enc)]
    missing = [k for k in needed if k not in updates]
    if missing:
        raise UnsupportedTeacherError(f"the teacher lacks student tensors {missing[:8]} (different architecture?)")
    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value)
    report.copied = list(updates)
    report.not_initialised = [k for k in target if k not in updates]
    return report
