"""Dataset over a manifest: random crops, bad files turned into skips, and the batch collate.

A bad file does not stop training: ``__getitem__`` returns a :class:`Skipped` record (not
``None``, so the path and reason survive the trip from a DataLoader worker), ``collate`` drops it
from the batch and lists it in ``Batch.skipped`` for the main process's BadFileReport.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from robustdistiller.data.audio import MAX_PEAK, SAMPLE_RATE, AudioError, load_audio, load_audio_segment
from robustdistiller.data.manifest import Manifest
from robustdistiller.data.report import BadFileReport
from robustdistiller.data.shared import SmallTensorsByValue, batch_zeros
from robustdistiller.errors import ConfigError


@dataclass
class Utterance:
    index: int
    wav: torch.Tensor  # float32 [L]
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    index: int
    path: str
    reason: str
    detail: str = ""


@dataclass
class Batch(SmallTensorsByValue):
    """Zero-padded waveforms and their true lengths; ``len(batch)`` may be 0 if every file was bad."""

    BY_VALUE = ("lengths", "indices")

    wavs: torch.Tensor  # float32 [B, Lmax]
    lengths: torch.Tensor  # int64 [B]
    indices: torch.Tensor  # int64 [B], rows of the manifest
    labels: list[dict[str, str]]
    skipped: list[tuple[str, str, str]]  # (path, reason, detail)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def pin_memory(self) -> Batch:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return Batch(
            self.wavs.pin_memory(), self.lengths.pin_memory(), self.indices.pin_memory(), self.labels, self.skipped
        )


def crop_offset(seed: int, epoch: int, index: int, num_samples: int, max_length: int) -> int:
    """Start of the random crop of row ``index`` in ``epoch``: a pure function of its arguments,
    so crops are reproducible across runs, workers and resumes."""
    if num_samples <= max_length:
        return 0
    rng = np.random.default_rng([seed, epoch, index])
    return int(rng.integers(0, num_samples - max_length + 1))


class AudioDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        manifest: Manifest,
        *,
        max_length: int = 250_000,
        sample_rate: int = SAMPLE_RATE,
        seed: int = 0,
    ) -> None:
        if max_length <= 0:
            raise ConfigError(f"max_length must be positive, got {max_length}")
        self.manifest = manifest
        self.max_length = max_length
        self.sample_rate = sample_rate
        self.seed = seed
        self.epoch = 0
        # Filled in the process that reads; with DataLoader workers use Batch.skipped instead.
        self.report = BadFileReport()

    def __len__(self) -> int:
        return len(self.manifest)

    def set_epoch(self, epoch: int) -> None:
        """Call before creating the epoch's DataLoader iterator (workers copy the dataset then)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> Utterance | Skipped:
        entry = self.manifest.entries[index]
        path = self.manifest.root / entry.path
        try:
            if entry.num_samples > self.max_length:
                start = crop_offset(self.seed, self.epoch, index, entry.num_samples, self.max_length)
                # An all-zero crop is refused too: it would make SNR mixing undefined downstream.
                wav = load_audio_segment(
                    path, start, self.max_length, self.sample_rate, allow_silent=False, max_peak=MAX_PEAK
                )
            else:
                wav = load_audio(path, self.sample_rate, max_peak=MAX_PEAK)
                if len(wav) < entry.num_samples:  # cut short since the manifest was written
                    raise AudioError(
                        path, "truncated", f"the manifest says {entry.num_samples} samples, the file now has {len(wav)}"
                    )
        except AudioError as exc:
            # A DataLoader worker's copy of the report dies with the worker (and is rebuilt each
            # epoch, which would repeat the warning): workers only return the skip, the main
            # process's report logs it once.
            if torch.utils.data.get_worker_info() is None:
                self.report.add(exc.path, exc.reason, exc.detail)
            return Skipped(index, exc.path, exc.reason, exc.detail)
        return Utterance(index, torch.from_numpy(wav), dict(entry.labels))


def collate(items: list[Utterance | Skipped | None]) -> Batch:
    """Pad to the longest utterance; bad items go to ``Batch.skipped``."""
    good = [u for u in items if isinstance(u, Utterance)]
    skipped = [(s.path, s.reason, s.detail) for s in items if isinstance(s, Skipped)]
    lengths = torch.tensor([u.wav.shape[0] for u in good], dtype=torch.int64)
    wavs = batch_zeros(len(good), int(lengths.max()) if good else 0)
    for row, u in enumerate(good):
        wavs[row, : u.wav.shape[0]] = u.wav
    return Batch(
        wavs=wavs,
        lengths=lengths,
        indices=torch.tensor([u.index for u in good], dtype=torch.int64),
        labels=[u.labels for u in good],
        skipped=skipped,
    )
