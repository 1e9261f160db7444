"""Exact, batched corruption arithmetic: SNR mixing and FFT reverberation on padded batches.

Both functions take a padded batch ``(wavs [B, L], lengths [B])`` and only ever look at the valid
(unpadded) region of each row, so an utterance gets the same numbers whatever the bucket it lands in
(the reference measured power over the padded row, lowering the real SNR of short utterances).
"""

from __future__ import annotations

import scipy.fft
import torch

# The reference adds this to the noise power before dividing (robustness.py); kept for identical numbers.
POWER_EPS = 1e-8


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean ``[B, max_len]`` mask, True on the first ``lengths[b]`` samples of each row."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def mix_at_snr(
    clean: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor, snr_db: torch.Tensor
) -> torch.Tensor:
    """Add ``noise`` to ``clean`` at ``snr_db`` (per row), measured on the unpadded region only.

    Powers are ``x·x / n`` over the first ``lengths[b]`` samples; the noise is scaled by
    ``sqrt(P_s / (P_n + 1e-8) · 10^(-snr/10))`` and added only to the valid region, so padding stays
    exactly zero. A silent clean row stays silent (the scale is 0), as in the reference.
    """
    if clean.shape != noise.shape or clean.dim() != 2:
        raise ValueError(f"clean {tuple(clean.shape)} and noise {tuple(noise.shape)} must both be [B, L]")
    mask = valid_mask(lengths.to(clean.device), clean.shape[1])
    noise = noise * mask
    n = lengths.to(clean.device, clean.dtype).clamp(min=1)
    p_signal = (clean * mask).square().sum(dim=1) / n
    p_noise = noise.square().sum(dim=1) / n
    gain = 10.0 ** (-snr_db.to(clean.device, clean.dtype) / 10.0)
    scale = torch.sqrt(p_signal / (p_noise + POWER_EPS) * gain)
    return clean + scale[:, None] * noise


def reverberate(
    wavs: torch.Tensor, lengths: torch.Tensor, rirs: torch.Tensor, rir_lengths: torch.Tensor
) -> torch.Tensor:
    """Full linear convolution of each row with its own RIR, truncated to the input length.

    Equal to ``scipy.signal.convolve(x[:n], h[:m], mode="full")[:n]`` per row: one batched real FFT
    of a 2-3-5-7-smooth size >= L + Lr - 1 (no circular wrap-around), and the padded region is zeroed
    again afterwards (the reverberant tail past each row's length is dropped, as in the reference).
    """
    if wavs.dim() != 2 or rirs.dim() != 2 or wavs.shape[0] != rirs.shape[0]:
        raise ValueError(f"wavs {tuple(wavs.shape)} and rirs {tuple(rirs.shape)} must be [B, L] and [B, Lr]")
    batch, length = wavs.shape
    if batch == 0:
        return wavs.clone()
    device = wavs.device
    mask = valid_mask(lengths.to(device), length)
    rir_mask = valid_mask(rir_lengths.to(device), rirs.shape[1])
    n_fft = scipy.fft.next_fast_len(length + rirs.shape[1] - 1, real=True)
    spec = torch.fft.rfft(wavs * mask, n=n_fft) * torch.fft.rfft(rirs.to(wavs.dtype) * rir_mask, n=n_fft)
    return torch.fft.irfft(spec, n=n_fft)[:, :length] * mask
