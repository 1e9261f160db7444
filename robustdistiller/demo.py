"""The offline demo: distil a DistilHuBERT baseline and a RobustDistiller student from the shipped
mini teacher with identical budgets, evaluate both (and the teacher) on real held-out recordings under
real noises and rooms no model was trained with, write a report that leads with the answer.

Everything comes with the package, so it runs on a fresh clone without a network:
- teacher: the HuBERT-style mini teacher pre-trained on 205 LibriSpeech speakers
  (``assets/teachers/hubert_mini``; ``random_teacher=True`` swaps in a randomly initialised one of the
  same shape, to see what pre-training adds);
- training speech: the first 5 s of each of those 205 speakers (``assets/recordings/train``), corrupted
  for the robust student with *generated* noises and *simulated* rooms only;
- evaluation: the 46 held-out LibriSpeech speakers (``assets/recordings/heldout``; speaker
  identification and speaker sex), under the four *recorded* Speech Commands noises at 0-20 dB, rooms
  simulated from another seed than the training rooms plus a measured clap RIR, and noise + rooms.
The demo never falls back to synthetic evaluation data: missing recordings are an error.

Both students use ``configs/demo.yaml`` with the same steps, data, crops, seeds and loss (heads and
layers, ``student.layer_targets``, frame by frame and as utterance means, ``student.pooled_loss``);
only the corruption policy (off / on) and the enhancement head (off / on) differ. With several seeds
every student is trained once per seed and the report averages over seeds.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustdistiller.atomic import atomic_dir, atomic_write
from robustdistiller.config import apply_overrides, from_dict, load_yaml, to_dict
from robustdistiller.data.manifest import scan_files
from robustdistiller.data.recordings import RECORDINGS_DIR, read_index
from robustdistiller.errors import DataError
from robustdistiller.evaluate.conditions import ConditionConfig
from robustdistiller.evaluate.report import Block, Bullets, Code, Heading, Paragraph, Table, fmt
from robustdistiller.evaluate.results import Results, mean_of
from robustdistiller.evaluate.rows import HeadlineRow
from robustdistiller.evaluate.runner import EvaluateOptions, evaluate, quick_options
from robustdistiller.evaluate.tasks import shipped_speaker_tasks
from robustdistiller.train.distillation import distill
from robustdistiller.train.recipe import DistillRecipe, resolve_recipe
from robustdistiller.train.targets import TargetMemo

log = logging.getLogger(__name__)

BASELINE, ROBUST = "distilhubert-baseline", "robustdistiller"
SHIPPED_TEACHER = Path(__file__).resolve().parent / "assets" / "teachers" / "hubert_mini"
# The shipped teacher's shape, which demo.yaml's student copies and --random-teacher reproduces:
# CNN 64-64-128x5 channels, 4 layers of 192, 4 heads, FFN 512, pos-conv 32/8.
TEACHER_SHAPE: dict[str, Any] = {
    "conv_dim": (64, 64, 128, 128, 128, 128, 128),
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "num_conv_pos_embeddings": 32,
    "num_conv_pos_embedding_groups": 8,
}
QUICK_STEPS = 3
# Steps per student: 2 seeds x 2 students x 500 steps keep the whole demo, install included, within
# 10 minutes on 2 CPU cores without bf16 units (2-3 min per 1000 steps there; 7.9-9.9 min in all).
# Chosen on the validation set by a rule written down before the runs (docs/benchmarks.md: 350 steps
# missed the target there, 500 met it). configs/demo.yaml's 2000 steps are for running that recipe alone.
DEMO_STEPS = 500
# Evaluation rooms are simulated from this seed (+ the demo seed); training rooms use the recipe's
# seed, so no evaluation room was heard in training.
EVAL_ROOM_SEED = 1000
# The robustness target of the method (issue 13): the robust student's drop above chance at most this
# share of the baseline's, with clean accuracy within CLEAN_TOLERANCE of the baseline's, on either side:
# the drop is relative to each model's own clean accuracy, so the ratio compares like with like only
# when the two clean accuracies are close.
TARGET_RATIO, CLEAN_TOLERANCE = 0.8, 0.05
REAL_TEACHER_COMMAND = (
    "robustdistiller distill --config rd_hubert data.root=/data/LibriSpeech \\\n"
    "    corruption.noise.musan=/data/musan corruption.rir.rir_dirs=[/data/RIRS_NOISES/SLR28] \\\n"
    "    train.out_dir=exp/rd_hubert      # teacher.source defaults to a real HuBERT Base"
)


@dataclass
class DemoResult:
    out_dir: Path
    teacher: Path
    baseline: Path  # final checkpoint of the DistilHuBERT baseline (first seed)
    robust: Path  # final checkpoint of the RobustDistiller student (first seed)
    report_md: Path
    report_html: Path
    results: Results
    seconds: float
    checkpoints: dict[str, Path] = field(default_factory=dict)  # evaluated name -> checkpoint, every seed


def make_random_teacher(out_dir: Path, seed: int) -> Path:
    """A randomly initialised HuBERT of :data:`TEACHER_SHAPE`, written with ``save_pretrained``."""
    from transformers import HubertConfig, HubertModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertModel(HubertConfig(**TEACHER_SHAPE))
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        (tmp / "README.txt").write_text(
            "Randomly initialised HuBERT-shaped teacher written by `robustdistiller demo --random-teacher` (seed "
            f"{seed}). Its layers carry no linguistic meaning; it shows what pre-training adds.\n"
        )
    return out_dir


def copy_shipped_teacher(out_dir: Path, source: Path = SHIPPED_TEACHER) -> Path:
    """The shipped mini teacher copied into ``out_dir`` (the demo's output keeps the teacher it used)."""
    if not (source / "config.json").is_file():
        raise FileNotFoundError(
            f"the shipped teacher is missing: {source}/config.json (a broken install?); "
            "run with --random-teacher to use a random one"
        )
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    return out_dir


def prepare_teacher(out_dir: Path, seed: int, random_teacher: bool) -> Path:
    """``out_dir/teacher``: the shipped teacher, or a random one of the same shape (replaced on a rerun)."""
    target = out_dir / "teacher"
    if target.exists():
        shutil.rmtree(target)
    return make_random_teacher(target, seed) if random_teacher else copy_shipped_teacher(target)


def training_manifest(out_dir: Path, recordings: Path = RECORDINGS_DIR) -> Path:
    """Manifest of the shipped training speech (the teacher's 205 pre-training speakers), with a
    ``speaker`` column, written to ``out_dir/material/train.tsv``; unreadable files are skipped and logged."""
    rows = [(r.path, {"speaker": r.speaker}) for r in read_index(recordings) if r.role == "train"]
    if not rows:
        raise DataError(f"{recordings}: index.tsv lists no training speech (role 'train')")
    manifest, _ = scan_files(recordings, rows, ["speaker"], desc="training speech")
    path = out_dir / "material" / "train.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    return manifest.write(path)


def student_name(robust: bool, seed: int, seeds: Sequence[int]) -> str:
    """Name (and output folder) of one student: ``robustdistiller``, or ``robustdistiller-seed1`` when
    several seeds are trained (the first seed keeps the plain name)."""
    name = ROBUST if robust else BASELINE
    return name if seed == seeds[0] else f"{name}-seed{seed}"


def demo_recipe(
    out_dir: Path,
    teacher: Path,
    train_manifest: Path,
    *,
    robust: bool,
    seed: int,
    steps: int | None,
    quick: bool = False,
    overrides: Sequence[str] = (),
    name: str | None = None,
) -> DistillRecipe:
    """``configs/demo.yaml`` for one of the two students; everything but the robustness switches is shared.

    Args:
        name: output folder under ``out_dir`` (default: the student kind, see :func:`student_name`).
    """
    data = load_yaml(resolve_recipe("demo"))
    data["teacher"] = {"source": str(teacher)}
    data["data"].update({"corpus": "none", "manifests": [str(train_manifest)], "seed": seed})
    name = name or (ROBUST if robust else BASELINE)
    data["train"].update({"out_dir": str(out_dir / name), "seed": seed})
    material = out_dir / "material"
    if robust:
        data["corruption"]["noise"]["builtin_dir"] = str(material / "train-noise")
        data["corruption"]["rir"]["simulate_rirs"]["cache_dir"] = str(material / "rirs")
        if quick:  # long rooms take seconds each to simulate; a smoke test needs two short ones
            data["corruption"]["rir"]["simulate_rirs"].update({"count": 2, "rt60_range": [0.2, 0.4]})
    else:
        data["corruption"] = {"p_clean": 1.0, "p_noise": 0.0, "p_reverb": 0.0, "p_noise_reverb": 0.0}
        data["enhancement"]["use_enhancement"] = False
    if quick:
        data["data"]["batch_size"] = 4
    if steps is not None:
        data["optim"]["total_steps"] = steps
        data["train"].update({"save_every": steps, "log_every": max(1, min(10, steps))})
    return from_dict(DistillRecipe, apply_overrides(data, list(overrides)))


def demo_conditions(quick: bool, seed: int, out_dir: Path, recordings: Path = RECORDINGS_DIR) -> ConditionConfig:
    """Real-world conditions no model was trained with: the recorded Speech Commands noises at
    0/5/10/20 dB; rooms at RT60 0.3 / 0.6 / 1.0 s simulated from :data:`EVAL_ROOM_SEED`, the 1.0 s bin
    also holding the measured clap RIR (RT60 1.04 s); each noise at 10 dB in the 0.6 s rooms.
    Quick: one noise at 0 and 20 dB, the clap room only (no room simulation)."""
    rir_dir = str(recordings / "rir")
    if quick:
        plan = {
            "max_noise_types": 1,
            "snrs": [0.0, 20.0],
            "rt60s": [1.0],
            "rirs": [rir_dir],
            "mixed_snrs": [],
            "mixed_rt60s": [],
        }
    else:
        plan = {
            "snrs": [0.0, 5.0, 10.0, 20.0],
            "rt60s": [0.3, 0.6, 1.0],
            "rirs": ["simulated", rir_dir],
            "rirs_per_bin": 2,
            "mixed_snrs": [10.0],
            "mixed_rt60s": [0.6],
        }
    return from_dict(
        ConditionConfig,
        {
            **plan,
            "noises": [str(recordings / "noise")],
            "rt60_tolerance": 0.1,
            "seed": EVAL_ROOM_SEED + seed,
            "cache_dir": str(out_dir / "material"),
        },
    )


# ------------------------------------------------------------------------------------ findings


def kind_of(model: str) -> str | None:
    """``distilhubert-baseline-seed1`` -> ``distilhubert-baseline``; the teacher is its own kind."""
    for kind in (BASELINE, ROBUST, "teacher"):
        if model == kind or model.startswith(f"{kind}-seed"):
            return kind
    return None


DROP_KEYS = ("drop_above_chance", "noise_drop_above_chance", "reverb_drop_above_chance")


def seed_means(results: Results) -> dict[tuple[str, str], dict[str, Any]]:
    """(task, model kind) -> clean score, drops above chance (all / noise / reverberation) and the
    corrupted means, each averaged over the seeds (headline rows), plus ``seeds`` = how many."""
    grouped: dict[tuple[str, str], list[HeadlineRow]] = defaultdict(list)
    for h in results.headline:
        kind = kind_of(h.model)
        if kind is not None:
            grouped[(h.task, kind)].append(h)
    keys = ("clean", "mean_corrupted", "mean_noise", "mean_reverb", "chance", *DROP_KEYS)
    return {
        k: {**{key: mean_of([r[key] for r in rows]) for key in keys}, "seeds": len(rows)} for k, rows in grouped.items()
    }


def target_met(ratio: float | None, clean_gap: float | None) -> bool:
    """The method's target on one task: RobustDistiller's drop above chance at most TARGET_RATIO x the
    baseline's (``ratio``), its clean accuracy within CLEAN_TOLERANCE of the baseline's (``clean_gap``)."""
    return ratio is not None and ratio <= TARGET_RATIO and clean_gap is not None and abs(clean_gap) <= CLEAN_TOLERANCE


def per_seed(results: Results, task: str) -> list[tuple[float | None, float | None]]:
    """(ratio of the drops above chance, clean gap) of each seed's baseline / robust pair on ``task``,
    pairing ``distilhubert-baseline[-seedN]`` with ``robustdistiller[-seedN]``."""
    rows = {h.model: h for h in results.headline if h.task == task}
    pairs = []
    for name, base in rows.items():
        robust = rows.get(ROBUST + name[len(BASELINE) :]) if kind_of(name) == BASELINE else None
        if robust is None:
            continue
        pairs.append((ratio_of(robust.drop_above_chance, base.drop_above_chance), gap_of(robust.clean, base.clean)))
    return pairs


def ratio_of(robust: float | None, base: float | None) -> float | None:
    """RobustDistiller's drop over the baseline's; None when either is missing or the baseline lost nothing."""
    return robust / base if robust is not None and base else None


def gap_of(robust: float | None, base: float | None) -> float | None:
    """RobustDistiller's clean score minus the baseline's; None when either is missing."""
    return robust - base if robust is not None and base is not None else None


def comparison_rows(results: Results) -> list[dict[str, Any]]:
    """Per task: baseline vs robust student (seed means), the ratio of their drops above chance
    (all / noise / reverberation), whether the method's target is met on that task, and the ratio and
    clean gap of each seed (``per_seed``)."""
    means = seed_means(results)
    rows = []
    for task in dict.fromkeys(t for t, _ in means):
        base, robust = means.get((task, BASELINE)), means.get((task, ROBUST))
        if base is None or robust is None:
            continue
        ratios = {key: ratio_of(robust[key], base[key]) for key in DROP_KEYS}
        clean_gap = gap_of(robust["clean"], base["clean"])
        met = target_met(ratios["drop_above_chance"], clean_gap)
        rows.append(
            {
                "task": task,
                "seeds": min(base["seeds"], robust["seeds"]),
                "baseline": base,
                "robust": robust,
                "teacher": means.get((task, "teacher")),
                "ratio": ratios,
                "clean_gap": clean_gap,
                "met": met,
                "per_seed": per_seed(results, task),
            }
        )
    return rows


CONDITION_KINDS = (
    ("clean", "clean"),
    ("noise", "noise"),
    ("reverb", "reverberation"),
    ("noise+reverb", "noise + reverberation"),
)


def representation_means(results: Results) -> dict[str, dict[str, float | None]]:
    """Model kind -> condition kind -> mean frame cosine between the model's prediction heads on
    corrupted audio and the teacher layers they predict on clean audio (the quantity distillation
    trains; the teacher: its own layers), over conditions, heads and seeds."""
    kinds = {c["id"]: c["kind"] for c in results.conditions}
    grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in results.distortion:
        kind = kind_of(row.model)
        if row.reference == "teacher_clean" and kind is not None and row.condition in kinds:
            grouped[(kind, kinds[row.condition])].append(row.cosine)
    return {
        kind: {ckind: mean_of(grouped.get((kind, ckind), [])) for ckind, _ in CONDITION_KINDS}
        for kind in (BASELINE, ROBUST, "teacher")
    }


def representation_bullet(results: Results) -> str | None:
    """One line: whose features stay closer to the clean teacher's under each kind of corruption."""
    means = representation_means(results)
    base, robust = means[BASELINE], means[ROBUST]
    parts = [
        f"{label} {robust[ckind]:.3f} RobustDistiller vs {base[ckind]:.3f} baseline"
        for ckind, label in CONDITION_KINDS
        if robust[ckind] is not None and base[ckind] is not None
    ]
    if not parts:
        return None
    return (
        "**Representations** (cosine between each student's prediction heads on corrupted audio and the teacher "
        "layers they predict on clean audio, the quantity distillation trains; 1 = unchanged by the corruption): "
        + "; ".join(parts)
        + "."
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _less(base: float | None, robust: float | None) -> str:
    """Which of two drops above chance is smaller, and by how much, in words."""
    if base is None or robust is None:
        return "cannot be compared (a model is at chance on clean audio)"
    if robust < base:
        return (
            f"**RobustDistiller loses less**: {_pct(robust)} vs {_pct(base)} ({_pct(1 - robust / base)} less)"
            if base > 0
            else f"{_pct(robust)} vs {_pct(base)}"
        )
    return f"**the baseline loses less**: {_pct(base)} vs {_pct(robust)} for RobustDistiller"


def _verdict(row: dict[str, Any]) -> str:
    """``task: ratio 0.85 (per seed 0.94, 0.77), clean gap +0.094 (+0.098, +0.091)``: the seeds are
    shown because with a few hundred test segments one seed's ratio moves by 0.1-0.2."""
    ratio = row["ratio"]["drop_above_chance"]
    if ratio is None:
        return f"{row['task']}: no ratio"
    ratios = ", ".join(fmt(q, 2) for q, _ in row["per_seed"])
    gaps = ", ".join(fmt(g, 3, signed=True) for _, g in row["per_seed"])
    several = len(row["per_seed"]) > 1
    return (
        f"{row['task']}: ratio {ratio:.2f}"
        + (f" (per seed {ratios})" if several else "")
        + f", clean gap {row['clean_gap']:+.3f}"
        + (f" ({gaps})" if several else "")
    )


def answer_blocks(results: Results) -> list[Block]:
    """The report's lead: which student loses less under noise and under reverberation, by how much,
    and whether the method's target is met, per task (seed means)."""
    rows = comparison_rows(results)
    if not rows:
        return [Paragraph("No baseline / RobustDistiller pair was evaluated, so there is no comparison.")]
    bullets = []
    for r in rows:
        b, ro = r["baseline"], r["robust"]
        bullets.append(
            f"**{r['task']}** (chance {b['chance']:.2f}; clean accuracy {b['clean']:.3f} baseline, "
            f"{ro['clean']:.3f} RobustDistiller): under noise {_less(b['noise_drop_above_chance'], ro['noise_drop_above_chance'])}; "
            f"under reverberation {_less(b['reverb_drop_above_chance'], ro['reverb_drop_above_chance'])}."
        )
    representation = representation_bullet(results)
    if representation is not None:
        bullets.append(representation)
    met = sum(r["met"] for r in rows)
    seeds = min(r["seeds"] for r in rows)
    table = Table(
        ("task", "model", "clean", "mean corrupted", "drop: all", "drop: noise", "drop: reverb"),
        tuple(
            (r["task"], label, f"{m['clean']:.3f}", f"{m['mean_corrupted']:.3f}", *(_pct(m[key]) for key in DROP_KEYS))
            for r in rows
            for label, m in (
                ("teacher", r["teacher"]),
                ("DistilHuBERT baseline", r["baseline"]),
                ("RobustDistiller", r["robust"]),
            )
            if m is not None
        ),
    )
    verdict = (
        f"Target (RobustDistiller's drop above chance at most {TARGET_RATIO:g} x the baseline's, clean accuracy "
        f"within {CLEAN_TOLERANCE:g} of the baseline's, either way): met on **{met} of {len(rows)}** tasks ("
        + "; ".join(_verdict(r) for r in rows)
        + ")."
    )
    return [
        Heading("The answer"),
        Bullets(tuple(bullets)),
        Paragraph(verdict),
        Paragraph(
            f"Means over {seeds} seed{'s' if seeds > 1 else ''}. *Drop* = share of the above-chance accuracy "
            "that corruption takes away, 1 - (corrupted - chance) / (clean - chance), averaged over the "
            "corrupted conditions (all of them, the noise-only ones, the reverberation-only ones)."
        ),
        table,
    ]


def _intro(
    steps: int, quick: bool, seeds: Sequence[int], teacher: Path, random_teacher: bool, commands: str
) -> Callable[[Results], list[Block]]:
    def build(results: Results) -> list[Block]:
        teacher_text = (
            f"A **randomly initialised** teacher (`{teacher}`, `--random-teacher`): its layers carry no linguistic "
            "information, so probe accuracies mean little."
            if random_teacher
            else f"The shipped **mini HuBERT teacher** (`{teacher}`), pre-trained with HuBERT's masked prediction on the "
            "205 training speakers of the LibriSpeech subset."
        )
        return [
            *answer_blocks(results),
            Heading("What was run"),
            Paragraph(
                f"{teacher_text} Two students distilled from it for **{steps} steps** each "
                f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}) on real speech of those 205 "
                "speakers (5 s each, shipped), with the same crops, seeds and loss (`configs/demo.yaml`: prediction "
                "heads and both transformer layers against the teacher's clean layers, frame by frame and as "
                "utterance means): a **DistilHuBERT "
                "baseline** (clean input, no enhancement head) and a **RobustDistiller** student (input corrupted "
                "with *generated* noises at 0-20 dB and *simulated* rooms; enhancement head)."
                + (" Quick mode: a smoke test, too short for the numbers to mean anything." if quick else "")
            ),
            Paragraph(
                "Evaluation: probes trained on clean features of **46 held-out LibriSpeech speakers** (recordings "
                "shipped in `robustdistiller/assets/recordings`, no model trained on them), tested under the "
                "**recorded** Speech Commands noises (dishes, miaowing, exercise bike, running tap), rooms simulated "
                "from another seed than the training rooms plus a **measured** clap RIR, and noise + rooms. "
                "Every model runs in bf16 where the CPU has bf16 units and each of its layers stays within cosine "
                "0.99 of fp32 (checked per model), in fp32 elsewhere; the teacher's training forward likewise."
            ),
            Paragraph("For full-size students, distil from a real teacher, e.g.:"),
            Code(REAL_TEACHER_COMMAND),
            Heading("Next steps"),
            Code(commands),
        ]

    return build


