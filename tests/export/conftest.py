"""Tiny students and waveforms shared by the export tests."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator

import pytest
import torch

from robustdistiller.models.student import DistillerConfig, DistillerModel

TINY = {
    "extractor_conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "encoder_layers": 2,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4,
    "final_dim": 64,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "n_tasks": 3,
    "pred_layer_id": [4, 8, 12],
}


def tiny_student(seed: int = 0, **overrides) -> DistillerModel:
    torch.manual_seed(seed)
    model = DistillerModel(DistillerConfig.from_s3prl({**TINY, **overrides})).eval()
    # Random (not default 1/0) norm parameters, so a lost or swapped LayerNorm shows up in outputs.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.startswith("feature_extractor.conv_layers.0.2."):
                param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture
def make_student() -> Callable[..., DistillerModel]:
    """``make_student(seed=0, **distiller_overrides)`` -> a tiny random student in eval mode."""
    return tiny_student


@pytest.fixture
def student() -> DistillerModel:
    return tiny_student()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two zero-padded waveforms of unequal length (1.0 s and 0.6 s)."""
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([16000, 9600])
    wavs = torch.randn(2, 16000, generator=gen) * 0.1
    wavs[1, 9600:] = 0.0
    return wavs, lengths


@pytest.fixture
def fake_global() -> Iterator[Callable[[str, type, str], None]]:
    """Make a class picklable as ``module.name`` for a module that only exists during the test
    (e.g. s3prl's ``optimizers``); call the returned function, then ``sys.modules.pop(module)`` to
    simulate a reader without it. Everything registered is removed at teardown."""
    registered: list[str] = []

    def register(module: str, cls: type, name: str) -> None:
        mod = types.ModuleType(module)
        cls.__module__, cls.__qualname__, cls.__name__ = module, name, name
        setattr(mod, name, cls)
        sys.modules[module] = mod
        registered.append(module)

    yield register
    for module in registered:
        sys.modules.pop(module, None)
