"""DistilHuBERT distillation (RobustDistiller when the student hears corrupted audio and the
enhancement term is on) as a training objective.

Per micro-batch: the frozen teacher sees the clean, unpadded audio and gives the targets; the
student sees ``noisy`` (under autocast) and predicts them through its heads (and, with
``student.layer_targets``, through its own Transformer layers too); the loss is the masked
distillation loss (+ ``pooled_loss`` x the utterance-mean distance of the same pairs, + ``feat_pen_loss`` x
the feature penalty) + ``enhancement.weight`` x the enhancement loss when the recipe enables the head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.errors import CheckpointFormatError, ConfigError
from robustdistiller.models.init import InitReport, init_student_from_teacher
from robustdistiller.models.student import DistillerConfig, DistillerModel, DistillerOutput
from robustdistiller.models.teacher import Teacher
from robustdistiller.train.distributed import init_distributed, shutdown
from robustdistiller.train.enhancement import HEAD_NAME, EnhancementTerm
from robustdistiller.train.losses import DistillationLoss, distillation_loss, feature_penalty, utterance_mean_loss
from robustdistiller.train.objective import LoopTools, MicroBatch, Objective, StepLoss, named_parameters
from robustdistiller.train.optim import decay_groups
from robustdistiller.train.recipe import DistillRecipe, OptimSection
from robustdistiller.train.targets import (
    TargetMemo,
    check_teacher_layers,
    load_frozen_teacher,
    set_teacher_precision,
    teacher_targets,
)
from robustdistiller.train.trainer import DistillResult, Trainer


def format_init_report(report: InitReport) -> str:
    kept = ", ".join(sorted({k.rsplit(".", 1)[0] for k in report.not_initialised})[:6])
    return (
        f"student initialised from the teacher: {len(report.copied)} tensors copied, "
        f"{len(report.not_initialised)} keep their own init ({kept}{', ...' if kept else ''})"
    )


def check_targets(config: DistillerConfig, teacher: Teacher) -> None:
    """Refuse ``student.pred_layer_id`` / ``student.layer_targets`` the teacher cannot give, before the
    student is built."""
    check_teacher_layers(teacher, "student.pred_layer_id", config.pred_layer_id)
    if not config.layer_targets:
        return
    check_teacher_layers(teacher, "student.layer_targets", config.layer_targets)
    if config.encoder_embed_dim != teacher.embed_dim:
        raise ConfigError(
            f"student.layer_targets needs the student's layers as wide as the teacher's: "
            f"encoder_embed_dim={config.encoder_embed_dim}, teacher embed_dim {teacher.embed_dim}"
        )


class DistillationObjective(Objective):
    """A :class:`DistillerModel` student learning a frozen teacher's layers, plus the optional
    enhancement term.

    Args:
        recipe: the distillation recipe (``student``, ``train.masked_loss``, ``data.max_length``,
            ``teacher.source`` are read).
        teacher: the frozen teacher, on the device.
        student: the student, on the device.
        enhancement: the enhancement term, or None.
        description: the log line of a new run.
        memo: teacher targets shared with another run over the same clean batches (:class:`TargetMemo`).
    """

    label = "distill"

    def __init__(
        self,
        recipe: DistillRecipe,
        teacher: Teacher,
        student: DistillerModel,
        enhancement: EnhancementTerm | None,
        description: str = "",
        memo: TargetMemo | None = None,
    ) -> None:
        self.recipe = recipe
        self.teacher = teacher
        self.student = student
        self.enhancement = enhancement
        self.description = description
        self.memo = memo

    @classmethod
    def from_recipe(cls, recipe: DistillRecipe, device: Any, memo: TargetMemo | None = None) -> DistillationObjective:
        """Load the teacher, build the student initialised from it and (if enabled) the head, on
        ``device``; ``train.teacher_precision`` applies to the teacher of a CPU run."""
        teacher = load_frozen_teacher(recipe.teacher.source, device)
        set_teacher_precision(teacher, recipe.train.teacher_precision, device)
        check_targets(recipe.student, teacher)
        student = DistillerModel(recipe.student)
        description = format_init_report(init_student_from_teacher(student, teacher))
        student = student.to(device)
        enhancement = EnhancementTerm.from_config(recipe.enhancement, device)
        return cls(recipe, teacher, student, enhancement, description, memo)

    def modules(self) -> dict[str, Any]:
        modules: dict[str, Any] = {"student": self.student}
        if self.enhancement is not None:
            modules[HEAD_NAME] = self.enhancement.head
        return modules

    def param_groups(self, optim: OptimSection) -> list[dict[str, Any]]:
        """Student and head in a decayed and a non-decayed group (see :func:`decay_groups`)."""
        return decay_groups(named_parameters(self.modules()), optim.weight_decay, match_reference=optim.match_reference)

    def loss(self, batch: MicroBatch, tools: LoopTools) -> StepLoss:
        """Heads vs the clean teacher's ``pred_layer_id`` layers (+ each Transformer layer vs its
        ``layer_targets`` layer), + ``pooled_loss`` x the same pairs' utterance-mean distance, + the
        feature penalty, + the enhancement term."""
        cfg = self.recipe.student
        with tools.phase("student"), tools.autocast():
            out: DistillerOutput = tools.nets["student"](batch.noisy, batch.lengths)
        predictions = out.predictions
        assert predictions is not None  # the student is built with its prediction heads
        own_ids = cfg.layer_targets or []
        with tools.phase("teacher"):  # one teacher pass for the heads' and the layers' targets
            # Each teacher layer once (the demo's heads and layers share layer 2).
            layer_ids = list(dict.fromkeys([*cfg.pred_layer_id, *own_ids]))
            targets = self._targets(batch, layer_ids, predictions.shape[2])
        head_targets = targets[:, [layer_ids.index(i) for i in cfg.pred_layer_id]]
        own_targets = targets[:, [layer_ids.index(i) for i in own_ids]]
        with tools.phase("student"):
            dist = self._distance(predictions, head_targets, out.frame_mask, cfg.pred_layer_id)
            loss = dist.total
            scalars = {f"loss/{name}": value for name, value in dist.per_layer.items()}
            scalars["loss/distill"] = dist.total.detach()
            if own_ids:
                own = torch.stack(out.hiddens[: len(own_ids)], dim=1)
                own_dist = self._distance(own, own_targets, out.frame_mask, own_ids)
                loss = loss + own_dist.total
                scalars.update({f"loss/layers_{name}": value for name, value in own_dist.per_layer.items()})
                scalars["loss/distill_layers"] = own_dist.total.detach()
            if cfg.pooled_loss > 0:
                pooled = utterance_mean_loss(predictions, head_targets, out.frame_mask)
                if own_ids:
                    pooled = pooled + utterance_mean_loss(own, own_targets, out.frame_mask)
                loss = loss + cfg.pooled_loss * pooled
                scalars["loss/pooled"] = pooled.detach()
            if cfg.feat_pen_loss > 0:
                loss = loss + cfg.feat_pen_loss * feature_penalty(out.cnn_features, out.frame_mask)
        if self.enhancement is not None:
            features = self.enhancement.features(out.cnn_features, out.hiddens[-1])
            enhancement, enhancement_scalars = self.enhancement.loss(features, batch, tools)
            loss = loss + enhancement
            scalars.update(enhancement_scalars)
        return StepLoss(loss, scalars)

    def _targets(self, batch: MicroBatch, layer_ids: list[int], num_frames: int) -> Tensor:
        """The clean teacher's ``layer_ids`` (from the memo when another run over this batch left them)."""
        if self.memo is not None:
            return self.memo.targets(self.teacher, batch.clean, batch.lengths, layer_ids, num_frames)
        return teacher_targets(self.teacher, batch.clean, batch.lengths, layer_ids, num_frames)

    def _distance(
        self, pred: Tensor, target: Tensor, frame_mask: Tensor | None, layer_ids: list[int]
    ) -> DistillationLoss:
        cfg = self.recipe.student
        return distillation_loss(
            pred,
            target,
            frame_mask,
            loss_type=cfg.loss_type,  # type: ignore[arg-type]
            cosine_weight=cfg.cosine_loss,
            masked=self.recipe.train.masked_loss,
            layer_ids=layer_ids,
        )

    def checkpoint_config(self) -> dict[str, Any]:
        """``Config`` entries beside the student's own: the teacher, the crop length, the head."""
        config: dict[str, Any] = {
            "teacher": {"model": self.recipe.teacher.source, "n_layers": self.teacher.num_layers},
            "task": {"sequence_length": self.recipe.data.max_length},
        }
        return config

    def save_checkpoint(self, path: Path, step: int, loop_state: dict[str, Any]) -> None:
        """The s3prl distiller format (``Distiller`` = the student) plus the head and ``loop_state``."""
        head = self.enhancement.head if self.enhancement is not None else None
        save_s3prl_checkpoint(
            path, self.student, step=step, extra_config=self.checkpoint_config(), extra=loop_state, head=head
        )

    def load_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        if "Distiller" not in state:
            raise CheckpointFormatError(f"{path} has no 'Distiller' student: train.out_dir holds another kind of run")
        self.student.load_state_dict(state["Distiller"])
        if self.enhancement is not None:
            self.enhancement.load(state, path)


class DistillTrainer(Trainer):
    """The training loop over the :class:`DistillationObjective` of ``recipe`` (``memo``: see
    :class:`TargetMemo`; other keyword arguments: :class:`Trainer`'s)."""

    objective: DistillationObjective

    def __init__(self, recipe: DistillRecipe, *, memo: TargetMemo | None = None, **kwargs: Any) -> None:
        super().__init__(recipe, lambda setup: DistillationObjective.from_recipe(recipe, setup.device, memo), **kwargs)


def distill(
    recipe: DistillRecipe, *, resume: bool = False, overwrite: bool = False, memo: TargetMemo | None = None
) -> DistillResult:
    """Train a student as ``recipe`` says (resuming from ``train.out_dir`` if asked, or replacing the
    run there with ``overwrite``) and return the result; ``memo`` shares the teacher's targets with
    another run over the same clean batches (:class:`TargetMemo`)."""
    ctx = init_distributed(recipe.train.device)
    try:
        return DistillTrainer(recipe, resume=resume, overwrite=overwrite, ctx=ctx, memo=memo).fit()
    finally:
        shutdown(ctx)
