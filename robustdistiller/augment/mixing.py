"""Exact, batched corruption arithmetic: SNR mixing and FFT reverberation on padded batches.

Both functions take a padded batch ``(wavs [B, L], lengths [B])`` and only ever look at the valid
(unpadded) region of each row, so an utterance gets the same numbers whatever the bucket it lands in
(the reference measured power over the padded row, lowering the real SNR of short utterances).
"""

from __future__ import annotations

import scipy.fft
import torch
import torch.nn.functional as F

# The reference adds this to the noise power before dividing (robustness.py); kept for identical numbers.
POWER_EPS = 1e-8


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean ``[B, max_len]`` mask, True on the first ``lengths[b]`` samples of each row."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def noise_scale(
    clean: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor, snr_db: torch.Tensor
) -> torch.Tensor:
    """Per-row factor ``sqrt(P_s / (P_n + 1e-8) · 10^(-snr/10))`` putting ``noise`` at ``snr_db`` below
    ``clean``; powers are ``x·x / n`` over the first ``lengths[b]`` samples only."""
    if clean.shape != noise.shape or clean.dim() != 2:
        raise ValueError(f"clean {tuple(clean.shape)} and noise {tuple(noise.shape)} must both be [B, L]")
    mask = valid_mask(lengths.to(clean.device), clean.shape[1])
    n = lengths.to(clean.device, clean.dtype).clamp(min=1)
    # torch.where, not "* mask": a bool mask would be converted to a float copy first.
    clean, noise = torch.where(mask, clean, 0.0), torch.where(mask, noise, 0.0)
    p_signal = torch.linalg.vecdot(clean, clean) / n
    p_noise = torch.linalg.vecdot(noise, noise) / n
    gain = 10.0 ** (-snr_db.to(clean.device, clean.dtype) / 10.0)
    return torch.sqrt(p_signal / (p_noise + POWER_EPS) * gain)


def mix_at_snr(
    clean: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor, snr_db: torch.Tensor
) -> torch.Tensor:
    """Add ``noise`` to ``clean`` at ``snr_db`` (per row), measured on the unpadded region only.

    The noise is scaled by :func:`noise_scale` and added only to the valid region, so padding stays
    exactly zero. A silent clean row stays silent (the scale is 0), as in the reference.
    """
    scale = noise_scale(clean, noise, lengths, snr_db)
    mask = valid_mask(lengths.to(clean.device), clean.shape[1])
    return clean + scale[:, None] * torch.where(mask, noise, 0.0)


def fft_length(min_length: int, device: torch.device | str = "cuda") -> int:
    """A fast FFT size >= ``min_length`` for the FFT library :func:`reverberate` uses on ``device``.

    CPU (scipy's pocketfft): ``next_fast_len``, any 2-3-5-7-11-smooth size is fast there. Other
    devices (torch, cuFFT): 16 x a 2-3-5-7-smooth number; ``next_fast_len`` alone may return odd
    sizes (e.g. 273375 = 3^7·5^3) that torch's FFTs run 3-4x slower than a nearby size with a factor
    2^4 (e.g. 276480 = 2^11·3^3·5). That padding costs under 0.5 % for speech-length inputs.
    """
    if torch.device(device).type == "cpu":
        return scipy.fft.next_fast_len(min_length, real=True)
    return 16 * scipy.fft.next_fast_len(-(-min_length // 16), real=True)


def _fft_convolve_cpu(x: torch.Tensor, h: torch.Tensor, n_fft: int) -> torch.Tensor:
    # scipy's pocketfft, not torch.fft: on CPU it is 1.3-2x faster for these sizes (bench/augment.py
    # measures both). Single-threaded on purpose: pocketfft's thread pool joins its threads in a
    # fork handler, which deadlocks when a DataLoader forks workers after the trainer used the pool.
    # Real inputs only, no autograd.
    spec = scipy.fft.rfft(x.detach().numpy(), n_fft)
    spec *= scipy.fft.rfft(h.detach().numpy(), n_fft)
    return torch.from_numpy(scipy.fft.irfft(spec, n_fft))


def _fft_convolve_torch(x: torch.Tensor, h: torch.Tensor, n_fft: int) -> torch.Tensor:
    # Padding explicitly is measurably faster than rfft(..., n=) with torch.fft.
    spec = torch.fft.rfft(F.pad(x, (0, n_fft - x.shape[1]))) * torch.fft.rfft(F.pad(h, (0, n_fft - h.shape[1])))
    return torch.fft.irfft(spec, n=n_fft)


def reverberate(
    wavs: torch.Tensor, lengths: torch.Tensor, rirs: torch.Tensor, rir_lengths: torch.Tensor
) -> torch.Tensor:
    """Full linear convolution of each row with its own RIR, truncated to the input length.

    Equal to ``scipy.signal.convolve(x[:n], h[:m], mode="full")[:n]`` per row: one batched real FFT
    of a fast size >= L + Lr - 1 (no circular wrap-around; see :func:`fft_length`), and the padded
    region is zeroed again afterwards (the reverberant tail past each row's length is dropped, as in
    the reference). CPU tensors go through scipy's FFT, other devices through ``torch.fft``.
    """
    if wavs.dim() != 2 or rirs.dim() != 2 or wavs.shape[0] != rirs.shape[0]:
        raise ValueError(f"wavs {tuple(wavs.shape)} and rirs {tuple(rirs.shape)} must be [B, L] and [B, Lr]")
    batch, length = wavs.shape
    if batch == 0:
        return wavs.clone()
    device = wavs.device
    mask = valid_mask(lengths.to(device), length)
    rir_mask = valid_mask(rir_lengths.to(device), rirs.shape[1])
    x = torch.where(mask, wavs, 0.0)
    h = torch.where(rir_mask, rirs.to(wavs.dtype), 0.0)
    n_fft = fft_length(length + rirs.shape[1] - 1, device)
    full = (_fft_convolve_cpu if device.type == "cpu" else _fft_convolve_torch)(x, h, n_fft)
    return torch.where(mask, full[:, :length].to(wavs.dtype), 0.0)
