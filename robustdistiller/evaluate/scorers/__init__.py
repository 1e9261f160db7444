"""Scorers: one per kind of measurement, each filling one results table with typed rows.

- :class:`ProbeScorer` (``probes``): probe accuracy / error rate per task and condition;
- :class:`DistortionScorer` (``distortion``): hidden states under corruption vs clean references;
- :class:`EnhancementScorer` (``enhancement``): PESQ-wb / STOI / SI-SNR of enhancement heads;
- :class:`EfficiencyScorer` (``efficiency``): size, MACs, real-time factor, peak memory.
"""

from robustdistiller.evaluate.scorers.base import Observation, Scorer, ScoringContext
from robustdistiller.evaluate.scorers.distortion import DistortionScorer
from robustdistiller.evaluate.scorers.efficiency import EfficiencyScorer
from robustdistiller.evaluate.scorers.enhancement import (
    EnhancementScorer,
    enhancement_row,
    voicebank_pairs,
)
from robustdistiller.evaluate.scorers.probe import ProbeScorer

__all__ = [
    "DistortionScorer",
    "EfficiencyScorer",
    "EnhancementScorer",
    "Observation",
    "ProbeScorer",
    "Scorer",
    "ScoringContext",
    "enhancement_row",
    "voicebank_pairs",
]
