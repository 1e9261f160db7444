"""``robustdistiller prune``: DPHuBERT-style distill + prune, pruning, final distillation (``train.run_prune``)."""

from __future__ import annotations

import argparse

from robustdistiller.commands.training import add_recipe_arguments, run_training

EPILOG = """examples:
  robustdistiller prune --config rd_dpwavlm data.root=/data/LibriSpeech \\
      corruption.noise.musan=/data/musan corruption.rir.rir_dirs=[/data/RIRS_NOISES/SLR28]
  robustdistiller prune --config dpwavlm data.root=/data/LibriSpeech --resume
  torchrun --nproc_per_node=4 -m robustdistiller.cli prune --config rd_dpwavlm data.root=...

Recipes: dpwavlm (DPHuBERT baseline), rd_dpwavlm (robust: corrupted student input, enhancement head),
or a YAML path. Outputs in train.out_dir: stage1/ and stage2/ (resumable checkpoints), pruned.pth
and final.pth (DPHuBERT format; `robustdistiller info final.pth`). Exit status: 0 when done,
130 / 143 when stopped by SIGINT / SIGTERM after saving a checkpoint (continue with --resume),
1 on a configuration or data error."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="compress a teacher by joint distillation and structured pruning (DPHuBERT / RD-DPWavLM)",
        description="Stage 1 (distill + prune with hard-concrete gates to a target sparsity), the pruning "
        "step (gated-off units removed, masks folded), stage 2 (final distillation). Each stage resumes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_arguments(
        parser,
        recipes="dpwavlm, rd_dpwavlm",
        resume="continue the unfinished stage from its newest checkpoint in train.out_dir",
        override="pruning.target_sparsity=0.6",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.train.prune_recipe import load_prune_recipe
    from robustdistiller.train.pruning import run_prune

    recipe = load_prune_recipe(args.config, args.overrides)
    result = run_training(lambda: run_prune(recipe, resume=args.resume, overwrite=args.overwrite))
    if result is None:
        return 1
    if result.final is not None:
        print(f"done: {result.final}")
    else:
        print(f"stopped in {result.stage} at step {result.step}; continue with --resume")
    return result.exit_code
