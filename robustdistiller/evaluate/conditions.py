"""Evaluation conditions: clean, noise types x SNRs, reverberation by RT60 bin, and noise + reverberation.

A :class:`ConditionSet` is materialised deterministically: the noise file, noise segment and RIR used
for an utterance come from a generator seeded by (seed, condition id, utterance id) only, so the same
corrupted audio is produced across runs, processes and models, whatever order utterances arrive in.
Each condition has a readable id (``noise/white/snr+5``) and a hash covering the seed and the exact
noise files / RIRs it draws from, so results and caches can tell two sets apart.

Noise *types* are groups of noise files:
- ``builtin``: each generated noise of ``augment/builtin.py`` (white, pink, brown, hum50, ...) is a type;
- a folder (``folder:PATH`` or just ``PATH``): each sub-folder is a type, or, when the audio sits
  directly in the folder, each file is its own type (named by its stem);
- ``musan:PATH``: each ``<subset>/<source>`` folder of MUSAN (e.g. ``musan/noise/free-sound``);
- ``urbansound:PATH``: each UrbanSound8K class (minus the two classes RobustDistiller's code excludes).

RIRs are grouped into RT60 bins: simulated shoebox rooms aimed at each bin's RT60 (cached on disk),
or real RIR folders whose measured RT60 lies within ``rt60_tolerance`` of a bin.
The corruption arithmetic itself (exact SNR on the unpadded signal, full linear convolution) is
``augment.mixing``; noise-then-reverberation follows the training policy's order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from robustdistiller.augment.builtin import write_builtin_noises
from robustdistiller.augment.mixing import mix_at_snr, reverberate
from robustdistiller.augment.noise import (
    URBANSOUND_CSV,
    NoiseBank,
    NoiseFile,
    index_folder,
    index_musan,
    index_urbansound,
)
from robustdistiller.augment.rir import RIR, RIRBank, SimulatedRIRConfig, index_rir_folder, load_or_simulate
from robustdistiller.data.report import BadFileReport
from robustdistiller.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ConditionKind = Literal["clean", "noise", "reverb", "noise+reverb"]
# Relative spread of the RT60 targets of the rooms simulated for one bin.
_SIMULATION_SPREAD = 0.05


@dataclass
class ConditionConfig:
    """Which conditions to build. Empty lists switch a family off."""

    noises: list[str] = field(default_factory=lambda: ["builtin"])  # builtin | folder:P | P | musan:P | urbansound:P
    noise_types: list[str] = field(default_factory=list)  # keep only these type names (empty: all)
    max_noise_types: int = 0  # keep the first N types in name order (0: all)
    snrs: list[float] = field(default_factory=lambda: [-5.0, 0.0, 5.0, 10.0, 20.0])
    rt60s: list[float] = field(default_factory=lambda: [0.3, 0.6, 0.9, 1.2])  # RT60 bin centres (s)
    rirs: list[str] = field(default_factory=lambda: ["simulated"])  # "simulated" and/or folders of real RIRs
    rirs_per_bin: int = 3  # simulated rooms per RT60 bin
    rt60_tolerance: float = 0.15  # a real RIR joins the bin whose centre is within this (s)
    mixed_snrs: list[float] = field(default_factory=lambda: [5.0])  # noise + reverb: each noise type at these SNRs
    mixed_rt60s: list[float] = field(default_factory=lambda: [0.6])  # ... in rooms of these RT60 bins
    seed: int = 0
    cache_dir: Path | None = None  # built-in noise files and simulated RIRs (default: system temp folder)

    def validate(self) -> None:
        if any(r <= 0 for r in self.rt60s):
            raise ConfigError(f"rt60s must be > 0, got {self.rt60s}")
        if self.max_noise_types < 0:
            raise ConfigError(f"max_noise_types must be >= 0, got {self.max_noise_types}")
        if self.rirs_per_bin < 1:
            raise ConfigError(f"rirs_per_bin must be >= 1, got {self.rirs_per_bin}")
        if self.rt60_tolerance <= 0:
            raise ConfigError(f"rt60_tolerance must be > 0, got {self.rt60_tolerance}")
        unknown = [r for r in self.mixed_rt60s if r not in self.rt60s]
        if unknown:
            raise ConfigError(f"mixed_rt60s {unknown} must be among rt60s {self.rt60s}")
        if (self.snrs or self.mixed_snrs) and not self.noises:
            raise ConfigError("snrs are given but noises is empty (set snrs: [] and mixed_snrs: [] for no noise)")
        if self.rt60s and not self.rirs:
            raise ConfigError("rt60s are given but rirs is empty (set rt60s: [] for no reverberation)")


@dataclass(frozen=True)
class Condition:
    kind: ConditionKind
    noise: str | None = None
    snr_db: float | None = None
    rt60: float | None = None

    @property
    def id(self) -> str:
        parts: list[str] = [self.kind]
        if self.noise is not None:
            parts.append(self.noise)
        if self.snr_db is not None:
            parts.append(f"snr{self.snr_db:+g}")
        if self.rt60 is not None:
            parts.append(f"rt{self.rt60:g}")
        return "/".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "noise": self.noise, "snr_db": self.snr_db, "rt60": self.rt60}


CLEAN = Condition("clean")


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


# ------------------------------------------------------------------------------------ noise types


def _folder_types(files: Sequence[NoiseFile], root_name: str) -> dict[str, list[NoiseFile]]:
    """Sub-folders are types; files directly in the folder are a type each (by stem)."""
    groups: dict[str, list[NoiseFile]] = defaultdict(list)
    for f in files:
        rel = Path(f.name).relative_to(root_name)
        groups[rel.parts[0] if len(rel.parts) > 1 else rel.stem].append(f)
    return groups


def _urbansound_types(root: Path, files: Sequence[NoiseFile]) -> dict[str, list[NoiseFile]]:
    with (root / URBANSOUND_CSV).open(newline="", encoding="utf-8") as fh:
        by_slice = {row["slice_file_name"]: row["class"] for row in csv.DictReader(fh)}
    groups: dict[str, list[NoiseFile]] = defaultdict(list)
    for f in files:
        groups[f"urbansound/{by_slice[f.path.name]}"].append(f)
    return groups


def _musan_types(files: Sequence[NoiseFile]) -> dict[str, list[NoiseFile]]:
    groups: dict[str, list[NoiseFile]] = defaultdict(list)
    for f in files:
        parts = Path(f.name).parts  # musan/<subset>/<source>/<file>
        groups["/".join(parts[:3]) if len(parts) > 3 else "/".join(parts[:2])].append(f)
    return groups


def noise_types(
    sources: Sequence[str], cache_dir: Path, report: BadFileReport, speech: Sequence[np.ndarray] | None = None
) -> dict[str, list[NoiseFile]]:
    """Group the noise files of every source into named types (see the module docstring)."""
    types: dict[str, list[NoiseFile]] = {}
    for source in sources:
        kind, _, arg = source.partition(":")
        if source == "builtin":
            folder = cache_dir / "builtin-noise"
            write_builtin_noises(folder, speech=speech)
            groups = {Path(f.name).stem.removeprefix("builtin_"): [f] for f in index_folder(folder, report=report)}
        elif kind == "musan" and arg:
            groups = _musan_types(index_musan(arg, ("noise",), report=report))
        elif kind == "urbansound" and arg:
            groups = _urbansound_types(Path(arg).resolve(), index_urbansound(arg, report=report))
        else:
            folder = Path(arg if kind == "folder" else source).resolve()
            groups = _folder_types(index_folder(folder, report=report), folder.name)
        clash = sorted(set(groups) & set(types))
        if clash:
            raise ConfigError(f"noise source {source!r} repeats type name(s) {clash}; give distinct sources")
        types.update(groups)
    return types


# ------------------------------------------------------------------------------------ RT60 bins


def _nearest_bin(rt60: float, bins: Sequence[float], tolerance: float) -> float | None:
    if not np.isfinite(rt60) or not bins:
        return None
    best = min(bins, key=lambda b: abs(b - rt60))
    return best if abs(best - rt60) <= tolerance else None


def rirs_by_bin(cfg: ConditionConfig, cache_dir: Path, report: BadFileReport) -> dict[float, list[RIR]]:
    """RIRs per RT60 bin centre, simulated and/or real, in a stable order."""
    bins: dict[float, list[RIR]] = {b: [] for b in cfg.rt60s}
    for source in cfg.rirs:
        if source == "simulated":
            for centre in cfg.rt60s:
                sim = SimulatedRIRConfig(
                    count=cfg.rirs_per_bin,
                    seed=cfg.seed,
                    cache_dir=cache_dir / "rirs",
                    rt60_range=(centre * (1 - _SIMULATION_SPREAD), centre * (1 + _SIMULATION_SPREAD)),
                )
                for rir in load_or_simulate(sim):
                    target = _nearest_bin(rir.rt60, cfg.rt60s, cfg.rt60_tolerance)
                    if target == centre:
                        bins[centre].append(rir)
                    else:
                        log.warning(
                            "simulated RIR %s measured RT60 %.2f s, outside the %.2f s bin; unused",
                            rir.name,
                            rir.rt60,
                            centre,
                        )
            continue
        files = index_rir_folder(source, report=report)
        bank = RIRBank(files, report=report)
        used = 0
        for index, f in enumerate(files):
            try:
                # Channel choice of multi-channel files is seeded per file, so bins are stable.
                rir = bank.get(index, np.random.default_rng([cfg.seed, _stable_int(f.name)]))
            except ValueError as exc:  # AudioError: unreadable/empty/silent file
                report.add(f.path, getattr(exc, "reason", "unreadable"), str(exc))
                continue
            target = _nearest_bin(rir.rt60, cfg.rt60s, cfg.rt60_tolerance)
            if target is not None:
                bins[target].append(rir)
                used += 1
        log.info("%s: %d of %d RIRs fall in the RT60 bins %s", source, used, len(files), cfg.rt60s)
    empty = [b for b, rirs in bins.items() if not rirs]
    if empty:
        raise DataError(
            f"no RIR with an RT60 within {cfg.rt60_tolerance} s of bin(s) {empty} in {cfg.rirs}; "
            "add 'simulated' to rirs or drop those bins"
        )
    return bins


# ---------------------------------------------------------------------------------- the set


class ConditionSet:
    """Conditions plus the noise and RIR material they draw from; see the module docstring."""

    def __init__(
        self,
        conditions: Sequence[Condition],
        noises: dict[str, list[NoiseFile]],
        rirs: dict[float, list[RIR]],
        seed: int,
        report: BadFileReport | None = None,
    ) -> None:
        ids = [c.id for c in conditions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate conditions in {ids}")
        for c in conditions:
            if c.noise is not None and c.noise not in noises:
                raise DataError(f"condition {c.id}: no noise type {c.noise!r} (types: {sorted(noises)})")
            if c.rt60 is not None and not rirs.get(c.rt60):
                raise DataError(f"condition {c.id}: no RIRs in the {c.rt60} s bin")
        self.conditions = list(conditions)
        self.noises = noises
        self.rirs = rirs
        self.seed = seed
        self.report = report if report is not None else BadFileReport()
        self._banks = {name: NoiseBank(files, report=self.report) for name, files in noises.items()}

    @classmethod
    def build(
        cls, cfg: ConditionConfig, *, speech: Sequence[np.ndarray] | None = None, report: BadFileReport | None = None
    ) -> ConditionSet:
        """Index / generate the material of ``cfg`` and list its conditions in a fixed order.

        ``speech`` (waveforms) adds a babble type to the built-in noises.
        """
        report = report if report is not None else BadFileReport()
        cache_dir = Path(cfg.cache_dir or Path(tempfile.gettempdir()) / "robustdistiller-conditions")
        needs_noise = bool(cfg.snrs or (cfg.mixed_snrs and cfg.mixed_rt60s))
        types = noise_types(cfg.noises, cache_dir, report, speech) if needs_noise else {}
        if cfg.noise_types:
            missing = [t for t in cfg.noise_types if t not in types]
            if missing:
                raise ConfigError(f"noise_types {missing} not found; available: {sorted(types)}")
            types = {t: types[t] for t in cfg.noise_types}
        if cfg.max_noise_types:
            types = {t: types[t] for t in sorted(types)[: cfg.max_noise_types]}
        needs_rirs = bool(cfg.rt60s)
        rirs = rirs_by_bin(cfg, cache_dir, report) if needs_rirs else {}
        conditions = [CLEAN]
        conditions += [Condition("noise", t, float(s)) for t in sorted(types) for s in cfg.snrs]
        conditions += [Condition("reverb", rt60=float(r)) for r in cfg.rt60s]
        conditions += [
            Condition("noise+reverb", t, float(s), float(r))
            for t in sorted(types)
            for s in cfg.mixed_snrs
            for r in cfg.mixed_rt60s
        ]
        return cls(conditions, types, rirs, cfg.seed, report)

    def __iter__(self) -> Iterator[Condition]:
        return iter(self.conditions)

    def __len__(self) -> int:
        return len(self.conditions)

    def get(self, condition_id: str) -> Condition:
        for c in self.conditions:
            if c.id == condition_id:
                return c
        raise KeyError(f"no condition {condition_id!r}; conditions: {[c.id for c in self.conditions]}")

    def sources(self, condition: Condition) -> dict[str, list[str]]:
        """Names of the noise files and RIRs ``condition`` draws from."""
        return {
            "noise_files": [f.name for f in self.noises[condition.noise]] if condition.noise else [],
            "rirs": [r.name for r in self.rirs[condition.rt60]] if condition.rt60 is not None else [],
        }

    def condition_hash(self, condition: Condition) -> str:
        """Stable hash of (seed, condition, the material it draws from)."""
        key = {"seed": self.seed, **condition.to_dict(), **self.sources(condition)}
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """Hash of the whole set (every condition's hash, in order)."""
        return hashlib.sha1("".join(self.condition_hash(c) for c in self).encode()).hexdigest()[:16]

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for c in self:
            rirs = self.rirs.get(c.rt60, []) if c.rt60 is not None else []
            measured = [r.rt60 for r in rirs if np.isfinite(r.rt60)]
            out.append(
                {
                    **c.to_dict(),
                    "hash": self.condition_hash(c),
                    "num_noise_files": len(self.noises[c.noise]) if c.noise else 0,
                    "num_rirs": len(rirs),
                    "mean_measured_rt60": float(np.mean(measured)) if measured else None,
                }
            )
        return out

    def rng_for(self, tag: str, uid: str) -> np.random.Generator:
        """The generator of one (tag, utterance): independent of call order and of other utterances."""
        return np.random.default_rng([self.seed, _stable_int(tag), _stable_int(uid)])

    def rng(self, condition: Condition, uid: str) -> np.random.Generator:
        return self.rng_for(condition.id, uid)

    def corrupt(self, condition: Condition, uid: str, wav: np.ndarray) -> np.ndarray:
        """``wav`` (1-D float32, 16 kHz) under ``condition``; the clean condition returns it unchanged."""
        if condition.kind == "clean":
            return wav
        rng = self.rng(condition, uid)
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]
        lengths = torch.tensor([x.shape[1]])
        if condition.noise is not None:
            noise, _ = self._banks[condition.noise].draw(x.shape[1], rng)
            x = mix_at_snr(x, torch.from_numpy(noise)[None], lengths, torch.tensor([condition.snr_db]))
        if condition.rt60 is not None:
            rirs = self.rirs[condition.rt60]
            h = torch.from_numpy(rirs[int(rng.integers(len(rirs)))].samples)[None]
            x = reverberate(x, lengths, h, torch.tensor([h.shape[1]]))
        return x[0].numpy().astype(np.float32, copy=False)
