"""Models under evaluation: load any supported checkpoint / directory and describe its hidden states.

Wraps ``robustdistiller.checkpoints.load.open_model`` (students, Hugging Face directories) and
``models.teacher.load_teacher`` (teachers, including fairseq ``.pt`` files) with what the evaluation
needs to know: a readable name per hidden-state index, which student heads predict which teacher
layers, the teacher a student checkpoint records, and the enhancement head saved beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from robustdistiller.checkpoints.load import open_model
from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.config import from_dict
from robustdistiller.errors import CheckpointFormatError, UsageError
from robustdistiller.evaluate.probes import state_fingerprint
from robustdistiller.models.enhancement import EnhancementConfig, EnhancementHead
from robustdistiller.models.student import DistillerModel
from robustdistiller.models.teacher import Teacher

log = logging.getLogger(__name__)


@dataclass
class ModelUnderTest:
    name: str
    path: str
    kind: str  # "student" | "teacher"
    format: str
    model: nn.Module
    model_id: str  # content hash of the weights (feature-cache key)
    layer_names: list[str]  # one per hidden-state index of extract()
    teacher_source: str | None = None  # students: the teacher recorded in the checkpoint
    head_pairs: list[tuple[int, int]] | None = None  # students: (head index, teacher layer it predicts)
    enhancement: EnhancementHead | None = None
    enhancement_input: str = "cnn"

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": self.path, "kind": self.kind, "format": self.format,
            "teacher": self.teacher_source, "parameters": self.parameters,
            "num_hidden_states": len(self.layer_names), "has_enhancement": self.enhancement is not None,
        }


def default_names(paths: list[str | Path]) -> list[str]:
    """File stem / folder name, widened with parent folders until the names are unique."""
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-depth:]).removesuffix(".ckpt").removesuffix(".pt") for p in parts]
        if len(set(names)) == len(names):
            return names
    raise UsageError(f"the same model is given twice: {paths}")


def _student_layer_names(model: DistillerModel) -> list[str]:
    cfg = model.config
    return (["proj"] + [f"L{i}" for i in range(1, cfg.encoder_layers + 1)]
            + [f"head{k + 1}->T{t}" for k, t in enumerate(cfg.pred_layer_id)])


def _enhancement_head(raw: dict[str, Any], fmt: str, source: str) -> tuple[EnhancementHead | None, str]:
    """The head a training run saved with the checkpoint, in eval mode; None when there is none.

    Args:
        raw: the unpickled file. Distiller checkpoints keep the head as ``EnhancementHead`` +
            ``Config["enhancement_head"]``; DPHuBERT-format files (``prune``'s ``pruned.pth`` /
            ``final.pth``) as ``enhancement_head`` + ``enhancement_config``.
        fmt: ``"s3prl"`` or ``"dphubert"``.
        source: the path, for messages.
    Returns:
        The head (or None) and the features it reads (``"cnn"`` or ``"last"``).
    """
    if fmt == "s3prl":
        state, section = raw.get("EnhancementHead"), raw.get("Config", {}).get("enhancement_head")
        names = ("EnhancementHead", "Config['enhancement_head']")
    else:
        state, section = raw.get("enhancement_head"), raw.get("enhancement_config")
        names = ("enhancement_head", "enhancement_config")
    if state is None:
        return None, "cnn"
    if not isinstance(section, dict):
        log.warning("%s: has %s weights but no %s (written before heads kept their config); head ignored",
                    source, *names)
        return None, "cnn"
    cfg = from_dict(EnhancementConfig, section)
    head = EnhancementHead(cfg)
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointFormatError(f"{source}: enhancement head weights do not match its config: {exc}") from None
    return head.eval(), cfg.input


def load_model_under_test(path: str | Path, name: str) -> ModelUnderTest:
    """A student checkpoint or a teacher (HF directory / hub id / fairseq .pt), in eval mode."""
    source = str(path)
    local = Path(path)
    if not local.exists() and local.suffix in (".ckpt", ".pt", ".pth"):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if local.is_file() and local.suffix == ".pt" or not local.exists():
        teacher = load_teacher(source)  # fairseq/unilm .pt or a hub id
        return _teacher_entry(teacher, name, source, "fairseq" if local.is_file() else "hf-hub")
    loaded = open_model(local)
    head, head_input = _enhancement_head(loaded.raw, loaded.format, source) if loaded.raw else (None, "cnn")
    if loaded.checkpoint is None:
        entry = _teacher_entry(loaded.model, name, source, loaded.format)
        entry.enhancement, entry.enhancement_input = head, head_input
        return entry
    student: DistillerModel = loaded.model  # type: ignore[assignment]
    n = student.config.encoder_layers
    pairs = [(1 + n + k, t) for k, t in enumerate(student.config.pred_layer_id)]
    return ModelUnderTest(
        name=name, path=source, kind="student", format=loaded.format, model=student,
        model_id=state_fingerprint(student), layer_names=_student_layer_names(student),
        teacher_source=loaded.checkpoint.teacher, head_pairs=pairs, enhancement=head, enhancement_input=head_input,
    )


def _teacher_entry(model: nn.Module, name: str, source: str, fmt: str) -> ModelUnderTest:
    layers = getattr(model, "num_layers", None)
    if layers is None:
        raise CheckpointFormatError(f"{source}: loaded a {type(model).__name__}, which is neither a student nor a teacher")
    names = ["L0 (input)"] + [f"L{i}" for i in range(1, layers + 1)]
    return ModelUnderTest(name=name, path=source, kind="teacher", format=fmt, model=model,
                          model_id=state_fingerprint(model), layer_names=names)


def load_teacher_under_test(source: str | Path, name: str = "teacher") -> ModelUnderTest:
    """The reference teacher (``load_teacher`` accepts HF folders, hub ids and fairseq files)."""
    teacher: Teacher = load_teacher(source)
    return _teacher_entry(teacher, name, str(source), "teacher")
