"""One RobustDistiller training-recipe experiment against a cached DistilHuBERT baseline, on the demo's data.

Distils the demo's DistilHuBERT baseline for a seed once (reused afterwards), distils ONE RobustDistiller
student with the demo recipe plus the given ``key=value`` overrides, and evaluates both exactly as
``robustdistiller demo`` does (same tasks, conditions, probes and metric; the teacher, efficiency and
enhancement metrics are skipped, they do not change the probes). Prints the per-task comparison and
appends it to ``OUT/experiments.jsonl``. Used to choose the demo recipe by measurement.

    python bench/rd_experiment.py --name enh0 --seed 0 enhancement.weight=0 [--steps 1000] [--out runs/rdx]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from robustdistiller.demo import (
    DEMO_STEPS,
    comparison_rows,
    demo_conditions,
    demo_recipe,
    evaluation_options,
    prepare_teacher,
    training_manifest,
)
from robustdistiller.evaluate.runner import evaluate
from robustdistiller.evaluate.tasks import shipped_speaker_tasks
from robustdistiller.train.checkpointing import checkpoint_path
from robustdistiller.train.trainer import distill

log = logging.getLogger("bench.rd_experiment")


def trained(
    out: Path, teacher: Path, manifest: Path, *, robust: bool, seed: int, steps: int, name: str, overrides: list[str]
) -> Path:
    """Final checkpoint of one student, distilled unless it exists already.

    Args:
        robust: the RobustDistiller student (corruption + enhancement head) or the baseline.
        name: its folder under ``out``; ``overrides``: ``key=value`` changes to the demo recipe.
    Returns:
        The path of its checkpoint after ``steps`` steps.
    """
    recipe = demo_recipe(out, teacher, manifest, robust=robust, seed=seed, steps=steps, overrides=overrides, name=name)
    final = checkpoint_path(recipe.train.out_dir, steps)
    if not final.is_file():
        start = time.perf_counter()
        result = distill(recipe, overwrite=True)
        if result.checkpoint is None or result.interrupted:
            raise SystemExit(f"{name} did not finish")
        log.info("%s: %d steps in %.1f min", name, steps, (time.perf_counter() - start) / 60)
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="experiment name (student folder: NAME-seedS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DEMO_STEPS)
    parser.add_argument("--out", type=Path, default=Path("runs/rdx"))
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the robust student's recipe")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tasks = shipped_speaker_tasks(out / "material", seed=args.seed)
    manifest = training_manifest(out)
    teacher = out / "teacher"
    if not (teacher / "config.json").is_file():
        prepare_teacher(out, args.seed, random_teacher=False)
    baseline = trained(
        out,
        teacher,
        manifest,
        robust=False,
        seed=args.seed,
        steps=args.steps,
        name=f"baseline-s{args.seed}-{args.steps}",
        overrides=[],
    )
    robust = trained(
        out,
        teacher,
        manifest,
        robust=True,
        seed=args.seed,
        steps=args.steps,
        name=f"{args.name}-s{args.seed}",
        overrides=args.overrides,
    )
    options = evaluation_options(quick=False)
    options.cache_dir = out / "cache"
    options.efficiency = options.evaluate_teacher = False
    options.max_distortion, options.max_enhancement = 1, 0
    results = evaluate(
        [baseline, robust],
        teacher=teacher,
        tasks=tasks,
        conditions=demo_conditions(False, args.seed, out),
        out_dir=out / f"eval-{args.name}-s{args.seed}",
        seed=args.seed,
        names=["distilhubert-baseline", "robustdistiller"],
        options=options,
        title=f"experiment {args.name}",
    )
    rows = comparison_rows(results)
    record = {
        "name": args.name,
        "seed": args.seed,
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
        )


if __name__ == "__main__":
    main()
