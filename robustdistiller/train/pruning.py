"""DPHuBERT / RD-DPWavLM: stage 1 (distill + prune), the pruning step, stage 2 (final distillation).

Both stages are :class:`~robustdistiller.train.trainer.DistillTrainer` subclasses: data, corruption
(noisy audio for the student, clean for the teacher), enhancement head, DDP, signals, exact resume
and logging are the distillation trainer's; only the student, its loss, its optimizer groups and
its checkpoint contents differ.

- Stage 1: student = the teacher's architecture and weights with hard-concrete gates. Loss =
  layer-to-layer distillation (student hidden i -> Linear -> teacher hidden i, for the recipe's
  layers; one identity-initialised Linear per group) + the Lagrangian sparsity term. Three
  optimizer groups: weights (``optim.lr``), gates (``pruning.reg_lr``), multipliers
  (``-pruning.reg_lr``: gradient ascent).
- Pruning: gated-off units removed, eval-mask values folded (``models.pruning.prune_model``); the
  result is written in DPHuBERT's format to ``out_dir/pruned.pth``.
- Stage 2: the pruned model (no gates) and the Linears from ``pruned.pth``, same loss, no
  regulariser, ``final`` optimiser settings; the result is ``out_dir/final.pth`` (DPHuBERT format).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistiller.checkpoints.dphubert import atomic_torch_save, read_dphubert_checkpoint, save_dphubert_checkpoint
from robustdistiller.checkpoints.heads import head_weights, store_head
from robustdistiller.config import to_dict
from robustdistiller.errors import CheckpointFormatError, ConfigError
from robustdistiller.models.pruning import (
    PrunableConfig,
    PrunableModel,
    PrunableOutput,
    SparsityConstraint,
    prune_model,
)
from robustdistiller.train.distributed import DistContext, barrier, init_distributed, shutdown
from robustdistiller.train.prune_recipe import PruneRecipe, PruningSection
from robustdistiller.train.trainer import DistillResult, DistillTrainer, StudentPass

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


def layer_to_layer_loss(
    pred: Tensor, target: Tensor, frame_mask: Tensor, cfg: PruningSection, layer_ids: list[int]
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPHuBERT's ``DistillLoss`` on ``[B, N, T, D]`` predictions/targets, over valid frames only."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        valid = frame_mask[:, : pred.shape[2]]
        p = pred.float().transpose(0, 1)[:, valid]  # [N, frames, D]
        t = target.float().transpose(0, 1)[:, valid]
        diff = p - t
        l1 = diff.abs().mean(dim=(1, 2))
        l2 = diff.pow(2).mean(dim=(1, 2))
        cos = F.cosine_similarity(p, t, dim=-1)
        cos_term = (-cos if cfg.cos_type == "raw" else -F.logsigmoid(cos)).mean(dim=1)
        per_layer = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.cos_weight * cos_term
    scalars = {}
    for i, layer in enumerate(layer_ids):
        scalars[f"loss/l1_l{layer}"] = l1[i].detach()
        scalars[f"loss/cos_l{layer}"] = cos[i].mean().detach()
    return per_layer.mean(), scalars


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

    def __init__(self, model: PrunableModel, projections: DistillProjections, layer_ids: list[int],
                 constraint: SparsityConstraint | None = None, reference_params: int | None = None) -> None:
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
    config = PrunableConfig.from_teacher(teacher.model.config, dropout=0.0, attention_dropout=0.0,
                                         projection_dropout=0.0)
    net = PrunableModel.from_teacher(teacher, config).eval()
    return net.requires_grad_(False)


class _PruningStageTrainer(DistillTrainer):
    """Shared by both stages: the teacher copy, the loss and the checkpoint contents."""

    recipe: PruneRecipe  # type: ignore[assignment]
    stage = ""

    def _check_head_input(self, model: PrunableModel) -> None:
        enh = self.recipe.enhancement
        if not enh.use_enhancement:
            return
        expected = model.config.conv_spec[-1][0] if enh.input == "cnn" else model.config.embed_dim
        if enh.input_dim != expected:
            raise ConfigError(f"enhancement.input_dim={enh.input_dim} but the student's {enh.input!r} "
                             f"features have {expected} dims")

    def _teacher_targets(self, wavs: Tensor, lengths: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(device_type=wavs.device.type, enabled=False):
            states = self.teacher_net(wavs.float(), lengths).projected_states()
            return torch.stack([states[i] for i in self.recipe.pruning.layer_ids], dim=1)

    def student_loss(self, noisy: Tensor, wavs: Tensor, lengths: Tensor, sums: dict[str, Tensor]) -> StudentPass:
        cfg = self.recipe.pruning
        with self.timer.phase("student"), self._autocast():
            fwd: StudentForward = self.student_ddp(noisy, lengths, self.step)
        with self.timer.phase("teacher"):
            targets = self._teacher_targets(wavs, lengths)
        with self.timer.phase("student"):
            loss, scalars = layer_to_layer_loss(fwd.predictions, targets, fwd.out.frame_mask, cfg, cfg.layer_ids)
        for name, value in scalars.items():
            sums[name] += value
        sums["loss/distill"] += loss.detach()
        if fwd.reg is not None and fwd.expected_sparsity is not None:
            loss = loss + fwd.reg
            sums["loss/sparsity_reg"] += fwd.reg.detach()
            sums["pruning/expected_sparsity"] += fwd.expected_sparsity.detach()
            constraint = self.student.constraint
            sums["pruning/target_sparsity"] += torch.tensor(constraint.target_at(self.step), device=self.device)
            sums["pruning/lambda1"] += constraint.lambda1.detach()
            sums["pruning/lambda2"] += constraint.lambda2.detach()
        return StudentPass(loss, fwd.out.cnn_features, fwd.out.last_hidden_state)

    def write_checkpoint(self, path: Path, extra_config: dict[str, Any], extra: dict[str, Any]) -> None:
        state = {k: v.detach().cpu().clone() for k, v in self.student.state_dict().items()}
        payload = {"Student": state, "config": to_dict(self.student.model.config), "Config": extra_config,
                   "Stage": self.stage, "Step": int(self.step), **extra}
        if self.head is not None:
            store_head(payload, "s3prl", self.head)
        atomic_torch_save(path, payload)

    def load_student_state(self, state: dict[str, Any]) -> None:
        if state.get("Stage") != self.stage:
            raise CheckpointFormatError(f"checkpoint is from stage {state.get('Stage')!r}, not {self.stage!r}")
        self.student.load_state_dict(state["Student"])


class DistillPruneTrainer(_PruningStageTrainer):
    """Stage 1: joint distillation and structured pruning."""

    stage = "distill_prune"

    def build_student(self) -> nn.Module:
        cfg = self.recipe.pruning
        self.teacher_net = frozen_teacher_copy(self.teacher).to(self.device)
        config = PrunableConfig.from_teacher(
            self.teacher.model.config, cfg.units, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
            activation_dropout=cfg.activation_dropout, projection_dropout=cfg.projection_dropout,
        )
        model = PrunableModel.from_teacher(self.teacher, config)
        self._check_head_input(model)
        reference = model.num_params()
        constraint = SparsityConstraint(cfg.target_sparsity, cfg.sparsity_warmup_steps)
        projections = DistillProjections(config.embed_dim, cfg.distill_layers)
        self.init_message = (f"stage 1: student = teacher copy ({reference:,} parameters) with gates on "
                             f"{', '.join(cfg.units)}; target sparsity {cfg.target_sparsity}")
        return PruningStudent(model, projections, cfg.layer_ids, constraint, reference)

    def build_optimizer(self, modules: nn.ModuleDict) -> torch.optim.Optimizer:
        opt, reg_lr = self.recipe.optim, self.recipe.pruning.reg_lr
        gates, lambdas, weights = [], [], []
        for name, param in modules.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("student.model.gates."):
                gates.append(param)
            elif name.startswith("student.constraint."):
                lambdas.append(param)
            else:
                weights.append(param)
        groups = [
            {"params": weights, "lr": opt.lr, "weight_decay": opt.weight_decay},
            {"params": gates, "lr": reg_lr, "weight_decay": 0.0},
            # negative learning rate: the multipliers *maximise* the loss (Lagrangian ascent)
            {"params": lambdas, "lr": -reg_lr, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps)


class FinalDistillTrainer(_PruningStageTrainer):
    """Stage 2: distillation of the pruned model (no gates, no regulariser)."""

    stage = "final_distill"

    def __init__(self, recipe: PruneRecipe, pruned: Path, **kwargs: Any) -> None:
        self.pruned_path = pruned
        super().__init__(recipe, **kwargs)  # type: ignore[arg-type]

    def build_student(self) -> nn.Module:
        cfg = self.recipe.pruning
        self.teacher_net = frozen_teacher_copy(self.teacher).to(self.device)
        checkpoint = read_dphubert_checkpoint(self.pruned_path)
        config = replace(checkpoint.config, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                         activation_dropout=cfg.activation_dropout, projection_dropout=cfg.projection_dropout)
        model = PrunableModel(config)
        model.load_state_dict(checkpoint.state_dict, strict=True)
        self._check_head_input(model)
        projections = DistillProjections(config.embed_dim, cfg.distill_layers)
        projections.load_state_dict(checkpoint.distill_linear_projs, strict=True)
        self._head_state = head_weights(checkpoint.raw, "dphubert")
        self.init_message = f"stage 2: pruned student from {self.pruned_path} ({model.num_params():,} parameters)"
        return PruningStudent(model, projections, cfg.layer_ids)

    def build_optimizer(self, modules: nn.ModuleDict) -> torch.optim.Optimizer:
        # the enhancement head continues from stage 1 (the trainer builds it just before this call)
        if self.head is not None and self._head_state is not None:
            self.head.load_state_dict(self._head_state)
        return super().build_optimizer(modules)


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
    if stage == "distill_prune":
        return replace(recipe, train=replace(recipe.train, out_dir=str(out / "stage1")))
    return replace(recipe, optim=recipe.final, train=replace(recipe.train, out_dir=str(out / "stage2")))


def write_pruned(trainer: DistillPruneTrainer, path: Path) -> Path:
    """Prune stage 1's student and save it (plus its Linears and head) in DPHuBERT's format."""
    student: PruningStudent = trainer.student  # type: ignore[assignment]
    model = copy.deepcopy(student.model).cpu()
    pruned, report = prune_model(model)
    log.info("%s", report.summary())
    extra: dict[str, Any] = {"prune_report": {
        "params_before": report.params_before, "params_after": report.params_after, "notes": report.notes,
    }}
    return save_dphubert_checkpoint(path, pruned, distill_linear_projs=student.projections.state_dict(), extra=extra,
                                    head=trainer.head)


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
        stage1 = stage_recipe(recipe, "distill_prune")
        has_states = any((out / "stage1").glob("states-*.ckpt"))
        trainer = DistillPruneTrainer(stage1, resume=resume and has_states, overwrite=overwrite, ctx=ctx)
        result = trainer.fit()
        if not _stage_done(result, stage1.optim.total_steps):
            return PruneResult("distill_prune", result.step, None, None, result.interrupted)
        if ctx.is_main:
            write_pruned(trainer, pruned)
        barrier(ctx)
        del trainer
    stage2 = stage_recipe(recipe, "final_distill")
    has_states = any((out / "stage2").glob("states-*.ckpt"))
    trainer2 = FinalDistillTrainer(stage2, pruned, resume=resume and has_states, overwrite=overwrite, ctx=ctx)
    result = trainer2.fit()
    if not _stage_done(result, stage2.optim.total_steps):
        return PruneResult("final_distill", result.step, pruned, None, result.interrupted)
    if ctx.is_main:
        student: PruningStudent = trainer2.student  # type: ignore[assignment]
        model = copy.deepcopy(student.model).cpu()
        save_dphubert_checkpoint(final, model, distill_linear_projs=student.projections.state_dict(),
                                 head=trainer2.head)
        log.info("final pruned model: %s (%s parameters)", final, f"{model.num_params():,}")
    barrier(ctx)
    return PruneResult("final_distill", result.step, pruned, final)
