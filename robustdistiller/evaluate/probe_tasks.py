"""Probe tasks as strategies: what differs between recognising one label per utterance and a token
sequence per utterance (CTC), so probe training, scoring and the results never branch on the kind.

A strategy owns the probe's head (pooled vs frame features), its loss, how predictions are read from
the head's output, the metric and its direction, the chance level and the label checks. Look one up
by the task kind (``probe_task("ctc")``, the ``kind`` of a task pack and of ``ProbeConfig.task``) or by
the metric a results row names (``probe_task_for_metric("accuracy")``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistiller.errors import ConfigError, DataError
from robustdistiller.evaluate.heads import CTCProbe, UtteranceClassifier
from robustdistiller.evaluate.metrics import accuracy, error_rate

log = logging.getLogger(__name__)

BLANK = "<blank>"  # CTC vocabulary entry 0
Labels = Sequence[int] | Sequence[Sequence[int]]


class ProbeTask(ABC):
    """One kind of probe task (see the module docstring)."""

    kind: ClassVar[str]  # task-pack kind and ProbeConfig.task
    metric: ClassVar[str]  # results column value: the metric's name
    metric_label: ClassVar[str]  # the metric in words, for logs and plots
    higher_is_better: ClassVar[bool]

    @abstractmethod
    def check_labels(self, labels: Labels, name: str) -> None:
        """Raise ``ValueError`` naming ``name[i]`` for the first label this task cannot learn."""

    @abstractmethod
    def largest_label(self, labels: Labels) -> int:
        """The largest class / token index among ``labels`` (0 when there is none)."""

    def check_training_set(self, feats: Sequence[Tensor], labels: Labels) -> None:  # noqa: B027 - optional check, no-op by default
        """Warn about training utterances the loss cannot use (nothing to check by default).

        Args:
            feats: per utterance ``[L, T_i, D]``.
            labels: one label per utterance.
        """

    def check_classes(self, classes: Sequence[str], task_name: str) -> None:  # noqa: B027 - optional check, no-op by default
        """Raise ``ValueError`` when a task pack's class list does not suit this task (any list does by default)."""

    def condense(self, feats: Sequence[Tensor], layer_norm: bool) -> Sequence[Tensor]:
        """The features reduced to what this task's head needs, with the same outputs (default: as given)."""
        return feats

    @abstractmethod
    def head(self, num_layers: int, dim: int, num_classes: int, hidden: int, layer_norm: bool) -> nn.Module:
        """A fresh head mapping ``([B, L, T, D], frame lengths [B])`` to this task's output."""

    @abstractmethod
    def loss(self, out: Tensor, frame_lengths: Tensor, labels: Sequence[Any]) -> Tensor:
        """Scalar training loss of a batch of head outputs against its labels."""

    @abstractmethod
    def decode(self, out: Tensor, frame_lengths: Tensor) -> list[Any]:
        """One prediction per utterance from a batch of head outputs."""

    @abstractmethod
    def score(self, predictions: Sequence[Any], labels: Labels) -> float:
        """The metric of ``predictions`` against ``labels``."""

    @abstractmethod
    def chance(self, labels: Labels) -> float | None:
        """The metric of the best constant answer on ``labels``, None when it is not defined."""

    def improvement_key(self, metric: float) -> float:
        """``metric`` signed so that larger is better (for early stopping)."""
        return metric if self.higher_is_better else -metric

    def degradation(self, clean: float, value: float) -> float:
        """How much worse ``value`` is than the ``clean`` score (>= 0 is worse)."""
        return clean - value if self.higher_is_better else value - clean

    def relative_drop(self, clean: float | None, corrupted: float | None) -> float | None:
        """:meth:`degradation` as a share of the clean score; None when either is missing or clean <= 0."""
        if clean is None or corrupted is None or clean <= 0:
            return None
        return self.degradation(clean, corrupted) / clean


