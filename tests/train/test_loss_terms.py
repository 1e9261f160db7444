"""The distillation objective's terms beside the reference heads' loss.

``student.layer_targets``: each listed Transformer layer of the student also learns to reproduce a
clean teacher layer (layer-to-layer distillation). ``student.pooled_loss``: an utterance-level term,
L1 between the utterance means of the student's predictions (and ``layer_targets`` layers) and of the
clean teacher's layers."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import Tensor

from robustdistiller.errors import ConfigError
from robustdistiller.models.student import DistillerConfig, DistillerOutput
from robustdistiller.train.distillation import DistillationObjective, DistillTrainer
from robustdistiller.train.losses import distillation_loss, utterance_mean_loss
from robustdistiller.train.objective import LoopTools, MicroBatch


def _batch(seed: int = 0) -> MicroBatch:
    gen = torch.Generator().manual_seed(seed)
    clean = 0.1 * torch.randn(2, 8000, generator=gen)
    noisy = clean + 0.05 * torch.randn(2, 8000, generator=gen)
    return MicroBatch(noisy=noisy, clean=clean, lengths=torch.tensor([8000, 6400]), step=1, micro=0)


def _tools(objective: DistillationObjective) -> LoopTools:
    return LoopTools(objective.modules(), lambda _name: contextlib.nullcontext(), contextlib.nullcontext)


def _by_hand(objective: DistillationObjective, batch: MicroBatch) -> tuple[DistillerOutput, Tensor, Tensor]:
    """The student's outputs on the noisy audio and, from the teacher on the clean audio, the targets
    of its heads (teacher layers 2, 3) and of its Transformer layers (``layer_targets=[1,3]``)."""
    out = objective.student(batch.noisy, batch.lengths)
    teacher = objective.teacher(batch.clean, batch.lengths)
    frames = out.predictions.shape[2]

    def target(layer: int) -> Tensor:
        return teacher.hidden_states[layer][:, :frames].masked_fill(~teacher.frame_mask[:, :frames, None], 0.0)

    return out, torch.stack([target(2), target(3)], 1), torch.stack([target(1), target(3)], 1)


# --- student.layer_targets


def test_loss_adds_each_layer_against_its_clean_teacher_layer(make_recipe) -> None:
    objective = DistillationObjective.from_recipe(make_recipe("student.layer_targets=[1,3]"), "cpu")
    batch = _batch()
    step = objective.loss(batch, _tools(objective))

    # The same quantities by hand: the student hears the noisy audio, the teacher the clean.
    out, head_targets, layer_targets = _by_hand(objective, batch)
    heads = distillation_loss(out.predictions, head_targets, out.frame_mask).total
    layers = distillation_loss(torch.stack(out.hiddens, 1), layer_targets, out.frame_mask).total
    torch.testing.assert_close(step.loss, heads + layers, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(step.scalars["loss/distill_layers"], layers.detach(), rtol=1e-5, atol=1e-6)
    assert {"loss/layers_rec_l1", "loss/layers_rec_l3"} <= set(step.scalars)


def test_without_layer_targets_the_loss_is_the_heads_alone(make_recipe) -> None:
    objective = DistillationObjective.from_recipe(make_recipe(), "cpu")
    step = objective.loss(_batch(), _tools(objective))
    torch.testing.assert_close(step.loss, step.scalars["loss/distill"])
    assert "loss/distill_layers" not in step.scalars


@pytest.mark.parametrize("targets", [[1, 2, 3], []])
def test_layer_targets_must_fit_the_student(make_recipe, targets: list[int]) -> None:
    config = DistillerConfig(**{**vars(make_recipe().student), "layer_targets": targets})
    with pytest.raises(ValueError, match=r"must name a teacher layer for each of the first 1..2 Transformer layers"):
        config.validate()


def test_layer_targets_must_exist_in_the_teacher(make_recipe) -> None:
    with pytest.raises(ConfigError, match=r"layer_targets \[9\] outside the teacher's layers 0..3"):
        DistillationObjective.from_recipe(make_recipe("student.layer_targets=[9]"), "cpu")


# --- student.pooled_loss


def test_utterance_mean_loss_by_hand() -> None:
    """Means over each utterance's valid frames; NaN in padding stays out of the value and the gradient."""
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], [[[0.0, 0.0], [2.0, -2.0], [math.nan, 9.0]]]])
    pred.requires_grad_(True)
    target = torch.zeros_like(pred.detach())
    mask = torch.tensor([[True, True, True], [True, True, False]])
    loss = utterance_mean_loss(pred, target, mask)
    # utterance 1: means (3, 4); utterance 2 (two valid frames): means (1, -1) -> |.| mean = 9 / 4
    torch.testing.assert_close(loss, torch.tensor(9.0 / 4))
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad[1, 0, 2].abs().sum() == 0

    # Without a mask every frame counts; a shift common to all frames is the whole distance.
    shifted = torch.randn(2, 3, 5, 4)
    torch.testing.assert_close(utterance_mean_loss(shifted + 0.25, shifted, None), torch.tensor(0.25))


