"""Tiny teacher, tiny student recipe and tiny generated audio for the trainer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures_tiny import (
    TINY_CONV,
    teacher_dir,  # noqa: F401 - a fixture, re-exported for this folder's tests
    write_harmonic_manifest,
)

from robustdistiller.config import apply_overrides, from_dict
from robustdistiller.train.recipe import DistillRecipe


@pytest.fixture(scope="session")
def tiny_teacher(teacher_dir: Callable[[str], Path]) -> Path:
    """A random 3-layer HuBERT (conv 32 channels, hidden 64, 4 heads) saved with save_pretrained."""
    return teacher_dir("hubert")


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 harmonic 'utterances' of 0.4-0.9 s with a little noise, as a manifest."""
    return write_harmonic_manifest(tmp_path_factory.mktemp("audio"), 16, (0.4, 0.9))


def tiny_recipe_dict(manifest: Path, teacher: Path, out_dir: Path) -> dict:
    return {
        "data": {"manifests": [str(manifest)], "max_length": 12000, "batch_size": 4, "num_workers": 0, "seed": 3},
        "corruption": {"p_clean": 1.0, "p_noise": 0.0, "p_reverb": 0.0, "p_noise_reverb": 0.0},
        "teacher": {"source": str(teacher)},
        "student": {
            "extractor_conv_feature_layers": TINY_CONV,
            "encoder_layers": 2,
            "encoder_embed_dim": 64,
            "encoder_ffn_embed_dim": 128,
            "encoder_attention_heads": 4,
            "final_dim": 64,
            "conv_pos": 16,
            "conv_pos_groups": 4,
            "n_tasks": 2,
            "pred_layer_id": [2, 3],
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
        },
        "enhancement": {"use_enhancement": False, "input_dim": 32, "num_layers": 1, "hidden_size": 16},
        "optim": {"lr": 1e-3, "total_steps": 20, "warmup_proportion": 0.0, "grad_clip": 10.0},
        "train": {"out_dir": str(out_dir), "device": "cpu", "log_every": 2, "save_every": 5, "keep_last": 3},
    }


RecipeFactory = Callable[..., DistillRecipe]


@pytest.fixture
def make_recipe(tiny_manifest: Path, tiny_teacher: Path, tmp_path: Path) -> RecipeFactory:
    """``make_recipe("train.out_dir=...", ...)``: the tiny recipe with ``key=value`` overrides."""

    def build(*overrides: str, out: str = "run") -> DistillRecipe:
        data = tiny_recipe_dict(tiny_manifest, tiny_teacher, tmp_path / out)
        return from_dict(DistillRecipe, apply_overrides(data, list(overrides)))

    return build
