"""The training data stream: manifests -> crops -> length buckets -> batches with a corruption plan.

The file-bound part of corruption (reading noise segments, picking RIRs) runs in the DataLoader
workers through :class:`PlanningCollate`; the arithmetic is left for the training device, or done in
the workers too when ``finish`` is set (no curriculum; the default for CPU training). The
stream counts the batches the training loop has *used* (workers prefetch ahead), so a checkpoint
records exactly where to continue.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from robustdistiller.augment.policy import CorruptionPlan, CorruptionPolicy
from robustdistiller.data import (
    AudioDataset,
    BadFileReport,
    Batch,
    BucketBatchSampler,
    Manifest,
    ManifestEntry,
    build_corpus,
    collate,
    manifest_from_librispeech,
    validate_manifest,
)
from robustdistiller.data.manifest import is_held_out_speaker, speaker_from_name
from robustdistiller.errors import DataError
from robustdistiller.train.distributed import DistContext, barrier
from robustdistiller.train.recipe import DataSection

log = logging.getLogger(__name__)

# Mixed into the plan generator's seed so plans never share a stream with the crop offsets.
_PLAN_SALT = 0x5EED


def load_training_manifest(data: DataSection, out_dir: Path, ctx: DistContext, report: BadFileReport) -> Manifest:
    """The training manifest the data section names (see :class:`DataSection`). Missing folders and
    empty manifests are refused here, before any model is built. Rank 0 builds generated files
    (corpus, scanned LibriSpeech manifest) while the others wait."""
    manifests = list(data.manifests)
    if data.corpus == "builtin":
        if ctx.is_main:
            build_corpus(out_dir / "corpus", seed=data.seed)
        manifests = [str(out_dir / "corpus" / "train.tsv")]
    elif not manifests:
        assert data.root is not None  # DataSection.validate
        scanned = out_dir / "train_manifest.tsv"
        if ctx.is_main and not scanned.is_file():
            manifest, _ = manifest_from_librispeech(data.root, data.splits, report=report)
            validate_manifest(manifest, report).write(scanned)
        manifests = [str(scanned)]
    barrier(ctx)
    parts = [Manifest.read(path) for path in manifests]
    for path, part in zip(manifests, parts):
        if data.root is not None and data.manifests:
            part.root = Path(data.root)
        if not part.root.is_dir():
            raise FileNotFoundError(f"data folder {part.root} (root of {path}) does not exist; set data.root=...")
        validate_manifest(part)
        first = part.abspath(0)
        if not first.is_file():
            raise FileNotFoundError(f"{path}: its first file {first} does not exist; is the root {part.root} right?")
    if len(parts) == 1:
        manifest = parts[0]
    else:
        # Different roots: make every path absolute under a common root of "/".
        entries = [ManifestEntry(str(p.root / e.path), e.num_samples) for p in parts for e in p.entries]
        manifest = Manifest(Path("/"), entries)
    return without_held_out_speakers(manifest) if data.exclude_held_out else manifest


def without_held_out_speakers(manifest: Manifest) -> Manifest:
    """``manifest`` less the held-out evaluation speakers (``is_held_out_speaker``); the speaker is
    the ``speaker`` column, or the ``<speaker>-...`` prefix of the file name without one."""

    def speaker(entry: ManifestEntry) -> str:
        return entry.labels.get("speaker") or speaker_from_name(entry.path)

    try:
        kept = [e for e in manifest.entries if not is_held_out_speaker(speaker(e))]
    except ValueError as exc:
        raise DataError(
            f"data.exclude_held_out=true: {exc} (file names must start with a numeric speaker id)"
        ) from None
    if not kept:
        raise DataError("data.exclude_held_out=true removed every file: all speakers are held-out ones")
    log.info("data.exclude_held_out: %d of %d files kept (held-out speakers removed)", len(kept), len(manifest))
    return Manifest(manifest.root, kept, list(manifest.label_names))


@dataclass
class PlannedBatch:
    """A collated batch and (when corruption is on) the plan drawn for it in the worker."""

    batch: Batch
    plan: CorruptionPlan | None

    def pin_memory(self) -> PlannedBatch:
        return PlannedBatch(self.batch.pin_memory(), self.plan.pin_memory() if self.plan else None)


class PlanningCollate:
    """``collate`` + the corruption plan, in the worker. The plan's generator is seeded from
    (seed, epoch, the batch's manifest rows), so it does not depend on which worker, or which
    process after a resume, builds the batch. With ``finish`` the plan also carries the corrupted
    batch (:meth:`CorruptionPolicy.plan` with ``wavs``)."""

    def __init__(self, policy: CorruptionPolicy | None, seed: int, finish: bool = False) -> None:
        self.policy = policy
        self.seed = seed
        self.finish = finish
        self.epoch = 0

    def __call__(self, items: list[Any]) -> PlannedBatch:
        batch = collate(items)
        plan = None
        if self.policy is not None and len(batch):
            plan = self.policy.plan(
                batch.lengths, batch.wavs.shape[1], self.plan_rng(batch), wavs=batch.wavs if self.finish else None
            )
        return PlannedBatch(batch, plan)

    def plan_rng(self, batch: Batch) -> np.random.Generator:
        """The generator ``batch``'s plan is drawn from."""
        return np.random.default_rng([self.seed, _PLAN_SALT, self.epoch, *batch.indices.tolist()])


def _worker_init(_: int) -> None:
    # Workers leave SIGINT/SIGTERM to the main process, which finishes its step and saves; a worker
    # killed by the signal would otherwise make the DataLoader raise in the middle of that step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class TrainingStream:
    """Endless iterator of :class:`PlannedBatch` over epochs, resumable at batch granularity."""

    def __init__(
        self,
        manifest: Manifest,
        policy: CorruptionPolicy | None,
        *,
        max_length: int,
        batch_size: int | None,
        max_seconds: float | None,
        num_workers: int,
        seed: int,
        ctx: DistContext,
        finish_corruption: bool = False,
    ) -> None:
        self.dataset = AudioDataset(manifest, max_length=max_length, seed=seed)
        self.sampler = BucketBatchSampler(
            manifest.lengths,
            batch_size=batch_size,
            max_seconds=max_seconds,
            max_length=max_length,
            shuffle=True,
            seed=seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        self.collate = PlanningCollate(policy, seed, finish=finish_corruption)
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = ctx.device.type == "cuda"
        self.epoch = 0
        self.consumed = 0  # batches of self.epoch the training loop has taken

    def state_dict(self) -> dict[str, Any]:
        if self.consumed >= len(self.sampler):  # epoch used up: resume at the next one
            return {**self.sampler.state_dict(consumed=0), "epoch": self.epoch + 1}
        return self.sampler.state_dict(consumed=self.consumed)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self.epoch = int(state["epoch"])
        self.consumed = int(state["position"])

    def __iter__(self) -> Iterator[PlannedBatch]:
        while True:
            self.dataset.set_epoch(self.epoch)
            self.sampler.set_epoch(self.epoch)  # keeps a loaded mid-epoch position
            self.collate.epoch = self.epoch
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.sampler,
                collate_fn=self.collate,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                worker_init_fn=_worker_init if self.num_workers else None,
                # Own generator: creating a loader must not draw from the global torch RNG, or a
                # resumed run's dropout masks would differ from the uninterrupted run's.
                generator=torch.Generator().manual_seed(self.seed + self.epoch),
            )
            for item in loader:
                self.consumed += 1
                yield item
            self.epoch += 1
            self.consumed = 0
