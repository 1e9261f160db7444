"""Length-bucketed batch sampler: reshuffled per epoch, sharded per rank, resumable mid-epoch.

Two ways to form batches from the rows sorted by length (longest first):
- ``batch_size``: consecutive chunks of N rows, as s3prl's distiller does (a final partial
  bucket is kept only when it has more than one row; ``drop_last`` drops any partial one);
- ``max_seconds``: consecutive rows while the padded batch (rows x longest cropped row) stays
  within the budget, as DPHuBERT does with 160 s; ``batch_size``, if also set, caps the rows.
Batches are fixed; their order is shuffled each epoch from (seed, epoch). Every rank gets the
same number of batches: the last few are repeated (or dropped with ``drop_last``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from robustdistiller.data.audio import SAMPLE_RATE
from robustdistiller.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    def __init__(
        self,
        lengths: Sequence[int],
        *,
        batch_size: int | None = 24,
        max_seconds: float | None = None,
        sample_rate: int = SAMPLE_RATE,
        max_length: int = 250_000,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if batch_size is None and max_seconds is None:
            raise ConfigError("set batch_size or max_seconds")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if len(lengths) == 0:
            raise DataError("no utterances to batch")
        self.num_items = len(lengths)
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out on this rank
        cropped = np.minimum(np.asarray(lengths, dtype=np.int64), max_length)
        # Stable sort, longest first; equal lengths keep manifest order so buckets are deterministic.
        order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
        if max_seconds is not None:
            budget = int(max_seconds * sample_rate)
            if cropped.max() > budget:
                raise DataError(
                    f"max_seconds={max_seconds} holds {budget} samples, less than the longest "
                    f"(cropped) utterance ({int(cropped.max())}); raise it or lower max_length"
                )
            self.batches = _fill_budget(order, cropped, budget, batch_size)
        else:
            assert batch_size is not None  # checked above: batch_size or max_seconds is set
            self.batches = _chunk(order, batch_size, drop_last)
        if not self.batches:
            raise DataError(f"{self.num_items} utterance(s) make no batch of {batch_size} with drop_last")
        dropped = self.num_items - sum(len(b) for b in self.batches)
        if dropped:
            log.info("%d utterance(s) left out of batching (partial final bucket)", dropped)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        n = len(self.batches)
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch, unless it is the epoch a loaded state is in."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``, in order."""
        order = list(range(len(self.batches)))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.batches)).tolist()
        per_rank = len(self)
        total = per_rank * self.world_size
        order = (order * (total // len(order) + 1))[:total]  # repeat from the start to even out ranks
        return [self.batches[i] for i in order[self.rank :: self.world_size]]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(self.epoch)
        if self.position >= len(batches):  # a finished epoch iterated again starts over
            self.position = 0
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield list(batch)

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where to resume. The sampler counts batches it handed out; a DataLoader with workers
        prefetches ahead, so pass ``consumed`` = batches of this epoch the training loop has used."""
        return {
            "epoch": self.epoch,
            "position": self.position if consumed is None else int(consumed),
            "seed": self.seed,
            "num_items": self.num_items,
            "num_batches": len(self.batches),
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "num_items", "num_batches", "world_size"):
            if state[key] != mine[key]:
                raise DataError(f"sampler state does not match this data: {key} was {state[key]}, now {mine[key]}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])


def _chunk(order: np.ndarray, size: int, drop_last: bool) -> list[list[int]]:
    batches = [order[i : i + size].tolist() for i in range(0, len(order), size)]
    if batches and len(batches[-1]) < size and (drop_last or len(batches[-1]) < 2):
        batches.pop()
    return batches


def _fill_budget(order: np.ndarray, cropped: np.ndarray, budget: int, cap: int | None) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order.tolist():
        # Rows come longest first, so the batch's padded length is that of its first row.
        longest = cropped[current[0]] if current else cropped[i]
        full = cap is not None and len(current) >= cap
        if current and (full or (len(current) + 1) * longest > budget):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
