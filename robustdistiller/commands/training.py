"""Plumbing shared by the training verbs (``distill``, ``prune``): recipe arguments, diverged runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def add_recipe_arguments(parser: argparse.ArgumentParser, *, recipes: str, resume: str, override: str) -> None:
    """``--config`` (a recipe name among ``recipes``, or a YAML path), ``--resume`` (help ``resume``),
    ``--overwrite`` and ``KEY=VALUE`` recipe overrides (``override`` is the example shown)."""
    parser.add_argument("--config", required=True, help=f"recipe name ({recipes}) or YAML path")
    parser.add_argument("--resume", action="store_true", help=resume)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a train.out_dir that holds another run, deleting its checkpoints",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"recipe overrides, e.g. {override}")


def run_training(train: Callable[[], T]) -> T | None:
    """``train()``; None after one ``error:`` line on stderr if the run diverged (the verb exits with 1).

    A diverged run is a RuntimeError, which ``cli.main`` would otherwise show as a traceback."""
    # Imported here: the CLI builds every verb's parser, and torch should load only for the verb that runs.
    from robustdistiller.train.trainer import TrainingDivergedError

    try:
        return train()
    except TrainingDivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
