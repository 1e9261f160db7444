"""Audio reading: any soundfile format -> mono float32 at the project's rate (16 kHz).

This is the one place where sample-rate conversion and channel mixing happen. Every reader
rejects bad input with an :class:`AudioError` whose ``reason`` is a short machine-readable tag,
so callers can skip and count a bad file instead of crashing deep inside a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from robustdistiller.errors import AudioError

SAMPLE_RATE = 16000
# The wav2vec2-family CNN front end needs 400 samples (25 ms at 16 kHz) to emit one frame.
MIN_SAMPLES = 400
# Decoded audio lies in [-1, 1]; float files may overshoot a little (hot masters, resampling), but a
# larger peak means a float file holding integer-scale values (+-32767) or garbage, which would
# silently multiply the loss or make every step non-finite.
MAX_PEAK = 2.0


@dataclass(frozen=True)
class AudioInfo:
    """Header facts about a file; ``num_samples_16k`` is its length once resampled to 16 kHz."""

    num_samples_16k: int
    sample_rate: int
    channels: int
    duration_s: float


def resampled_length(num_samples: int, orig_rate: int, target_rate: int = SAMPLE_RATE) -> int:
    """Length soxr produces when resampling ``num_samples`` (round half up, in exact integers)."""
    return (2 * num_samples * target_rate + orig_rate) // (2 * orig_rate)


def _open_error(path: Path, exc: Exception) -> AudioError:
    if not path.exists():
        return AudioError(path, "missing", "no such file")
    # libsndfile repeats the path in its message; keep only what went wrong.
    message = str(exc).replace(f"Error opening {str(path)!r}: ", "").strip()
    return AudioError(path, "unreadable", message.splitlines()[0] if message else type(exc).__name__)


def audio_info(path: str | Path) -> AudioInfo:
    """Read only the header (no decoding). Raises AudioError(missing/unreadable)."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise _open_error(path, exc) from None
    frames = int(info.frames)
    rate = int(info.samplerate)
    return AudioInfo(
        num_samples_16k=resampled_length(frames, rate, SAMPLE_RATE),
        sample_rate=rate,
        channels=int(info.channels),
        duration_s=frames / rate if rate else 0.0,
    )


def _to_mono(data: np.ndarray) -> np.ndarray:
    # soundfile returns [frames, channels] with always_2d=True.
    return data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)