def next_commands(out_dir: Path, robust_ckpt: Path, baseline_ckpt: Path) -> str:
    return (
        f"robustdistiller evaluate --model {robust_ckpt} \\\n    --model {baseline_ckpt} \\\n"
        f"    --task heldout --out {out_dir / 'evaluation'}\n"
        f"robustdistiller export {robust_ckpt} \\\n    --format hf --out {out_dir / 'robust-hf'}"
    )


def evaluation_options(quick: bool) -> EvaluateOptions:
    """Quick: a few utterances and epochs (a smoke test); otherwise every held-out segment."""
    if quick:
        return quick_options(
            max_train=24,
            max_val=8,
            max_test=8,
            max_distortion=8,
            max_enhancement=1,
            rtf_seconds=0.5,
            probe={"epochs": 4, "patience": 2},
            precision="auto",
        )
    # Probe settings chosen on the clean *validation* accuracy of the shipped teacher's probes (lr 1e-3
    # left them under-trained after 60 epochs; 1e-2 beat 3e-2 and 1e-1), never on corrupted results.
    # bf16 features where the CPU has the units (every layer within cosine 0.99 of fp32, checked per
    # model) and no separate memory process keep the demo within its time budget (docs/benchmarks.md).
    return from_dict(
        EvaluateOptions,
        {
            "probe": {"epochs": 100, "patience": 15, "lr": 1e-2},
            "rtf_seconds": 4.0,
            "max_distortion": 32,
            "max_enhancement": 4,
            "measure_memory": False,
            "precision": "auto",
        },
    )


