"""The RobustDistiller paper's comparison in miniature, on real data from ``../shared/data``.

For each teacher (default: ``hubert_mini`` and ``robust_hubert_mini`` pre-trained by
``robustdistiller pretrain``) and each seed, a DistilHuBERT baseline and a RobustDistiller student are
distilled with the demo recipe (``configs/demo.yaml``; by default also the demo's step count) on the
real speech of the 205 LibriSpeech training speakers (full utterances, 42 min); the robust student
hears *generated* noises and *simulated* rooms. Every model, the teacher included, is then probed on
clean features and tested on real speech no model was trained on:
- ``librispeech-speaker`` / ``librispeech-sex``: the 46 held-out LibriSpeech speakers (1 s segments,
  time split within each speaker);
- ``fsdd-digit`` / ``fsdd-speaker``: the Free Spoken Digit Dataset (8 kHz, takes 0-4 are the test split);
under clean audio, the four *recorded* Speech Commands noises at 0/5/10/20 dB, rooms simulated from
another seed than the training rooms at RT60 0.3/0.6/1.0 s plus the measured clap RIR, and noise +
rooms (the demo's conditions, ``robustdistiller.demo.demo_conditions``).

Per (teacher, task, model) the table gives the clean accuracy and the mean drop above chance,
``1 - (corrupted - chance) / (clean - chance)``, over all / noise / reverberation conditions, averaged over
the seeds, and whether RobustDistiller meets the target (drop <= 0.8 x the baseline's, clean accuracy
within 0.05 of the baseline's, either way). Students and evaluations are cached under
``--out/NAME-<teacher weights + recipe + training speech + code + CPU bf16 hash>-<steps>/`` (features under its
``eval-*/cache``, pruned to the last evaluation's): rerunning resumes where it stopped, and a retrained
teacher, a changed demo recipe, other training speech, another step count, any change to the
package's or this script's code, or a CPU with(out) bf16 units (the teacher's precision) starts afresh.
``--docs`` writes the table into docs/benchmarks.md and its headline into README.md.

    python bench/miniature.py [--teacher NAME=HF_DIR ...] [--shared ../shared/data] [--out runs/miniature]
                              [--seeds 2] [--steps 500] [--eval-audio flac|shipped] [--docs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from robustdistiller.atomic import atomic_write
from robustdistiller.data.manifest import manifest_from_folder, speaker_from_name, split_held_out
from robustdistiller.demo import (
    CLEAN_TOLERANCE,
    DEMO_STEPS,
    DROP_KEYS,
    TARGET_RATIO,
    comparison_rows,
    demo_conditions,
    demo_recipe,
    evaluation_options,
    student_name,
)
from robustdistiller.evaluate.report import fmt
from robustdistiller.evaluate.results import Results
from robustdistiller.evaluate.runner import evaluate
from robustdistiller.evaluate.tasks import TaskPack, fsdd_tasks, librispeech_speaker_tasks, shipped_speaker_tasks
from robustdistiller.models.precision import bf16_units, cpu_model
from robustdistiller.train.checkpointing import checkpoint_path, load_latest_checkpoint
from robustdistiller.train.distillation import distill
from robustdistiller.train.recipe import resolve_recipe
from robustdistiller.train.targets import TargetMemo

log = logging.getLogger("bench.miniature")
ROOT = Path(__file__).resolve().parent.parent
# The shipped teacher, and the robust one as `robustdistiller pretrain --config robust_hubert_mini
# train.out_dir=exp/robust_hubert_mini` writes it.
DEFAULT_TEACHERS = (
    f"hubert_mini={ROOT / 'robustdistiller' / 'assets' / 'teachers' / 'hubert_mini'}",
    f"robust_hubert_mini={ROOT / 'exp' / 'robust_hubert_mini' / 'teacher'}",
)
MARK = "miniature"  # docs/benchmarks.md and README.md hold the generated text between <!-- MARK:begin/end -->
FSDD_LIMITS = {"max_train": 500, "max_val": 150}  # per task; the held-out speaker tasks are smaller than this


def parse_teachers(specs: Sequence[str]) -> dict[str, Path]:
    """``NAME=HF_DIR`` pairs -> {name: folder}; every folder must hold a Hugging Face ``config.json``."""
    teachers = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--teacher {spec!r}: expected NAME=HF_DIR, e.g. hubert_mini=/work/artifacts/hubert_mini")
        if not (Path(path) / "config.json").is_file():
            raise SystemExit(f"--teacher {spec!r}: {path}/config.json not found (a `save_pretrained` folder)")
        teachers[name] = Path(path).resolve()
    return teachers


def training_manifest(shared: Path, out: Path) -> Path:
    """Every utterance of the training speakers (not :func:`is_held_out_speaker`) of the LibriSpeech subset."""
    manifest, _ = manifest_from_folder(
        shared / "librispeech_subset",
        (".flac",),
        label_fn=lambda rel: {"speaker": speaker_from_name(rel)},
        label_names=["speaker"],
    )
    train, held_out = split_held_out(manifest)
    log.info(
        "training speech: %d speakers, %.1f min (held out: %d speakers)",
        len(train),
        train.total_seconds / 60,
        len(held_out),
    )
    return train.write(out / "material" / "train.tsv")


def tasks_for(shared: Path, out: Path, eval_audio: str, seed: int) -> list[TaskPack]:
    """The held-out speaker tasks (original FLAC or the shipped Ogg/Vorbis copies) and FSDD, subset."""
    speakers = (
        librispeech_speaker_tasks(shared / "librispeech_subset", out / "material", seed=seed)
        if eval_audio == "flac"
        else shipped_speaker_tasks(out / "material", seed=seed)
    )
    fsdd = [
        t.subset(FSDD_LIMITS["max_train"], FSDD_LIMITS["max_val"], 0, seed)
        for t in fsdd_tasks(shared / "fsdd", seed=seed)
    ]
    return [*speakers, *fsdd]


def code_fingerprint(roots: Sequence[Path] = (ROOT / "robustdistiller", Path(__file__).resolve())) -> str:
    """sha256 over every ``.py`` / ``.yaml`` file in ``roots`` (folders, searched recursively, or files),
    each with its path relative to its root: the package that trains and evaluates, and this script."""
    digest = hashlib.sha256()
    for root in roots:
        files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml")) if root.is_dir() else [root]
        for path in files:
            digest.update(f"{path.relative_to(root) if root.is_dir() else path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def build_fingerprint() -> str:
    """What besides the recipe decides the students: the code (:func:`code_fingerprint`) and the
    CPU's bf16 units, with which precision ``auto`` runs the teacher's forward (and the evaluation)
    in bf16, without them in fp32; the two give different students."""
    return f"{code_fingerprint()} {bf16_units() or 'fp32'}"


def teacher_folder(teacher: str, source: Path, steps: int, manifest: Path, build: str) -> str:
    """``NAME-<hash>-<steps>``: the folder of one teacher's students and evaluation under ``--out``;
    the hash covers the teacher's weights, the demo recipe, the training manifest (its root, files,
    lengths and speakers) and ``build`` (:func:`build_fingerprint`), so neither a retrained teacher
    under the same name, nor a changed recipe, nor other training speech (another ``--shared``), nor
    another step count, nor students trained by other code or at another precision is reused."""
    digest = hashlib.sha256(resolve_recipe("demo").read_bytes())
    digest.update(manifest.read_bytes())
    digest.update(build.encode())
    for weights in sorted(source.glob("*.safetensors")) + sorted(source.glob("*.bin")):
        digest.update(weights.read_bytes())
    return f"{teacher}-{digest.hexdigest()[:8]}-{steps}"


def train_students(
    out: Path, folder: str, source: Path, manifest: Path, seeds: list[int], steps: int
) -> dict[str, Path]:
    """{student name -> final checkpoint} for the teacher at ``source``, under ``out/folder`` (its
    :func:`teacher_folder`); a finished student is reused, a partial one resumed."""
    done: dict[str, Path] = {}
    for seed in seeds:
        memo = TargetMemo()  # the pair's clean crops are the same: the robust student reuses the baseline's targets
        for robust in (False, True):
            name = student_name(robust, seed, seeds)
            recipe = demo_recipe(out, source, manifest, robust=robust, seed=seed, steps=steps, name=f"{folder}/{name}")
            final = checkpoint_path(recipe.train.out_dir, steps)
            if not final.is_file():
                start = time.perf_counter()
                result = distill(recipe, resume=load_latest_checkpoint(recipe.train.out_dir) is not None, memo=memo)
                if result.interrupted:
                    raise SystemExit(f"{folder}/{name} interrupted; rerun to resume")
                log.info("%s/%s: %d steps in %.1f min", folder, name, steps, (time.perf_counter() - start) / 60)
            done[name] = final
        memo.clear()
    return done


def evaluate_teacher(
    out: Path,
    folder: str,
    teacher: str,
    source: Path,
    students: dict[str, Path],
    tasks: list[TaskPack],
    seed: int,
    eval_audio: str,
) -> Results:
    """One evaluation per teacher (its students and itself) under ``out/folder``; reused when its results
    exist for the same students (a run with other ``--seeds`` evaluates again, on cached features)."""
    eval_dir = out / folder / f"eval-{eval_audio}"
    if (eval_dir / "results.json").is_file():
        stored = Results.read(eval_dir / "results.json")
        if {m["name"] for m in stored.models if m["kind"] == "student"} == set(students):
            return stored
        log.info("%s holds other students than %s: evaluating again", eval_dir, ", ".join(students))
    options = evaluation_options(quick=False)  # features cached in eval_dir/cache, pruned to this evaluation's
    return evaluate(
        list(students.values()),
        teacher=source,
        tasks=tasks,
        conditions=demo_conditions(False, seed, out),
        out_dir=eval_dir,
        seed=seed,
        names=list(students),
        options=options,
        title=f"miniature comparison: teacher {teacher}",
    )


def add_compute(folder: Path, seconds: float) -> float:
    """Add ``seconds`` to the compute time recorded in ``folder/compute.json`` and return the total:
    a teacher's students and evaluation may be built over several (resumed) runs, and a run that
    reuses them all takes seconds, so the docs give what building them took, not this run's time."""
    path = folder / "compute.json"
    total = seconds + (json.loads(path.read_text())["seconds"] if path.is_file() else 0.0)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(json.dumps({"seconds": round(total, 1)}).encode()))
    return total


