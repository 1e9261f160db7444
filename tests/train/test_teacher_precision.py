"""``train.teacher_precision``: the CPU teacher's forward in bf16 (targets still fp32), fp32 fallback logged."""

from __future__ import annotations

import logging
import math

from robustdistiller.models import precision
from robustdistiller.train.distillation import DistillTrainer


def test_bf16_teacher_trains_and_falls_back_without_units(make_recipe, monkeypatch, caplog) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    trainer = DistillTrainer(make_recipe("train.teacher_precision=bf16", "optim.total_steps=2", out="bf16"))
    assert trainer.objective.teacher.precision == "bf16"
    result = trainer.fit()
    assert result.step == 2 and all(math.isfinite(x) for x in result.losses)

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    with caplog.at_level(logging.INFO, logger="robustdistiller.models.precision"):
        trainer = DistillTrainer(make_recipe("train.teacher_precision=auto", "optim.total_steps=2", out="auto"))
    assert trainer.objective.teacher.precision == "fp32"
    assert "Teacher runs in fp32: auto requested, but this CPU has no bf16 units" in caplog.text
