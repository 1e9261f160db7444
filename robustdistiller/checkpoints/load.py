"""``robustdistiller.load``: one entry point for every supported model format.

Formats are recognised from the content, not the file name (``checkpoints.formats.detect_format``):
- s3prl / RobustDistiller / our distiller checkpoint: a ``torch.save`` dict with ``"Distiller"`` and
  ``"Config"`` -> ``DistillerModel``;
- a Hugging Face model directory whose ``config.json`` has ``model_type`` hubert, wavlm or wav2vec2
  -> a teacher-family model (this is also what ``export_hf`` writes);
- a DPHuBERT / DPWavLM checkpoint (``"state_dict"`` + ``"config"``, torchaudio key names)
  -> a (pruned) ``PrunableModel`` whose ``extract`` gives DPHuBERT's 13 hidden states.
Every returned model is in eval mode, has its weights loaded strictly and offers
``extract(wavs, lengths) -> list[Tensor[B, T, D]]``. :func:`open_format` also opens the teacher
kinds (hub ids, fairseq / unilm ``.pt`` files); ``checkpoints.heads.read_head(loaded.raw, ...)``
rebuilds the enhancement head saved with a student.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustdistiller.checkpoints.dphubert import model_from_dphubert, parse_dphubert_checkpoint
from robustdistiller.checkpoints.formats import STUDENT_KINDS, SUPPORTED_FORMATS, Format, detect_format, unsupported
from robustdistiller.checkpoints.s3prl import S3PRLCheckpoint, parse_s3prl_checkpoint
from robustdistiller.checkpoints.teachers import load_teacher, teacher_from_fairseq
from robustdistiller.errors import CheckpointFormatError
from robustdistiller.models.precision import check_precision, use_precision
from robustdistiller.models.student import DistillerModel

__all__ = [
    "SUPPORTED_FORMATS",
    "LoadedModel",
    "check_finite_weights",
    "load",
    "load_student",
    "non_finite_weights",
    "open_format",
    "open_model",
    "student_from_checkpoint",
]

# What ``load`` / ``open_model`` read; ``open_format`` reads every kind.
LOADABLE = ("s3prl", "hf", "dphubert")


@dataclass
class LoadedModel:
    """A model together with what was learned about its source while loading it."""

    format: str  # a ``Format.kind``
    model: nn.Module
    checkpoint: S3PRLCheckpoint | None = None  # set for "s3prl"
    raw: dict[str, Any] | None = None  # the unpickled file ("s3prl", "dphubert"): extra keys such as a saved head

    @property
    def is_student(self) -> bool:
        return self.format in STUDENT_KINDS


def load(path: str | Path, precision: str = "auto") -> nn.Module:
    """Load any supported checkpoint file or model directory, in eval mode.

    Args:
        path: checkpoint file or model directory.
        precision: what ``extract`` runs in on the CPU: "auto" (the default: bf16 where the CPU has
            bf16 units and every hidden state keeps cosine >= 0.99 against fp32, else fp32; see
            ``robustdistiller.models.precision``), "fp32" (exact: parity checks, exports, training
            on top) or "bf16" (falls back to fp32 with a log line on a CPU without bf16 units). The
            choice is logged once.
    """
    check_precision(precision)
    model = open_model(path).model
    use_precision(model, precision)
    return model


def load_student(path: str | Path) -> tuple[DistillerModel, S3PRLCheckpoint]:
    """Load a distiller checkpoint as a ``DistillerModel`` (eval mode) plus its parsed checkpoint."""
    loaded = open_model(path)
    if loaded.checkpoint is None:
        raise CheckpointFormatError(f"{path}: is a {loaded.format} model, not a distiller (student) checkpoint")
    return loaded.model, loaded.checkpoint  # type: ignore[return-value]


def open_model(path: str | Path) -> LoadedModel:
    """Detect the format of ``path`` and load it; see the module docstring for the formats."""
    fmt = detect_format(path)
    if fmt.kind not in LOADABLE:
        raise CheckpointFormatError(unsupported(path, f"a {fmt.kind} checkpoint (a teacher: use load_teacher)"))
    return open_format(fmt)


def open_format(fmt: Format) -> LoadedModel:
    """Load what :func:`~robustdistiller.checkpoints.formats.detect_format` found, any kind, in eval mode."""
    source = fmt.source
    if fmt.kind == "s3prl":
        checkpoint = parse_s3prl_checkpoint(fmt.raw, source)
        model: nn.Module = student_from_checkpoint(checkpoint, source)
        return LoadedModel("s3prl", model, checkpoint, fmt.raw)
    if fmt.kind == "dphubert":
        model = model_from_dphubert(parse_dphubert_checkpoint(fmt.raw, source), source)
        return LoadedModel("dphubert", model, raw=fmt.raw)
    if fmt.kind in ("fairseq", "unilm"):
        return LoadedModel(fmt.kind, teacher_from_fairseq(fmt.raw, source))
    return LoadedModel(fmt.kind, load_teacher(source).eval())  # "hf" folder or "hf-hub" id


def student_from_checkpoint(checkpoint: S3PRLCheckpoint, source: str = "<checkpoint>") -> DistillerModel:
    """Build the student described by ``checkpoint`` and load its weights strictly (eval mode)."""
    model = DistillerModel(checkpoint.config)
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch's message spans lines; keep the CLI's one-line errors
        raise CheckpointFormatError(f"{source}: weights do not match Config['distiller']: {detail}") from None
    return model.eval()


def non_finite_weights(model: nn.Module) -> list[str]:
    """Names of the floating-point tensors of ``model`` holding a NaN or inf."""
    return [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]


def check_finite_weights(model: nn.Module, source: str | Path) -> None:
    """Refuse (ValueError) a model with NaN/inf weights, naming a few of the tensors."""
    bad = non_finite_weights(model)
    if bad:
        raise CheckpointFormatError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN/inf values (e.g. {', '.join(bad[:3])}): the "
            "checkpoint is damaged or its run diverged; use an earlier checkpoint"
        )
