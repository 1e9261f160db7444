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


def test_mix_matches_the_original_arithmetic_on_the_unpadded_signal():
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
    # Six rows: more than one of the CPU path's groups of four.
    lengths = [12000, 5000, 700, 9000, 12000, 400]
    rir_lengths = [4000, 1, 2500, 900, 3100, 5000]
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


def _with_garbage_padding(lengths: list[int], width: int, gen: torch.Generator) -> torch.Tensor:
    # Random everywhere, padding included: every path must ignore what lies past each row's length.
    return torch.randn(len(lengths), width, generator=gen)


def test_cpu_and_torch_fft_backends_agree_at_their_fft_lengths():
    from robustdistiller.augment.mixing import _fft_convolve_cpu, _fft_convolve_torch, fft_length

    gen = torch.Generator().manual_seed(3)
    # 7 rows: the CPU path transforms rows in groups of 4, so this crosses a group boundary.
    lengths, rir_lengths = [5000, 4000, 12, 5000, 0, 3100, 4999], [700, 1, 650, 700, 300, 20, 699]
    x, h = _with_garbage_padding(lengths, 5000, gen), _with_garbage_padding(rir_lengths, 700, gen)
    cpu_n, gpu_n = fft_length(5699, "cpu"), fft_length(5699, "cuda")
    assert cpu_n >= 5699 and gpu_n >= 5699 and gpu_n % 16 == 0
    a = _fft_convolve_cpu(x, lengths, h, rir_lengths, cpu_n)
    b = _fft_convolve_torch(x, torch.tensor(lengths), h, torch.tensor(rir_lengths), gpu_n)
    assert a.shape == b.shape == (7, 5000)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for row, n in enumerate(lengths):
        assert torch.all(a[row, n:] == 0) and torch.all(b[row, n:] == 0)


def test_cpu_row_paths_equal_the_batched_masked_paths():
    from robustdistiller.augment.mixing import _add_by_rows, _add_masked, _powers_by_rows, _powers_masked

    gen = torch.Generator().manual_seed(5)
    lengths = torch.tensor([3000, 0, 2999, 1, 1500])
    x, v = _with_garbage_padding(lengths.tolist(), 3000, gen), _with_garbage_padding(lengths.tolist(), 3000, gen)
    torch.testing.assert_close(_powers_by_rows(x, lengths), _powers_masked(x, lengths), rtol=1e-6, atol=0)
    scale = torch.rand(5, generator=gen)
    torch.testing.assert_close(_add_by_rows(x, v, lengths, scale), _add_masked(x, v, lengths, scale), rtol=0, atol=0)
    assert _powers_by_rows(x[:0], lengths[:0]).shape == (0,)
