"""Tiny students and waveforms shared by the export tests."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator

import pytest
import torch
from fixtures_tiny import tiny_student

from robustdistiller.models.student import DistillerModel


def _export_student(seed: int = 0, **overrides: object) -> DistillerModel:
    # Perturbed norms: an export that loses or swaps a LayerNorm must change the outputs.
    return tiny_student(seed, perturb_norms=True, **overrides)


@pytest.fixture
def make_student() -> Callable[..., DistillerModel]:
    """``make_student(seed=0, **distiller_overrides)`` -> a tiny random student in eval mode."""
    return _export_student


@pytest.fixture
def student() -> DistillerModel:
    return _export_student()


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
