"""The robustness evaluation: models x conditions -> scorers -> results and report.

A short composition: open the models (and the teacher), build the conditions and the scoring context
(task subsets, audio), then run the scorers of :mod:`robustdistiller.evaluate.scorers`:
- probes (one per task) trained on clean (or corrupted) training features, tested under every condition;
- distortion of every hidden state under corruption from the model's own clean output, and of a
  student's prediction heads from the teacher layers they predict (teacher on clean audio);
- enhancement heads scored with PESQ-wb, STOI and SI-SNR improvement per corrupted condition, and on
  real noisy/clean pairs (VoiceBank+DEMAND) when given;
- efficiency: parameters, MACs per second of audio, real-time factor at 1 and 2 threads, peak memory.
Each model's hidden states are extracted once per condition (cached on disk by content: model weights,
condition, audio) and shared by the scorers. Everything lands in ``results.json`` (+ CSV tables),
``report.md`` / ``report.html`` and PNG plots.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from robustdistiller.config import from_dict
from robustdistiller.errors import ConfigError, UsageError
from robustdistiller.evaluate.conditions import ConditionConfig, ConditionSet
from robustdistiller.evaluate.models import (
    ModelUnderTest,
    default_names,
    load_model_under_test,
    load_teacher_under_test,
)
from robustdistiller.evaluate.probes import FeatureCache, ProbeConfig
from robustdistiller.evaluate.report import Block, write_report
from robustdistiller.evaluate.results import Results, headline_rows
from robustdistiller.evaluate.scorers import (
    DistortionScorer,
    EfficiencyScorer,
    EnhancementScorer,
    ProbeScorer,
    Scorer,
    ScoringContext,
    voicebank_pairs,
)
from robustdistiller.evaluate.scorers.probe import TrainOn
from robustdistiller.evaluate.tasks import TaskPack
from robustdistiller.models.precision import check_precision

log = logging.getLogger(__name__)


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
    # The feature cache once the report is written: "prune" drops the features this evaluation did not use
    # (the folder then holds exactly this evaluation's, however many times one evaluates into it, and a
    # rerun with another probe or task reuses them); "keep" leaves every file; "delete" empties it;
    # "off" neither reads nor writes one (one evaluation never asks for the same features twice).
    cache: Literal["prune", "keep", "delete", "off"] = "prune"
    # The models' forward (features, distortion, enhancement input, real-time factor): fp32, bf16, or auto
    # (bf16 where the CPU has bf16 units and every hidden state keeps cosine >= 0.99 against fp32;
    # models.precision). Features are cached per precision.
    precision: str = "fp32"

    def validate(self) -> None:
        if min(self.max_train, self.max_val, self.max_test, self.max_distortion) < 0:
            raise ConfigError("max_* limits must be >= 0")
        if self.batch_size < 1 or self.max_enhancement < 0 or self.rtf_seconds <= 0 or self.rtf_repeats < 1:
            raise ConfigError("batch_size and rtf_repeats must be >= 1, max_enhancement >= 0, rtf_seconds > 0")
        check_precision(self.precision, "precision")


def quick_options(**overrides: object) -> EvaluateOptions:
    """Small subsets, short probe training, no separate memory process: seconds instead of minutes."""
    base = {
        "max_train": 48,
        "max_val": 16,
        "max_test": 24,
        "probe": {"epochs": 8, "patience": 3},
        "max_distortion": 16,
        "max_enhancement": 3,
        "rtf_seconds": 2.0,
        "rtf_repeats": 1,
        "measure_memory": False,
    }
    return from_dict(EvaluateOptions, {**base, **overrides})


def quick_conditions(**overrides: object) -> ConditionConfig:
    """Two noise types (white and pink of the built-in ones) at three SNRs, two RT60 bins, one
    noise + reverberation mix."""
    base: dict[str, object] = {
        "snrs": [0.0, 10.0, 20.0],
        "rt60s": [0.3, 0.6],
        "rirs_per_bin": 1,
        "mixed_snrs": [10.0],
        "mixed_rt60s": [0.3],
    }
    if overrides.get("noises", ["builtin"]) == ["builtin"]:
        base["noise_types"] = ["white", "pink"]
    else:
        base["max_noise_types"] = 2
    return from_dict(ConditionConfig, {**base, **overrides})


# ------------------------------------------------------------------------------- driver


def _condition_set(
    conditions: ConditionSet | ConditionConfig | None, quick: bool, seed: int, out_dir: Path
) -> ConditionSet:
    """The given set, or one built from the given (default: full or quick) config, material under ``out_dir``."""
    if isinstance(conditions, ConditionSet):
        return conditions
    cfg = conditions or (quick_conditions(seed=seed) if quick else from_dict(ConditionConfig, {"seed": seed}))
    if cfg.cache_dir is None:
        cfg = dataclasses.replace(cfg, cache_dir=out_dir / "material")
    return ConditionSet.build(cfg)


def _scorers(
    entries: Sequence[ModelUnderTest],
    teacher: ModelUnderTest | None,
    ctx: ScoringContext,
    options: EvaluateOptions,
    train_on: TrainOn,
) -> list[Scorer]:
    """The scorers of one run, in the order their rows are produced; real enhancement pairs are read
    here, so a bad ``--voicebank`` fails before any scoring."""
    real_pairs = voicebank_pairs(options.voicebank, ctx.report) if options.voicebank is not None else None
    scorers: list[Scorer] = [
        ProbeScorer(options.probe, seed=ctx.seed, train_on=train_on),
        DistortionScorer.build(entries, teacher, ctx, options.max_distortion),
        EnhancementScorer(options.max_enhancement, real_pairs),
    ]
    if options.efficiency:
        scorers.append(EfficiencyScorer(options.rtf_seconds, options.rtf_repeats, options.measure_memory))
    return scorers


def _score_conditions(
    scorers: Sequence[Scorer], entries: Sequence[ModelUnderTest], ctx: ScoringContext, results: Results
) -> None:
    """Every scorer on every (condition, model); conditions in the outer loop, so each condition's
    audio is corrupted once for all models, and each model's features are extracted once per condition."""
    with tqdm(total=len(entries) * len(ctx.cset), desc="conditions", unit="model-cond", disable=None) as bar:
        for condition in ctx.cset:
            heard = ctx.heard(condition)
            for entry in entries:
                bar.set_postfix_str(f"{condition.id} | {entry.name}")
                seen = ctx.observe(entry, condition, heard)
                for scorer in scorers:
                    results.add(scorer.name, scorer.score(entry, seen, ctx))
                bar.update(1)


