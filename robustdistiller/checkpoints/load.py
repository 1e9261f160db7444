"""``robustdistiller.load``: one entry point for every supported model format.

Formats are recognised from the content, not the file name:
- s3prl / RobustDistiller / our distiller checkpoint: a ``torch.save`` dict with ``"Distiller"`` and
  ``"Config"`` -> ``DistillerModel``;
- a Hugging Face model directory whose ``config.json`` has ``model_type`` hubert, wavlm or wav2vec2
  -> a teacher-family model (this is also what ``export_hf`` writes);
- a DPHuBERT / DPWavLM checkpoint (``"state_dict"`` + ``"config"``, torchaudio key names)
  -> a (pruned) ``PrunableModel`` whose ``extract`` gives DPHuBERT's 13 hidden states.
Every returned model is in eval mode, has its weights loaded strictly and offers
``extract(wavs, lengths) -> list[Tensor[B, T, D]]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustdistiller.checkpoints.dphubert import (
    is_dphubert_checkpoint,
    model_from_dphubert,
    parse_dphubert_checkpoint,
)
from robustdistiller.checkpoints.s3prl import (
    S3PRLCheckpoint,
    is_s3prl_checkpoint,
    parse_s3prl_checkpoint,
)
from robustdistiller.checkpoints.safe_pickle import safe_load
from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.errors import CheckpointFormatError
from robustdistiller.models.precision import check_precision, use_precision
from robustdistiller.models.student import DistillerModel

HF_MODEL_TYPES = ("hubert", "wavlm", "wav2vec2")

SUPPORTED_FORMATS = (
    "s3prl/RobustDistiller distiller checkpoint (torch.save dict with 'Distiller' and 'Config')",
    f"Hugging Face model directory (config.json with model_type {', '.join(HF_MODEL_TYPES)})",
    "DPHuBERT / DPWavLM checkpoint (torch.save dict with 'state_dict' and 'config')",
)


@dataclass
class LoadedModel:
    """A model together with what was learned about its source while loading it."""

    format: str  # "s3prl" | "hf" | "dphubert"
    model: nn.Module
    checkpoint: S3PRLCheckpoint | None = None  # set for "s3prl"
    raw: dict[str, Any] | None = None  # the unpickled file ("s3prl", "dphubert"): extra keys such as a saved head


def load(path: str | Path, precision: str = "fp32") -> nn.Module:
    """Load any supported checkpoint file or model directory, in eval mode.

    Args:
        path: checkpoint file or model directory.
        precision: what ``extract`` runs in on the CPU: "fp32" (exact, the default), "bf16" (falls
            back to fp32 with a log line on a CPU without bf16 units) or "auto" (bf16 where it is
            faster and every hidden state keeps cosine >= 0.99 against fp32; see
            ``robustdistiller.models.precision``). The choice is logged once.
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
    path = Path(path)
    if path.is_dir():
        return _open_directory(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file or model directory: {path}")
    raw = safe_load(path)
    if is_s3prl_checkpoint(raw):
        checkpoint = parse_s3prl_checkpoint(raw, str(path))
        return LoadedModel("s3prl", student_from_checkpoint(checkpoint, str(path)), checkpoint, raw)
    if is_dphubert_checkpoint(raw):
        model = model_from_dphubert(parse_dphubert_checkpoint(raw, str(path)), str(path))
        return LoadedModel("dphubert", model, raw=raw)
    raise CheckpointFormatError(_unsupported(path, _describe_content(raw)))


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


def _open_directory(path: Path) -> LoadedModel:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointFormatError(_unsupported(path, "a directory without config.json"))
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointFormatError(f"{config_file}: not a readable Hugging Face config ({exc})") from None
    if model_type not in HF_MODEL_TYPES:
        raise CheckpointFormatError(_unsupported(path, f"a Hugging Face directory with model_type {model_type!r}"))
    return LoadedModel("hf", load_teacher(path).eval())


def _describe_content(raw: Any) -> str:
    if isinstance(raw, dict):
        keys = sorted(map(str, raw))
        return f"a dict with keys {keys}"
    return f"a pickled {type(raw).__name__}"


def _unsupported(path: Path, what: str) -> str:
    return f"unsupported format: {path} is {what}; supported: " + "; ".join(SUPPORTED_FORMATS)
