"""Models under evaluation: load any supported checkpoint / directory and describe its hidden states.

Wraps ``checkpoints.formats.detect_format`` + ``checkpoints.load.open_format`` (students in the
s3prl and DPHuBERT formats; teachers from Hugging Face folders, hub ids and fairseq / unilm ``.pt``
files) with what the evaluation needs to know: a readable name per hidden-state index, which student
heads predict which teacher layers, the teacher a student checkpoint records, and the enhancement
head saved beside it (``checkpoints.heads``, the same for every format).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from robustdistiller.checkpoints.formats import detect_format
from robustdistiller.checkpoints.heads import read_head
from robustdistiller.checkpoints.load import open_format
from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.digest import state_fingerprint
from robustdistiller.errors import CheckpointFormatError, UsageError
from robustdistiller.models.enhancement import EnhancementHead
from robustdistiller.models.precision import use_precision
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
    precision: str = "fp32"  # what the model's forward runs in (set_precision)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def set_precision(self, requested: str) -> None:
        """Run the model in ``requested`` (fp32 | bf16 | auto, resolved for this CPU by
        ``models.precision.use_precision``, which logs the choice). The feature-cache key names a
        reduced precision, so cached features of different precisions never mix."""
        if not hasattr(self.model, "precision"):
            if requested != "fp32":
                log.info("%s: %s has no reduced-precision path; it runs in fp32", self.name, type(self.model).__name__)
            return
        self.precision = use_precision(self.model, requested).precision
        base = self.model_id.split("@", 1)[0]
        self.model_id = base if self.precision == "fp32" else f"{base}@{self.precision}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "kind": self.kind,
            "format": self.format,
            "teacher": self.teacher_source,
            "parameters": self.parameters,
            "num_hidden_states": len(self.layer_names),
            "has_enhancement": self.enhancement is not None,
            "precision": self.precision,
        }


def default_names(paths: list[str | Path]) -> list[str]:
    """File stem / folder name, widened with parent folders until the names are unique."""
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-depth:]).removesuffix(".ckpt").removesuffix(".pt") for p in parts]
        if len(set(names)) == len(names):
            return names
    raise UsageError(f"the same model is given twice: {paths}")


def load_model_under_test(path: str | Path, name: str) -> ModelUnderTest:
    """A student checkpoint (s3prl or DPHuBERT format) or a teacher (HF directory / hub id /
    fairseq or unilm .pt), in eval mode, with the enhancement head saved beside a student."""
    loaded = open_format(detect_format(path, hub_ids=True))
    source = str(path)
    if not loaded.is_student:
        return _teacher_entry(loaded.model, name, source, loaded.format)
    entry = ModelUnderTest(
        name=name,
        path=source,
        kind="student",
        format=loaded.format,
        model=loaded.model,
        model_id=state_fingerprint(loaded.model),
        layer_names=_layer_names(loaded.model),
    )
    saved = read_head(loaded.raw, loaded.format, source)
    if saved is not None:
        entry.enhancement, entry.enhancement_input = saved.head, saved.input
    if loaded.checkpoint is not None:  # s3prl: prediction heads and the recorded teacher
        student: DistillerModel = loaded.model  # type: ignore[assignment]
        n = student.config.encoder_layers
        entry.head_pairs = [(1 + n + k, t) for k, t in enumerate(student.config.pred_layer_id)]
        entry.teacher_source = loaded.checkpoint.teacher
    return entry


def _layer_names(model: nn.Module) -> list[str]:
    """Students in s3prl order (projection, layers, prediction heads); other models (a pruned
    DPHuBERT student, teachers) "index i = output of layer i"."""
    if isinstance(model, DistillerModel):
        cfg = model.config
        return (
            ["proj"]
            + [f"L{i}" for i in range(1, cfg.encoder_layers + 1)]
            + [f"head{k + 1}->T{t}" for k, t in enumerate(cfg.pred_layer_id)]
        )
    layers = getattr(model, "num_layers", None)
    if layers is None:
        raise CheckpointFormatError(f"loaded a {type(model).__name__}, which is neither a student nor a teacher")
    return ["L0 (input)"] + [f"L{i}" for i in range(1, layers + 1)]


def _teacher_entry(model: nn.Module, name: str, source: str, fmt: str) -> ModelUnderTest:
    return ModelUnderTest(
        name=name,
        path=source,
        kind="teacher",
        format=fmt,
        model=model,
        model_id=state_fingerprint(model),
        layer_names=_layer_names(model),
    )


def load_teacher_under_test(source: str | Path, name: str = "teacher") -> ModelUnderTest:
    """The teacher the students are compared with (``load_teacher`` accepts HF folders, hub ids and
    fairseq / unilm files)."""
    teacher: Teacher = load_teacher(source)
    return _teacher_entry(teacher, name, str(source), "teacher")