def _score_models(
    scorers: Sequence[Scorer], entries: Sequence[ModelUnderTest], ctx: ScoringContext, results: Results
) -> None:
    """Every scorer's condition-independent rows (efficiency, real enhancement pairs), model by model."""
    for entry in tqdm(entries, desc="per-model scores", unit="model", disable=None):
        for scorer in scorers:
            results.add(scorer.name, scorer.score_model(entry, ctx))


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
    clock = _Clock()

    # Models first: a wrong path fails before any noise is indexed or room simulated.
    entries = [load_model_under_test(p, n) for p, n in zip(models, names)]
    teacher_entry = _resolve_teacher(teacher, entries)
    for entry in [*entries, teacher_entry]:
        if entry is not None:
            entry.set_precision(options.precision)
    if teacher_entry is not None and options.evaluate_teacher:
        entries.append(teacher_entry)
    clock.lap("load")

    cset = _condition_set(conditions, quick, seed, out_dir)
    ctx = ScoringContext.build(
        tasks,
        cset,
        limits=(options.max_train, options.max_val, options.max_test),
        seed=seed,
        cache=FeatureCache(options.cache_dir or out_dir / "cache", store=options.cache != "off"),
        batch_size=options.batch_size,
    )
    results = Results(
        seed=seed,
        train_on=train_on,
        quick=quick,
        condition_fingerprint=cset.fingerprint(),
        conditions=cset.describe(),
        tasks=[t.summary() for t in ctx.tasks],
    )
    clock.lap("setup")
    scorers = _scorers(entries, teacher_entry, ctx, options, train_on)
    clock.lap()
    _score_conditions(scorers, entries, ctx, results)
    clock.lap("probes_and_conditions")
    _score_models(scorers, entries, ctx, results)
    clock.lap("efficiency_enhancement")

    results.models = [e.describe() for e in entries]
    results.headline = headline_rows(results)
    results.skipped = [{"path": b.path, "reason": b.reason, "detail": b.detail} for b in ctx.report]
    results.timings_s = {k: round(v, 2) for k, v in clock.laps.items()}
    results.write(out_dir)
    md, html = write_report(results, out_dir, title=title, intro=intro(results) if callable(intro) else intro)
    log.info("evaluation report: %s (and %s)", md, html)
    _tidy_cache(ctx.cache, options.cache)
    return results


class _Clock:
    """Seconds per named stage (``lap(None)`` starts a new stage without recording the last one)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str | None = None) -> None:
        now = time.perf_counter()
        if name is not None:
            self.laps[name] = now - self._last
        self._last = now


def _tidy_cache(cache: FeatureCache, policy: str) -> None:
    """Apply ``EvaluateOptions.cache`` to the feature cache of a finished evaluation."""
    if policy == "keep":
        return
    files, size = cache.clear() if policy == "delete" else cache.prune()
    if files:
        what = "every feature file" if policy == "delete" else "features this evaluation did not use"
        log.info("feature cache %s: removed %s (%d files, %.2f GB)", cache.folder, what, files, size / 1e9)


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
