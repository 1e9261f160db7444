"""Signal and recognition metrics used by the evaluation.

Enhancement metrics take 1-D signals (numpy arrays or tensors, any float dtype) and return plain
floats. PESQ and STOI wrap the ``pesq`` and ``pystoi`` packages; inputs those packages cannot score
(too short, silent, non-finite) give ``None`` plus a logged warning with the reason, so one odd
utterance never stops a long evaluation. Programming errors (mismatched lengths, multi-channel
arrays, unsupported rates) raise ``ValueError``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from robustdistiller.train.losses import si_snr as _batched_si_snr

log = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor

# Below this peak amplitude a float signal is treated as digital silence.
_SILENCE = 1e-8
# PESQ (ITU-T P.862) refuses buffers shorter than a quarter of a second.
_PESQ_MIN_SECONDS = 0.25
# pystoi needs 30 frames of 256 samples at 10 kHz after dropping silent frames (~0.4 s of speech).
_STOI_MIN_SECONDS = 0.4


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    """Float64 mono view of a signal; [1, L] and [L, 1] are accepted, real multi-channel is not."""
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if arr.ndim > 1:
        if sum(d > 1 for d in arr.shape) > 1:
            raise ValueError(f"{name}: expected a mono signal, got shape {tuple(arr.shape)}")
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D signal, got shape {tuple(arr.shape)}")
    return arr


def _pair(ref: ArrayLike, other: ArrayLike, other_name: str) -> tuple[np.ndarray, np.ndarray]:
    r, o = _as_1d(ref, "reference"), _as_1d(other, other_name)
    if r.shape != o.shape:
        raise ValueError(f"reference and {other_name} differ in length: {r.shape[0]} vs {o.shape[0]}")
    return r, o


def _unscorable(ref: np.ndarray, deg: np.ndarray, sr: int, min_seconds: float) -> str | None:
    """Why a pair cannot be scored, or None when it can."""
    if not (np.isfinite(ref).all() and np.isfinite(deg).all()):
        return "signal contains NaN or Inf"
    if ref.shape[0] < min_seconds * sr:
        return f"too short ({ref.shape[0] / sr:.3f} s < {min_seconds} s)"
    if np.abs(ref).max() < _SILENCE:
        return "reference is silent"
    if np.abs(deg).max() < _SILENCE:
        return "degraded signal is silent"
    return None


def si_snr(est: ArrayLike, ref: ArrayLike) -> float:
    """Scale-invariant SNR in dB of ``est`` against ``ref`` (the training loss's definition)."""
    r, e = _pair(ref, est, "estimate")
    return float(_batched_si_snr(torch.from_numpy(e)[None], torch.from_numpy(r)[None])[0])


def si_snr_improvement(enhanced: ArrayLike, noisy: ArrayLike, clean: ArrayLike) -> float:
    """SI-SNR gain (dB) of the enhanced signal over the noisy input, both against the clean one."""
    return si_snr(enhanced, clean) - si_snr(noisy, clean)


def snr_db(clean: ArrayLike, noisy: ArrayLike) -> float:
    """Measured SNR (dB) of ``noisy`` taking ``noisy - clean`` as the noise; inf when they are equal."""
    c, n = _pair(clean, noisy, "noisy")
    noise_energy = float(((n - c) ** 2).sum())
    clean_energy = float((c**2).sum())
    if noise_energy == 0.0:
        return math.inf
    if clean_energy == 0.0:
        return -math.inf
    return 10.0 * math.log10(clean_energy / noise_energy)


def pesq_wb(ref: ArrayLike, deg: ArrayLike, sr: int = 16000) -> float | None:
    """Wideband PESQ (ITU-T P.862.2, MOS-LQO 1.04-4.64), or None with a warning if unscorable."""
    from pesq import PesqError, pesq

    if sr != 16000:
        raise ValueError(f"wideband PESQ is defined at 16000 Hz only, got {sr}; resample first")
    r, d = _pair(ref, deg, "degraded")
    reason = _unscorable(r, d, sr, _PESQ_MIN_SECONDS)
    if reason is None:
        try:
            return float(pesq(sr, r, d, "wb"))
        except PesqError as exc:  # NoUtterancesError, BufferTooShortError, ...
            msg = exc.args[0] if exc.args else exc
            reason = f"{type(exc).__name__}: {msg.decode() if isinstance(msg, bytes) else msg}"
    log.warning("PESQ skipped: %s", reason)
    return None


def stoi(ref: ArrayLike, deg: ArrayLike, sr: int, extended: bool = False) -> float | None:
    """STOI (0-1; ``extended`` for ESTOI), or None with a warning if unscorable."""
    from pystoi import stoi as _pystoi

    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    r, d = _pair(ref, deg, "degraded")
    reason = _unscorable(r, d, sr, _STOI_MIN_SECONDS)
    if reason is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = float(_pystoi(r, d, sr, extended=extended))
        # pystoi warns and returns 1e-5 when too few non-silent frames remain: not a real score.
        problems = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        if not problems and math.isfinite(value):
            return value
        reason = problems[0] if problems else f"non-finite result {value}"
    log.warning("STOI skipped: %s", reason)
    return None


def accuracy(predictions: Sequence[Hashable], targets: Sequence[Hashable]) -> float:
    """Fraction of positions where prediction equals target."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        raise ValueError("accuracy of an empty set is undefined")
    return sum(p == t for p, t in zip(predictions, targets)) / len(targets)


def edit_distance(hyp: Sequence[Hashable], ref: Sequence[Hashable]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(ref) + 1))
    for i, h in enumerate(hyp, start=1):
        cur = [i] + [0] * len(ref)
        for j, r in enumerate(ref, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (h != r))
        prev = cur
    return prev[-1]


def error_rate(hyps: Sequence[Sequence[Hashable]], refs: Sequence[Sequence[Hashable]]) -> float:
    """Corpus-level token error rate (CER/PER/WER by token choice): total edits / total ref tokens."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("error rate is undefined when every reference is empty")
    return sum(edit_distance(h, r) for h, r in zip(hyps, refs)) / total
