"""Training checkpoints: where they live, which one to resume from, how many to keep.

Each ``states-{step}.ckpt`` is an s3prl distiller checkpoint (``Distiller`` / ``Config`` / ``Step``,
written atomically by :func:`robustdistiller.checkpoints.s3prl.save_s3prl_checkpoint`) plus what an exact
resume needs: ``Optimizer``, ``Scheduler``, ``EnhancementHead`` and ``Resume`` (data position,
per-rank RNG states, bad-step counters, GradScaler). Only files whose name matches exactly are
candidates, so a temporary file left by a killed write is never picked.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from robustdistiller.atomic import stale_temps
from robustdistiller.checkpoints.safe_pickle import safe_load
from robustdistiller.errors import UsageError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^states-(\d+)\.ckpt$")
# Written by a run beside its checkpoints; removed with them when a new run overwrites the folder.
_RUN_FILES = ("recipe.yaml", "log.jsonl", "bad_files.tsv")


class RunFolderInUseError(UsageError):
    """A new run was asked for in a folder that holds another run's checkpoints."""


def claim_run_folder(out_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Make ``out_dir`` ready for this run: stale temp files of killed writes are removed, and a new
    run (no ``resume``) refuses a folder holding another run's checkpoints unless ``overwrite``,
    which deletes them first (so keep-last pruning can never delete the new run's checkpoints).

    Raises:
        RunFolderInUseError: the folder holds checkpoints and neither ``resume`` nor ``overwrite``.
    """
    out_dir = Path(out_dir)
    for stale in stale_temps(out_dir):
        log.info("removing %s, left by a write that never finished", stale)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    held = list_checkpoints(out_dir)
    if resume or not held:
        return
    if not overwrite:
        names = ", ".join(p.name for _, p in held[-3:])
        raise RunFolderInUseError(
            f"train.out_dir {out_dir} already holds a run ({names}): continue it with --resume, start "
            "again with --overwrite (deletes its checkpoints), or set another train.out_dir"
        )
    log.warning("--overwrite: deleting %d checkpoint(s) of the previous run in %s", len(held), out_dir)
    for _, path in held:
        path.unlink(missing_ok=True)
    for name in _RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / f"states-{step}.ckpt"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``out_dir`` as ``(step, path)``, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for path in out_dir.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_checkpoints(out_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints; returns the deleted paths."""
    doomed = [path for _, path in list_checkpoints(out_dir)[:-keep_last]] if keep_last > 0 else []
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def load_latest_checkpoint(out_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads and carries resume state, or None when there is none.

    A damaged newest file (disk full, copied half-way by hand) is reported and the previous one is
    used, rather than failing a long job at restart.
    """
    for _, path in reversed(list_checkpoints(out_dir)):
        try:
            state = safe_load(path)
        except ValueError as exc:
            log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
            continue
        if not isinstance(state, dict) or "Resume" not in state:
            log.warning("ignoring %s: it has no resume state (not written by this trainer)", path)
            continue
        return path, state
    return None
