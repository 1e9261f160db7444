"""The offline demo: distil a DistilHuBERT baseline and a RobustDistiller student from a small teacher
with identical budgets, evaluate both (and the teacher) under noise and reverberation, write a report.

Everything is generated locally: the built-in synthetic corpus, built-in noises, simulated RIRs and a
small *randomly initialised* HuBERT-shaped teacher (saved as a Hugging Face folder). A random teacher's
layers carry no linguistic meaning, so the probe accuracies say little; what the demo does show is the
mechanism: the robust student learns to map corrupted audio onto the teacher's clean-audio targets,
which the report measures as the distance between each student's heads (on corrupted audio) and the
teacher's target layers (on clean audio). The report prints the command for a real teacher.

Both students use ``configs/demo.yaml`` with the same steps, data, crops and seeds; only the
corruption policy (off / on) and the enhancement head (off / on) differ.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustdistiller.config import apply_overrides, from_dict, load_yaml, to_dict
from robustdistiller.data.corpus import build_corpus
from robustdistiller.evaluate.conditions import ConditionConfig
from robustdistiller.evaluate.report import Block, Bullets, Code, Heading, Paragraph
from robustdistiller.evaluate.results import Results
from robustdistiller.evaluate.runner import EvaluateOptions, evaluate, quick_options
from robustdistiller.evaluate.tasks import builtin_tasks
from robustdistiller.train.recipe import DistillRecipe, resolve_recipe
from robustdistiller.train.trainer import distill

log = logging.getLogger(__name__)

BASELINE, ROBUST = "distilhubert-baseline", "robustdistiller"
# The teacher demo.yaml is sized for: CNN 64 channels, 4 layers of 128, 4 heads, FFN 256, pos-conv 32/8.
TEACHER_SHAPE: dict[str, Any] = {
    "conv_dim": (64,) * 7, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "intermediate_size": 256, "num_conv_pos_embeddings": 32, "num_conv_pos_embedding_groups": 8,
}
QUICK_STEPS = 3
REAL_TEACHER_COMMAND = (
    "robustdistiller distill --config rd_hubert data.root=/data/LibriSpeech \\\n"
    "    corruption.noise.musan=/data/musan corruption.rir.rir_dirs=[/data/RIRS_NOISES/SLR28] \\\n"
    "    train.out_dir=exp/rd_hubert      # teacher.source defaults to a real HuBERT Base"
)


@dataclass
class DemoResult:
    out_dir: Path
    teacher: Path
    baseline: Path  # final checkpoint of the DistilHuBERT baseline
    robust: Path  # final checkpoint of the RobustDistiller student
    report_md: Path
    report_html: Path
    results: Results
    seconds: float


def make_random_teacher(out_dir: Path, seed: int) -> Path:
    """A randomly initialised HuBERT of :data:`TEACHER_SHAPE`, written with ``save_pretrained``."""
    from transformers import HubertConfig, HubertModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertModel(HubertConfig(**TEACHER_SHAPE))
    model.save_pretrained(out_dir)
    (out_dir / "README.txt").write_text(
        "Randomly initialised HuBERT-shaped teacher written by `robustdistiller demo` (seed "
        f"{seed}). Its layers carry no linguistic meaning; use a real teacher for real students.\n"
    )
    return out_dir


def demo_recipe(out_dir: Path, teacher: Path, train_manifest: Path, *, robust: bool, seed: int,
                steps: int | None, quick: bool = False, overrides: Sequence[str] = ()) -> DistillRecipe:
    """``configs/demo.yaml`` for one of the two students; everything but the robustness switches is shared."""
    data = load_yaml(resolve_recipe("demo"))
    data["teacher"] = {"source": str(teacher)}
    data["data"].update({"corpus": "none", "manifests": [str(train_manifest)], "seed": seed})
    name = ROBUST if robust else BASELINE
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


def demo_conditions(quick: bool, seed: int, out_dir: Path) -> ConditionConfig:
    """Clean, white and pink noise at 0/5/10/20 dB, reverberation at RT60 0.3/0.6/0.9 s (quick: white
    noise at 0 and 20 dB, RT60 0.3 s)."""
    return from_dict(ConditionConfig, {
        "noises": ["builtin"], "noise_types": ["white"] if quick else ["white", "pink"],
        "snrs": [0.0, 20.0] if quick else [0.0, 5.0, 10.0, 20.0],
        "rt60s": [0.3] if quick else [0.3, 0.6, 0.9], "rirs_per_bin": 1 if quick else 2,
        "mixed_snrs": [], "mixed_rt60s": [], "seed": seed, "cache_dir": str(out_dir / "material"),
    })


def _mean_teacher_distance(results: Results, model: str, kinds: tuple[str, ...]) -> tuple[float, float] | None:
    conds = {c["id"]: c["kind"] for c in results.conditions}
    rows = [r for r in results.distortion if r["model"] == model and r["reference"] == "teacher_clean"
            and conds.get(r["condition"]) in kinds]
    if not rows:
        return None
    return sum(r["l1"] for r in rows) / len(rows), sum(r["cosine"] for r in rows) / len(rows)


def findings(results: Results) -> list[str]:
    """What the run measured, in sentences (computed from ``results``, never fixed text)."""
    lines = []
    clean = {m: _mean_teacher_distance(results, m, ("clean",)) for m in (BASELINE, ROBUST)}
    for kinds, what in ((("clean",), "clean audio"), (("noise",), "noise"), (("reverb",), "reverberation")):
        base = _mean_teacher_distance(results, BASELINE, kinds)
        robust = _mean_teacher_distance(results, ROBUST, kinds)
        if base is None or robust is None:
            continue
        change = 100.0 * (robust[0] - base[0]) / base[0] if base[0] > 0 else 0.0
        line = (f"Under {what}, student heads vs teacher targets (teacher on clean audio): L1 {base[0]:.4f} (baseline) "
                f"vs {robust[0]:.4f} (robust), {abs(change):.1f} % {'lower' if change < 0 else 'higher'} for the robust "
                f"student; cosine {base[1]:.3f} vs {robust[1]:.3f}.")
        if kinds != ("clean",) and all(clean[m] and clean[m][0] > 0 for m in clean):
            growth = [100.0 * (d[0] / clean[m][0] - 1.0) for m, d in ((BASELINE, base), (ROBUST, robust))]  # type: ignore[index]
            line += (f" Growth over each student's own clean-audio L1: {growth[0]:+.1f} % (baseline) vs "
                     f"{growth[1]:+.1f} % (robust).")
        lines.append(line)
    for h in results.headline:
        if h["model"] in (BASELINE, ROBUST) and h["clean"] is not None and h["mean_corrupted"] is not None:
            lines.append(f"{h['model']} / {h['task']}: probe accuracy {h['clean']:.3f} clean, "
                         f"{h['mean_corrupted']:.3f} mean over corrupted conditions.")
    return lines


def _intro(out_dir: Path, steps: int, quick: bool, robust_ckpt: Path, baseline_ckpt: Path,
           teacher: Path) -> Callable[[Results], list[Block]]:
    def build(results: Results) -> list[Block]:
        return [
            Paragraph(
                f"Two students distilled for **{steps} steps** each from the same teacher, on the same built-in "
                "corpus crops, with the same seeds (`configs/demo.yaml`): a **DistilHuBERT baseline** (clean input, "
                "no enhancement head) and a **RobustDistiller** student (corrupted input: built-in noises at "
                "0-20 dB and simulated rooms; enhancement head)."
                + (" Quick mode: a smoke test, too short for the numbers to mean anything." if quick else "")
            ),
            Paragraph(
                f"**The teacher is randomly initialised** (`{teacher}`), so its layers carry no linguistic "
                "information and probe accuracies stay near chance for every model. The meaningful measurement is "
                "how close each student's heads on corrupted audio stay to the teacher's targets on clean audio. "
                "For real students, distil from a real teacher, e.g.:"
            ),
            Code(REAL_TEACHER_COMMAND),
            Heading("What this run measured"),
            Bullets(tuple(findings(results)) or ("no comparable rows were produced",)),
            Heading("Next steps"),
            Code(next_commands(out_dir, robust_ckpt, baseline_ckpt)),
        ]
    return build


def next_commands(out_dir: Path, robust_ckpt: Path, baseline_ckpt: Path) -> str:
    return (
        f"robustdistiller evaluate --model {robust_ckpt} --model {baseline_ckpt} --task builtin "
        f"--out {out_dir / 'evaluation'}\n"
        f"robustdistiller export {robust_ckpt} --format hf --out {out_dir / 'robust-hf'}"
    )


def run_demo(out_dir: str | Path = "runs/demo", *, quick: bool = False, seed: int = 0, steps: int | None = None,
             overrides: Sequence[str] = ()) -> DemoResult:
    """Run the whole demo into ``out_dir`` (see the module docstring) and return where everything is."""
    start = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = steps if steps is not None else (QUICK_STEPS if quick else None)

    log.info("[1/4] built-in corpus, random teacher")
    # Quick mode: 4 takes per (word, speaker), one held out (160 utterances instead of 320).
    corpus = build_corpus(out_dir / "corpus", seed=seed, **({"utterances_per_word_per_speaker": 4,
                                                             "test_takes": 1} if quick else {}))
    teacher = make_random_teacher(out_dir / "teacher", seed)

    checkpoints = {}
    for index, robust in enumerate((False, True)):
        recipe = demo_recipe(out_dir, teacher, corpus.train_manifest, robust=robust, seed=seed, steps=steps,
                             quick=quick, overrides=overrides)
        name = ROBUST if robust else BASELINE
        log.info("[%d/4] distilling the %s student (%d steps)", 2 + index, name, recipe.optim.total_steps)
        result = distill(recipe)
        if result.checkpoint is None or result.interrupted:
            raise RuntimeError(f"training of the {name} student did not finish (interrupted: {result.interrupted})")
        checkpoints[name] = result.checkpoint
    total_steps = recipe.optim.total_steps

    log.info("[4/4] evaluating both students and the teacher")
    options = quick_options(max_train=24, max_val=8, max_test=8, max_distortion=8, max_enhancement=1,
                            rtf_seconds=0.5, probe={"epochs": 4, "patience": 2}) if quick else from_dict(EvaluateOptions, {
        "probe": {"epochs": 20, "patience": 5}, "rtf_seconds": 4.0, "max_enhancement": 8})
    results = evaluate(
        [checkpoints[BASELINE], checkpoints[ROBUST]], teacher=teacher,
        tasks=builtin_tasks(corpus, seed=seed), conditions=demo_conditions(quick, seed, out_dir),
        out_dir=out_dir, seed=seed, quick=quick, names=[BASELINE, ROBUST], options=options,
        title="robustdistiller demo",
        intro=_intro(out_dir, total_steps, quick, checkpoints[ROBUST], checkpoints[BASELINE], teacher),
    )
    (out_dir / "demo_options.json").write_text(json.dumps(
        {"seed": seed, "quick": quick, "steps": total_steps, "evaluate": to_dict(options)}, indent=1))
    return DemoResult(out_dir, teacher, checkpoints[BASELINE], checkpoints[ROBUST], out_dir / "report.md",
                      out_dir / "report.html", results, time.perf_counter() - start)
