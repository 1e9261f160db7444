"""One RobustDistiller training-recipe experiment against a cached DistilHuBERT baseline, on the demo's data.

Distils the demo's DistilHuBERT baseline for a seed once (reused afterwards; ``--both`` changes to the
recipe apply to it too and name it), distils ONE RobustDistiller student with the demo recipe plus the
given ``key=value`` overrides, and evaluates both with the demo's probes and metric (the teacher,
efficiency and enhancement metrics are skipped, they do not change the probes). Prints the per-task
comparison and appends it to ``OUT/experiments.jsonl``. Used to choose the demo recipe by measurement.

``--on val`` (the default) chooses on a **validation** set that shares nothing with the demo's test
evaluation: other speakers (46 of the 205 training speakers, their speech *after* the first 5 s that the
students train on; the teacher pre-trained on it, unlabelled), other noises (the real DEMAND noise of
the VoiceBank+DEMAND pairs, noisy minus clean) and other rooms (the four SpeechBrain RIRs and rooms
simulated from another seed). It needs ``../shared/data``. ``--on val-unseen`` is the same validation
set with students that never hear its speakers (both students train on the other 159 speakers' first
5 s): the demo's test speakers are new to the students, and on new speakers a recipe can change the
students' clean accuracy in ways the seen speakers do not show. With a teacher pre-trained on
``--pretrain-manifest``'s speech (without the validation speakers) they are new to the teacher as well,
as the test speakers are. ``--on test`` is the demo's own evaluation: run it once, for the chosen recipe,
not to choose.

    python bench/rd_experiment.py --name enh0 --seed 0 enhancement.weight=0 [--steps 1000] [--out runs/rdx]
    python bench/rd_experiment.py --name heads3 --both student.pred_layer_id=[1,2,4] student.n_tasks=3
    python bench/rd_experiment.py --name current --teacher exp/hubert_mini_2000/teacher --out runs/rdx-t2000
    python bench/rd_experiment.py --name current --seed 1 --on val-unseen --out runs/rdx-unseen
    python bench/rd_experiment.py --summary --out runs/rdx-unseen    # seed means of every run there
    python bench/rd_experiment.py --pretrain-manifest exp/ls_subset_noval.tsv   # then pretrain a teacher on it
    python bench/rd_experiment.py --name current --on val-unseen --score-teacher \
        --teacher exp/hubert_mini_noval/teacher --out runs/rdx-new

One teacher per ``--out`` folder: the first run copies ``--teacher`` there and later runs reuse it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from robustdistiller.config import from_dict
from robustdistiller.data.audio import SAMPLE_RATE, load_audio
from robustdistiller.data.manifest import Manifest, manifest_from_folder, speaker_from_name
from robustdistiller.data.recordings import RECORDINGS_DIR, read_index, read_speaker_sex, sha256_of
from robustdistiller.demo import (
    DEMO_STEPS,
    SHIPPED_TEACHER,
    comparison_rows,
    copy_shipped_teacher,
    demo_conditions,
    demo_recipe,
    evaluation_options,
    ratio_of,
    target_met,
    training_manifest,
)
from robustdistiller.evaluate.conditions import ConditionConfig
from robustdistiller.evaluate.report import fmt
from robustdistiller.evaluate.results import mean_of
from robustdistiller.evaluate.runner import evaluate
from robustdistiller.evaluate.tasks import SpeakerRecording, TaskPack, shipped_speaker_tasks, speaker_tasks
from robustdistiller.train.checkpointing import checkpoint_path
from robustdistiller.train.distillation import distill
from robustdistiller.train.recipe import resolve_recipe
from robustdistiller.train.targets import TargetMemo

log = logging.getLogger("bench.rd_experiment")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRAINED_SECONDS = 5.0  # the demo's training speech is each training speaker's first 5 s
VAL_SPEAKERS = 46  # as many as the test set's held-out speakers
VAL_ROOM_SEED = 3000


def _write_wav(path: Path, wav: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    return path


def validation_speech() -> dict[str, tuple[str, np.ndarray]]:
    """The 46 validation speakers -> (their training file, its speech after the first 5 s).

    They are the training speakers with the most such speech (ties by id), so that each has test segments.
    """
    train = [r for r in read_index(RECORDINGS_DIR) if r.role == "train"]
    rest = {}
    for r in train:
        wav = load_audio(SHARED / "librispeech_subset" / r.source)
        rest[r.speaker] = (r.source, wav[int(TRAINED_SECONDS * SAMPLE_RATE) :])
    chosen = sorted(rest, key=lambda s: (-len(rest[s][1]), s))[:VAL_SPEAKERS]
    return {s: rest[s] for s in sorted(chosen)}


def validation_tasks(out: Path, seed: int) -> tuple[list[TaskPack], set[str]]:
    """Speaker id and sex on the :func:`validation_speech` (never heard by a student), written to
    ``out/material/val-speech``.

    Returns:
        The two tasks and the validation speakers' ids.
    """
    sexes = read_speaker_sex(SHARED / "librispeech_subset" / "SPEAKERS.TXT")
    speech = validation_speech()
    recs = [
        SpeakerRecording(_write_wav(out / "material" / "val-speech" / f"{source}.rest.wav", wav), s, sexes[s])
        for s, (source, wav) in speech.items()
    ]
    return speaker_tasks(recs, out / "material", seed=seed, prefix="val"), set(speech)


def without_speakers(manifest: Manifest, speakers: set[str], dest: Path) -> Path:
    """``manifest`` without ``speakers`` (its ``speaker`` column, else the LibriSpeech file name), written to
    ``dest``."""
    kept = [e for e in manifest.entries if (e.labels.get("speaker") or speaker_from_name(e.path)) not in speakers]
    return Manifest(manifest.root, kept, list(manifest.label_names)).write(dest)


def pretrain_manifest(dest: Path) -> Path:
    """The LibriSpeech subset's manifest without the validation speakers, for a teacher that never hears
    them (pre-training drops the test speakers itself: ``data.exclude_held_out``)."""
    full, report = manifest_from_folder(SHARED / "librispeech_subset", (".flac",))
    if len(report):
        log.warning("librispeech_subset: %s", report.summary())
    dest.parent.mkdir(parents=True, exist_ok=True)
    return without_speakers(full, set(validation_speech()), dest)


def validation_conditions(out: Path, seed: int) -> ConditionConfig:
    """The demo's condition plan with other noises (real DEMAND noise: VoiceBank+DEMAND noisy minus clean)
    and other rooms (the SpeechBrain RIRs, rooms simulated from another seed)."""
    noise_dir = out / "material" / "val-noise"
    pairs = SHARED / "voicebank_demand"
    for noisy in sorted((pairs / "noisy").glob("*.wav")):
        noise = load_audio(noisy) - load_audio(pairs / "clean" / noisy.name)
        _write_wav(noise_dir / f"demand_{noisy.stem}.wav", noise)
    rir_dir = out / "material" / "val-rir"  # the clap RIR is the test set's: only the SpeechBrain ones
    for rir in sorted((SHARED / "rir").glob("speechbrain_rir*.wav")):
        _write_wav(rir_dir / rir.name, load_audio(rir))
    return from_dict(
        ConditionConfig,
        {
            "noises": [str(noise_dir)],
            "snrs": [0.0, 5.0, 10.0, 20.0],
            "rt60s": [0.3, 0.6, 1.0],
            "rirs": ["simulated", str(rir_dir)],
            "rirs_per_bin": 2,
            "rt60_tolerance": 0.1,
            "mixed_snrs": [10.0],
            "mixed_rt60s": [0.6],
            "seed": VAL_ROOM_SEED + seed,
            "cache_dir": str(out / "material"),
        },
    )


def trained(
    out: Path,
    teacher: Path,
    manifest: Path,
    *,
    robust: bool,
    seed: int,
    steps: int,
    name: str,
    overrides: list[str],
    memo: TargetMemo,
) -> Path:
    """Final checkpoint of one student, distilled unless it exists already.

    Args:
        robust: the RobustDistiller student (corruption + enhancement head) or the baseline.
        name: its folder under ``out``; ``overrides``: ``key=value`` changes to the demo recipe.
        memo: the teacher's targets shared by the pair (a batch changed by ``overrides`` runs the teacher).
    Returns:
        The path of its checkpoint after ``steps`` steps.
    """
    recipe = demo_recipe(out, teacher, manifest, robust=robust, seed=seed, steps=steps, overrides=overrides, name=name)
    final = checkpoint_path(recipe.train.out_dir, steps)
    if not final.is_file():
        start = time.perf_counter()
        result = distill(recipe, overwrite=True, memo=memo)
        if result.checkpoint is None or result.interrupted:
            raise SystemExit(f"{name} did not finish")
        log.info("%s: %d steps in %.1f min", name, steps, (time.perf_counter() - start) / 60)
    return final


def student_folders(
    name: str, seed: int, steps: int, both: list[str], overrides: list[str], manifest: Path
) -> tuple[str, str]:
    """The baseline's and the robust student's folder names under ``--out``.

    They name (by hash) the demo recipe, the overrides and the training speech, so that neither a
    changed configs/demo.yaml, other overrides under the same ``--name`` nor ``--on val-unseen`` silently
    reuse an old student.
    """
    heard = " ".join(e.path for e in Manifest.read(manifest).entries)  # not its root: the clone's location
    shared = resolve_recipe("demo").read_bytes() + " ".join(both).encode() + heard.encode()
    robust = shared + " ".join(overrides).encode()
    return (
        f"baseline-s{seed}-{steps}-{hashlib.sha256(shared).hexdigest()[:8]}",
        f"{name}-s{seed}-{hashlib.sha256(robust).hexdigest()[:8]}",
    )


def weights(folder: Path) -> list[str]:
    """SHA-256 of the teacher folder's weight files (to tell two teachers apart)."""
    return [sha256_of(p) for p in sorted(folder.glob("*.safetensors"))]


