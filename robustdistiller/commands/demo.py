"""``robustdistiller demo``: the whole pipeline offline in a few minutes on a laptop CPU."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  robustdistiller demo --out runs/demo            # about 5-10 minutes on 2 CPU cores
  robustdistiller demo --out runs/demo-quick --quick
  robustdistiller demo --out runs/demo optim.lr=1e-3   # recipe overrides apply to both students
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="distil a baseline and a robust student from a small random teacher, evaluate both, write a report",
        description="Offline end-to-end demo: built-in corpus, noises and simulated rooms; a random tiny HuBERT "
                    "teacher; a DistilHuBERT baseline and a RobustDistiller student trained with identical budgets "
                    "(configs/demo.yaml); robustness evaluation and report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a few steps and a tiny evaluation (smoke test)")
    parser.add_argument("--steps", type=int, help="training steps per student (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="demo recipe overrides for both students")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.demo import next_commands, run_demo

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    result = run_demo(args.out, quick=args.quick, seed=args.seed, steps=args.steps, overrides=args.overrides)
    print(f"\ndemo finished in {result.seconds / 60:.1f} min")
    print(f"teacher (random):     {result.teacher}")
    print(f"baseline checkpoint:  {result.baseline}")
    print(f"robust checkpoint:    {result.robust}")
    print(f"report:               {result.report_md}  (and {result.report_html.name})")
    print("next:\n  " + next_commands(result.out_dir, result.robust, result.baseline).replace("\n", "\n  "))
    return 0
