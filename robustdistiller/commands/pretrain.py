"""``robustdistiller pretrain``: HuBERT-style pre-training of a small teacher (``train.pretrain``)."""

from __future__ import annotations

import argparse
import shlex
import sys

from robustdistiller.commands.training import add_recipe_arguments, run_training

EPILOG = """examples:
  robustdistiller prepare folder ../shared/data/librispeech_subset --out exp/ls_subset.tsv
  robustdistiller pretrain --config hubert_mini data.manifests=[exp/ls_subset.tsv] train.out_dir=exp/hubert_mini
  robustdistiller pretrain --config robust_hubert_mini data.manifests=[exp/ls_subset.tsv] \\
      corruption.noise.musan=/data/musan train.out_dir=exp/robust_hubert_mini
  robustdistiller pretrain --config wavlm_mini data.manifests=[exp/ls_subset.tsv] train.out_dir=exp/wavlm_mini
  robustdistiller pretrain --config hubert_mini ... targets.kind=layer \\
      targets.source=exp/hubert_mini/teacher targets.layer=3 train.out_dir=exp/hubert_mini_it2
  robustdistiller pretrain --config hubert_mini ... --resume
  robustdistiller pretrain --config hubert_mini ... --export     # teacher from the newest checkpoint

Recipes: hubert_mini, robust_hubert_mini, wavlm_mini (or a YAML path). The k-means targets are fitted before the
first step (train.out_dir/clusters.npz); the teacher is written to train.out_dir/teacher (Hugging Face
folder + clusters.npz + model card) after the last step. Exit status as for distill: 0 when done,
130 / 143 when stopped by SIGINT / SIGTERM after saving a checkpoint, 1 on a configuration or data error."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pre-train a small HuBERT or WavLM teacher (masked prediction of k-means targets)",
        description="HuBERT-style masked prediction on unlabelled audio (WavLM: with utterance mixing); writes a "
        "Hugging Face teacher folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_arguments(
        parser,
        recipes="hubert_mini, robust_hubert_mini, wavlm_mini",
        resume="continue from the newest complete checkpoint in train.out_dir",
        override="optim.total_steps=2000",
    )
    parser.add_argument(
        "--export",
        action="store_true",
        help="only write train.out_dir/teacher from the newest checkpoint (e.g. of a stopped run)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustdistiller.train.pretrain import pretrain
    from robustdistiller.train.pretrain_recipe import load_pretrain_recipe

    recipe = load_pretrain_recipe(args.config, args.overrides)
    command = ""
    if sys.argv[1:2] == ["pretrain"]:  # the model card shows the command that trains (not --resume/--export)
        command = "robustdistiller " + shlex.join(a for a in sys.argv[1:] if a not in ("--resume", "--export"))
    result = run_training(lambda: pretrain(recipe, resume=args.resume, command=command, export_only=args.export))
    if result is None:
        return 1
    print(f"step {result.step}; checkpoint: {result.checkpoint}")
    return result.exit_code
