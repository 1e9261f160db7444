"""The robustness evaluation: models x conditions -> probes, distortion, enhancement, efficiency, report.

For each model the hidden states of every utterance are extracted once per condition (cached on
disk by content: model weights, condition, audio), then
- probes (one per task) are trained on clean (or corrupted) training features and tested under every
  condition;
- distortion rows compare every hidden state under corruption with the model's own clean output,
  and a student's prediction heads with the teacher layers they predict (teacher on clean audio);
- a model carrying an enhancement head is scored with PESQ-wb, STOI and SI-SNR improvement per
  corrupted condition, and on real noisy/clean pairs (VoiceBank+DEMAND) when given;
- efficiency: parameters, MACs per second of audio, real-time factor at 1 and 2 threads, peak memory.
Everything lands in ``results.json`` (+ CSV tables), ``report.md`` / ``report.html`` and PNG plots.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from robustdistiller.config import from_dict
from robustdistiller.data.audio import SAMPLE_RATE, AudioError, load_audio
from robustdistiller.data.report import BadFileReport
from robustdistiller.errors import ConfigError, DataError, UsageError
from robustdistiller.evaluate.conditions import CLEAN, Condition, ConditionConfig, ConditionSet
from robustdistiller.evaluate.distortion import DistortionMeter
from robustdistiller.evaluate.efficiency import count_macs, peak_memory_mb, real_time_factor
from robustdistiller.evaluate.metrics import pesq_wb, si_snr, stoi
from robustdistiller.evaluate.models import (
    ModelUnderTest,
    default_names,
    load_model_under_test,
    load_teacher_under_test,
)
from robustdistiller.evaluate.probes import ProbeConfig, TrainedProbe, cached_features, evaluate_probe, train_probe
from robustdistiller.evaluate.report import Block, write_report
from robustdistiller.evaluate.results import Results, headline_rows, mean_of
from robustdistiller.evaluate.tasks import TaskPack, load_waveforms

log = logging.getLogger(__name__)

TrainOn = Literal["clean", "corrupted"]


@dataclass
class EvaluateOptions:
    """Sizes and switches of one evaluation run (``quick_options()`` gives the CI-sized preset)."""

    max_train: int = 0  # per task and split; 0 = every utterance
    max_val: int = 0
    max_test: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    batch_size: int = 8  # utterances per upstream forward
    max_distortion: int = 64  # test utterances compared per condition (0 = all)
    max_enhancement: int = 16  # utterances enhanced per condition (PESQ/STOI are slow)
    efficiency: bool = True
    rtf_seconds: float = 10.0
    rtf_repeats: int = 3
    measure_memory: bool = True
    voicebank: Path | None = None  # folder with clean/ and noisy/ (same file names)
    evaluate_teacher: bool = True  # also probe the teacher (the upper bound)
    cache_dir: Path | None = None  # feature cache (default: <out_dir>/cache)

    def validate(self) -> None:
        if min(self.max_train, self.max_val, self.max_test, self.max_distortion) < 0:
            raise ConfigError("max_* limits must be >= 0")
        if self.batch_size < 1 or self.max_enhancement < 0 or self.rtf_seconds <= 0 or self.rtf_repeats < 1:
            raise ConfigError("batch_size and rtf_repeats must be >= 1, max_enhancement >= 0, rtf_seconds > 0")


def quick_options(**overrides: object) -> EvaluateOptions:
    """Small subsets, short probe training, no separate memory process: seconds instead of minutes."""
    base = {"max_train": 48, "max_val": 16, "max_test": 24, "probe": {"epochs": 8, "patience": 3},
            "max_distortion": 16, "max_enhancement": 3, "rtf_seconds": 2.0, "rtf_repeats": 1,
            "measure_memory": False}
    return from_dict(EvaluateOptions, {**base, **overrides})


def quick_conditions(**overrides: object) -> ConditionConfig:
    """Two noise types (white and pink of the built-in ones) at three SNRs, two RT60 bins, one
    noise + reverberation mix."""
    base: dict[str, object] = {"snrs": [0.0, 10.0, 20.0], "rt60s": [0.3, 0.6], "rirs_per_bin": 1,
                               "mixed_snrs": [10.0], "mixed_rt60s": [0.3]}
    if overrides.get("noises", ["builtin"]) == ["builtin"]:
        base["noise_types"] = ["white", "pink"]
    else:
        base["max_noise_types"] = 2
    return from_dict(ConditionConfig, {**base, **overrides})


# ------------------------------------------------------------------------------ helpers


def _features(mut: ModelUnderTest, uids: Sequence[str], wavs: dict[str, np.ndarray], label: str,
              cache_dir: Path, batch_size: int) -> dict[str, Tensor]:
    tensors = [torch.from_numpy(wavs[u]) for u in uids]
    feats = cached_features(mut.model, tensors, cache_dir, condition=label, model_id=mut.model_id,
                            batch_size=batch_size)
    return dict(zip(uids, feats))


def _corrupted(cset: ConditionSet, condition: Condition, uids: Sequence[str],
               wavs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {u: cset.corrupt(condition, u, wavs[u]) for u in uids}


def _training_mix(cset: ConditionSet, uids: Sequence[str], wavs: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Each training utterance under one corrupted condition chosen from (seed, utterance id)."""
    corrupted = [c for c in cset if c.kind != "clean"]
    if not corrupted:
        raise ConfigError("train_on='corrupted' needs at least one corrupted condition")
    out = {}
    for u in uids:
        pick = corrupted[int(cset.rng_for(f"train-mix/{seed}", u).integers(len(corrupted)))]
        out[u] = cset.corrupt(pick, u, wavs[u])
    return out