def table_rows(per_teacher: dict[str, Results]) -> list[dict]:
    """Flat rows: (teacher, task, model) with seed means, plus the RobustDistiller/baseline ratios."""
    rows = []
    for teacher, results in per_teacher.items():
        for comp in comparison_rows(results):
            for kind, label in (("teacher", "teacher"), ("baseline", "DistilHuBERT"), ("robust", "RobustDistiller")):
                m = comp[kind]
                if m is None:
                    continue
                rows.append(
                    {
                        "teacher": teacher,
                        "task": comp["task"],
                        "model": label,
                        "chance": m["chance"],
                        "clean": m["clean"],
                        **{k: m[k] for k in DROP_KEYS},
                        "ratio": comp["ratio"]["drop_above_chance"] if kind == "robust" else None,
                        "clean_gap": comp["clean_gap"] if kind == "robust" else None,
                        "met": comp["met"] if kind == "robust" else None,
                        "seeds": comp["seeds"],
                    }
                )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| teacher | task | chance | model | clean acc. | drop: all | drop: noise | drop: reverb "
        "| RD / baseline drop | clean gap | target met |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        lines.append(
            f"| {r['teacher']} | {r['task']} | {fmt(r['chance'], 2)} | {r['model']} | {fmt(r['clean'])} | "
            + " | ".join(fmt(r[k], 2) for k in DROP_KEYS)
            + f" | {fmt(r['ratio'], 2)} | {fmt(r['clean_gap'], 3, signed=True)} | "
            + ("-" if r["met"] is None else ("yes" if r["met"] else "no"))
            + " |"
        )
    return "\n".join(lines)