def _resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    # ``wav`` is [samples] or [samples, channels]; soxr resamples each channel.
    if orig_rate == target_rate:
        return wav
    return soxr.resample(wav, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def _check_finite(path: Path, wav: np.ndarray, max_peak: float | None = None) -> None:
    """NaN/inf samples, and (unless ``max_peak`` is None) a peak over ``max_peak``, are refused."""
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        raise AudioError(path, "non_finite", f"{bad} NaN/inf samples")
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if max_peak is not None and peak > max_peak:
        raise AudioError(
            path,
            "out_of_range",
            f"peak {peak:.6g} > {max_peak}: float samples must lie in [-1, 1] "
            "(an integer-scale float file? divide by 32768)",
        )


def _decode(path: Path, max_peak: float | None = None) -> tuple[np.ndarray, int]:
    """All channels as float32 ``[frames, channels]`` and the file's rate; empty, NaN/inf and (unless
    ``max_peak`` is None) out-of-range files rejected."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise _open_error(path, exc) from None
    if data.shape[0] == 0:
        raise AudioError(path, "empty", "0 frames")
    # Checked before resampling: soxr would smear one NaN over its whole filter length.
    _check_finite(path, data, max_peak)
    return data, int(rate)


def _check_decoded(path: Path, wav: np.ndarray, sample_rate: int, min_samples: int, allow_silent: bool) -> None:
    # ``wav`` is [samples] or [channels, samples]: the last axis is time.
    if wav.shape[-1] < min_samples:
        raise AudioError(path, "too_short", f"{wav.shape[-1]} samples < {min_samples} at {sample_rate} Hz")
    if not allow_silent and not np.any(wav):
        raise AudioError(path, "silent", "all samples are zero")


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    min_samples: int = MIN_SAMPLES,
    allow_silent: bool = False,
    channel: int | None = None,
    max_peak: float | None = None,
) -> np.ndarray:
    """Decode ``path`` to a mono float32 1-D array at ``sample_rate``.

    Multi-channel audio is averaged to mono, or only ``channel`` (0-based) is kept when given; other
    rates are resampled with soxr (HQ). Raises AudioError for a missing/unreadable/empty file, a
    ``channel`` the file does not have (``no_channel``), fewer than ``min_samples`` samples after
    resampling, NaN/inf samples, all-zero audio (unless ``allow_silent``), channels that cancel when
    averaged, or (when given) a peak over ``max_peak``: speech readers pass :data:`MAX_PEAK`, noise
    and impulse responses need not be normalised.
    """
    path = Path(path)
    data, rate = _decode(path, max_peak)
    if channel is None:
        mono = _to_mono(data)
        if data.shape[1] > 1 and not np.any(mono) and np.any(data):
            raise AudioError(
                path,
                "channels_cancel",
                f"its {data.shape[1]} channels sum to zero (phase-inverted stereo?); read one channel instead",
            )
    elif 0 <= channel < data.shape[1]:
        mono = data[:, channel]
    else:
        raise AudioError(path, "no_channel", f"channel {channel} asked, the file has {data.shape[1]}")
    wav = _resample(mono, rate, sample_rate)
    _check_decoded(path, wav, sample_rate, min_samples, allow_silent)
    return np.ascontiguousarray(wav, dtype=np.float32)


def load_audio_channels(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    min_samples: int = MIN_SAMPLES,
    allow_silent: bool = False,
) -> np.ndarray:
    """Every channel of ``path`` as float32 ``[channels, samples]`` at ``sample_rate``, kept apart.

    For signals whose channels must not be averaged, e.g. a microphone-array RIR (the average of
    responses at different positions comb-filters). Raises AudioError as :func:`load_audio` does;
    "silent" means every channel is all zero.
    """
    path = Path(path)
    data, rate = _decode(path)
    out = np.ascontiguousarray(_resample(data, rate, sample_rate).T, dtype=np.float32)
    _check_decoded(path, out, sample_rate, min_samples, allow_silent)
    return out


def load_audio_segment(
    path: str | Path,
    start: int,
    num: int,
    sample_rate: int = SAMPLE_RATE,
    *,
    allow_silent: bool = True,
    max_peak: float | None = None,
) -> np.ndarray:
    """Samples ``[start, start + num)`` of the file, counted at ``sample_rate``, as mono float32.

    When the file is already at ``sample_rate`` only that span is decoded (soundfile seeks), which
    is what makes random crops of long files cheap; otherwise the whole file is decoded, resampled
    and sliced, so both paths return the same samples as ``load_audio(path)[start:start + num]``.
    A crop of a good file may be silence, so silence is allowed by default here.
    Raises AudioError as load_audio does, and ``truncated`` when the file ends before the span.
    """
    if start < 0 or num <= 0:
        raise ValueError(f"invalid segment start={start} num={num}")
    path = Path(path)
    try:
        with sf.SoundFile(str(path)) as fh:
            rate = int(fh.samplerate)
            if rate == sample_rate:
                if fh.frames == 0:
                    raise AudioError(path, "empty", "0 frames")
                fh.seek(min(start, fh.frames))
                data = fh.read(num, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise _open_error(path, exc) from None
    if rate == sample_rate:
        _check_finite(path, data, max_peak)
        wav = _to_mono(data)
    else:
        wav = load_audio(path, sample_rate, min_samples=1, allow_silent=True, max_peak=max_peak)[start : start + num]
    if wav.shape[0] < num:
        raise AudioError(path, "truncated", f"asked for samples {start}..{start + num}, got {wav.shape[0]}")
    if not allow_silent and not np.any(wav):
        raise AudioError(path, "silent", "all samples in the segment are zero")
    return np.ascontiguousarray(wav, dtype=np.float32)
