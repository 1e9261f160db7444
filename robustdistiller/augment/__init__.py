"""Noise and reverberation for robust distillation: sources (noise bank, RIR bank), exact batched
arithmetic (mixing), and the corruption policy that plans in DataLoader workers and applies on the
training device."""

from robustdistiller.augment.builtin import builtin_noises, colored_noise, write_builtin_noises
from robustdistiller.augment.mixing import mix_at_snr, reverberate
from robustdistiller.augment.noise import NoiseBank, NoiseBankConfig
from robustdistiller.augment.policy import (
    OPS,
    CorruptionConfig,
    CorruptionPlan,
    CorruptionPolicy,
    CorruptionResult,
    build_policy,
    curriculum,
    plan_rng,
)
from robustdistiller.augment.rir import RIR, RIRBank, RIRBankConfig, SimulatedRIRConfig
from robustdistiller.augment.rt60 import measure_rt60
from robustdistiller.augment.stats import summarize

__all__ = [
    "OPS",
    "RIR",
    "CorruptionConfig",
    "CorruptionPlan",
    "CorruptionPolicy",
    "CorruptionResult",
    "NoiseBank",
    "NoiseBankConfig",
    "RIRBank",
    "RIRBankConfig",
    "SimulatedRIRConfig",
    "build_policy",
    "builtin_noises",
    "colored_noise",
    "curriculum",
    "measure_rt60",
    "mix_at_snr",
    "plan_rng",
    "reverberate",
    "summarize",
    "write_builtin_noises",
]