def _padded(feats: Sequence[Tensor], layer: int, frames: Sequence[int]) -> Tensor:
    """[B, T, D] float32 batch of one hidden state from per-utterance [L, T_i, D] features."""
    out = torch.zeros(len(feats), max(frames), feats[0].shape[-1])
    for row, (f, n) in enumerate(zip(feats, frames)):
        out[row, :n] = f[layer, :n].float()
    return out


def _distortion_rows(mut: ModelUnderTest, condition: Condition, corrupted: dict[str, Tensor],
                     own_clean: dict[str, Tensor] | None, teacher_clean: dict[str, Tensor] | None,
                     teacher_pairs: list[tuple[int, int]] | None, chunk: int = 16) -> list[dict]:
    """Rows for one (model, condition) over the utterances in ``corrupted`` (features [L, T, D])."""
    comparisons = []
    if own_clean is not None and condition.kind != "clean":
        comparisons.append(("self_clean", own_clean, [(i, i) for i in range(len(mut.layer_names))]))
    if teacher_clean is not None and teacher_pairs:
        comparisons.append(("teacher_clean", teacher_clean, teacher_pairs))
    rows = []
    uids = list(corrupted)
    for reference, other, pairs in comparisons:
        meter = DistortionMeter([(k, k) for k in range(len(pairs))])
        for start in range(0, len(uids), chunk):
            a = [corrupted[u] for u in uids[start:start + chunk]]
            b = [other[u] for u in uids[start:start + chunk]]
            # Teacher and student CNNs may differ by a frame at the end: compare the common span.
            frames = [min(x.shape[1], y.shape[1]) for x, y in zip(a, b)]
            meter.update([_padded(a, i, frames) for i, _ in pairs], [_padded(b, j, frames) for _, j in pairs],
                         torch.tensor(frames))
        for row, (i, j) in zip(meter.rows(model=mut.name, condition=condition.id, reference=reference), pairs):
            rows.append({**row, "index_a": i, "index_b": j, "layer": mut.layer_names[i]})
    return rows


