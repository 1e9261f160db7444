"""Recipes for DPHuBERT-style distill + prune (``dpwavlm``) and its robust variant (``rd_dpwavlm``).

Same sections as a distillation recipe (data, corruption, teacher, enhancement, train) plus
``pruning`` (gates, sparsity target, distillation layers and loss) and two optimiser sections:
``optim`` for stage 1 (distill + prune) and ``final`` for stage 2 (final distillation of the pruned
model). ``load_prune_recipe("rd_dpwavlm", ["data.root=/data/LibriSpeech"])`` reads a bundled recipe
or a YAML path and applies overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from robustdistiller.config import load_config
from robustdistiller.models.enhancement import EnhancementConfig
from robustdistiller.models.pruning import PRUNING_UNITS
from robustdistiller.train.recipe import OptimSection, RecipeInputs, TrainSection, resolve_recipe


def _stage1_optim() -> OptimSection:
    # DPHuBERT run.sh: AdamW(0.9, 0.999, 1e-8), no decay, 2e-4, warm-up 15k of 50k steps, clip 10
    return OptimSection(
        lr=2e-4,
        weight_decay=0.0,
        betas=(0.9, 0.999),
        eps=1e-8,
        warmup_proportion=0.3,
        total_steps=50_000,
        grad_clip=10.0,
    )


def _stage2_optim() -> OptimSection:
    return OptimSection(
        lr=1e-4,
        weight_decay=0.0,
        betas=(0.9, 0.999),
        eps=1e-8,
        warmup_proportion=0.2,
        total_steps=25_000,
        grad_clip=10.0,
    )


@dataclass
class PruningSection:
    """Gates, sparsity constraint and the layer-to-layer distillation of DPHuBERT.

    ``distill_layers`` are groups of teacher/student layer indices (0 = projected CNN features
    before the positional conv); layers of one group share one identity-initialised Linear
    (DPHuBERT's ``0.4,8,12`` = ``[[0], [4, 8, 12]]``). ``cos_type`` ``raw`` uses ``-cos`` (DPHuBERT),
    ``log_sig`` uses ``-log sigmoid(cos)`` (DistilHuBERT)."""

    units: list[str] = field(default_factory=lambda: ["conv", "head", "interm"])
    target_sparsity: float = 0.75
    sparsity_warmup_steps: int = 5_000
    reg_lr: float = 0.02
    distill_layers: list[list[int]] = field(default_factory=lambda: [[0], [4, 8, 12]])
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    cos_weight: float = 1.0
    cos_type: Literal["raw", "log_sig"] = "raw"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    projection_dropout: float = 0.1

    def validate(self) -> None:
        unknown = sorted(set(self.units) - set(PRUNING_UNITS))
        if not self.units or unknown:
            raise ValueError(f"pruning.units must be a non-empty subset of {PRUNING_UNITS}, got {self.units}")
        if not 0.0 < self.target_sparsity < 1.0:
            raise ValueError(f"target_sparsity must be in (0, 1), got {self.target_sparsity}")
        if self.sparsity_warmup_steps < 0:
            raise ValueError(f"sparsity_warmup_steps must be >= 0, got {self.sparsity_warmup_steps}")
        if not math.isfinite(self.reg_lr) or self.reg_lr <= 0:
            raise ValueError(f"reg_lr must be a positive finite number, got {self.reg_lr}")
        flat = [i for group in self.distill_layers for i in group]
        if not flat or any(not g for g in self.distill_layers) or len(set(flat)) != len(flat) or min(flat) < 0:
            raise ValueError(
                f"distill_layers must be non-empty groups of distinct layer indices, got {self.distill_layers}"
            )
        if min(self.l1_weight, self.l2_weight, self.cos_weight) < 0 or not (
            self.l1_weight or self.l2_weight or self.cos_weight
        ):
            raise ValueError("loss weights must be >= 0 and not all 0")

    @property
    def layer_ids(self) -> list[int]:
        return [i for group in self.distill_layers for i in group]


@dataclass
class PruneRecipe(RecipeInputs):
    enhancement: EnhancementConfig = field(default_factory=EnhancementConfig)
    pruning: PruningSection = field(default_factory=PruningSection)
    optim: OptimSection = field(default_factory=_stage1_optim)
    """Stage 1 (distill + prune)."""
    final: OptimSection = field(default_factory=_stage2_optim)
    """Stage 2 (final distillation of the pruned model)."""
    train: TrainSection = field(default_factory=TrainSection)
    """Run control; stage outputs go to ``out_dir/stage1``, ``out_dir/stage2``."""

    def validate(self) -> None:
        # stop_at_step applies to whichever stage is running; it only has to fit the longer one
        longest = max(self.optim.total_steps, self.final.total_steps)
        if self.train.stop_at_step is not None and self.train.stop_at_step > longest:
            raise ValueError(f"train.stop_at_step={self.train.stop_at_step} is beyond both stages ({longest} steps)")


def load_prune_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> PruneRecipe:
    return load_config(PruneRecipe, resolve_recipe(name_or_path), overrides)
