"""Training under faults: failures end the process with one line, run folders belong to one run,
resume with changed settings applies them or refuses."""

from __future__ import annotations

import math
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from robustdistiller.checkpoints.s3prl import read_s3prl_checkpoint
from robustdistiller.config import to_dict
from robustdistiller.train.checkpointing import RunFolderInUseError
from robustdistiller.train.distillation import DistillTrainer, distill
from robustdistiller.train.recipe import DistillRecipe
from robustdistiller.train.trainer import ResumeMismatchError

TIMEOUT = 90


def run_cli(config: Path, *args: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    """``distill --config config args`` in a subprocess that must end within ``TIMEOUT`` seconds.
    ``fsize`` caps the size of every file it writes (a full disk: writes fail with EFBIG)."""

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "robustdistiller.cli", "distill", "--config", str(config), *args]
    # subprocess.run kills the child on timeout and raises TimeoutExpired: a hang fails the test.
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=limit)


def write_recipe(recipe: DistillRecipe, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_dict(recipe)))
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in last, last


def test_all_unreadable_manifest_exits_with_one_line(make_recipe, tmp_path: Path) -> None:
    """Used to print a traceback and then wait forever on the DataLoader worker."""
    for i in range(6):
        (tmp_path / f"b{i}.wav").write_bytes(os.urandom(3000))
    rows = "".join(f"b{i}.wav\t16000\n" for i in range(6))
    manifest = tmp_path / "bad.tsv"
    manifest.write_text(f"# root: {tmp_path}\npath\tnum_samples\n{rows}")
    recipe = make_recipe(f"data.manifests=[{manifest}]", "data.num_workers=1")
    proc = run_cli(write_recipe(recipe, tmp_path / "r.yaml"))
    assert_one_line_error(proc, "no file of the training data could be read")
    listed = (Path(recipe.train.out_dir) / "bad_files.tsv").read_text().splitlines()
    assert listed[0] == "path\treason\tdetail" and len(listed) == 7
    assert all(line.split("\t")[1] == "unreadable" for line in listed[1:])


def test_full_disk_at_checkpoint_exits_with_one_line(make_recipe, tmp_path: Path) -> None:
    recipe = make_recipe("data.num_workers=1", "train.save_every=2")
    proc = run_cli(write_recipe(recipe, tmp_path / "r.yaml"), fsize=300_000)
    assert_one_line_error(proc, "states-2.ckpt", "could not write")
    out = Path(recipe.train.out_dir)
    assert not list(out.glob("states-*")) and not list(out.glob(".states-*")), list(out.iterdir())


# ------------------------------------------------------------------ one run per folder, resume
def test_new_run_into_a_folder_holding_a_run_is_refused(make_recipe) -> None:
    """Used to start, overwrite states-2.ckpt and let keep-last pruning keep the old run's newer ones."""
    old = distill(make_recipe("optim.total_steps=4", "train.save_every=2"))
    out = Path(old.checkpoint).parent
    before = {p.name: p.read_bytes() for p in out.glob("states-*.ckpt")}
    with pytest.raises(RunFolderInUseError, match=r"already holds a run \(states-2.ckpt, states-4.ckpt\).*--resume"):
        DistillTrainer(make_recipe("optim.total_steps=2", "train.save_every=2"))
    assert {p.name: p.read_bytes() for p in out.glob("states-*.ckpt")} == before

    new = distill(make_recipe("optim.total_steps=2", "train.save_every=2"), overwrite=True)
    assert sorted(p.name for p in out.glob("states-*.ckpt")) == ["states-2.ckpt"]
    assert new.checkpoint == out / "states-2.ckpt"
    assert yaml.safe_load((out / "recipe.yaml").read_text())["optim"]["total_steps"] == 2


def test_resume_extends_a_finished_run_with_a_longer_schedule(make_recipe) -> None:
    """Used to restore the old total_steps: the extension trained at learning rate 0."""
    warmup = "optim.warmup_proportion=0.25"
    first = distill(make_recipe("optim.total_steps=4", "train.save_every=2", warmup))
    trainer = DistillTrainer(
        make_recipe("optim.total_steps=8", "optim.lr=2e-3", "train.save_every=2", warmup), resume=True
    )
    # Step 4 of 8, warm-up over the first 2: (1 - 4/8) / (1 - 0.25) of the way down, from the new peak.
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(2e-3 * 0.5 / 0.75)
    assert all(g["lr"] == pytest.approx(2e-3 * 0.5 / 0.75) for g in trainer.optimizer.param_groups)
    assert trainer.scheduler.base_lrs == [2e-3] * len(trainer.optimizer.param_groups)
    result = trainer.fit()
    assert result.step == 8 and result.losses and not any(math.isnan(x) for x in result.losses)
    before = read_s3prl_checkpoint(first.checkpoint).state_dict
    after = read_s3prl_checkpoint(result.checkpoint).state_dict
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_resume_refuses_other_changes_naming_each(make_recipe) -> None:
    distill(make_recipe("optim.total_steps=2", "train.save_every=2"))
    changed = make_recipe("optim.total_steps=4", "data.batch_size=2", "student.cosine_loss=0.5")
    with pytest.raises(ResumeMismatchError) as err:
        DistillTrainer(changed, resume=True)
    message = str(err.value)
    assert "data.batch_size: 4 -> 2" in message and "student.cosine_loss: 1.0 -> 0.5" in message
    assert "optim.total_steps" not in message.split("Changeable")[0]
    with pytest.raises(ResumeMismatchError, match="optim.total_steps=1 is below the run's step 2"):
        DistillTrainer(make_recipe("optim.total_steps=1"), resume=True)
