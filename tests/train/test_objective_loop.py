"""The loop needs nothing from an objective beyond its interface: a toy objective (one scale factor
fitted to the clean audio's RMS) trains, logs, checkpoints and resumes exactly through it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustdistiller.train.objective import LoopTools, MicroBatch, Objective, StepLoss
from robustdistiller.train.trainer import Trainer


class RmsObjective(Objective):
    """``scale * 0.1`` should equal each micro-batch's clean RMS; the loss is the squared error."""

    label = "toy"

    def __init__(self, device: Any) -> None:
        self.scale = nn.Linear(1, 1, bias=False).to(device)
        self.description = "toy objective"
        self.seen: list[tuple[int, int]] = []

    def modules(self) -> dict[str, nn.Module]:
        return {"scale": self.scale}

    def param_groups(self, optim: Any) -> list[dict[str, Any]]:
        return [{"params": list(self.scale.parameters()), "lr": 0.5 * optim.lr, "weight_decay": 0.0}]

    def loss(self, batch: MicroBatch, tools: LoopTools) -> StepLoss:
        self.seen.append((batch.step, batch.micro))
        rms = batch.clean.pow(2).mean().sqrt()
        with tools.phase("student"):
            guess = tools.nets["scale"](torch.full((1, 1), 0.1, device=rms.device))[0, 0]
        error = (guess - rms).pow(2)
        return StepLoss(error, {"toy/rms": rms.detach()})

    def save_checkpoint(self, path: Path, step: int, loop_state: dict[str, Any]) -> None:
        torch.save({"Scale": self.scale.state_dict(), "Step": step, **loop_state}, path)

    def load_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        self.scale.load_state_dict(state["Scale"])


def _trainer(make_recipe, *overrides: str, out: str, **kwargs: Any) -> Trainer:
    recipe = make_recipe(
        "optim.total_steps=6",
        "optim.grad_accum=2",
        "optim.lr=0.2",
        "train.log_every=3",
        "train.save_every=3",
        *overrides,
        out=out,
    )
    return Trainer(recipe, lambda setup: RmsObjective(setup.device), **kwargs)


def test_a_toy_objective_trains_logs_and_resumes_exactly(make_recipe) -> None:
    trainer = _trainer(make_recipe, out="straight")
    assert isinstance(trainer.objective, RmsObjective)
    # one AdamW over the objective's own groups, its group lr scheduled (no warm-up in this recipe)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(0.1)]
    assert trainer.scheduler.base_lrs == [pytest.approx(0.1)]
    straight = trainer.fit()
    assert straight.step == 6 and trainer.objective.seen == [(s, m) for s in range(6) for m in range(2)]
    assert straight.losses[-1] < straight.losses[0]
    rows = [json.loads(line) for line in (trainer.out_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all(r["toy/rms"] > 0 for r in rows)
    saved = torch.load(trainer.out_dir / "states-6.ckpt", weights_only=False)
    assert set(saved) == {"Scale", "Step", "Optimizer", "Scheduler", "Resume"}

    first = _trainer(make_recipe, "train.stop_at_step=3", out="resumed").fit()
    assert first.step == 3
    resumed = _trainer(make_recipe, out="resumed", resume=True)
    assert resumed.step == 3
    result = resumed.fit()
    assert result.losses == straight.losses[3:]
    assert torch.equal(resumed.objective.scale.weight, trainer.objective.scale.weight)
