"""Tiny teacher, tiny student recipe and tiny generated audio for the trainer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistiller.config import apply_overrides, from_dict
from robustdistiller.data import Manifest, ManifestEntry
from robustdistiller.train.recipe import DistillRecipe

SR = 16000
CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer HuBERT (conv 32 channels, hidden 64, 4 heads) saved with save_pretrained."""
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(
        conv_dim=(32,) * 7, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=128, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    path = tmp_path_factory.mktemp("teacher") / "hubert-tiny"
    HubertModel(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 harmonic 'utterances' of 0.4-0.9 s with a little noise, as a manifest."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    entries = []
    for i in range(16):
        n = int(SR * rng.uniform(0.4, 0.9))
        t = np.arange(n) / SR
        f0 = rng.uniform(100, 250)
        wav = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * np.hanning(n)
        wav = (0.3 * wav / np.abs(wav).max() + 0.01 * rng.standard_normal(n)).astype(np.float32)
        sf.write(root / f"utt{i}.wav", wav, SR)
        entries.append(ManifestEntry(f"utt{i}.wav", n))
    return Manifest(root, entries).write(root / "train.tsv")


def tiny_recipe_dict(manifest: Path, teacher: Path, out_dir: Path) -> dict:
    return {
        "data": {"manifests": [str(manifest)], "max_length": 12000, "batch_size": 4, "num_workers": 0, "seed": 3},
        "corruption": {"p_clean": 1.0, "p_noise": 0.0, "p_reverb": 0.0, "p_noise_reverb": 0.0},
        "teacher": {"source": str(teacher)},
        "student": {
            "extractor_conv_feature_layers": CONV, "encoder_layers": 2, "encoder_embed_dim": 64,
            "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4, "final_dim": 64,
            "conv_pos": 16, "conv_pos_groups": 4, "n_tasks": 2, "pred_layer_id": [2, 3],
            "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
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
