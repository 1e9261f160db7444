import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from robustdistiller.evaluate.metrics import (
    accuracy,
    edit_distance,
    error_rate,
    pesq_wb,
    si_snr,
    si_snr_improvement,
    snr_db,
    stoi,
)

SR = 16000


def speech_like(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonic tone with a syllable-rate envelope: enough structure for PESQ/STOI to score."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    return (0.1 * envelope * voiced + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


def mix_at(clean: np.ndarray, snr: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(clean.size)
    noise *= np.sqrt((clean.astype(np.float64) ** 2).sum() / (noise**2).sum() / 10 ** (snr / 10))
    return clean + noise


def test_identical_signals_score_at_the_top():
    x = speech_like()
    assert si_snr(x, x) > 60
    assert pesq_wb(x, x) == pytest.approx(4.64, abs=0.01)
    assert stoi(x, x, SR) == pytest.approx(1.0, abs=1e-4)
    assert snr_db(x, x) == math.inf


def test_si_snr_is_scale_invariant_and_accepts_tensors():
    x = speech_like()
    noisy = mix_at(x, 5.0)
    base = si_snr(noisy, x)
    assert si_snr(0.25 * noisy, x) == pytest.approx(base, abs=1e-6)
    assert si_snr(torch.from_numpy(3 * noisy), torch.from_numpy(x)) == pytest.approx(base, abs=1e-6)


def test_known_snr_mixture_measures_correctly():
    x = speech_like()
    for target in (-5.0, 0.0, 10.0):
        noisy = mix_at(x, target)
        assert snr_db(x, noisy) == pytest.approx(target, abs=1e-9)
        # White noise is nearly orthogonal to the signal, so SI-SNR is close to the SNR.
        assert si_snr(noisy, x) == pytest.approx(target, abs=0.2)
    noisy = mix_at(x, 0.0)
    assert si_snr_improvement(x, noisy, x) > 60
    assert si_snr_improvement(noisy, noisy, x) == pytest.approx(0.0, abs=1e-9)
    # Degradation ranks correctly.
    assert pesq_wb(x, mix_at(x, 20.0)) > pesq_wb(x, mix_at(x, 0.0))
    assert stoi(x, mix_at(x, 20.0), SR) > stoi(x, mix_at(x, -5.0), SR)


@pytest.mark.parametrize(
    "ref, deg, reason",
    [
        (np.zeros(2 * SR), speech_like(), "reference is silent"),
        (speech_like(), np.zeros(2 * SR), "degraded signal is silent"),
        (speech_like(0.1), speech_like(0.1), "too short"),
        (np.full(2 * SR, np.nan), speech_like(), "NaN"),
    ],
)
def test_unscorable_input_returns_none_with_a_warning(caplog, ref, deg, reason):
    with caplog.at_level(logging.WARNING, logger="robustdistiller.evaluate.metrics"):
        assert pesq_wb(ref, deg) is None
        assert stoi(ref, deg, SR) is None
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("PESQ skipped") and reason in m for m in messages)
    assert any(m.startswith("STOI skipped") and reason in m for m in messages)


def test_stoi_with_too_little_speech_after_silence_removal_returns_none(caplog):
    x = np.zeros(SR, dtype=np.float32)
    x[:1000] = speech_like(1000 / SR)
    with caplog.at_level(logging.WARNING):
        assert stoi(x, x, SR) is None
    assert "Not enough STFT frames" in caplog.text


def test_pesq_library_errors_are_caught(caplog):
    # Long enough and not silent, but a 20 Hz hum is below PESQ's speech band: NoUtterancesError.
    x = 0.1 * np.sin(2 * np.pi * 20 * np.arange(SR) / SR)
    with caplog.at_level(logging.WARNING):
        assert pesq_wb(x, x) is None
    assert "PESQ skipped: NoUtterancesError: No utterances detected" in caplog.text


def test_programming_errors_raise():
    x = speech_like()
    with pytest.raises(ValueError, match="16000"):
        pesq_wb(x, x, sr=8000)
    with pytest.raises(ValueError, match="length"):
        si_snr(x[:-1], x)
    with pytest.raises(ValueError, match="mono"):
        stoi(np.stack([x, x]), np.stack([x, x]), SR)
    # A [1, L] tensor is a mono signal.
    assert si_snr(torch.from_numpy(x)[None], x) > 60


def test_real_noisy_speech_scores_in_range(shared_data):
    folder = shared_data / "voicebank_demand"
    name = sorted(p.name for p in (folder / "clean").glob("*.wav"))[0]
    clean, sr = sf.read(folder / "clean" / name, dtype="float32")
    noisy, _ = sf.read(folder / "noisy" / name, dtype="float32")
    assert sr == SR
    assert 1.0 < pesq_wb(clean, noisy) < 4.0
    assert 0.5 < stoi(clean, noisy, SR) < 1.0
    assert pesq_wb(clean, clean) > 4.5


def test_accuracy_and_error_rate():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2
    assert edit_distance([1, 2], []) == 2
    # Corpus level: (1 + 0) edits over (3 + 2) reference tokens.
    assert error_rate([[1, 2], [5, 6]], [[1, 2, 3], [5, 6]]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="1 predictions for 2 targets"):
        accuracy([1], [1, 2])
    with pytest.raises(ValueError, match="every reference is empty"):
        error_rate([[]], [[]])
