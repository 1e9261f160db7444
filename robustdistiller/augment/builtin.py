"""Built-in noises generated deterministically in numpy, for runs without MUSAN / UrbanSound8K.

Every generator returns float32 mono of unit RMS (the mixer rescales noise to the requested SNR, so
only the shape of the signal matters). ``write_builtin_noises`` writes them as wav files so they form
a :class:`~robustdistiller.augment.noise.NoiseBank` folder like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from robustdistiller.atomic import atomic_write
from robustdistiller.data.corpus import SPEAKERS, WORDS, synthesize_utterance

SpeechSource = Sequence[np.ndarray] | Callable[[np.random.Generator], np.ndarray]

# Spectral slope (power ~ 1/f^exponent) of the coloured noises.
COLOR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x / rms if rms > 0 else x).astype(np.float32)


# Lowest shaped frequency, in cycles per sample (20 Hz at 16 kHz).
_SHAPING_FLOOR = 20.0 / 16000


def colored_noise(num_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as ``1/f^k`` (white 0, pink 1, brown 2).

    Spectral shaping of white noise: the rFFT bins are scaled by ``f^(-k/2)`` above 20 Hz (at 16 kHz)
    and held flat below, with DC removed. Without the floor, brown noise drifts so slowly that a short
    segment is mostly offset: its power counts towards the SNR while zero-mean measures (SI-SNR) and the
    model's first layers barely see it, so "0 dB" would be far cleaner than it claims.
    """
    if color not in COLOR_EXPONENTS:
        raise ValueError(f"unknown noise colour {color!r}; expected one of {sorted(COLOR_EXPONENTS)}")
    white = rng.standard_normal(num_samples)
    exponent = COLOR_EXPONENTS[color]
    if exponent == 0.0 or num_samples < 2:
        return _unit_rms(white)
    freqs = np.maximum(np.fft.rfftfreq(num_samples), _SHAPING_FLOOR)
    spectrum = np.fft.rfft(white) * freqs ** (-exponent / 2)
    spectrum[0] = 0.0
    shaped = np.fft.irfft(spectrum, n=num_samples)
    return _unit_rms(shaped)


def hum(
    num_samples: int, rng: np.random.Generator, *, mains_hz: float = 50.0, harmonics: int = 6, sample_rate: int = 16000
) -> np.ndarray:
    """Mains hum: ``mains_hz`` and its harmonics (amplitude 1/k, random phases) over faint white noise."""
    t = np.arange(num_samples) / sample_rate
    out = 0.01 * rng.standard_normal(num_samples)
    for k in range(1, harmonics + 1):
        if k * mains_hz >= sample_rate / 2:
            break
        out += np.sin(2 * np.pi * k * mains_hz * t + rng.uniform(0, 2 * np.pi)) / k
    return _unit_rms(out)


def clicks(num_samples: int, rng: np.random.Generator, *, rate_hz: float = 4.0, sample_rate: int = 16000) -> np.ndarray:
    """Sparse clicks: Poisson-timed short exponentially decaying bursts of random sign and level."""
    out = 1e-3 * rng.standard_normal(num_samples)
    count = rng.poisson(rate_hz * num_samples / sample_rate)
    burst_len = max(1, sample_rate // 500)  # 2 ms
    envelope = np.exp(-np.arange(burst_len) / (burst_len / 5))
    for start in rng.integers(0, num_samples, size=count):
        stop = min(num_samples, start + burst_len)
        burst = rng.standard_normal(stop - start) * envelope[: stop - start]
        out[start:stop] += rng.uniform(0.2, 1.0) * burst
    return _unit_rms(out)


def babble(num_samples: int, speech: SpeechSource, rng: np.random.Generator, *, talkers: int = 6) -> np.ndarray:
    """Babble: ``talkers`` utterances at equal level, each tiled from a random offset, summed.

    ``speech`` is a sequence of waveforms or a callable drawing one from ``rng`` (e.g. the in-memory
    synthetic corpus), so this module does not depend on any corpus layout.
    """
    if talkers < 1:
        raise ValueError(f"talkers must be >= 1, got {talkers}")
    if not callable(speech) and len(speech) == 0:
        raise ValueError("babble needs at least one speech waveform")
    out = np.zeros(num_samples, dtype=np.float64)
    for _ in range(talkers):
        utt = speech(rng) if callable(speech) else speech[int(rng.integers(len(speech)))]
        utt = np.asarray(utt, dtype=np.float64).reshape(-1)
        if utt.size == 0 or not np.any(utt):
            raise ValueError("babble received an empty or silent speech waveform")
        reps = -(-(num_samples + utt.size) // utt.size)
        start = int(rng.integers(utt.size))
        out += _unit_rms(np.tile(utt, reps)[start : start + num_samples])
    return _unit_rms(out)


def synthetic_speech(rng: np.random.Generator) -> np.ndarray:
    """A random word by a random speaker of the built-in synthetic corpus: the default babble source."""
    word = str(rng.choice(list(WORDS)))
    speaker = str(rng.choice(list(SPEAKERS)))
    return synthesize_utterance(word, speaker, rng)


def builtin_noises(
    sample_rate: int = 16000, seconds: float = 10.0, seed: int = 0, speech: SpeechSource | None = synthetic_speech
) -> dict[str, np.ndarray]:
    """All built-in noises by name (babble from ``speech``, none when it is None). Same seed, same arrays."""
    n = int(round(seconds * sample_rate))
    out: dict[str, np.ndarray] = {}
    # One generator per noise, derived from (seed, index), so adding a noise never changes the others.
    makers: list[tuple[str, Callable[[np.random.Generator], np.ndarray]]] = [
        ("white", lambda r: colored_noise(n, "white", r)),
        ("pink", lambda r: colored_noise(n, "pink", r)),
        ("brown", lambda r: colored_noise(n, "brown", r)),
        ("hum50", lambda r: hum(n, r, mains_hz=50.0, sample_rate=sample_rate)),
        ("hum60", lambda r: hum(n, r, mains_hz=60.0, sample_rate=sample_rate)),
        ("clicks", lambda r: clicks(n, r, sample_rate=sample_rate)),
    ]
    if speech is not None:
        makers.append(("babble", lambda r: babble(n, speech, r)))
    for index, (name, make) in enumerate(makers):
        out[name] = make(np.random.default_rng([seed, index]))
    return out


def write_builtin_noises(
    folder: str | Path,
    *,
    sample_rate: int = 16000,
    seconds: float = 10.0,
    seed: int = 0,
    speech: SpeechSource | None = synthetic_speech,
) -> list[Path]:
    """Write the built-in noises as ``<folder>/builtin_<name>.wav`` (float, peak-safe) and return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, wav in builtin_noises(sample_rate, seconds, seed, speech).items():
        path = folder / f"builtin_{name}.wav"
        # Float wav keeps unit-RMS signals (peaks above 1) without clipping; the atomic write
        # matters to processes indexing the same folder at the same time.
        atomic_write(path, _float_wav_writer(wav, sample_rate))
        paths.append(path)
    return paths


def _float_wav_writer(wav: np.ndarray, sample_rate: int) -> Callable[[BinaryIO], None]:
    """An :func:`atomic_write` writer of ``wav`` (1-D float32) as a float WAV at ``sample_rate``."""
    return lambda fh: sf.write(fh, wav, sample_rate, subtype="FLOAT", format="WAV")