def test_utterance_mean_loss_ignores_what_averages_out() -> None:
    """Frame errors that cancel over the utterance cost nothing here (the frame loss sees them)."""
    target = torch.randn(1, 2, 6, 3)
    wobble = torch.tensor([1.0, -1.0] * 3)[None, None, :, None]
    assert float(utterance_mean_loss(target + wobble, target, torch.ones(1, 6, dtype=torch.bool))) < 1e-6


def test_loss_adds_the_weighted_utterance_term(make_recipe) -> None:
    recipe = make_recipe("student.layer_targets=[1,3]", "student.pooled_loss=3.0")
    objective = DistillationObjective.from_recipe(recipe, "cpu")
    batch = _batch()
    step = objective.loss(batch, _tools(objective))
    plain = DistillationObjective.from_recipe(make_recipe("student.layer_targets=[1,3]"), "cpu")
    plain.student.load_state_dict(objective.student.state_dict())
    frame_terms = plain.loss(batch, _tools(plain)).loss

    # The utterance term by hand: heads vs teacher layers 2, 3 and Transformer layers 1, 2 vs teacher
    # layers 1, 3, the student on noisy and the teacher on clean audio.
    out, head_targets, layer_targets = _by_hand(objective, batch)
    pooled = utterance_mean_loss(out.predictions, head_targets, out.frame_mask) + utterance_mean_loss(
        torch.stack(out.hiddens, 1), layer_targets, out.frame_mask
    )
    torch.testing.assert_close(step.scalars["loss/pooled"], pooled.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(step.loss, frame_terms + 3.0 * pooled, rtol=1e-5, atol=1e-6)


def test_pooled_loss_is_off_by_default(make_recipe) -> None:
    objective = DistillationObjective.from_recipe(make_recipe(), "cpu")
    assert objective.recipe.student.pooled_loss == 0.0
    assert "loss/pooled" not in objective.loss(_batch(), _tools(objective)).scalars


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf])
def test_pooled_loss_must_be_a_finite_weight(make_recipe, weight: float) -> None:
    config = DistillerConfig(**{**vars(make_recipe().student), "pooled_loss": weight})
    with pytest.raises(ValueError, match=r"pooled_loss must be a finite weight >= 0"):
        config.validate()


# --- both


@pytest.mark.parametrize(
    ("key", "value", "scalar"),
    [("layer_targets", [2, 3], "loss/distill_layers"), ("pooled_loss", 2.0, "loss/pooled")],
)
def test_the_term_trains_towards_the_teacher_and_is_recorded(make_recipe, key: str, value, scalar: str) -> None:
    """A few steps lower the term's distance to the teacher; the checkpoint records the setting."""
    override = f"student.{key}={str(value).replace(' ', '')}"
    trainer = DistillTrainer(make_recipe(override, "optim.total_steps=12"))
    objective = trainer.objective
    before = objective.loss(_batch(1), _tools(objective)).scalars[scalar]
    result = trainer.fit()
    after = objective.loss(_batch(1), _tools(objective)).scalars[scalar]
    assert after < before
    saved = torch.load(result.checkpoint, weights_only=True)
    assert saved["Config"]["distiller"][key] == value