def summary(records: list[dict[str, Any]]) -> str:
    """Markdown table of ``experiments.jsonl``: per experiment (name, evaluation set, steps, overrides) and
    task, the seed means as the demo takes them (ratio of the mean drops, mean clean gap)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["name"], r["on"], str(r["steps"]), " ".join(r["both"]), " ".join(r["overrides"]))].append(r)
    lines = [
        "| experiment | on | steps | --both | overrides | seeds | task | ratio (per seed) | clean gap | met "
        "| clean: teacher / baseline / RobustDistiller |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, runs in groups.items():
        for task in runs[0]["tasks"]:
            per = [r["tasks"][task] for r in runs if task in r["tasks"]]
            # as the demo's seed means: a seed whose model is at chance on clean audio has no drop
            base = mean_of([p["baseline"]["drop_above_chance"] for p in per])
            robust = mean_of([p["robust"]["drop_above_chance"] for p in per])
            gap = mean_of([p["clean_gap"] for p in per])
            ratio = ratio_of(robust, base)
            seeds = ", ".join(fmt(p["ratio"]["drop_above_chance"], 2) for p in per)
            met = "yes" if target_met(ratio, gap) else "no"
            cleans = " / ".join(
                fmt(mean_of([(p.get(model) or {}).get("clean") for p in per]), 3)
                for model in ("teacher", "baseline", "robust")
            )
            lines.append(
                f"| {' | '.join(key)} | {' '.join(str(run['seed']) for run in runs)} | {task} | "
                f"{fmt(ratio, 2)} ({seeds}) | {fmt(gap, 3, signed=True)} | {met} | {cleans} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--name", help="experiment name (student folder: NAME-sSEED-<hash of the demo recipe, overrides, speech>)"
    )
    parser.add_argument(
        "--summary", action="store_true", help="print OUT/experiments.jsonl as a table of seed means and stop"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DEMO_STEPS)
    parser.add_argument("--out", type=Path, default=Path("runs/rdx"))
    parser.add_argument(
        "--teacher", type=Path, default=SHIPPED_TEACHER, help="teacher folder, copied to OUT/teacher on the first run"
    )
    parser.add_argument("--on", choices=("val", "val-unseen", "test"), default="val", help="evaluation set (see above)")
    parser.add_argument(
        "--score-teacher",
        action="store_true",
        help="probe the teacher too and record its scores (its clean accuracy: how far each student got past it)",
    )
    parser.add_argument(
        "--pretrain-manifest",
        type=Path,
        metavar="TSV",
        help="write the LibriSpeech subset's manifest without the validation speakers to TSV (to pre-train a "
        "teacher that never hears them, for --on val-unseen --teacher) and stop",
    )
    parser.add_argument("--both", nargs="*", default=[], help="key=value overrides of both students' recipe")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the robust student's recipe")
    args = parser.parse_args()
    if args.summary:
        with open(args.out / "experiments.jsonl", encoding="utf-8") as fh:
            print(summary([json.loads(line) for line in fh if line.strip()]))
        return
    if args.pretrain_manifest:
        print(f"wrote {pretrain_manifest(args.pretrain_manifest)}")
        return
    if not args.name:
        parser.error("--name is required (unless --summary)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = training_manifest(out)
    if args.on == "test":
        tasks, conditions = (
            shipped_speaker_tasks(out / "material", seed=args.seed),
            demo_conditions(False, args.seed, out),
        )
    else:
        tasks, speakers = validation_tasks(out, args.seed)
        conditions = validation_conditions(out, args.seed)
        if args.on == "val-unseen":
            manifest = without_speakers(Manifest.read(manifest), speakers, manifest.with_name("train-unseen.tsv"))
    baseline_name, robust_name = student_folders(args.name, args.seed, args.steps, args.both, args.overrides, manifest)
    teacher = out / "teacher"
    if not (teacher / "config.json").is_file():
        copy_shipped_teacher(teacher, args.teacher)
    elif weights(teacher) != weights(args.teacher):
        raise SystemExit(f"{out} was made with another teacher than {args.teacher}: use another --out")
    memo = TargetMemo()  # both students draw the same clean crops unless an override changes them
    baseline = trained(
        out,
        teacher,
        manifest,
        robust=False,
        seed=args.seed,
        steps=args.steps,
        name=baseline_name,
        overrides=args.both,
        memo=memo,
    )
    robust = trained(
        out,
        teacher,
        manifest,
        robust=True,
        seed=args.seed,
        steps=args.steps,
        name=robust_name,
        overrides=[*args.both, *args.overrides],
        memo=memo,
    )
    memo.clear()
    options = evaluation_options(quick=False)
    # One cache per validation set and seed, pruned to the last experiment's features: the baseline's
    # and the teacher's, which every experiment of that seed reuses, and the last robust student's.
    options.cache_dir = out / f"cache-{args.on}-s{args.seed}"
    options.efficiency = False
    options.evaluate_teacher = args.score_teacher
    options.max_distortion, options.max_enhancement = 1, 0
    results = evaluate(
        [baseline, robust],
        teacher=teacher,
        tasks=tasks,
        conditions=conditions,
        out_dir=out / f"eval-{args.on}-{args.name}-s{args.seed}",
        seed=args.seed,
        names=["distilhubert-baseline", "robustdistiller"],
        options=options,
        title=f"experiment {args.name}",
    )
    rows = comparison_rows(results)
    record = {
        "name": args.name,
        "on": args.on,
        "seed": args.seed,
        "both": args.both,
        "steps": args.steps,
        "overrides": args.overrides,
        "minutes": round((time.perf_counter() - start) / 60, 1),
        "tasks": {
            r["task"]: {
                "ratio": r["ratio"],
                "clean_gap": r["clean_gap"],
                "met": r["met"],
                "baseline": r["baseline"],
                "robust": r["robust"],
                "teacher": r["teacher"],
            }
            for r in rows
        },
    }
    with open(out / "experiments.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    for r in rows:
        b, ro = r["baseline"], r["robust"]
        print(
            f"{args.name} s{args.seed} {r['task']}: clean {b['clean']:.3f}/{ro['clean']:.3f} "
            f"drop all {b['drop_above_chance']:.2f}/{ro['drop_above_chance']:.2f} "
            f"noise {b['noise_drop_above_chance']:.2f}/{ro['noise_drop_above_chance']:.2f} "
            f"reverb {b['reverb_drop_above_chance']:.2f}/{ro['reverb_drop_above_chance']:.2f} "
            f"ratio {r['ratio']['drop_above_chance']:.2f}"
            + (f" teacher clean {r['teacher']['clean']:.3f}" if r["teacher"] else "")
        )


if __name__ == "__main__":
    main()
