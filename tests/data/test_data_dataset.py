from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from robustdistiller.data.batching import BucketBatchSampler
from robustdistiller.data.dataset import AudioDataset, Batch, Skipped, Utterance, collate, crop_offset
from robustdistiller.data.manifest import Manifest, manifest_from_folder
from robustdistiller.data.report import BadFileReport


@pytest.fixture
def noise_manifest(tmp_path: Path) -> Manifest:
    rng = np.random.default_rng(0)
    (tmp_path / "clips").mkdir()
    for k, n in enumerate([3000, 5000, 12000, 9000]):
        noise = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        sf.write(tmp_path / "clips" / f"{k}.wav", noise, 16000, subtype="FLOAT")
    low = rng.uniform(-0.5, 0.5, 6000).astype(np.float32)
    sf.write(tmp_path / "clips" / "low.wav", low, 8000, subtype="FLOAT")
    manifest, _ = manifest_from_folder(tmp_path / "clips")
    return manifest


def test_crops_are_reproducible_and_slices_of_the_file(noise_manifest: Manifest) -> None:
    ds = AudioDataset(noise_manifest, max_length=4000, seed=7)
    again = AudioDataset(noise_manifest, max_length=4000, seed=7)
    for i, entry in enumerate(noise_manifest.entries):
        item = ds[i]
        assert isinstance(item, Utterance) and item.index == i
        assert item.wav.dtype == torch.float32 and item.wav.shape == (min(entry.num_samples, 4000),)
        assert torch.equal(item.wav, again[i].wav)
        full, rate = sf.read(noise_manifest.abspath(i), dtype="float32")
        if rate == 16000:
            start = crop_offset(7, 0, i, entry.num_samples, 4000)
            np.testing.assert_array_equal(item.wav.numpy(), full[start : start + item.wav.shape[0]])
    long = next(i for i, e in enumerate(noise_manifest.entries) if e.num_samples == 12000)
    offsets = {crop_offset(7, epoch, long, 12000, 4000) for epoch in range(6)}
    assert len(offsets) > 1  # a new crop each epoch
    ds.set_epoch(3)
    start = crop_offset(7, 3, long, 12000, 4000)
    full, _ = sf.read(noise_manifest.abspath(long), dtype="float32")
    np.testing.assert_array_equal(ds[long].wav.numpy(), full[start : start + 4000])
    resampled = next(i for i, e in enumerate(noise_manifest.entries) if e.path == "low.wav")
    assert ds[resampled].wav.shape == (4000,)  # 12000 samples at 16 kHz, cropped


def test_collate_pads_and_keeps_order() -> None:
    items = [
        Utterance(4, torch.ones(5), {"w": "a"}),
        Skipped(2, "/x/bad.wav", "non_finite"),
        Utterance(9, torch.full((3,), 2.0), {"w": "b"}),
    ]
    batch = collate(items)
    assert batch.wavs.shape == (2, 5) and batch.wavs.dtype == torch.float32
    assert torch.equal(batch.wavs[1], torch.tensor([2.0, 2.0, 2.0, 0.0, 0.0]))
    assert batch.lengths.tolist() == [5, 3] and batch.lengths.dtype == torch.int64
    assert batch.indices.tolist() == [4, 9] and batch.labels == [{"w": "a"}, {"w": "b"}]
    assert batch.skipped == [("/x/bad.wav", "non_finite", "")]
    clone = pickle.loads(pickle.dumps(batch))
    assert torch.equal(clone.wavs, batch.wavs) and clone.skipped == batch.skipped
    assert torch.equal(clone.lengths, batch.lengths) and clone.indices.dtype == torch.int64
    # Small per-row tensors travel by value, not as a shared-memory segment each.
    assert isinstance(batch.__getstate__()["lengths"], np.ndarray)
    empty = collate([Skipped(0, "a.wav", "silent")])
    assert len(empty) == 0 and empty.wavs.shape == (0, 0)


def test_bad_content_becomes_skips_through_workers(bad_folder: tuple[Path, dict[str, str]]) -> None:
    root, reasons = bad_folder
    manifest, report = manifest_from_folder(root)  # header-level bad files are already in `report`
    ds = AudioDataset(manifest, seed=0)
    sampler = BucketBatchSampler(manifest.lengths, batch_size=2, shuffle=False)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    seen: list[int] = []
    for batch in loader:
        assert isinstance(batch, Batch)
        report.extend(batch.skipped)
        seen += batch.indices.tolist()
    assert {Path(f.path).name: f.reason for f in report} == reasons  # every bad case, with its reason
    assert [manifest.entries[i].path for i in seen] == ["good.wav"]


def test_dataset_report_in_process(tmp_path: Path) -> None:
    sf.write(tmp_path / "z.wav", np.zeros(1000, np.float32), 16000)
    manifest, _ = manifest_from_folder(tmp_path)
    ds = AudioDataset(manifest, seed=0)
    item = ds[0]
    assert isinstance(item, Skipped) and item.reason == "silent"
    assert ds.report.counts() == {"silent": 1}
    cropped = AudioDataset(manifest, max_length=500, seed=0)[0]  # the crop path refuses silence too
    assert isinstance(cropped, Skipped) and cropped.reason == "silent"
    assert isinstance(pickle.loads(pickle.dumps(ds)).report, BadFileReport)
