"""DPHuBERT / RD-DPWavLM: stage 1 (distill + prune), the pruning step, stage 2 (final distillation).

Both stages are one objective, :class:`PruningDistillation`, run by the shared training loop
(:class:`~robustdistiller.train.trainer.Trainer`: data, corruption, DDP, signals, exact resume and
logging); the objective is the layer-to-layer distillation of a :class:`PrunableModel`, the
enhancement term when enabled, and in stage 1 the Lagrangian sparsity term.

- Stage 1 (:meth:`PruningDistillation.stage1`): student = the teacher's architecture and weights
  with hard-concrete gates. Loss = layer-to-layer distillation (student hidden i -> Linear ->
  teacher hidden i, for the recipe's layers; one identity-initialised Linear per group) + the
  Lagrangian sparsity term. Three optimizer groups: weights (``optim.lr``), gates
  (``pruning.reg_lr``), multipliers (``-pruning.reg_lr``: gradient ascent).
- Pruning: gated-off units removed, eval-mask values folded (``models.pruning.prune_model``); the
  result is written in DPHuBERT's format to ``out_dir/pruned.pth``.
- Stage 2 (:meth:`PruningDistillation.stage2`): the pruned model (no gates), the Linears and the
  head from ``pruned.pth``, same loss, no regulariser, ``final`` optimiser settings in
  distillation's decayed / non-decayed groups; the result is
  ``out_dir/final.pth`` (DPHuBERT format).

The teacher is loaded once per stage and kept only as the frozen, ungated ``PrunableModel`` copy
that gives the targets.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustdistiller.checkpoints.dphubert import atomic_torch_save, read_dphubert_checkpoint, save_dphubert_checkpoint
from robustdistiller.checkpoints.heads import head_weights
from robustdistiller.config import to_dict
from robustdistiller.errors import CheckpointFormatError, ConfigError
from robustdistiller.models.enhancement import EnhancementHead
from robustdistiller.models.pruning import (
    PrunableConfig,
    PrunableModel,
    PrunableOutput,
    SparsityConstraint,
    prune_model,
)
from robustdistiller.models.teacher import Teacher
from robustdistiller.train.distributed import DistContext, barrier, init_distributed, shutdown
from robustdistiller.train.enhancement import HEAD_NAME, EnhancementTerm
from robustdistiller.train.losses import layer_to_layer_loss
from robustdistiller.train.objective import LoopTools, MicroBatch, Objective, StepLoss, named_parameters
from robustdistiller.train.optim import decay_groups
from robustdistiller.train.prune_recipe import PruneRecipe
from robustdistiller.train.recipe import OptimSection
from robustdistiller.train.targets import load_frozen_teacher
from robustdistiller.train.trainer import DistillResult, Trainer

log = logging.getLogger(__name__)

PRUNED_FILE = "pruned.pth"
FINAL_FILE = "final.pth"


class DistillProjections(nn.ModuleList):
    """One Linear per distilled layer; layers of a group share one module (so the state dict has
    DPHuBERT's ``distill_linear_projs`` layout: ``0.weight``, ``1.weight`` ... with shared copies)."""

    def __init__(self, dim: int, groups: list[list[int]]) -> None:
        modules = []
        for group in groups:
            linear = nn.Linear(dim, dim)
            with torch.no_grad():
                linear.weight.copy_(torch.eye(dim))
                linear.bias.zero_()
            modules.extend([linear] * len(group))
        super().__init__(modules)


@dataclass
class StudentForward:
    out: PrunableOutput
    predictions: Tensor
    """[B, N, T, D]: distilled layers through their Linears."""
    reg: Tensor | None
    expected_sparsity: Tensor | None


class PruningStudent(nn.Module):
    """Everything trained in a stage, as one module so DDP synchronises all of it: the model, the
    distillation Linears and (stage 1) the sparsity multipliers."""

    def __init__(
        self,
        model: PrunableModel,
        projections: DistillProjections,
        layer_ids: list[int],
        constraint: SparsityConstraint | None = None,
        reference_params: int | None = None,
    ) -> None:
        super().__init__()
        bad = [i for i in layer_ids if i > model.config.num_layers]
        if bad:
            raise ConfigError(f"distill_layers {bad} beyond the model's {model.config.num_layers} layers")
        self.model = model
        self.projections = projections
        self.constraint = constraint
        self.layer_ids = layer_ids
        self.reference_params = reference_params

    def forward(self, wavs: Tensor, lengths: Tensor, step: int) -> StudentForward:
        out = self.model(wavs, lengths)
        states = out.projected_states()  # DPHuBERT's order: index 0 = projected features
        preds = torch.stack([proj(states[i]) for proj, i in zip(self.projections, self.layer_ids)], 1)
        reg = sparsity = None
        if self.constraint is not None:
            sparsity = self.model.expected_sparsity(self.reference_params)
            reg = self.constraint(sparsity, step)
        return StudentForward(out, preds, reg, sparsity)


def frozen_teacher_copy(teacher: Any) -> PrunableModel:
    """The teacher as an ungated, dropout-free ``PrunableModel`` so both sides give DPHuBERT's
    hidden-state list (index 0 = projected features before the positional conv)."""
    config = PrunableConfig.from_teacher(
        teacher.model.config, dropout=0.0, attention_dropout=0.0, projection_dropout=0.0
    )
    net = PrunableModel.from_teacher(teacher, config).eval()
    return net.requires_grad_(False)


STAGE1, STAGE2 = "distill_prune", "final_distill"


class PruningDistillation(Objective):
    """One stage of DPHuBERT as a training objective.

    Args:
        recipe: the stage's recipe (:func:`stage_recipe`); ``pruning`` and ``enhancement`` are read.
        stage: :data:`STAGE1` (gates and the sparsity term) or :data:`STAGE2`.
        teacher: the frozen, ungated teacher copy (targets), on the device.
        student: the trained model, its Linears and (stage 1) the sparsity multipliers, on the device.
        enhancement: the enhancement term, or None.
        teacher_layers: the teacher's layer count (checkpoint config).
        description: the log line of a new run.
    """

    label = "distill"

    def __init__(
        self,
        recipe: PruneRecipe,
        stage: str,
        teacher: PrunableModel,
        student: PruningStudent,
        enhancement: EnhancementTerm | None,
        teacher_layers: int,
        description: str = "",
    ) -> None:
        self.recipe = recipe
        self.stage = stage
        self.teacher = teacher
        self.student = student
        self.enhancement = enhancement
        self.teacher_layers = teacher_layers
        self.description = description

    @classmethod
    def stage1(cls, recipe: PruneRecipe, device: Any) -> PruningDistillation:
        """The teacher's copy with gates on ``pruning.units`` as the student, the sparsity term on."""
        cfg = recipe.pruning
        source = _load_teacher(recipe, device)
        teacher = frozen_teacher_copy(source).to(device)
        config = PrunableConfig.from_teacher(
            source.model.config,
            cfg.units,
            dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout,
            activation_dropout=cfg.activation_dropout,
            projection_dropout=cfg.projection_dropout,
        )
        model = PrunableModel.from_teacher(source, config)
        _check_head_input(recipe, model)
        reference = model.num_params()
        constraint = SparsityConstraint(cfg.target_sparsity, cfg.sparsity_warmup_steps)
        projections = DistillProjections(config.embed_dim, cfg.distill_layers)
        student = PruningStudent(model, projections, cfg.layer_ids, constraint, reference).to(device)
        enhancement = EnhancementTerm.from_config(recipe.enhancement, device)
        description = (
            f"stage 1: student = teacher copy ({reference:,} parameters) with gates on "
            f"{', '.join(cfg.units)}; target sparsity {cfg.target_sparsity}"
        )
        return cls(recipe, STAGE1, teacher, student, enhancement, source.num_layers, description)

    @classmethod
    def stage2(cls, recipe: PruneRecipe, pruned: Path, device: Any) -> PruningDistillation:
        """The pruned model, its Linears and its enhancement head (if any) from ``pruned`` (the
        DPHuBERT-format file :func:`write_pruned` wrote), no gates, no sparsity term."""
        cfg = recipe.pruning
        source = _load_teacher(recipe, device)
        teacher = frozen_teacher_copy(source).to(device)
        checkpoint = read_dphubert_checkpoint(pruned)
        config = replace(
            checkpoint.config,
            dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout,
            activation_dropout=cfg.activation_dropout,
            projection_dropout=cfg.projection_dropout,
        )
        model = PrunableModel(config)
        model.load_state_dict(checkpoint.state_dict, strict=True)
        _check_head_input(recipe, model)
        projections = DistillProjections(config.embed_dim, cfg.distill_layers)
        projections.load_state_dict(checkpoint.distill_linear_projs, strict=True)
        student = PruningStudent(model, projections, cfg.layer_ids).to(device)
        enhancement = EnhancementTerm.from_config(recipe.enhancement, device)
        head_state = head_weights(checkpoint.raw, "dphubert")
        if enhancement is not None and head_state is not None:
            enhancement.head.load_state_dict(head_state)  # the head continues from stage 1
        description = f"stage 2: pruned student from {pruned} ({model.num_params():,} parameters)"
        return cls(recipe, STAGE2, teacher, student, enhancement, source.num_layers, description)

    def modules(self) -> dict[str, Any]:
        modules: dict[str, Any] = {"student": self.student}
        if self.enhancement is not None:
            modules[HEAD_NAME] = self.enhancement.head
        return modules

    def param_groups(self, optim: OptimSection) -> list[dict[str, Any]]:
        """Stage 1 (DPHuBERT's groups): weights at ``optim.lr``, gates at ``pruning.reg_lr``, the
        Lagrange multipliers at ``-pruning.reg_lr``. Stage 2 (no gates, no multipliers): the
        decayed and non-decayed groups of distillation (:func:`decay_groups`)."""
        if self.stage == STAGE2:
            return decay_groups(
                named_parameters(self.modules()), optim.weight_decay, match_reference=optim.match_reference
            )
        reg_lr = self.recipe.pruning.reg_lr
        gates, lambdas, weights = [], [], []
        for name, param in named_parameters(self.modules()):
            if not param.requires_grad:
                continue
            if name.startswith("student.model.gates."):
                gates.append(param)
            elif name.startswith("student.constraint."):
                lambdas.append(param)
            else:
                weights.append(param)
        return [
            {"params": weights, "lr": optim.lr, "weight_decay": optim.weight_decay},
            {"params": gates, "lr": reg_lr, "weight_decay": 0.0},
            # negative learning rate: the multipliers *maximise* the loss (Lagrangian ascent)
            {"params": lambdas, "lr": -reg_lr, "weight_decay": 0.0},
        ]

    def loss(self, batch: MicroBatch, tools: LoopTools) -> StepLoss:
        cfg = self.recipe.pruning
        with tools.phase("student"), tools.autocast():
            fwd: StudentForward = tools.nets["student"](batch.noisy, batch.lengths, batch.step)
        with tools.phase("teacher"):
            targets = self.targets(batch.clean, batch.lengths)
        with tools.phase("student"):
            loss, scalars = layer_to_layer_loss(
                fwd.predictions,
                targets,
                fwd.out.frame_mask,
                l1_weight=cfg.l1_weight,
                l2_weight=cfg.l2_weight,
                cos_weight=cfg.cos_weight,
                cos_type=cfg.cos_type,
                layer_ids=cfg.layer_ids,
            )
        scalars["loss/distill"] = loss.detach()
        if fwd.reg is not None and fwd.expected_sparsity is not None:  # stage 1: the Lagrangian term
            loss = loss + fwd.reg
            constraint = self.student.constraint
            assert constraint is not None
            scalars.update(
                {
                    "loss/sparsity_reg": fwd.reg.detach(),
                    "pruning/expected_sparsity": fwd.expected_sparsity.detach(),
                    "pruning/target_sparsity": torch.tensor(constraint.target_at(batch.step), device=loss.device),
                    "pruning/lambda1": constraint.lambda1.detach(),
                    "pruning/lambda2": constraint.lambda2.detach(),
                }
            )
        if self.enhancement is not None:
            features = self.enhancement.features(fwd.out.cnn_features, fwd.out.last_hidden_state)
            enhancement, enhancement_scalars = self.enhancement.loss(features, batch, tools)
            loss = loss + enhancement
            scalars.update(enhancement_scalars)
        return StepLoss(loss, scalars)

    def targets(self, clean: Tensor, lengths: Tensor) -> Tensor:
        """``[B, N, T, D]`` fp32 teacher hidden states of the distilled layers for the clean audio."""
        with torch.no_grad(), torch.autocast(device_type=clean.device.type, enabled=False):
            states = self.teacher(clean.float(), lengths).hidden_states
            return torch.stack([states[i] for i in self.recipe.pruning.layer_ids], dim=1)

    def checkpoint_config(self) -> dict[str, Any]:
        """``Config`` of a stage checkpoint: the teacher, the crop length, the head."""
        config: dict[str, Any] = {
            "teacher": {"model": self.recipe.teacher.source, "n_layers": self.teacher_layers},
            "task": {"sequence_length": self.recipe.data.max_length},
        }
        return config

    def save_checkpoint(self, path: Path, step: int, loop_state: dict[str, Any]) -> None:
        """``Student`` (model, Linears, multipliers), the model's ``config``, ``Stage``, the head and
        ``loop_state``."""
        state = {k: v.detach().cpu().clone() for k, v in self.student.state_dict().items()}
        payload = {
            "Student": state,
            "config": to_dict(self.student.model.config),
            "Config": self.checkpoint_config(),
            "Stage": self.stage,
            "Step": int(step),
            **loop_state,
        }
        if self.enhancement is not None:
            self.enhancement.store(payload)
        atomic_torch_save(path, payload)

    def load_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        if state.get("Stage") != self.stage:
            raise CheckpointFormatError(
                f"{path} is from stage {state.get('Stage')!r}, not {self.stage!r}: "
                "train.out_dir holds another kind of run"
            )
        self.student.load_state_dict(state["Student"])
        if self.enhancement is not None:
            self.enhancement.load(state, path)


def _load_teacher(recipe: PruneRecipe, device: Any) -> Teacher:
    """The recipe's teacher, only to copy from: its targets come from the fp32 ``PrunableModel``
    copy, so ``train.teacher_precision`` does not apply."""
    if recipe.train.teacher_precision != "fp32":
        log.info(
            "train.teacher_precision=%s does not apply to pruning: the teacher copy runs in fp32",
            recipe.train.teacher_precision,
        )
    return load_frozen_teacher(recipe.teacher.source, device)


def _check_head_input(recipe: PruneRecipe, model: PrunableModel) -> None:
    enh = recipe.enhancement
    if not enh.use_enhancement:
        return
    expected = model.config.conv_spec[-1][0] if enh.input == "cnn" else model.config.embed_dim
    if enh.input_dim != expected:
        raise ConfigError(
            f"enhancement.input_dim={enh.input_dim} but the student's {enh.input!r} features have {expected} dims"
        )


class DistillPruneTrainer(Trainer):
    """Stage 1: the training loop over :meth:`PruningDistillation.stage1` (keyword arguments:
    :class:`Trainer`'s)."""

    objective: PruningDistillation

    def __init__(self, recipe: PruneRecipe, **kwargs: Any) -> None:
        super().__init__(recipe, lambda setup: PruningDistillation.stage1(recipe, setup.device), **kwargs)


class FinalDistillTrainer(Trainer):
    """Stage 2: the training loop over :meth:`PruningDistillation.stage2` of ``pruned``."""

    objective: PruningDistillation

    def __init__(self, recipe: PruneRecipe, pruned: Path, **kwargs: Any) -> None:
        super().__init__(recipe, lambda setup: PruningDistillation.stage2(recipe, pruned, setup.device), **kwargs)


# ---------------------------------------------------------------------- pipeline


@dataclass
class PruneResult:
    stage: str
    """The last stage that ran: "distill_prune", "prune" or "final_distill"."""
    step: int
    pruned: Path | None
    final: Path | None
    interrupted: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + self.interrupted if self.interrupted else 0


def stage_recipe(recipe: PruneRecipe, stage: str) -> PruneRecipe:
    """The recipe one stage's trainer sees: its optimiser settings as ``optim``, its own folder."""
    out = Path(recipe.train.out_dir)
    if stage == STAGE1:
        return replace(recipe, train=replace(recipe.train, out_dir=str(out / "stage1")))
    return replace(recipe, optim=recipe.final, train=replace(recipe.train, out_dir=str(out / "stage2")))


def write_pruned(objective: PruningDistillation, path: Path) -> Path:
    """Prune stage 1's student and save it (plus its Linears and head) in DPHuBERT's format."""
    model = copy.deepcopy(objective.student.model).cpu()
    pruned, report = prune_model(model)
    log.info("%s", report.summary())
    extra: dict[str, Any] = {
        "prune_report": {
            "params_before": report.params_before,
            "params_after": report.params_after,
            "notes": report.notes,
        }
    }
    return save_dphubert_checkpoint(
        path,
        pruned,
        distill_linear_projs=objective.student.projections.state_dict(),
        extra=extra,
        head=_head(objective),
    )


def _head(objective: PruningDistillation) -> EnhancementHead | None:
    """The trained enhancement head, stored with its config by ``checkpoints.heads`` (None: no head)."""
    return objective.enhancement.head if objective.enhancement is not None else None


def _stage_done(result: DistillResult, total_steps: int) -> bool:
    return result.interrupted is None and result.step >= total_steps


def run_prune(recipe: PruneRecipe, *, resume: bool = False, overwrite: bool = False) -> PruneResult:
    """Stage 1, pruning, stage 2; with ``resume`` each stage continues from its newest checkpoint
    and finished stages (``pruned.pth`` / ``final.pth`` present) are skipped. ``overwrite`` replaces
    a previous run in ``train.out_dir`` (its checkpoints and pruned / final models)."""
    ctx = init_distributed(recipe.train.device)
    try:
        return _run(recipe, resume, overwrite, ctx)
    finally:
        shutdown(ctx)


def _run(recipe: PruneRecipe, resume: bool, overwrite: bool, ctx: DistContext) -> PruneResult:
    out = Path(recipe.train.out_dir)
    pruned, final = out / PRUNED_FILE, out / FINAL_FILE
    if overwrite and not resume and ctx.is_main:
        # The stage trainers delete their own checkpoints; these would make a later --resume skip stages.
        pruned.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
    if resume and final.is_file():
        log.info("%s exists: nothing left to do", final)
        return PruneResult("final_distill", recipe.final.total_steps, pruned, final)
    if not (resume and pruned.is_file()):
        stage1 = stage_recipe(recipe, STAGE1)
        has_states = any((out / "stage1").glob("states-*.ckpt"))
        trainer = DistillPruneTrainer(stage1, resume=resume and has_states, overwrite=overwrite, ctx=ctx)
        result = trainer.fit()
        if not _stage_done(result, stage1.optim.total_steps):
            return PruneResult(STAGE1, result.step, None, None, result.interrupted)
        if ctx.is_main:
            write_pruned(trainer.objective, pruned)
        barrier(ctx)
        del trainer
    stage2 = stage_recipe(recipe, STAGE2)
    has_states = any((out / "stage2").glob("states-*.ckpt"))
    trainer2 = FinalDistillTrainer(stage2, pruned, resume=resume and has_states, overwrite=overwrite, ctx=ctx)
    result = trainer2.fit()
    if not _stage_done(result, stage2.optim.total_steps):
        return PruneResult(STAGE2, result.step, pruned, None, result.interrupted)
    if ctx.is_main:
        student = trainer2.objective.student
        model = copy.deepcopy(student.model).cpu()
        save_dphubert_checkpoint(
            final, model, distill_linear_projs=student.projections.state_dict(), head=_head(trainer2.objective)
        )
        log.info("final pruned model: %s (%s parameters)", final, f"{model.num_params():,}")
    barrier(ctx)
    return PruneResult("final_distill", result.step, pruned, final)
