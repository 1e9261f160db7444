"""Reverberation time of an impulse response by Schroeder backward integration.

The energy decay curve ``EDC(t) = sum_{tau >= t} h(tau)^2`` (from the direct-path peak on) is fitted
by least squares between -5 dB and -35 dB (T30) and extrapolated to 60 dB of decay; when the curve
does not reach -35 dB the -5..-25 dB range (T20) is used, and NaN is returned when it does not even
reach -25 dB. No noise-floor compensation is done, so measured RIRs with a high noise floor read long.
"""

from __future__ import annotations

import numpy as np

# (start, end) of the fitted EDC range in dB, best first: T30, then T20.
FIT_RANGES_DB = ((-5.0, -35.0), (-5.0, -25.0))


def energy_decay_db(rir: np.ndarray) -> np.ndarray:
    """Schroeder EDC in dB relative to its start (0 dB at index 0); -inf once the energy is exhausted."""
    energy = np.square(np.asarray(rir, dtype=np.float64))
    edc = np.cumsum(energy[::-1])[::-1]
    if edc[0] <= 0:
        return np.full(edc.shape, -np.inf)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(edc / edc[0])


def measure_rt60(rir: np.ndarray, sample_rate: int) -> float:
    """RT60 in seconds (T30, else T20 extrapolated), NaN for an RIR with too little decay."""
    rir = np.asarray(rir).reshape(-1)
    if rir.size < 2 or not np.any(rir):
        return float("nan")
    edc_db = energy_decay_db(rir[int(np.argmax(np.abs(rir))) :])
    for start_db, end_db in FIT_RANGES_DB:
        below_end = np.flatnonzero(edc_db <= end_db)
        if below_end.size == 0:
            continue
        i0 = int(np.flatnonzero(edc_db <= start_db)[0])
        i1 = int(below_end[0])
        if i1 - i0 < 2:
            continue
        t = np.arange(i0, i1 + 1) / sample_rate
        slope = np.polyfit(t, edc_db[i0 : i1 + 1], 1)[0]  # dB per second, negative
        if slope < 0:
            return float(-60.0 / slope)
    return float("nan")


def decay_length(rir: np.ndarray, floor_db: float = 60.0) -> int:
    """Samples until the EDC (from index 0) falls ``floor_db`` below its start; the whole length if never."""
    edc_db = energy_decay_db(rir)
    below = np.flatnonzero(edc_db <= -floor_db)
    return int(below[0]) if below.size else int(np.asarray(rir).size)