class UtteranceTask(ProbeTask):
    """One class per utterance: mean-pooled features, linear (or MLP) classifier, cross-entropy, accuracy."""

    kind = "utterance"
    metric = "accuracy"
    metric_label = "accuracy"
    higher_is_better = True

    def check_labels(self, labels: Labels, name: str) -> None:
        for i, lab in enumerate(labels):
            if not isinstance(lab, int) or lab < 0:
                raise DataError(f"{name}[{i}]: utterance labels must be ints >= 0, got {lab!r}")

    def largest_label(self, labels: Labels) -> int:
        return max(cast(Sequence[int], labels), default=0)

    def condense(self, feats: Sequence[Tensor], layer_norm: bool) -> Sequence[Tensor]:
        """Each layer's frame mean, ``[L, 1, D]`` fp32. The head's weighted layer sum and its frame mean
        are both linear, so they commute: pooling once gives the same logits (up to float rounding)
        and spares every epoch the padding and the per-frame sum. A per-frame layer norm does not
        commute, so with ``layer_norm`` the frames stay."""
        return feats if layer_norm else [f.float().mean(1, keepdim=True) for f in feats]

    def head(self, num_layers: int, dim: int, num_classes: int, hidden: int, layer_norm: bool) -> nn.Module:
        return UtteranceClassifier(num_layers, dim, num_classes, hidden, layer_norm)

    def loss(self, out: Tensor, frame_lengths: Tensor, labels: Sequence[Any]) -> Tensor:
        """``out``: logits [B, C]; ``labels``: B class ids."""
        return F.cross_entropy(out, torch.tensor(labels, device=out.device))

    def decode(self, out: Tensor, frame_lengths: Tensor) -> list[Any]:
        return out.argmax(-1).tolist()

    def score(self, predictions: Sequence[Any], labels: Labels) -> float:
        return accuracy(predictions, labels)

    def chance(self, labels: Labels) -> float | None:
        """Accuracy of always answering the most frequent class of ``labels``."""
        return max(Counter(cast(Sequence[int], labels)).values()) / len(labels)


class CTCTask(ProbeTask):
    """A token sequence per utterance: frame features, BiLSTM (or linear) CTC head, character error rate."""

    kind = "ctc"
    metric = "error_rate"
    metric_label = "error rate"
    higher_is_better = False

    def check_labels(self, labels: Labels, name: str) -> None:
        for i, lab in enumerate(cast(Sequence[Any], labels)):  # checked here: anything may come in
            if isinstance(lab, (str, bytes)) or not all(isinstance(t, int) and t >= 1 for t in lab):
                raise DataError(f"{name}[{i}]: CTC labels must be sequences of ints >= 1 (0 is blank), got {lab!r}")

    def largest_label(self, labels: Labels) -> int:
        return max((t for lab in cast(Sequence[Sequence[int]], labels) for t in lab), default=0)

    def check_training_set(self, feats: Sequence[Tensor], labels: Labels) -> None:  # noqa: B027 - optional check, no-op by default
        short = sum(f.shape[1] < len(lab) for f, lab in zip(feats, cast(Sequence[Sequence[int]], labels)))
        if short:
            log.warning("%d training utterances have fewer frames than labels; CTC ignores them", short)

    def check_classes(self, classes: Sequence[str], task_name: str) -> None:  # noqa: B027 - optional check, no-op by default
        if not classes or classes[0] != BLANK:
            raise DataError(f"task {task_name!r}: a CTC vocabulary must start with {BLANK!r}")

    def head(self, num_layers: int, dim: int, num_classes: int, hidden: int, layer_norm: bool) -> nn.Module:
        return CTCProbe(num_layers, dim, num_classes, hidden, layer_norm)

    def loss(self, out: Tensor, frame_lengths: Tensor, labels: Sequence[Any]) -> Tensor:
        """``out``: log-probabilities [B, T, C]; ``labels``: B token sequences (no blanks)."""
        targets = torch.tensor([t for lab in labels for t in lab], dtype=torch.long, device=out.device)
        target_lengths = torch.tensor([len(lab) for lab in labels], device=out.device)
        # zero_infinity: an utterance too short for its transcript contributes nothing instead of inf.
        return F.ctc_loss(out.transpose(0, 1), targets, frame_lengths, target_lengths, blank=0, zero_infinity=True)

    def decode(self, out: Tensor, frame_lengths: Tensor) -> list[Any]:
        return CTCProbe.greedy_decode(out, frame_lengths)

    def score(self, predictions: Sequence[Any], labels: Labels) -> float:
        return error_rate(predictions, cast(Sequence[Sequence[int]], labels))

    def chance(self, labels: Labels) -> float | None:
        return None  # no constant transcript is a meaningful floor for an error rate


PROBE_TASKS: dict[str, ProbeTask] = {task.kind: task for task in (UtteranceTask(), CTCTask())}


def probe_task(kind: str) -> ProbeTask:
    """The strategy of a task kind (``"utterance"`` or ``"ctc"``)."""
    try:
        return PROBE_TASKS[kind]
    except KeyError:
        raise ConfigError(f"unknown probe task kind {kind!r}; kinds: {sorted(PROBE_TASKS)}") from None


def probe_task_for_metric(metric: str) -> ProbeTask:
    """The strategy whose metric a results row names (``"accuracy"`` or ``"error_rate"``)."""
    for task in PROBE_TASKS.values():
        if task.metric == metric:
            return task
    raise ConfigError(f"unknown probe metric {metric!r}; metrics: {sorted(t.metric for t in PROBE_TASKS.values())}")
