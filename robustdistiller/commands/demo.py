"""``robustdistiller demo``: the whole pipeline offline in a few minutes on a laptop CPU."""

from __future__ import annotations

import argparse

from robustdistiller.errors import UsageError

EPILOG = """examples:
  robustdistiller demo --out runs/demo            # at most 10 minutes on 2 CPU cores
  robustdistiller demo --out runs/demo-quick --quick
  robustdistiller demo --out runs/demo-random --random-teacher   # what pre-training the teacher adds
  robustdistiller demo --out runs/demo optim.lr=1e-3   # recipe overrides apply to both students
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="distil a baseline and a robust student from the shipped mini teacher, evaluate them on real "
        "held-out recordings, write a report",
        description="Offline end-to-end demo: the shipped mini HuBERT teacher; a DistilHuBERT baseline and a "
        "RobustDistiller student trained with identical budgets (configs/demo.yaml) on shipped real "
        "speech, the robust one with generated noises and simulated rooms; evaluation on shipped "
        "recordings of held-out speakers under recorded noises and unseen rooms; report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a few steps and a tiny evaluation (smoke test)")
    parser.add_argument("--steps", type=int, help="training steps per student (default: 500; --quick: 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--seeds",
        type=int,
        help="students of each kind, seeds --seed, --seed + 1, ... "
        "(default 2; 1 with --quick); the report averages over them",
    )
    parser.add_argument(
        "--random-teacher",
        action="store_true",
        help="distil from a randomly initialised teacher of the same shape instead of the shipped one",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="demo recipe overrides for both students")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.demo import next_commands, run_demo

    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    result = run_demo(
        args.out,
        quick=args.quick,
        seed=args.seed,
        seeds=args.seeds,
        steps=args.steps,
        overrides=args.overrides,
        random_teacher=args.random_teacher,
    )
    print(f"\ndemo finished in {result.seconds / 60:.1f} min")
    label = f"teacher ({'random' if args.random_teacher else 'shipped'}):"
    print(f"{label:<22}{result.teacher}")
    print(f"baseline checkpoint:  {result.baseline}")
    print(f"robust checkpoint:    {result.robust}")
    print(f"report:               {result.report_md}  (and {result.report_html.name})")
    print("next:\n  " + next_commands(result.out_dir, result.robust, result.baseline).replace("\n", "\n  "))
    return 0
