"""``robustdistiller distill``: train a student from a recipe (a thin wrapper over ``train.distill``)."""

from __future__ import annotations

import argparse

from robustdistiller.commands.training import add_recipe_arguments, run_training

EPILOG = """examples:
  robustdistiller distill --config rd_wavlm data.root=/data/LibriSpeech \\
      corruption.noise.musan=/data/musan corruption.rir.rir_dirs=[/data/RIRS_NOISES/SLR28]
  robustdistiller distill --config rd_wavlm data.root=/data/LibriSpeech --resume
  torchrun --nproc_per_node=4 -m robustdistiller.cli distill --config rd_wavlm data.root=...
  robustdistiller distill --config my_recipe.yaml optim.total_steps=1000 train.device=cpu

Recipes: distilhubert, rd_hubert, rd_wavlm, rd_rhubert, demo (or a YAML path). Every value can be
overridden as section.key=value (anywhere on the line). A train.out_dir holding another run is refused
unless --resume (continue it; optim.lr / optim.total_steps and run-control settings may change, other
changes are refused with each difference named) or --overwrite (delete its checkpoints). Exit status: 0 when done, 130 / 143 when stopped by SIGINT /
SIGTERM after saving a checkpoint (continue with --resume), 1 on a configuration or data error."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="distil a teacher into a small (robust) student from a recipe",
        description="Train a DistilHuBERT / RobustDistiller student. Checkpoints are s3prl-compatible "
        "(states-<step>.ckpt in train.out_dir) and hold everything needed to resume exactly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_arguments(
        parser,
        recipes="e.g. rd_wavlm",
        resume="continue from the newest complete checkpoint in train.out_dir",
        override="optim.lr=1e-4",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.train.distillation import distill
    from robustdistiller.train.recipe import load_recipe

    recipe = load_recipe(args.config, args.overrides)
    result = run_training(lambda: distill(recipe, resume=args.resume, overwrite=args.overwrite))
    if result is None:
        return 1
    print(f"step {result.step}; checkpoint: {result.checkpoint}")
    return result.exit_code
