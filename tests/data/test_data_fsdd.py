"""Real recordings: the Free Spoken Digit Dataset (8 kHz) through manifest, dataset and sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustdistiller.data.audio import audio_info, load_audio
from robustdistiller.data.batching import BucketBatchSampler
from robustdistiller.data.dataset import AudioDataset, collate
from robustdistiller.data.manifest import manifest_from_folder


def test_fsdd_folder_to_batches(shared_data: Path) -> None:
    def labels(rel: Path) -> dict[str, str]:
        digit, speaker, _ = rel.stem.split("_")  # {digit}_{speaker}_{take}.wav
        return {"digit": digit, "speaker": speaker}

    manifest, report = manifest_from_folder(
        shared_data / "fsdd", workers=4, label_fn=labels, label_names=["digit", "speaker"]
    )
    assert len(manifest) == 3000 and len(report) == 0
    assert len({e.labels["digit"] for e in manifest.entries}) == 10
    assert len({e.labels["speaker"] for e in manifest.entries}) == 6
    assert 0.3 * 3000 < manifest.total_seconds < 0.9 * 3000
    first = manifest.abspath(0)
    info = audio_info(first)
    assert (info.sample_rate, info.channels) == (8000, 1)
    wav = load_audio(first)
    assert wav.shape == (manifest.entries[0].num_samples,) and wav.shape[0] == 2 * round(info.duration_s * 8000)
    assert np.isfinite(wav).all() and 0.01 < np.abs(wav).max() <= 1.0

    ds = AudioDataset(manifest, max_length=8000, seed=0)
    sampler = BucketBatchSampler(manifest.lengths, batch_size=16, seed=0)
    picked = [b for _, b in zip(range(3), sampler)]
    for indices in picked:
        batch = collate([ds[i] for i in indices])
        assert batch.skipped == [] and batch.wavs.shape[0] == len(indices)
        assert batch.wavs.shape[1] == int(batch.lengths.max()) <= 8000
        assert torch.equal(batch.indices, torch.tensor(indices))
