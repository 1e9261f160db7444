"""What every scorer shares: the :class:`Scorer` interface, the :class:`ScoringContext` of one
evaluation (tasks, utterances, conditions, feature cache) and the :class:`Observation` of one model
under one condition."""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

import numpy as np
import torch
from torch import Tensor

from robustdistiller.data.report import BadFileReport
from robustdistiller.evaluate.conditions import Condition, ConditionSet
from robustdistiller.evaluate.models import ModelUnderTest
from robustdistiller.evaluate.probes import FeatureCache, Upstream
from robustdistiller.evaluate.rows import ResultRow
from robustdistiller.evaluate.tasks import TaskPack, load_waveforms


def upstream_of(entry: ModelUnderTest) -> Upstream:
    """``entry.model`` as the :class:`Upstream` it is: every loaded model under test has ``extract``,
    which ``ModelUnderTest.model``'s ``nn.Module`` type cannot express."""
    return cast(Upstream, entry.model)


@dataclass(frozen=True)
class Observation:
    """One model under one condition: the test utterances as heard and the model's hidden states."""

    condition: Condition
    wavs: dict[str, np.ndarray]  # uid -> waveform [L_i] float32 16 kHz, under the condition
    features: dict[str, Tensor]  # uid -> hidden states [num_hidden_states, T_i, D] float16


@dataclass
class ScoringContext:
    """The data one evaluation scores every model on.

    Build it with :meth:`build`; the tasks then only hold utterances whose audio could be read.
    """

    cset: ConditionSet
    tasks: list[TaskPack]
    wavs: dict[str, np.ndarray]  # uid -> clean waveform [L_i], every utterance of every task
    cache: FeatureCache  # hidden states on disk, and which of them this evaluation used
    batch_size: int  # utterances per upstream forward
    seed: int

    @classmethod
    def build(
        cls,
        tasks: Sequence[TaskPack],
        cset: ConditionSet,
        *,
        limits: tuple[int, int, int],
        seed: int,
        cache: FeatureCache,
        batch_size: int,
    ) -> ScoringContext:
        """Subset the tasks (``limits`` = max train / val / test items per task, 0 = all; seeded), read
        their audio once and drop the unreadable utterances (recorded in ``cset.report``)."""
        limited = [t.subset(*limits, seed) for t in tasks]
        items = [i for t in limited for i in t.items()]
        wavs = load_waveforms(items, cset.report)
        missing = {i.uid for i in items if i.uid not in wavs}
        return cls(cset, [t.without(missing) for t in limited], wavs, cache, batch_size, seed)

    @property
    def report(self) -> BadFileReport:
        """Inputs that could not be used (shared with the condition set)."""
        return self.cset.report

    @property
    def test_uids(self) -> list[str]:
        """Every task's test utterances, each once, in task order."""
        return list(dict.fromkeys(i.uid for t in self.tasks for i in t.test))

    def features(
        self, entry: ModelUnderTest, uids: Sequence[str], wavs: dict[str, np.ndarray], label: str
    ) -> dict[str, Tensor]:
        """``entry``'s hidden states ``[num_hidden_states, T_i, D]`` of ``wavs[u]`` for each ``u`` in
        ``uids``, from the feature cache under ``label`` (the condition's name in the cache key)."""
        tensors = [torch.from_numpy(wavs[u]) for u in uids]
        feats = self.cache.features(
            upstream_of(entry),
            tensors,
            condition=label,
            model_id=entry.model_id,
            batch_size=self.batch_size,
        )
        return dict(zip(uids, feats))

    def heard(self, condition: Condition) -> dict[str, np.ndarray]:
        """The test utterances under ``condition`` (deterministic per utterance; clean ones unchanged)."""
        return {u: self.cset.corrupt(condition, u, self.wavs[u]) for u in self.test_uids}

    def observe(self, entry: ModelUnderTest, condition: Condition, heard: dict[str, np.ndarray]) -> Observation:
        """``entry`` under ``condition``, ``heard`` being :meth:`heard` of it."""
        label = f"{condition.id}#{self.cset.condition_hash(condition)}"
        return Observation(condition, heard, self.features(entry, list(heard), heard, label))


class Scorer(ABC):
    """One kind of measurement; its rows go to the results table ``name``.

    The runner calls :meth:`score` for every (condition, model), conditions in the outer loop, then
    :meth:`score_model` once per model. A scorer keeps what it needs across calls (trained probes,
    clean references). Both return no rows by default.
    """

    name: ClassVar[str]

    def score(self, entry: ModelUnderTest, seen: Observation, ctx: ScoringContext) -> Sequence[ResultRow]:
        """Rows for ``entry`` under one condition."""
        return []

    def score_model(self, entry: ModelUnderTest, ctx: ScoringContext) -> Sequence[ResultRow]:
        """Rows for ``entry`` that do not depend on a condition."""
        return []
