"""The evaluation's results: one JSON document (``results.json``) plus flat CSV tables.

Schema (``SCHEMA_VERSION`` 1; every list holds flat rows so each one is also a CSV table; the rows of
probes, distortion, enhancement, efficiency and headline are typed in memory, see
:mod:`robustdistiller.evaluate.rows`, and written as these records, columns in this order)::

    schema            "robustdistiller.evaluation"
    version           1
    created           ISO-8601 time; package_version; seed; train_on ("clean" | "corrupted"); quick
    condition_set     {"fingerprint": hash of every condition's hash, "seed": int}
    models            [{name, path, kind ("student" | "teacher"), format, teacher, parameters,
                        num_hidden_states, has_enhancement}]
    conditions        [{id, kind, noise, snr_db, rt60, hash, num_noise_files, num_rirs, mean_measured_rt60}]
    tasks             [{name, kind, metric, num_classes, classes, splits {train, val, test}, description, notes}]
    probes            [{model, task, condition, metric, value, degradation, n, train_on, best_epoch,
                        val_metric, layer_weights}]    degradation = how much worse than clean (>= 0 is worse):
                                                       clean - value for accuracy, value - clean for error rate
    distortion        [{model, condition, reference, index_a, index_b, l1, cosine, frames, layer}]
                        reference: "self_clean" (model(corrupted) vs model(clean), every hidden state) or
                        "teacher_clean" (student heads on corrupted audio vs the teacher's target layers on
                        clean audio; for a teacher, its own layers)
    enhancement       [{model, dataset, condition, n, pesq_wb, stoi, si_snr, noisy_pesq_wb, noisy_stoi,
                        noisy_si_snr, si_snr_improvement}]    means over utterances (None when unscorable)
    efficiency        [{model, parameters, macs_per_second, rtf_1_thread, rtf_2_threads, peak_memory_mb}]
    headline          [{model, task, metric, clean, mean_corrupted, mean_noise, mean_reverb,
                        relative_drop, chance, drop_above_chance, noise_drop_above_chance,
                        reverb_drop_above_chance, parameters, rtf_1_thread}]
                        drop_above_chance = 1 - (mean corrupted - chance) / (clean - chance), None when
                        clean <= chance (a model at chance has nothing to lose)
    skipped           [{path, reason, detail}]    inputs that could not be used, with the reason
    timings_s         {stage: seconds}
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustdistiller import __version__
from robustdistiller.atomic import atomic_write
from robustdistiller.errors import DataError
from robustdistiller.evaluate.probe_tasks import probe_task_for_metric
from robustdistiller.evaluate.rows import (
    DistortionRow,
    EfficiencyRow,
    EnhancementRow,
    HeadlineRow,
    ProbeRow,
    ResultRow,
)

SCHEMA_NAME = "robustdistiller.evaluation"
SCHEMA_VERSION = 1
TABLES = ("models", "conditions", "tasks", "probes", "distortion", "enhancement", "efficiency", "headline", "skipped")

Row = dict[str, Any]
# Tables of typed rows (the others describe the setup and stay plain records).
ROW_TYPES: dict[str, type[ResultRow]] = {
    "probes": ProbeRow,
    "distortion": DistortionRow,
    "enhancement": EnhancementRow,
    "efficiency": EfficiencyRow,
    "headline": HeadlineRow,
}


@dataclass
class Results:
    """One evaluation's results (see the module docstring); the scorers' tables hold typed rows.

    Records (dicts) given for a typed table, as read from ``results.json``, become rows of its type.
    """

    seed: int
    train_on: str
    quick: bool
    condition_fingerprint: str = ""
    models: list[Row] = field(default_factory=list)
    conditions: list[Row] = field(default_factory=list)
    tasks: list[Row] = field(default_factory=list)
    probes: list[ProbeRow] = field(default_factory=list)
    distortion: list[DistortionRow] = field(default_factory=list)
    enhancement: list[EnhancementRow] = field(default_factory=list)
    efficiency: list[EfficiencyRow] = field(default_factory=list)
    headline: list[HeadlineRow] = field(default_factory=list)
    skipped: list[Row] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    package_version: str = __version__

    def __post_init__(self) -> None:
        for name, row_type in ROW_TYPES.items():
            setattr(self, name, [r if isinstance(r, row_type) else row_type.from_dict(r) for r in getattr(self, name)])

    def add(self, table: str, rows: Sequence[ResultRow]) -> None:
        """Append ``rows`` to a typed table, refusing a row of another type."""
        row_type = ROW_TYPES.get(table)
        if row_type is None:
            raise ValueError(f"{table!r} is not a table of typed rows; tables: {sorted(ROW_TYPES)}")
        wrong = [type(r).__name__ for r in rows if not isinstance(r, row_type)]
        if wrong:
            raise TypeError(f"table {table!r} holds {row_type.__name__} rows, got {sorted(set(wrong))}")
        getattr(self, table).extend(rows)

    def records(self, table: str) -> list[Row]:
        """The table as the plain records written to the results files."""
        return [r.as_dict() if isinstance(r, ResultRow) else r for r in getattr(self, table)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            "created": self.created,
            "package_version": self.package_version,
            "seed": self.seed,
            "train_on": self.train_on,
            "quick": self.quick,
            "condition_set": {"fingerprint": self.condition_fingerprint, "seed": self.seed},
            **{name: self.records(name) for name in TABLES},
            "timings_s": self.timings_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Results:
        if data.get("schema") != SCHEMA_NAME:
            raise DataError(f"not an evaluation results document (schema {data.get('schema')!r})")
        if data.get("version") != SCHEMA_VERSION:
            raise DataError(f"results schema version {data.get('version')} is not the supported {SCHEMA_VERSION}")
        missing = [k for k in (*TABLES, "seed", "train_on", "quick") if k not in data]
        if missing:
            raise DataError(f"results document lacks {missing}")
        return cls(
            seed=data["seed"],
            train_on=data["train_on"],
            quick=data["quick"],
            condition_fingerprint=data.get("condition_set", {}).get("fingerprint", ""),
            created=data.get("created", ""),
            package_version=data.get("package_version", ""),
            timings_s=data.get("timings_s", {}),
            **{name: data[name] for name in TABLES},
        )

    @classmethod
    def read(cls, path: str | Path) -> Results:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file not found: {path}")
        return cls.from_dict(json.loads(path.read_text()))

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``results.json`` and one CSV per non-empty table under ``out_dir/tables``; returns the paths."""
        out_dir = Path(out_dir)
        (out_dir / "tables").mkdir(parents=True, exist_ok=True)
        paths = {"json": out_dir / "results.json"}
        text = json.dumps(_finite(self.to_dict()), indent=1) + "\n"
        atomic_write(paths["json"], lambda fh: fh.write(text.encode()))
        for name in TABLES:
            rows = self.records(name)
            if rows:
                paths[name] = write_csv(out_dir / "tables" / f"{name}.csv", rows)
        return paths


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_csv(path: Path, rows: list[Row]) -> Path:
    """Rows with possibly different keys -> one CSV (union of columns, first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in _finite(row).items()})
    return atomic_write(path, lambda fh: fh.write(buffer.getvalue().encode("utf-8")))


def mean_of(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values, None when there are none (unscorable rows do not count)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def drop_above_chance(clean: float | None, corrupted: float | None, chance: float | None) -> float | None:
    """``1 - (corrupted - chance) / (clean - chance)``: the share of the above-chance accuracy that
    corruption takes away (0 = none, 1 = all of it). Measured above chance so that a model near chance
    cannot look robust; None when any input is missing or ``clean <= chance``."""
    if clean is None or corrupted is None or chance is None or clean <= chance:
        return None
    return 1.0 - (corrupted - chance) / (clean - chance)


def headline_rows(results: Results) -> list[HeadlineRow]:
    """Per (model, task): clean score, mean over corrupted conditions (all / noise / reverberation),
    relative drop from clean (plain and above chance), size and speed."""
    kinds = {c["id"]: c["kind"] for c in results.conditions}
    chances = {t["name"]: t.get("chance") for t in results.tasks}
    eff = {e.model: e for e in results.efficiency}
    rows = []
    for model, task in dict.fromkeys((p.model, p.task) for p in results.probes):
        probes = [p for p in results.probes if p.model == model and p.task == task]
        rows.append(_headline_row(model, task, probes, kinds, chances.get(task), eff.get(model)))
    return rows


def _headline_row(
    model: str,
    task: str,
    probes: list[ProbeRow],
    kinds: dict[str, str],
    chance: float | None,
    eff: EfficiencyRow | None,
) -> HeadlineRow:
    """The headline of one (model, task) from its probe rows (one per condition)."""
    strategy = probe_task_for_metric(probes[0].metric)
    clean = next((p.value for p in probes if p.condition == "clean"), None)
    mean_corrupted = mean_of([p.value for p in probes if p.condition != "clean"])
    noise = mean_of([p.value for p in probes if kinds.get(p.condition) == "noise"])
    reverb = mean_of([p.value for p in probes if kinds.get(p.condition) == "reverb"])
    # Drops above chance read "higher is better"; an error rate has no chance level.
    chance = chance if strategy.higher_is_better else None
    return HeadlineRow(
        model=model,
        task=task,
        metric=strategy.metric,
        clean=clean,
        mean_corrupted=mean_corrupted,
        mean_noise=noise,
        mean_reverb=reverb,
        relative_drop=strategy.relative_drop(clean, mean_corrupted),
        chance=chance,
        drop_above_chance=drop_above_chance(clean, mean_corrupted, chance),
        noise_drop_above_chance=drop_above_chance(clean, noise, chance),
        reverb_drop_above_chance=drop_above_chance(clean, reverb, chance),
        parameters=None if eff is None else eff.parameters,
        rtf_1_thread=None if eff is None else eff.rtf_1_thread,
    )
