"""Chunked long-audio inference: exact stitching, closeness to full context (memory: bench/deployment.py)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from fixtures_tiny import layer_norm_student, speechlike

from robustdistiller.data.audio import AudioError
from robustdistiller.inference import ChunkConfig, TorchBackend, extract_chunked, extract_long, stream_audio


def _chunked(backend: TorchBackend, wav: np.ndarray, config: ChunkConfig, block: int = 7000) -> list[np.ndarray]:
    parts = list(extract_chunked(backend, (wav[i : i + block] for i in range(0, len(wav), block)), config))
    starts = [first for first, _ in parts]
    assert starts == sorted(starts) and starts[0] == 0
    return [np.concatenate([hidden[i] for _, hidden in parts]) for i in range(len(backend.layers))]


def test_chunks_stitch_exactly_and_approach_full_context(student):
    backend = TorchBackend(student)
    wav = speechlike(12.3, seed=1)
    full = [h[0] for h in backend.extract(wav[None], np.array([len(wav)]))]
    errors = {}
    for overlap in (0.0, 1.0):
        got = _chunked(backend, wav, ChunkConfig(chunk_seconds=4.0, overlap_seconds=overlap))
        assert [g.shape for g in got] == [f.shape for f in full]
        # projected CNN features are local: every frame is exact, wherever the chunk edges fall
        np.testing.assert_allclose(got[0], full[0], atol=1e-5)
        errors[overlap] = max(float(np.abs(g - f).max()) for g, f in zip(got[1:], full[1:]))
    # Transformer layers: with 1 s of context on each side only the attention beyond the chunk is missing
    assert errors[1.0] < 0.02 < errors[0.0]


def test_short_recording_is_one_chunk(student):
    backend = TorchBackend(student)
    wav = speechlike(1.0)
    got = _chunked(backend, wav, ChunkConfig(chunk_seconds=4.0, overlap_seconds=1.0))
    full = backend.extract(wav[None], np.array([len(wav)]))
    for g, f in zip(got, full):
        np.testing.assert_array_equal(g, f[0])


def test_stream_audio_resamples_like_load_audio(write_wav):
    from robustdistiller.data.audio import load_audio

    path = write_wav("stereo8k.wav", 3.3, rate=8000, channels=2)
    streamed = np.concatenate(list(stream_audio(path, block_samples=3000)))
    np.testing.assert_allclose(streamed, load_audio(path), atol=1e-6)


def test_extract_long_rejects_bad_audio(student, tmp_path):
    bad = tmp_path / "nan.wav"
    wav = speechlike(3.0)
    wav[40000] = np.nan
    sf.write(bad, wav, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non_finite"):
        extract_long(
            TorchBackend(student), bad, tmp_path / "nan.npy", ChunkConfig(chunk_seconds=1.0, overlap_seconds=0.2)
        )
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob(".*tmp")), "nothing half-written is left"


def test_ten_minutes_streamed_in_chunks_match_full_context(tmp_path):
    # Peak memory of a streamed run (bounded: neither the decoded file nor all features are held)
    # is measured by bench/deployment.py's memory rows; an RSS bound here would flake.
    path = tmp_path / "ten_minutes.wav"
    sf.write(path, np.concatenate([speechlike(60.0, seed=i) for i in range(10)]), 16000, subtype="PCM_16")
    out = tmp_path / "ten_minutes.npy"
    extract_long(
        TorchBackend(layer_norm_student(), threads=1), path, out, ChunkConfig(chunk_seconds=5.0, overlap_seconds=1.0)
    )

    feats = np.load(out, mmap_mode="r")
    assert feats.shape == (4, 29999, 64) and np.isfinite(feats[:, ::97]).all()
    # Away from edges, chunked features agree with full-context inference over a 40 s window.
    backend = TorchBackend(layer_norm_student())
    start_s, stop_s = 300, 340
    wav = sf.read(path, start=start_s * 16000, stop=stop_s * 16000, dtype="float32")[0]
    window = backend.extract(wav[None], np.array([len(wav)]))
    first = start_s * 50
    inner = slice(250, window[0].shape[1] - 250)  # 5 s from the window's own edges
    for layer, ref in enumerate(window):
        chunked = feats[layer, first + inner.start : first + inner.stop]
        assert np.abs(chunked - ref[0, inner]).max() < 0.02
