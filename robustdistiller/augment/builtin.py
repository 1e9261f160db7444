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
    return _shaped(white, freqs ** (-exponent / 2))


def _shaped(noise: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``noise`` with its rFFT bins scaled by ``gain`` and DC removed, at unit RMS."""
    spectrum = np.fft.rfft(noise) * gain
    spectrum[0] = 0.0
    return _unit_rms(np.fft.irfft(spectrum, n=noise.size))


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


# Ranges the noise textures are drawn from (see ``texture``), and their random stream.
_TEXTURE_STREAM = 1000
_TEXTURE_BAND_HZ = (60.0, 7000.0)  # centres of the spectral resonances
_TEXTURE_TONE_HZ = (80.0, 1200.0)  # fundamentals of the pitched component


def _spectral_envelope(freqs_hz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random amplitude envelope over ``freqs_hz``: a tilt (dB per octave around 1 kHz) plus 1-4
    resonances, Gaussian in log-frequency, 0.1-1 octave wide and up to 30 dB high."""
    octaves = np.log2(np.maximum(freqs_hz, 20.0) / 1000.0)
    gain_db = rng.uniform(-6.0, 2.0) * octaves
    low, high = np.log2(np.array(_TEXTURE_BAND_HZ) / 1000.0)
    for _ in range(int(rng.integers(1, 5))):
        centre, width = rng.uniform(low, high), rng.uniform(0.1, 1.0)
        gain_db += rng.uniform(0.0, 30.0) * np.exp(-0.5 * ((octaves - centre) / width) ** 2)
    return np.asarray(10.0 ** (gain_db / 20.0))


def _temporal_envelope(num_samples: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Random amplitude over time: steady, slowly modulated (0.3-12 Hz), or Poisson bursts (0.5-6 per
    second, 10-200 ms decays) over a floor, the three shapes equally likely."""
    shape = int(rng.integers(3))
    if shape == 0:
        return np.ones(num_samples)
    if shape == 1:
        t = np.arange(num_samples) / sample_rate
        depth = rng.uniform(0.3, 1.0)
        return 1.0 + depth * np.sin(2 * np.pi * rng.uniform(0.3, 12.0) * t + rng.uniform(0, 2 * np.pi))
    env = np.full(num_samples, rng.uniform(0.02, 0.2))
    decay = rng.uniform(0.01, 0.2) * sample_rate
    tail = np.exp(-np.arange(int(5 * decay)) / decay)
    count = rng.poisson(rng.uniform(0.5, 6.0) * num_samples / sample_rate)
    for start in rng.integers(0, num_samples, size=count):
        stop = min(num_samples, start + tail.size)
        env[start:stop] += rng.uniform(0.3, 1.0) * tail[: stop - start]
    return env


def _gliding_tone(num_samples: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A harmonic tone (1-8 harmonics below Nyquist) whose pitch glides by up to half an octave."""
    t = np.arange(num_samples) / sample_rate
    f0 = np.exp(rng.uniform(*np.log(_TEXTURE_TONE_HZ)))
    pitch = f0 * 2.0 ** (rng.uniform(0.0, 0.5) * np.sin(2 * np.pi * rng.uniform(0.2, 3.0) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    rolloff = rng.uniform(0.5, 2.0)
    out = np.zeros(num_samples)
    for k in range(1, int(rng.integers(1, 9)) + 1):
        if k * f0 * 2.0**0.5 >= sample_rate / 2:
            break
        out += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**rolloff
    return out


def texture(num_samples: int, rng: np.random.Generator, *, sample_rate: int = 16000) -> np.ndarray:
    """A random noise texture: Gaussian noise under a random spectral envelope, a random temporal
    envelope and, for 40 % of textures, a gliding harmonic tone at -10 to +10 dB.

    Recorded noise (MUSAN, UrbanSound8K, the reference's pool) is seldom stationary or smoothly
    coloured: it has resonances (a tap, a fan), events (dishes) and pitch (a cat, a motor). Drawing
    those three properties at random gives a training bank far wider than the fixed generated noises,
    which a student can otherwise learn one by one.
    """
    noise = rng.standard_normal(num_samples)
    out = _shaped(noise, _spectral_envelope(np.fft.rfftfreq(num_samples, d=1.0 / sample_rate), rng))
    out = out.astype(np.float64)
    if rng.uniform() < 0.4:
        tone = _unit_rms(_gliding_tone(num_samples, rng, sample_rate))
        out = out + 10.0 ** (rng.uniform(-10.0, 10.0) / 20.0) * tone
    return _unit_rms(out * _temporal_envelope(num_samples, rng, sample_rate))


def synthetic_speech(rng: np.random.Generator) -> np.ndarray:
    """A random word by a random speaker of the built-in synthetic corpus: the default babble source."""
    word = str(rng.choice(list(WORDS)))
    speaker = str(rng.choice(list(SPEAKERS)))
    return synthesize_utterance(word, speaker, rng)


def builtin_noises(
    sample_rate: int = 16000,
    seconds: float = 10.0,
    seed: int = 0,
    speech: SpeechSource | None = synthetic_speech,
    textures: int = 0,
) -> dict[str, np.ndarray]:
    """All built-in noises by name (babble from ``speech``, none when it is None), then ``textures``
    random noise textures (``texture000``, ...). Same seed, same arrays."""
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
    for index in range(textures):
        # Their own stream, so the fixed noises above stay what they were.
        out[f"texture{index:03d}"] = texture(
            n, np.random.default_rng([seed, _TEXTURE_STREAM, index]), sample_rate=sample_rate
        )
    return out


def write_builtin_noises(
    folder: str | Path,
    *,
    sample_rate: int = 16000,
    seconds: float = 10.0,
    seed: int = 0,
    speech: SpeechSource | None = synthetic_speech,
    textures: int = 0,
) -> list[Path]:
    """Write the built-in noises (and ``textures`` noise textures) as ``<folder>/builtin_<name>.wav``
    (float, peak-safe) and return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, wav in builtin_noises(sample_rate, seconds, seed, speech, textures).items():
        path = folder / f"builtin_{name}.wav"
        # Float wav keeps unit-RMS signals (peaks above 1) without clipping; the atomic write
        # matters to processes indexing the same folder at the same time.
        atomic_write(path, _float_wav_writer(wav, sample_rate))
        paths.append(path)
    return paths


def _float_wav_writer(wav: np.ndarray, sample_rate: int) -> Callable[[BinaryIO], None]:
    """An :func:`atomic_write` writer of ``wav`` (1-D float32) as a float WAV at ``sample_rate``."""
    return lambda fh: sf.write(fh, wav, sample_rate, subtype="FLOAT", format="WAV")