def headline(rows: list[dict]) -> str:
    """One sentence per teacher: on how many tasks the target is met, and the drop ratios."""
    parts = []
    for teacher in dict.fromkeys(r["teacher"] for r in rows):
        robust = [r for r in rows if r["teacher"] == teacher and r["model"] == "RobustDistiller"]
        met = sum(bool(r["met"]) for r in robust)
        ratios = ", ".join(f"{r['task']} {fmt(r['ratio'], 2)}" for r in robust)
        parts.append(
            f"teacher `{teacher}`: target met on **{met} of {len(robust)}** real-speech tasks "
            f"(RobustDistiller / DistilHuBERT drop above chance: {ratios})"
        )
    return "; ".join(parts) + "."


def replace_marked(path: Path, text: str, heading: str) -> None:
    """Put ``text`` between the <!-- MARK:begin/end --> comments of ``path`` (appending them, under
    ``heading``, the first time)."""
    begin, end = f"<!-- {MARK}:begin -->", f"<!-- {MARK}:end -->"
    old = path.read_text(encoding="utf-8")
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in old and end in old:
        new = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    atomic_write(path, lambda fh: fh.write(new.encode()))


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (docs must not name this machine's folders)."""
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def docs_text(rows: list[dict], args: argparse.Namespace, teachers: dict[str, Path], minutes: dict[str, float]) -> str:
    seeds = max((r["seeds"] for r in rows), default=0)
    return (
        f"`python bench/miniature.py --seeds {args.seeds} --steps {args.steps} --eval-audio {args.eval_audio}` on "
        f"{platform.machine()} with {os.cpu_count()} CPU cores ({cpu_model()}; "
        f"{units + ': bf16 wherever precision auto accepts it' if (units := bf16_units()) else 'no bf16 units: all in fp32'}) "
        f"shared with other jobs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s). Teachers, with the time their students and evaluation took: "
        + ", ".join(f"`{n}` ({_shown(p)}, {minutes[n]:.0f} min)" for n, p in teachers.items())
        + f". Means over {seeds} seeds. *Drop* = 1 - (corrupted accuracy - chance) / (clean accuracy - chance), "
        "averaged over the corrupted conditions (all 23 / the 16 noise-only / the 3 reverberation-only); "
        f"target: RobustDistiller's drop at most {TARGET_RATIO:g} x the baseline's with clean accuracy within "
        f"{CLEAN_TOLERANCE:g} of the baseline's, either way.\n\n"
        + markdown_table(rows)
        + "\n\n**Headline:** "
        + headline(rows)
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--teacher",
        action="append",
        default=None,
        metavar="NAME=HF_DIR",
        help=f"teacher folder (repeatable; default: {' '.join(DEFAULT_TEACHERS)})",
    )
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "miniature"))
    parser.add_argument("--seeds", type=int, default=2)
    # The demo's budget, at which its recipe was validated, so the miniature measures what the demo ships.
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help="distillation steps per student")
    parser.add_argument(
        "--eval-audio",
        choices=["flac", "shipped"],
        default="flac",
        help="held-out speakers from the original FLAC files or the shipped Ogg/Vorbis copies",
    )
    parser.add_argument("--docs", action="store_true", help="write the table to docs/benchmarks.md and README.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    shared, out = Path(args.shared).resolve(), Path(args.out).resolve()
    if not (shared / "librispeech_subset").is_dir() or not (shared / "fsdd").is_dir():
        raise SystemExit(f"{shared} must hold librispeech_subset/ and fsdd/ (the ../shared/data layout)")
    teachers = parse_teachers(args.teacher or DEFAULT_TEACHERS)
    seeds = list(range(args.seeds))
    tasks = tasks_for(shared, out, args.eval_audio, seeds[0])
    manifest = training_manifest(shared, out)
    per_teacher, minutes = {}, {}
    build = build_fingerprint()
    for teacher, source in teachers.items():  # one teacher at a time: its results are complete early
        start = time.perf_counter()
        folder = teacher_folder(teacher, source, args.steps, manifest, build)  # hashes the weights: once per teacher
        students = train_students(out, folder, source, manifest, seeds, args.steps)
        per_teacher[teacher] = evaluate_teacher(
            out, folder, teacher, source, students, tasks, seeds[0], args.eval_audio
        )
        minutes[teacher] = add_compute(out / folder, time.perf_counter() - start) / 60
        print(markdown_table(table_rows({teacher: per_teacher[teacher]})), flush=True)
    rows = table_rows(per_teacher)
    summary = json.dumps({"rows": rows, "compute_minutes": minutes}, indent=1)
    atomic_write(out / f"miniature-{args.eval_audio}.json", lambda fh: fh.write(summary.encode()))
    print(markdown_table(rows))
    print("\n" + headline(rows))
    if args.docs:
        replace_marked(
            ROOT / "docs" / "benchmarks.md",
            docs_text(rows, args, teachers, minutes),
            "## The paper's comparison in miniature — `python bench/miniature.py`",
        )
        replace_marked(
            ROOT / "README.md",
            "**Miniature paper comparison** (`bench/miniature.py`, real held-out "
            "speech, recorded noises, unseen rooms): " + headline(rows),
            "### Robustness in miniature",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