def train_students(
    out_dir: Path,
    teacher: Path,
    manifest: Path,
    seeds: Sequence[int],
    *,
    steps: int | None,
    quick: bool,
    overrides: Sequence[str],
) -> tuple[dict[str, Path], int]:
    """Every (seed, baseline / robust) student; returns (name -> final checkpoint, steps per student)."""
    checkpoints: dict[str, Path] = {}
    total = 0
    for seed in seeds:
        # The two students of a seed draw the same clean crops: the robust one reuses the teacher's
        # targets the baseline computed (bitwise equal, a sixth of its step on a CPU).
        memo = TargetMemo()
        for robust in (False, True):
            name = student_name(robust, seed, seeds)
            recipe = demo_recipe(
                out_dir,
                teacher,
                manifest,
                robust=robust,
                seed=seed,
                steps=steps,
                quick=quick,
                overrides=overrides,
                name=name,
            )
            log.info("distilling %s (%d steps)", name, recipe.optim.total_steps)
            # The demo owns its output folder: a rerun replaces its students, as it replaces the teacher.
            result = distill(recipe, overwrite=True, memo=memo)
            if result.checkpoint is None or result.interrupted:
                raise RuntimeError(f"training of {name} did not finish (interrupted: {result.interrupted})")
            checkpoints[name] = result.checkpoint
            total = recipe.optim.total_steps
        log.info(
            "seed %d: the robust student took the teacher's targets of %d of its %d batches from the baseline's run",
            seed,
            memo.hits,
            total,
        )
        memo.clear()
    return checkpoints, total


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    quick: bool = False,
    seed: int = 0,
    seeds: int | None = None,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    random_teacher: bool = False,
    recordings: str | Path = RECORDINGS_DIR,
) -> DemoResult:
    """Run the whole demo into ``out_dir`` (see the module docstring) and return where everything is.

    Args:
        seed: the first seed; ``seeds`` students of each kind are trained, seeds ``seed, seed + 1, ...``
            (default 2, quick 1).
        recordings: the shipped recordings folder (tests point it elsewhere to check that the demo
            refuses to run without real recordings rather than falling back).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings = Path(recordings)
    steps = steps if steps is not None else (QUICK_STEPS if quick else DEMO_STEPS)
    seed_list = list(range(seed, seed + (seeds if seeds is not None else (1 if quick else 2))))

    log.info("[1/3] recordings, teacher")
    # Evaluation data first: missing recordings fail before any training.
    tasks = shipped_speaker_tasks(out_dir / "material", seed=seed, folder=recordings)
    manifest = training_manifest(out_dir, recordings)
    teacher = prepare_teacher(out_dir, seed, random_teacher)

    log.info("[2/3] distilling %d students", 2 * len(seed_list))
    checkpoints, total_steps = train_students(
        out_dir, teacher, manifest, seed_list, steps=steps, quick=quick, overrides=overrides
    )
    baseline, robust = checkpoints[BASELINE], checkpoints[ROBUST]

    log.info("[3/3] evaluating the students and the teacher on held-out real recordings")
    options = evaluation_options(quick)
    # No feature cache: one evaluation never asks for the same hidden states twice, and a rerun retrains
    # the students, so the 2 GB would be written only to be deleted (`robustdistiller evaluate` on the
    # students builds its own cache).
    options.cache = "off"
    results = evaluate(
        list(checkpoints.values()),
        teacher=teacher,
        tasks=tasks,
        conditions=demo_conditions(quick, seed, out_dir, recordings),
        out_dir=out_dir,
        seed=seed,
        quick=quick,
        names=list(checkpoints),
        options=options,
        title="robustdistiller demo",
        intro=_intro(total_steps, quick, seed_list, teacher, random_teacher, next_commands(out_dir, robust, baseline)),
    )
    options_json = json.dumps(
        {
            "seed": seed,
            "seeds": seed_list,
            "quick": quick,
            "steps": total_steps,
            "random_teacher": random_teacher,
            "evaluate": to_dict(options),
        },
        indent=1,
    )
    atomic_write(out_dir / "demo_options.json", lambda fh: fh.write(options_json.encode()))
    return DemoResult(
        out_dir,
        teacher,
        baseline,
        robust,
        out_dir / "report.md",
        out_dir / "report.html",
        results,
        time.perf_counter() - start,
        checkpoints,
    )
