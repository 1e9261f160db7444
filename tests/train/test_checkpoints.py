"""Training checkpoints: which one a resume picks, and what a write leaves behind when it fails.

The durability tests go through the trainer's own save path (``DistillTrainer.save`` ->
``save_s3prl_checkpoint`` -> ``robustdistiller.atomic``), so a plain ``torch.save`` in the checkpoint
writer makes them fail.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch

from robustdistiller import atomic
from robustdistiller.checkpoints.s3prl import read_s3prl_checkpoint
from robustdistiller.train.checkpointing import list_checkpoints, load_latest_checkpoint
from robustdistiller.train.distillation import DistillTrainer, distill


def _trainer_with_checkpoints(make_recipe, steps: list[int]) -> DistillTrainer:
    """A trainer that saved a checkpoint at each of ``steps``, its weights shifted before each save
    (so every checkpoint holds different weights)."""
    trainer = DistillTrainer(make_recipe("train.keep_last=10"))
    for step in steps:
        trainer.step = step
        with torch.no_grad():
            trainer.objective.student.post_extract_proj.bias.fill_(float(step))
        trainer.save()
    return trainer


def test_resume_takes_the_newest_valid_checkpoint(make_recipe) -> None:
    trainer = _trainer_with_checkpoints(make_recipe, [5, 10, 15, 20])
    out = trainer.out_dir
    assert [step for step, _ in list_checkpoints(out)] == [5, 10, 15, 20]
    newest = out / "states-20.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a copy cut half-way

    path, state = load_latest_checkpoint(out)
    assert path.name == "states-15.ckpt" and state["Step"] == 15

    resumed = DistillTrainer(make_recipe("train.keep_last=10"), resume=True)
    assert resumed.step == 15 and resumed.last_checkpoint == out / "states-15.ckpt"
    assert torch.equal(resumed.objective.student.post_extract_proj.bias, torch.full((64,), 15.0))


def test_a_write_that_fails_midway_keeps_the_previous_checkpoint_and_no_temp(
    make_recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer_with_checkpoints(make_recipe, [5])
    path = trainer.out_dir / "states-5.ckpt"
    before = path.read_bytes()
    files_before = sorted(os.listdir(trainer.out_dir))

    def half_then_disk_full(obj, f, *args, **kwargs) -> None:
        # writes a part of the file it is given (a handle, or a path if called with one), then fails
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half")
        else:
            f.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        trainer.save()  # same step: the write targets the existing states-5.ckpt
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(os.listdir(trainer.out_dir)) == files_before  # hidden temp files included
    assert read_s3prl_checkpoint(path).step == 5


def test_checkpoint_is_fsynced_renamed_then_its_folder_fsynced(make_recipe, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer_with_checkpoints(make_recipe, [])
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_fsync_dir = os.fsync, os.replace, atomic.fsync_dir

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "?"))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    def fsync_dir(folder) -> None:
        events.append(("fsync_dir", str(folder)))
        real_fsync_dir(folder)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(atomic, "fsync_dir", fsync_dir)
    trainer.step = 7
    path = trainer.save()

    kinds = [kind for kind, _ in events]
    assert ("replace", str(path)) in events and ("fsync_dir", str(path.parent)) in events, events
    rename = events.index(("replace", str(path)))
    # the data reached the disk before the rename, and the rename itself after it
    assert "fsync" in kinds[:rename], events
    assert kinds.index("fsync_dir", rename) > rename
    assert read_s3prl_checkpoint(path).step == 7


def test_sigterm_mid_run_then_resume_gives_the_uninterrupted_weights(
    make_recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The signal arrives in the middle of step 3 (after its forward passes); the run finishes that
    # step, saves, returns; a resume must then land on exactly the weights of a run never stopped.
    common = (
        "corruption.p_clean=0.5",
        "corruption.p_noise=0.5",
        "corruption.p_reverb=0.0",
        "corruption.p_noise_reverb=0.0",
        "corruption.white_noise_prob=1.0",
        "enhancement.use_enhancement=true",
        "student.dropout=0.1",
        "enhancement.dropout=0.1",
        "optim.total_steps=5",
        "train.save_every=100",
        "data.batch_size=6",
    )
    straight = distill(make_recipe(*common, out="straight"))

    real_step = DistillTrainer._optimizer_step

    def signal_during_step_3(self, loss):
        if self.step == 2:  # counted from 0: this is the third step
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, loss)

    monkeypatch.setattr(DistillTrainer, "_optimizer_step", signal_during_step_3)
    stopped = distill(make_recipe(*common, out="resumed"))
    monkeypatch.undo()
    assert stopped.interrupted == signal.SIGTERM and stopped.step == 3
    assert stopped.checkpoint.name == "states-3.ckpt"

    resumed = distill(make_recipe(*common, out="resumed"), resume=True)
    assert resumed.step == 5 and resumed.losses == pytest.approx(straight.losses[3:], abs=1e-6)
    a, b = read_s3prl_checkpoint(straight.checkpoint).raw, read_s3prl_checkpoint(resumed.checkpoint).raw
    for section in ("Distiller", "EnhancementHead"):
        worst = max(float((a[section][k] - b[section][k]).abs().max()) for k in a[section])
        assert worst <= 1e-6, (section, worst)
