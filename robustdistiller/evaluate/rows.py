"""Typed result rows: one dataclass per results table that a scorer (or the headline) fills.

Each row's fields are the columns of its table in ``results.json`` and ``tables/<name>.csv``, in the
order they are written, so :meth:`ResultRow.as_dict` gives exactly the record those files hold and
:meth:`ResultRow.from_dict` reads it back. Rows also answer ``row["column"]`` (and ``row.get``, item
assignment): the results files' readers, in and outside the package, address columns by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from robustdistiller.errors import DataError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is 3.11+; the package supports 3.10


class ResultRow:
    """Base of the row dataclasses: record conversion and access by column name."""

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The table's column names, in file order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        """The record written to ``results.json`` / the CSV table (lists copied, not shared)."""
        return {name: _plain(getattr(self, name)) for name in self.columns()}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Self:
        """A row from a results record; unknown columns and missing required ones are refused by name."""
        unknown = sorted(set(record) - set(cls.columns()))
        if unknown:
            raise DataError(f"{cls.__name__}: unknown column(s) {unknown}; columns are {list(cls.columns())}")
        required = [
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in record]
        if missing:
            raise DataError(f"{cls.__name__}: record lacks column(s) {missing} (got {sorted(record)})")
        return cls(**record)

    def _check(self, key: str) -> None:
        if key not in self.columns():
            raise KeyError(f"{type(self).__name__} has no column {key!r}; columns are {list(self.columns())}")

    def __getitem__(self, key: str) -> Any:
        self._check(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._check(key)
        setattr(self, key, value)

    def get(self, key: str, default: Any = None) -> Any:
        """The column's value, ``default`` for a name that is not a column (as ``dict.get``)."""
        return getattr(self, key) if key in self.columns() else default


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass
class ProbeRow(ResultRow):
    """One probe tested under one condition.

    ``degradation`` is how much worse than on clean audio (>= 0 is worse): clean - value for accuracy,
    value - clean for error rate. The training fields are absent (None) in hand-made rows.
    """

    model: str
    task: str
    condition: str
    metric: str  # "accuracy" | "error_rate"
    value: float
    degradation: float
    n: int | None = None  # test utterances
    train_on: str | None = None  # "clean" | "corrupted"
    best_epoch: int | None = None  # 1-based epoch whose weights were kept
    val_metric: float | None = None
    layer_weights: list[float] = field(default_factory=list)  # softmax weight per hidden state


@dataclass
class DistortionRow(ResultRow):
    """Distance of one hidden state (``index_a`` of the model, named ``layer``) on corrupted audio from
    hidden state ``index_b`` of the reference: ``"self_clean"`` (the model on clean audio) or
    ``"teacher_clean"`` (the teacher layer a student head predicts, on clean audio)."""

    model: str
    condition: str
    reference: str
    index_a: int
    index_b: int
    l1: float  # mean absolute difference per element
    cosine: float  # mean cosine similarity per frame
    frames: int  # valid frames compared
    layer: str


@dataclass
class EnhancementRow(ResultRow):
    """Mean scores of a model's enhancement head over ``n`` (clean, noisy) pairs, and of the noisy
    input itself; None where no utterance could be scored."""

    model: str
    dataset: str  # "conditions" (corrupted test audio) or a real paired set ("voicebank_demand")
    condition: str
    n: int
    pesq_wb: float | None
    stoi: float | None
    si_snr: float | None
    noisy_pesq_wb: float | None
    noisy_stoi: float | None
    noisy_si_snr: float | None
    si_snr_improvement: float | None  # si_snr - noisy_si_snr (dB)


@dataclass
class EfficiencyRow(ResultRow):
    """Size and CPU speed of one model's forward pass."""

    model: str
    parameters: int
    macs_per_second: int  # multiply-accumulates per second of audio
    rtf_1_thread: float  # compute time / audio duration, median
    rtf_2_threads: float
    peak_memory_mb: float | None  # None when not measured


@dataclass
class HeadlineRow(ResultRow):
    """Per (model, task): the clean score, its means over the corrupted conditions and the drops.

    ``drop_above_chance`` = 1 - (mean corrupted - chance) / (clean - chance), None when clean <= chance.
    """

    model: str
    task: str
    metric: str
    clean: float | None
    mean_corrupted: float | None
    mean_noise: float | None
    mean_reverb: float | None
    relative_drop: float | None
    chance: float | None
    drop_above_chance: float | None
    noise_drop_above_chance: float | None
    reverb_drop_above_chance: float | None
    parameters: int | None
    rtf_1_thread: float | None
