"""MFCC features aligned to the CNN's frames: the iteration-1 targets of HuBERT-style pre-training.

HuBERT's first iteration clusters 39-dimensional MFCCs (13 coefficients + deltas + delta-deltas).
Here they are computed with librosa on the same grid as the wav2vec2 CNN: a 25 ms window (400
samples) every 20 ms (320 samples), without centring, so MFCC frame ``t`` covers samples
``[320 t, 320 t + 400)`` exactly like CNN frame ``t``. The CNN's per-block length formula and the
window formula ``floor((L - 400) / 320) + 1`` can differ by a frame at the end of some lengths;
:func:`mfcc_frames` trims or edge-pads that last frame.
"""

from __future__ import annotations

import numpy as np

from robustdistiller.data.audio import SAMPLE_RATE

MFCC_COEFFS = 13
MFCC_DIM = 3 * MFCC_COEFFS
WINDOW = 400  # 25 ms at 16 kHz: the receptive field of the wav2vec2 CNN
HOP = 320  # 20 ms: the CNN's total stride
N_MELS = 40
DELTA_WIDTH = 5  # +-2 frames (+-40 ms) for the delta regression
MAX_FRAME_MISMATCH = 2


def mfcc_frames(wav: np.ndarray, num_frames: int | None = None) -> np.ndarray:
    """39-dim MFCC + deltas + delta-deltas of one 16 kHz utterance, one row per 20 ms CNN frame.

    Args:
        wav: (L,) float mono audio at 16 kHz, L >= 400 (one frame).
        num_frames: the CNN's frame count for ``wav``; the result is trimmed or edge-padded to it
            (at most :data:`MAX_FRAME_MISMATCH` frames). None keeps the window formula's count.

    Returns:
        (T, 39) float32: coefficients 0-12, their deltas, their delta-deltas.
    """
    import librosa  # imported here: its first import is slow, and only pre-training needs it

    if wav.ndim != 1 or wav.shape[0] < WINDOW:
        raise ValueError(f"mfcc_frames needs a 1-D signal of at least {WINDOW} samples, got shape {wav.shape}")
    mfcc = librosa.feature.mfcc(
        y=np.asarray(wav, dtype=np.float32),
        sr=SAMPLE_RATE,
        n_mfcc=MFCC_COEFFS,
        n_fft=WINDOW,
        hop_length=HOP,
        win_length=WINDOW,
        center=False,
        n_mels=N_MELS,
    )
    # mode="nearest": short utterances (fewer frames than the regression window) still get deltas
    delta = librosa.feature.delta(mfcc, width=DELTA_WIDTH, order=1, mode="nearest")
    delta2 = librosa.feature.delta(mfcc, width=DELTA_WIDTH, order=2, mode="nearest")
    feats = np.concatenate([mfcc, delta, delta2], axis=0).T.astype(np.float32)
    return feats if num_frames is None else fit_frames(feats, num_frames)


def fit_frames(feats: np.ndarray, num_frames: int) -> np.ndarray:
    """``feats`` (T, D) trimmed, or edge-padded with its last row, to ``num_frames`` rows.

    Raises ValueError when the counts differ by more than :data:`MAX_FRAME_MISMATCH` (the features
    were not computed on the CNN's grid)."""
    have = feats.shape[0]
    if abs(have - num_frames) > MAX_FRAME_MISMATCH:
        raise ValueError(
            f"{have} feature frames for {num_frames} CNN frames: features must use a {WINDOW}-sample "
            f"window every {HOP} samples (a CNN with a different stride needs its own feature grid)"
        )
    if have >= num_frames:
        return feats[:num_frames]
    return np.concatenate([feats, np.repeat(feats[-1:], num_frames - have, axis=0)], axis=0)
