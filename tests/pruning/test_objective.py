"""The pruning stages as objectives: DPHuBERT's optimizer groups, one frozen teacher, the shared
masked loss core."""

from __future__ import annotations

import gc

import pytest
import torch
from test_stages import _recipe

from robustdistiller.models.pruning import PrunableModel
from robustdistiller.models.teacher import Teacher
from robustdistiller.train.losses import layer_to_layer_loss
from robustdistiller.train.pruning import STAGE1, PruningDistillation, stage_recipe


def test_stage1_groups_train_gates_up_and_multipliers_down(tiny_manifest, teacher_dir, tmp_path) -> None:
    recipe = stage_recipe(
        _recipe(
            tiny_manifest,
            teacher_dir("hubert"),
            tmp_path / "run",
            "pruning.reg_lr=0.05",
            "optim.lr=1e-3",
            "optim.weight_decay=0.01",
        ),
        STAGE1,
    )
    objective = PruningDistillation.stage1(recipe, torch.device("cpu"))
    weights, gates, lambdas = objective.param_groups(recipe.optim)
    assert (weights["lr"], gates["lr"], lambdas["lr"]) == (1e-3, 0.05, -0.05)
    assert (weights["weight_decay"], gates["weight_decay"], lambdas["weight_decay"]) == (0.01, 0.0, 0.0)
    constraint = objective.student.constraint
    assert constraint is not None
    assert {id(p) for p in lambdas["params"]} == {id(constraint.lambda1), id(constraint.lambda2)}
    assert {id(p) for p in gates["params"]} == {id(p) for p in objective.student.model.gates.parameters()}
    trainable = [p for module in objective.modules().values() for p in module.parameters() if p.requires_grad]
    grouped = [id(p) for g in (weights, gates, lambdas) for p in g["params"]]
    assert sorted(grouped) == sorted({id(p) for p in trainable})  # each trainable tensor exactly once


def test_a_stage_keeps_one_frozen_teacher(tiny_manifest, teacher_dir, tmp_path) -> None:
    recipe = stage_recipe(_recipe(tiny_manifest, teacher_dir("hubert"), tmp_path / "run"), STAGE1)
    gc.collect()
    before = sum(isinstance(o, Teacher) for o in gc.get_objects())
    objective = PruningDistillation.stage1(recipe, torch.device("cpu"))
    gc.collect()
    assert sum(isinstance(o, Teacher) for o in gc.get_objects()) == before  # the loaded teacher is gone
    assert isinstance(objective.teacher, PrunableModel) and not objective.teacher.training
    assert not any(p.requires_grad for p in objective.teacher.parameters())
    assert "teacher" not in objective.modules()  # frozen: not trained, not wrapped, not checkpointed


def test_layer_to_layer_loss_ignores_padded_frames() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, 3, 5, 4, requires_grad=True), torch.randn(2, 3, 5, 4)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    weights = {"l1_weight": 1.0, "l2_weight": 0.5, "cos_weight": 1.0, "cos_type": "raw", "layer_ids": [0, 2, 4]}
    loss, scalars = layer_to_layer_loss(pred, target, mask, **weights)
    garbage = pred.detach().clone()
    garbage[1, :, 3:] = float("nan")
    same, _ = layer_to_layer_loss(garbage, target, mask, **weights)
    assert torch.equal(loss.detach(), same)
    loss.backward()
    assert pred.grad is not None and bool((pred.grad[1, :, 3:] == 0).all())
    valid_p = pred.detach().transpose(0, 1)[:, mask]
    valid_t = target.transpose(0, 1)[:, mask]
    expected = (
        (valid_p - valid_t).abs().mean((1, 2))
        + 0.5 * (valid_p - valid_t).pow(2).mean((1, 2))
        - torch.cosine_similarity(valid_p, valid_t, dim=-1).mean(1)
    ).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(scalars) == {f"loss/{k}_l{i}" for k in ("l1", "cos") for i in (0, 2, 4)}
