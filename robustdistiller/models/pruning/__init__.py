"""Structured pruning of wav2vec2-family models (DPHuBERT): gates, prunable model, size, prune/fold."""

from .config import PRUNING_UNITS, PrunableConfig
from .gates import STRETCH, TEMPERATURE, HardConcrete, SparsityConstraint
from .masking import StructureGates
from .model import PrunableModel, PrunableOutput
from .prune import PruneReport, prune_model
from .size import config_params, structure_params

__all__ = [
    "PRUNING_UNITS",
    "STRETCH",
    "TEMPERATURE",
    "HardConcrete",
    "PrunableConfig",
    "PrunableModel",
    "PrunableOutput",
    "PruneReport",
    "SparsityConstraint",
    "StructureGates",
    "config_params",
    "prune_model",
    "structure_params",
]
