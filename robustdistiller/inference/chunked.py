"""Long recordings: overlapping chunks whose central frames are stitched into one sequence.

Chunk ``k`` covers ``chunk_frames`` frames starting at a frame boundary (a multiple of the CNN
stride in samples), so its frame ``j`` *is* global frame ``start + j`` for the convolutions. Each
chunk keeps only the frames at least ``overlap_frames`` away from its cut edges (the recording's
true start and end are not cuts), so every kept frame sees ``overlap_seconds`` of real context on
both sides. The last chunk is moved back to end at the recording's end, so it is never a short
sliver with little context.

Memory is bounded by the chunk size: samples are streamed in blocks (``stream_audio``) and at most
two chunk spans are buffered. What still differs from full-context inference: attention beyond the
chunk and the first conv block's GroupNorm statistics (computed per chunk); both shrink as chunks
grow (measured in ``docs/deployment.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustdistiller.data.audio import SAMPLE_RATE, AudioError, audio_info
from robustdistiller.errors import UsageError
from robustdistiller.inference.backends import Backend
from robustdistiller.inference.stream import stream_audio
from robustdistiller.inference.writer import NpyLayersWriter
from robustdistiller.runtime import FrameGeometry


@dataclass
class ChunkConfig:
    chunk_seconds: float = 20.0
    """Span of one model call; peak memory grows with it (attention is quadratic in it)."""
    overlap_seconds: float = 4.0
    """Context kept on each side of a chunk's retained frames; larger = closer to full context, slower."""
    full_context_seconds: float = 60.0
    """``extract`` runs recordings up to this long in one piece (exact), longer ones in chunks."""

    def validate(self) -> None:
        if self.overlap_seconds < 0 or self.chunk_seconds <= 2 * self.overlap_seconds:
            raise UsageError(
                f"need 0 <= overlap_seconds and chunk_seconds > 2 * overlap_seconds, got "
                f"chunk {self.chunk_seconds}, overlap {self.overlap_seconds}"
            )
        if self.full_context_seconds < 0:
            raise UsageError(f"full_context_seconds must be >= 0, got {self.full_context_seconds}")

    def frames(self, geometry: FrameGeometry) -> tuple[int, int]:
        """(chunk_frames, overlap_frames) for this geometry."""
        chunk = int(geometry.frames(int(self.chunk_seconds * SAMPLE_RATE)))
        overlap = math.ceil(self.overlap_seconds * SAMPLE_RATE / geometry.stride)
        if chunk <= 2 * overlap:
            raise UsageError(f"chunk of {chunk} frames leaves nothing between two overlaps of {overlap} frames")
        return chunk, overlap


def extract_chunked(
    backend: Backend, blocks: Iterable[np.ndarray], config: ChunkConfig
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield ``(first_frame, [frames [n, D] per layer])`` in order, covering every frame of the stream."""
    config.validate()
    geometry = backend.geometry
    chunk, overlap = config.frames(geometry)
    span = geometry.samples_for(chunk)
    stride = geometry.stride
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start = 0  # global sample index of buffer[0]
    emitted = 0  # frames yielded so far
    source = iter(blocks)
    exhausted = False

    def run(first_frame: int, end_sample: int) -> list[np.ndarray]:
        wav = buffer[first_frame * stride - buffer_start : end_sample - buffer_start][None, :]
        return [h[0] for h in backend.extract(wav, np.array([wav.shape[1]], dtype=np.int64))]

    while True:
        start = max(0, emitted - overlap)
        while not exhausted and buffer_start + buffer.shape[0] < start * stride + span:
            block = next(source, None)
            if block is None:
                exhausted = True
            else:
                buffer = np.concatenate([buffer, block])
        end = buffer_start + buffer.shape[0]
        total = int(geometry.frames(end)) if exhausted else None
        if end >= start * stride + span and (total is None or start + chunk < total):
            # A full chunk with audio after it: keep all but its right overlap.
            keep_end = start + chunk - overlap
            hidden = run(start, start * stride + span)
        else:
            # The end of the recording: one last full-length chunk (or the whole recording if shorter).
            assert total is not None
            if total <= emitted:
                return
            start = max(0, total - chunk)
            keep_end = total
            hidden = run(start, end)
        yield emitted, [h[emitted - start : keep_end - start] for h in hidden]
        emitted = keep_end
        if keep_end == total:
            return
        # Keep one chunk span of history: the final chunk may start up to `chunk` frames back.
        drop = max(0, (emitted - chunk) * stride - buffer_start)
        buffer, buffer_start = buffer[drop:], buffer_start + drop


def extract_long(
    backend: Backend, path: str | Path, out: Path, config: ChunkConfig, block_seconds: float = 10.0
) -> Path:
    """Chunked extraction of the recording at ``path`` into a ``[layers, frames, dim]`` ``.npy`` at ``out``.

    Raises AudioError for unusable audio, including a file that ends before its header says.
    """
    path = Path(path)
    frames = int(backend.geometry.frames(audio_info(path).num_samples_16k))
    if frames < 1:
        raise AudioError(path, "too_short", f"fewer than {backend.geometry.receptive_field} samples at 16 kHz")
    writer: NpyLayersWriter | None = None
    try:
        for first, hidden in extract_chunked(backend, stream_audio(path, int(block_seconds * SAMPLE_RATE)), config):
            if writer is None:
                writer = NpyLayersWriter(out, len(hidden), frames, hidden[0].shape[-1])
            if first + hidden[0].shape[0] > frames:
                raise AudioError(path, "unreadable", f"more audio than the header's {frames} frames")
            writer.write(first, hidden)
        if writer is None or writer.written != frames:
            raise AudioError(path, "truncated", f"header promises {frames} frames")
        return writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
