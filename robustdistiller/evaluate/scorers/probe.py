"""Probe scorer: one probe per (model, task), trained once on clean (or corrupted) training features and
tested under every condition. What differs between task kinds lives in the task's strategy
(:mod:`robustdistiller.evaluate.probe_tasks`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, cast

import numpy as np
from torch import Tensor

from robustdistiller.config import from_dict
from robustdistiller.errors import ConfigError
from robustdistiller.evaluate.conditions import CLEAN, ConditionSet
from robustdistiller.evaluate.models import ModelUnderTest
from robustdistiller.evaluate.probe_tasks import Labels
from robustdistiller.evaluate.probes import (
    ProbeConfig,
    TrainedProbe,
    evaluate_probe,
    train_probe,
)
from robustdistiller.evaluate.rows import ProbeRow
from robustdistiller.evaluate.scorers.base import Observation, Scorer, ScoringContext
from robustdistiller.evaluate.tasks import TaskItem, TaskPack

TrainOn = Literal["clean", "corrupted"]


def _labels(items: Sequence[TaskItem]) -> Labels:
    """The labels of ``items``. One pack's labels are all class ids (utterance tasks) or all token tuples
    (CTC tasks), which the per-item ``Label`` union cannot say; train_probe/evaluate_probe check them."""
    return cast(Labels, [i.label for i in items])


def training_mix(
    cset: ConditionSet, uids: Sequence[str], wavs: dict[str, np.ndarray], seed: int
) -> dict[str, np.ndarray]:
    """Each training utterance under one corrupted condition chosen from (seed, utterance id).

    Args:
        wavs: uid -> clean waveform ``[L_i]``.
    Returns:
        uid -> corrupted waveform ``[L_i]`` for each of ``uids``.
    """
    corrupted = [c for c in cset if c.kind != "clean"]
    if not corrupted:
        raise ConfigError("train_on='corrupted' needs at least one corrupted condition")
    out = {}
    for u in uids:
        pick = corrupted[int(cset.rng_for(f"train-mix/{seed}", u).integers(len(corrupted)))]
        out[u] = cset.corrupt(pick, u, wavs[u])
    return out


class ProbeScorer(Scorer):
    """Probe score (accuracy / error rate) per (model, task, condition) and its degradation from clean.

    Probes are trained on a model's first observation; the clean condition, which a condition set
    lists first, gives the reference of the degradation (a condition scored before it counts as 0).
    """

    name = "probes"

    def __init__(self, config: ProbeConfig, *, seed: int, train_on: TrainOn) -> None:
        self.config, self.seed, self.train_on = config, seed, train_on
        self._trained: dict[str, dict[str, TrainedProbe]] = {}  # model -> task -> probe
        self._clean: dict[tuple[str, str], float] = {}  # (model, task) -> clean score

    def score(self, entry: ModelUnderTest, seen: Observation, ctx: ScoringContext) -> list[ProbeRow]:
        if entry.name not in self._trained:
            self._trained[entry.name] = self._train(entry, ctx)
        return [self._row(entry, task, seen, self._trained[entry.name][task.name]) for task in ctx.tasks]

    def _train_features(self, entry: ModelUnderTest, ctx: ScoringContext) -> dict[str, Tensor]:
        uids = list(dict.fromkeys(i.uid for t in ctx.tasks for i in (*t.train, *t.val)))
        if self.train_on == "clean":
            return ctx.features(entry, uids, ctx.wavs, CLEAN.id)
        mixed = training_mix(ctx.cset, uids, ctx.wavs, self.seed)
        return ctx.features(entry, uids, mixed, f"train-mix/{ctx.cset.fingerprint()}/{self.seed}")

    def _train(self, entry: ModelUnderTest, ctx: ScoringContext) -> dict[str, TrainedProbe]:
        """task name -> probe trained on ``entry``'s training features, validated on its validation split."""
        feats = self._train_features(entry, ctx)
        trained = {}
        for task in ctx.tasks:
            cfg = from_dict(ProbeConfig, {**dataclasses.asdict(self.config), "task": task.kind, "seed": self.seed})
            trained[task.name] = train_probe(
                [feats[i.uid] for i in task.train],
                _labels(task.train),
                [feats[i.uid] for i in task.val],
                _labels(task.val),
                cfg,
                num_classes=len(task.classes),
            )
        return trained

    def _row(self, entry: ModelUnderTest, task: TaskPack, seen: Observation, probe: TrainedProbe) -> ProbeRow:
        scored = evaluate_probe(probe, [seen.features[i.uid] for i in task.test], _labels(task.test))
        value = float(scored[task.metric])
        key = (entry.name, task.name)
        if seen.condition.kind == "clean":
            self._clean[key] = value
        return ProbeRow(
            model=entry.name,
            task=task.name,
            condition=seen.condition.id,
            metric=task.metric,
            value=value,
            degradation=task.probe_task.degradation(self._clean.get(key, value), value),
            n=int(scored["n"]),
            train_on=self.train_on,
            best_epoch=probe.best_epoch,
            val_metric=probe.val_metric,
            layer_weights=[round(w, 4) for w in probe.layer_weights],
        )
