"""Stream a long recording as mono float32 16 kHz blocks without decoding it whole.

Memory stays at a few blocks whatever the file length: soundfile decodes ``block_samples`` frames at
a time (as float32, never float64), channels are averaged, and other rates go through a streaming
soxr resampler, whose output equals ``load_audio``'s one-shot resampling sample for sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from robustdistiller.data.audio import SAMPLE_RATE, AudioError, audio_info


def stream_audio(path: str | Path, block_samples: int = 16000 * 10) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 blocks at 16 kHz (the last may be shorter).

    Raises AudioError (missing, unreadable, empty, non_finite) like ``load_audio``; a NaN found in a
    late block is reported when that block is reached.
    """
    path = Path(path)
    info = audio_info(path)
    if info.num_samples_16k == 0:
        raise AudioError(path, "empty", "0 frames")
    resampler = None
    if info.sample_rate != SAMPLE_RATE:
        resampler = soxr.ResampleStream(info.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    read = 0
    try:
        with sf.SoundFile(str(path)) as fh:
            total = fh.frames
            for block in fh.blocks(blocksize=block_samples, dtype="float32", always_2d=True):
                read += block.shape[0]
                if not np.isfinite(block).all():
                    raise AudioError(path, "non_finite", f"NaN/inf samples in block ending at frame {read}")
                mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=read >= total)
                if mono.size:
                    yield np.ascontiguousarray(mono, dtype=np.float32)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(path, "unreadable", str(exc).splitlines()[0]) from None
