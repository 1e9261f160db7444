"""``student.layer_targets``: each listed Transformer layer of the student also learns to reproduce a
clean teacher layer, beside the prediction heads (layer-to-layer distillation)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from robustdistiller.errors import ConfigError
from robustdistiller.models.student import DistillerConfig
from robustdistiller.train.distillation import DistillationObjective, DistillTrainer
from robustdistiller.train.losses import distillation_loss
from robustdistiller.train.objective import LoopTools, MicroBatch


def _batch(seed: int = 0) -> MicroBatch:
    gen = torch.Generator().manual_seed(seed)
    clean = 0.1 * torch.randn(2, 8000, generator=gen)
    noisy = clean + 0.05 * torch.randn(2, 8000, generator=gen)
    return MicroBatch(noisy=noisy, clean=clean, lengths=torch.tensor([8000, 6400]), step=1, micro=0)


def _tools(objective: DistillationObjective) -> LoopTools:
    return LoopTools(objective.modules(), lambda _name: contextlib.nullcontext(), contextlib.nullcontext)


def test_loss_adds_each_layer_against_its_clean_teacher_layer(make_recipe) -> None:
    objective = DistillationObjective.from_recipe(make_recipe("student.layer_targets=[1,3]"), "cpu")
    batch = _batch()
    step = objective.loss(batch, _tools(objective))

    # The same quantities by hand: the student hears the noisy audio, the teacher the clean.
    out = objective.student(batch.noisy, batch.lengths)
    teacher = objective.teacher(batch.clean, batch.lengths).hidden_states
    frames = out.predictions.shape[2]
    mask = out.frame_mask

    def target(layer: int) -> torch.Tensor:
        t = teacher[layer][:, :frames]
        return t.masked_fill(~objective.teacher(batch.clean, batch.lengths).frame_mask[:, :frames, None], 0.0)

    heads = distillation_loss(out.predictions, torch.stack([target(2), target(3)], 1), mask).total
    layers = distillation_loss(torch.stack(out.hiddens, 1), torch.stack([target(1), target(3)], 1), mask).total
    torch.testing.assert_close(step.loss, heads + layers, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(step.scalars["loss/distill_layers"], layers.detach(), rtol=1e-5, atol=1e-6)
    assert {"loss/layers_rec_l1", "loss/layers_rec_l3"} <= set(step.scalars)


def test_without_layer_targets_the_loss_is_the_heads_alone(make_recipe) -> None:
    objective = DistillationObjective.from_recipe(make_recipe(), "cpu")
    step = objective.loss(_batch(), _tools(objective))
    torch.testing.assert_close(step.loss, step.scalars["loss/distill"])
    assert "loss/distill_layers" not in step.scalars


def test_layer_targets_train_the_layers_towards_the_teacher(make_recipe) -> None:
    """A few steps lower the layers' distance to the teacher; the checkpoint records the setting."""
    trainer = DistillTrainer(make_recipe("student.layer_targets=[2,3]", "optim.total_steps=12"))
    objective = trainer.objective
    before = objective.loss(_batch(1), _tools(objective)).scalars["loss/distill_layers"]
    result = trainer.fit()
    after = objective.loss(_batch(1), _tools(objective)).scalars["loss/distill_layers"]
    assert after < before
    saved = torch.load(result.checkpoint, weights_only=True)
    assert saved["Config"]["distiller"]["layer_targets"] == [2, 3]


@pytest.mark.parametrize("targets", [[1, 2, 3], []])
def test_layer_targets_must_fit_the_student(make_recipe, targets: list[int]) -> None:
    config = DistillerConfig(**{**vars(make_recipe().student), "layer_targets": targets})
    with pytest.raises(ValueError, match=r"must name a teacher layer for each of the first 1..2 Transformer layers"):
        config.validate()


def test_layer_targets_must_exist_in_the_teacher(make_recipe) -> None:
    with pytest.raises(ConfigError, match=r"layer_targets \[9\] outside the teacher's layers 0..3"):
        DistillationObjective.from_recipe(make_recipe("student.layer_targets=[9]"), "cpu")
