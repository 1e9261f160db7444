"""What a training objective tells the loop (:class:`~robustdistiller.train.trainer.Trainer`).

The loop owns devices, DDP, gradient accumulation, precision, clipping, non-finite skips,
checkpoints, exact resume, signals and logging. An objective owns everything about *what* is
learned, through a small explicit interface:

- :meth:`Objective.modules`: the modules it trains, by name (the loop moves nothing: they are on
  the device already; it wraps each in DDP under ``torchrun`` and sets train mode each step);
- :meth:`Objective.param_groups`: the optimizer groups, stated plainly (the loop builds one AdamW);
- :meth:`Objective.loss`: the loss of one micro-batch and the detached scalars to log;
- :meth:`Objective.save_checkpoint` / :meth:`Objective.load_checkpoint`: its part of a
  checkpoint (the loop adds its own state as top-level keys).

Objectives are built by explicit factories (``from_recipe``) that compute all their state in the
constructor; nothing is filled in later by the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from robustdistiller.data import BadFileReport
from robustdistiller.data.manifest import Manifest
from robustdistiller.train.distributed import DistContext
from robustdistiller.train.recipe import OptimSection


@dataclass
class MicroBatch:
    """One micro-batch as the objective sees it (all tensors on the device)."""

    noisy: Tensor
    """(B, L) float32 audio the trained model hears (the corrupted copy, or ``clean`` itself)."""
    clean: Tensor
    """(B, L) float32 clean audio (teacher / label input)."""
    lengths: Tensor
    """(B,) int64 valid samples per row."""
    step: int
    """Optimizer steps taken before this one (0 for the first)."""
    micro: int
    """Index of this micro-batch within the step's gradient accumulation."""


@dataclass
class LoopTools:
    """What the loop lends an objective for one micro-batch."""

    nets: Mapping[str, nn.Module]
    """:meth:`Objective.modules` as the loop runs them (DDP wrappers under ``torchrun``): call these."""
    phase: Callable[[str], AbstractContextManager[Any]]
    """``with tools.phase("teacher"):`` times a phase of the step (logged as ``time/<name>_fraction``)."""
    autocast: Callable[[], AbstractContextManager[Any]]
    """``with tools.autocast():`` runs under ``train.precision`` (fp32: no autocast)."""


@dataclass
class StepLoss:
    loss: Tensor
    """Scalar loss of the micro-batch, with grad."""
    scalars: dict[str, Tensor]
    """Detached scalars to log (averaged over micro-batches and the steps between two log lines)."""


@dataclass
class RunSetup:
    """What a factory may need from the run being set up (data first, so bad data fails before a
    teacher is loaded)."""

    device: Any
    """``torch.device`` of this process."""
    ctx: DistContext
    out_dir: Path
    manifest: Manifest
    """The training audio (e.g. sampled for k-means before step 1)."""
    bad_files: BadFileReport
    """Files that failed to load are added here."""


class Objective(ABC):
    """A training objective; see the module docstring."""

    label: str = "train"
    """Progress-bar label."""
    description: str = ""
    """One line logged when a new run starts (what is trained, from what)."""

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The trained modules by name, on the device (frozen teachers are not listed)."""

    @abstractmethod
    def param_groups(self, optim: OptimSection) -> list[dict[str, Any]]:
        """AdamW parameter groups (``params`` plus per-group ``lr`` / ``weight_decay``) for ``optim``."""

    @abstractmethod
    def loss(self, batch: MicroBatch, tools: LoopTools) -> StepLoss:
        """The loss of one micro-batch (computed through ``tools.nets``) and the scalars to log."""

    @abstractmethod
    def save_checkpoint(self, path: Path, step: int, loop_state: dict[str, Any]) -> None:
        """Write the objective's modules and ``loop_state`` (top-level keys) to ``path``, atomically."""

    @abstractmethod
    def load_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        """Restore what :meth:`save_checkpoint` wrote (``state`` = the loaded file, read from ``path``).

        Raises:
            ValueError: the file holds another kind of run, naming what is missing.
        """


def named_parameters(modules: Mapping[str, nn.Module]) -> Iterable[tuple[str, nn.Parameter]]:
    """``(name.param, param)`` over ``modules`` in order, as ``nn.ModuleDict(modules)`` names them."""
    return nn.ModuleDict(dict(modules)).named_parameters()
