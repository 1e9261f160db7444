"""Tiny model builders for the model tests (the builders themselves live in tests/fixtures_tiny.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fixtures_tiny import (
    hf_model,
    tiny_student_config,
    wave_batch,  # noqa: F401 - a fixture, re-exported for this folder's tests
)

from robustdistiller.models import DistillerConfig

# Heads for layers the tiny teachers have; feature_grad_mult back to our default (from_s3prl fills in s3prl's 1.0).
MODEL_TEST_STUDENT: dict[str, object] = {"pred_layer_id": [1, 2, 3], "feature_grad_mult": 0.1}


@pytest.fixture
def tiny_student() -> Callable[..., DistillerConfig]:
    """``tiny_student(**overrides)`` -> a validated tiny DistillerConfig (s3prl field names)."""

    def build(**overrides: object) -> DistillerConfig:
        return tiny_student_config(**{**MODEL_TEST_STUDENT, **overrides})

    return build


@pytest.fixture
def hf_tiny() -> Callable[..., torch.nn.Module]:
    """``hf_tiny(family, pre_ln=False, seed=0, **config)`` -> a random eval-mode transformers model."""
    return hf_model


@pytest.fixture
def hf_dir(tmp_path: Path, hf_tiny: Callable[..., torch.nn.Module]) -> Callable[..., Path]:
    """``hf_dir(family, pre_ln=False)`` -> a save_pretrained directory of a tiny random model."""

    def build(family: str, pre_ln: bool = False, seed: int = 0) -> Path:
        out = tmp_path / f"hf-{family}-{int(pre_ln)}-{seed}"
        hf_tiny(family, pre_ln, seed).save_pretrained(out)
        return out

    return build