@torch.no_grad()
def _enhance(mut: ModelUnderTest, noisy: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(noisy)[None]
    lengths = torch.tensor([x.shape[1]])
    out = mut.model(x, lengths)
    # A student's output lists its layers (``hiddens``); a pruned DPHuBERT model's names the last one.
    last = out.hiddens[-1] if hasattr(out, "hiddens") else out.last_hidden_state
    feats = out.cnn_features if mut.enhancement_input == "cnn" else last
    return mut.enhancement.enhance(feats, x, lengths)[0].numpy()  # type: ignore[union-attr]


def enhancement_row(mut: ModelUnderTest, dataset: str, condition: str,
                    pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Mean PESQ-wb / STOI / SI-SNR of the model's enhancement head on (clean, noisy) pairs, and of the
    noisy input itself (unscorable utterances count as missing)."""
    scores: dict[str, list[float | None]] = {k: [] for k in
                                             ("pesq_wb", "stoi", "si_snr", "noisy_pesq_wb", "noisy_stoi", "noisy_si_snr")}
    for clean, noisy in pairs:
        enhanced = _enhance(mut, noisy)
        scores["pesq_wb"].append(pesq_wb(clean, enhanced))
        scores["stoi"].append(stoi(clean, enhanced, SAMPLE_RATE))
        scores["si_snr"].append(si_snr(enhanced, clean))
        scores["noisy_pesq_wb"].append(pesq_wb(clean, noisy))
        scores["noisy_stoi"].append(stoi(clean, noisy, SAMPLE_RATE))
        scores["noisy_si_snr"].append(si_snr(noisy, clean))
    row = {"model": mut.name, "dataset": dataset, "condition": condition, "n": len(pairs),
           **{k: mean_of(v) for k, v in scores.items()}}
    row["si_snr_improvement"] = (None if row["si_snr"] is None or row["noisy_si_snr"] is None
                                 else row["si_snr"] - row["noisy_si_snr"])
    return row


def voicebank_pairs(folder: str | Path, report: BadFileReport) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real (clean, noisy) pairs from ``folder/{clean,noisy}/<same name>``; unusable pairs are reported."""
    folder = Path(folder)
    clean_dir, noisy_dir = folder / "clean", folder / "noisy"
    if not clean_dir.is_dir() or not noisy_dir.is_dir():
        raise FileNotFoundError(f"{folder} must hold clean/ and noisy/ folders with the same file names")
    pairs = []
    for clean_path in sorted(clean_dir.glob("*.wav")):
        noisy_path = noisy_dir / clean_path.name
        try:
            clean, noisy = load_audio(clean_path), load_audio(noisy_path)
        except AudioError as exc:
            report.add(exc.path, exc.reason, exc.detail)
            continue
        if clean.shape != noisy.shape:
            report.add(noisy_path, "length_mismatch", f"{noisy.shape[0]} vs clean {clean.shape[0]} samples")
            continue
        pairs.append((clean, noisy))
    if not pairs:
        raise DataError(f"no usable clean/noisy pairs under {folder}")
    return pairs


def _forward_once(path: str, seconds: float) -> None:
    """Load ``path`` and run one forward pass (the body measured by peak_memory_mb)."""
    mut = load_model_under_test(path, "memory")
    x = torch.zeros(1, int(seconds * SAMPLE_RATE))
    with torch.inference_mode():
        mut.model.extract(x, torch.tensor([x.shape[1]]))


def _efficiency_row(mut: ModelUnderTest, options: EvaluateOptions) -> dict:
    row: dict = {"model": mut.name, "parameters": mut.parameters}
    row["macs_per_second"] = count_macs(mut.model, 1.0)
    for threads in (1, 2):
        row[f"rtf_{threads}_thread{'s' if threads > 1 else ''}"] = real_time_factor(
            mut.model, options.rtf_seconds, threads=threads, repeats=options.rtf_repeats)
    row["peak_memory_mb"] = (peak_memory_mb(functools.partial(_forward_once, mut.path, options.rtf_seconds))
                             if options.measure_memory else None)
    return row


def _limit(uids: Sequence[str], limit: int) -> list[str]:
    return list(uids) if limit <= 0 else list(uids)[:limit]


# ------------------------------------------------------------------------------- driver


class _Run:
    """State shared by the stages of one evaluation."""

    def __init__(self, tasks: Sequence[TaskPack], cset: ConditionSet, out_dir: Path, seed: int,
                 train_on: TrainOn, quick: bool, options: EvaluateOptions) -> None:
        self.cset, self.seed, self.train_on, self.options = cset, seed, train_on, options
        self.cache_dir = Path(options.cache_dir or out_dir / "cache")
        self.report = cset.report
        self.results = Results(seed=seed, train_on=train_on, quick=quick, condition_fingerprint=cset.fingerprint())
        limited = [t.subset(options.max_train, options.max_val, options.max_test, seed) for t in tasks]
        all_items = [i for t in limited for i in t.items()]
        self.wavs = load_waveforms(all_items, self.report)
        missing = {i.uid for i in all_items if i.uid not in self.wavs}
        self.tasks = [t.without(missing) for t in limited]
        self.train_uids = list(dict.fromkeys(i.uid for t in self.tasks for i in (*t.train, *t.val)))
        self.test_uids = list(dict.fromkeys(i.uid for t in self.tasks for i in t.test))
        self.compare_uids = _limit(self.test_uids, options.max_distortion)
        self.results.tasks = [t.summary() for t in self.tasks]
        self.results.conditions = cset.describe()
        self.teacher_clean: dict[str, Tensor] | None = None

    def train_features(self, mut: ModelUnderTest) -> dict[str, Tensor]:
        if self.train_on == "clean":
            return _features(mut, self.train_uids, self.wavs, CLEAN.id, self.cache_dir, self.options.batch_size)
        mixed = _training_mix(self.cset, self.train_uids, self.wavs, self.seed)
        label = f"train-mix/{self.cset.fingerprint()}/{self.seed}"
        return _features(mut, self.train_uids, mixed, label, self.cache_dir, self.options.batch_size)

    def probes(self, mut: ModelUnderTest) -> dict[str, TrainedProbe]:
        feats = self.train_features(mut)
        trained = {}
        for task in self.tasks:
            cfg = from_dict(ProbeConfig, {**dataclasses.asdict(self.options.probe), "task": task.kind, "seed": self.seed})
            trained[task.name] = train_probe(
                [feats[i.uid] for i in task.train], [i.label for i in task.train],
                [feats[i.uid] for i in task.val], [i.label for i in task.val],
                cfg, num_classes=len(task.classes))
        return trained

    def run(self, entries: Sequence[ModelUnderTest], teacher_pairs: Sequence[list[tuple[int, int]] | None]) -> None:
        """Probes for every model, then conditions in the outer loop: each is materialised once for all models."""
        probes = [self.probes(mut) for mut in tqdm(entries, desc="training probes", unit="model", disable=None)]
        own_clean: dict[str, dict[str, Tensor]] = {}
        clean_scores: dict[tuple[str, str], float] = {}
        with tqdm(total=len(entries) * len(self.cset), desc="conditions", unit="model-cond", disable=None) as bar:
            for condition in self.cset:
                wavs = self.wavs if condition.kind == "clean" else _corrupted(self.cset, condition, self.test_uids,
                                                                              self.wavs)
                label = f"{condition.id}#{self.cset.condition_hash(condition)}"
                for mut, trained, pairs in zip(entries, probes, teacher_pairs):
                    bar.set_postfix_str(f"{condition.id} | {mut.name}")
                    feats = _features(mut, self.test_uids, wavs, label, self.cache_dir, self.options.batch_size)
                    for task in self.tasks:
                        self._probe_row(mut, task, condition, trained[task.name], feats, clean_scores)
                    compared = {u: feats[u] for u in self.compare_uids}
                    if condition.kind == "clean":
                        own_clean[mut.name] = compared
                    self.results.distortion += _distortion_rows(
                        mut, condition, compared, own_clean.get(mut.name), self.teacher_clean, pairs)
                    if mut.enhancement is not None and condition.kind != "clean" and self.options.max_enhancement:
                        uids = self.test_uids[: self.options.max_enhancement]
                        self.results.enhancement.append(enhancement_row(
                            mut, "conditions", condition.id, [(self.wavs[u], wavs[u]) for u in uids]))
                    bar.update(1)

    def _probe_row(self, mut: ModelUnderTest, task: TaskPack, condition: Condition, probe: TrainedProbe,
                   feats: dict[str, Tensor], clean_scores: dict[tuple[str, str], float]) -> None:
        scored = evaluate_probe(probe, [feats[i.uid] for i in task.test], [i.label for i in task.test])
        value = float(scored[task.metric])
        if condition.kind == "clean":
            clean_scores[(mut.name, task.name)] = value
        base = clean_scores.get((mut.name, task.name), value)
        self.results.probes.append({
            "model": mut.name, "task": task.name, "condition": condition.id, "metric": task.metric,
            "value": value, "degradation": base - value if task.metric == "accuracy" else value - base,
            "n": int(scored["n"]), "train_on": self.train_on, "best_epoch": probe.best_epoch,
            "val_metric": probe.val_metric, "layer_weights": [round(w, 4) for w in probe.layer_weights],
        })


def evaluate(
    models: Sequence[str | Path],
    teacher: str | Path | None = None,
    tasks: Sequence[TaskPack] = (),
    conditions: ConditionSet | ConditionConfig | None = None,
    out_dir: str | Path = "eval",
    seed: int = 0,
    train_on: TrainOn = "clean",
    quick: bool = False,
    *,
    names: Sequence[str] | None = None,
    options: EvaluateOptions | None = None,
    title: str = "Robustness evaluation",
    intro: Sequence[Block] | Callable[[Results], Sequence[Block]] = (),
) -> Results:
    """Evaluate ``models`` (student checkpoints or teachers) under every condition; see the module docstring.

    ``teacher`` defaults to the teacher recorded in the first student checkpoint that has one (when it
    can be loaded offline). ``quick`` switches to :func:`quick_options` / :func:`quick_conditions`
    unless ``options`` / ``conditions`` are given. Writes results, tables, plots and the report into
    ``out_dir`` and returns the results. ``intro``: report blocks placed under the title (or a function
    building them from the results).
    """
    if not models:
        raise UsageError("no models to evaluate")
    if not tasks:
        raise UsageError("no tasks to evaluate on (e.g. builtin_tasks(...), fsdd_tasks(path))")
    if train_on not in ("clean", "corrupted"):
        raise ConfigError(f"train_on must be 'clean' or 'corrupted', got {train_on!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = options or (quick_options() if quick else EvaluateOptions())
    names = list(names) if names is not None else default_names(list(models))
    if len(names) != len(models):
        raise UsageError(f"{len(names)} names for {len(models)} models")
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # Models first: a wrong path fails before any noise is indexed or room simulated.
    entries = [load_model_under_test(p, n) for p, n in zip(models, names)]
    teacher_entry = _resolve_teacher(teacher, entries)
    if teacher_entry is not None and options.evaluate_teacher:
        entries.append(teacher_entry)
    timings["load"] = time.perf_counter() - start

    if not isinstance(conditions, ConditionSet):
        cfg = conditions or (quick_conditions(seed=seed) if quick else from_dict(ConditionConfig, {"seed": seed}))
        if cfg.cache_dir is None:
            cfg = dataclasses.replace(cfg, cache_dir=out_dir / "material")
        conditions = ConditionSet.build(cfg)
    cset = conditions
    run = _Run(tasks, cset, out_dir, seed, train_on, quick, options)
    timings["setup"] = time.perf_counter() - start - timings["load"]

    if teacher_entry is not None:
        run.teacher_clean = _features(teacher_entry, run.compare_uids, run.wavs, CLEAN.id, run.cache_dir,
                                      options.batch_size)
    targets = sorted({t for e in entries for _, t in (e.head_pairs or [])})
    t0 = time.perf_counter()
    run.run(entries, [_teacher_pairs(mut, teacher_entry, targets) for mut in entries])
    timings["probes_and_conditions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if options.voicebank is not None:
        pairs_vb = voicebank_pairs(options.voicebank, run.report)
        for mut in entries:
            if mut.enhancement is not None:
                run.results.enhancement.append(enhancement_row(mut, "voicebank_demand", "real", pairs_vb))
    if options.efficiency:
        for mut in tqdm(entries, desc="efficiency", unit="model", disable=None):
            run.results.efficiency.append(_efficiency_row(mut, options))
    timings["efficiency_enhancement"] = time.perf_counter() - t0

    results = run.results
    results.models = [e.describe() for e in entries]
    results.headline = headline_rows(results)
    results.skipped = [{"path": b.path, "reason": b.reason, "detail": b.detail} for b in run.report]
    results.timings_s = {k: round(v, 2) for k, v in timings.items()}
    results.write(out_dir)
    md, html = write_report(results, out_dir, title=title, intro=intro(results) if callable(intro) else intro)
    log.info("evaluation report: %s (and %s)", md, html)
    return results


def _resolve_teacher(teacher: str | Path | None, entries: list[ModelUnderTest]) -> ModelUnderTest | None:
    if teacher is not None:
        return load_teacher_under_test(teacher)
    recorded = next((e.teacher_source for e in entries if e.teacher_source), None)
    if recorded is None:
        return None
    try:
        return load_teacher_under_test(recorded)
    except (OSError, ValueError) as exc:
        log.warning("cannot load the recorded teacher %r (%s); no teacher comparison (pass --teacher)", recorded, exc)
        return None


def _teacher_pairs(mut: ModelUnderTest, teacher: ModelUnderTest | None, targets: list[int]) -> list[tuple[int, int]] | None:
    """Index pairs (this model, teacher) for the teacher_clean comparison, or None when there is none."""
    if teacher is None:
        return None
    layers = len(teacher.layer_names)
    if mut is teacher:
        return [(t, t) for t in (targets or range(layers)) if t < layers]
    if mut.head_pairs is None:
        return None  # another teacher: its layers do not correspond to this teacher's
    bad = [t for _, t in mut.head_pairs if t >= layers]
    if bad:
        log.warning("%s predicts teacher layers %s but the teacher has %d hidden states; no teacher comparison",
                    mut.name, bad, layers)
        return None
    return mut.head_pairs
