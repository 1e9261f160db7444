import numpy as np
import pytest
import scipy.signal
import torch

from robustdistiller.augment.mixing import POWER_EPS, mix_at_snr, reverberate


def _padded(rng: np.random.Generator, lengths: list[int], width: int | None = None) -> torch.Tensor:
    out = torch.zeros(len(lengths), width or max(lengths))
    for b, n in enumerate(lengths):
        out[b, :n] = torch.from_numpy(rng.standard_normal(n).astype(np.float32)) * (0.1 + b)
    return out


def test_mix_hits_requested_snr_on_unpadded_region_and_keeps_padding_zero():
    rng = np.random.default_rng(0)
    lengths = [16000, 4000, 9000, 401]
    clean = _padded(rng, lengths)
    # Noise spans the full padded width: whatever lies in the padding must not leak in.
    noise = torch.from_numpy(rng.standard_normal(clean.shape).astype(np.float32)) * 3
    snr = torch.tensor([0.0, 7.0, 20.0, -5.0])
    noisy = mix_at_snr(clean, noise, torch.tensor(lengths), snr)
    for b, n in enumerate(lengths):
        added = noisy[b, :n] - clean[b, :n]
        measured = 10 * torch.log10(clean[b, :n].square().sum() / added.square().sum())
        assert abs(float(measured) - float(snr[b])) < 0.1
        assert torch.all(noisy[b, n:] == 0)


def test_mix_matches_reference_arithmetic_on_the_unpadded_signal():
    rng = np.random.default_rng(1)
    lengths = [8000, 3000]
    clean = _padded(rng, lengths)
    noise = _padded(rng, lengths)
    noisy = mix_at_snr(clean, noise, torch.tensor(lengths), torch.tensor([5.0, 12.0]))
    for b, (n, snr) in enumerate(zip(lengths, (5.0, 12.0))):
        s, v = clean[b, :n], noise[b, :n]
        # robustness.py's insert_controlled_noise, applied to the unpadded row
        k = (s.dot(s) / n) / (v.dot(v) / n + POWER_EPS) * 10 ** (-snr / 10)
        torch.testing.assert_close(noisy[b, :n], s + torch.sqrt(k) * v, rtol=1e-5, atol=1e-7)


def test_mix_silent_row_stays_silent():
    clean = torch.zeros(1, 800)
    noisy = mix_at_snr(clean, torch.randn(1, 800), torch.tensor([800]), torch.tensor([10.0]))
    assert torch.all(noisy == 0)


def test_mix_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="must both be"):
        mix_at_snr(torch.zeros(2, 10), torch.zeros(2, 11), torch.tensor([10, 10]), torch.zeros(2))


def test_reverberate_equals_scipy_full_convolution_truncated():
    rng = np.random.default_rng(2)
    lengths = [12000, 5000, 700, 9000]
    rir_lengths = [4000, 1, 2500, 900]
    wavs = _padded(rng, lengths)
    rirs = torch.zeros(len(rir_lengths), max(rir_lengths) + 37)  # extra zero padding must not matter
    for b, m in enumerate(rir_lengths):
        decay = np.exp(-np.arange(m) / (m / 6 + 1))
        rirs[b, :m] = torch.from_numpy((rng.standard_normal(m) * decay).astype(np.float32))
    out = reverberate(wavs, torch.tensor(lengths), rirs, torch.tensor(rir_lengths))
    assert out.shape == wavs.shape
    for b, (n, m) in enumerate(zip(lengths, rir_lengths)):
        ref = scipy.signal.convolve(wavs[b, :n].double().numpy(), rirs[b, :m].double().numpy(), mode="full")[:n]
        err = np.linalg.norm(out[b, :n].double().numpy() - ref) / np.linalg.norm(ref)
        assert err < 1e-5
        assert torch.all(out[b, n:] == 0)


def test_reverberate_empty_batch():
    none = torch.zeros(0, dtype=torch.long)
    out = reverberate(torch.zeros(0, 100), none, torch.zeros(0, 5), none)
    assert out.shape == (0, 100)


def test_cpu_and_torch_fft_backends_agree_at_their_fft_lengths():
    from robustdistiller.augment.mixing import _fft_convolve_cpu, _fft_convolve_torch, fft_length

    gen = torch.Generator().manual_seed(3)
    x, h = torch.randn(3, 5000, generator=gen), torch.randn(3, 700, generator=gen)
    cpu_n, gpu_n = fft_length(5699, "cpu"), fft_length(5699, "cuda")
    assert cpu_n >= 5699 and gpu_n >= 5699 and gpu_n % 16 == 0
    a = _fft_convolve_cpu(x, h, cpu_n)[:, :5699]
    b = _fft_convolve_torch(x, h, gpu_n)[:, :5699]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
