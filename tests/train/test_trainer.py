from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from robustdistiller.checkpoints.s3prl import read_s3prl_checkpoint
from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.train import distillation as distillation_module
from robustdistiller.train.checkpointing import list_checkpoints
from robustdistiller.train.distillation import DistillTrainer, distill
from robustdistiller.train.monitor import read_log
from robustdistiller.train.targets import teacher_targets
from robustdistiller.train.trainer import TrainingDivergedError

ROBUST = (
    "corruption.p_clean=0.25",
    "corruption.p_noise=0.25",
    "corruption.p_reverb=0.25",
    "corruption.p_noise_reverb=0.25",
    "corruption.noise.builtin=true",
    "corruption.rir.simulate_rirs.count=3",
    "enhancement.use_enhancement=true",
)


def test_training_lowers_the_loss(make_recipe) -> None:
    result = distill(make_recipe("optim.total_steps=16", "train.save_every=100"))
    assert result.step == 16 and result.bad_steps == 0 and result.interrupted is None
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.9 * first, result.losses


def test_robust_run_trains_the_head_and_writes_s3prl_checkpoints(make_recipe, tmp_path: Path) -> None:
    recipe = make_recipe(
        *ROBUST,
        "optim.total_steps=6",
        "train.save_every=3",
        "train.keep_last=1",
        f"corruption.noise.builtin_dir={tmp_path / 'noises'}",
    )
    trainer = DistillTrainer(recipe)
    head_before = {k: v.clone() for k, v in trainer.modules["head"].state_dict().items()}
    result = trainer.fit()

    assert result.step == 6 and all(math.isfinite(x) for x in result.losses)
    changed = [k for k, v in trainer.modules["head"].state_dict().items() if not torch.equal(v, head_before[k])]
    assert any(k.startswith("lstm.") for k in changed) and any(k.startswith("linear.") for k in changed)

    # keep_last=1: only the final checkpoint is left, in s3prl format with the run's provenance.
    assert [step for step, _ in list_checkpoints(recipe.train.out_dir)] == [6]
    ckpt = read_s3prl_checkpoint(result.checkpoint)
    assert ckpt.step == 6 and ckpt.teacher == recipe.teacher.source
    assert ckpt.raw["Config"]["enhancement_head"]["input_dim"] == 32
    assert set(ckpt.raw) >= {"Optimizer", "Scheduler", "EnhancementHead", "Resume"}
    for key, value in trainer.objective.student.state_dict().items():
        assert torch.equal(ckpt.state_dict[key], value), key

    rows = read_log(recipe.train.out_dir)
    assert [r["step"] for r in rows] == [2, 4, 6]
    row = rows[-1]
    for key in (
        "loss/rec_l2",
        "loss/cos_l3",
        "loss/enhancement",
        "lr",
        "grad_norm",
        "throughput/audio_hours_per_hour",
        "time/data_wait_fraction",
        "corruption/utterances",
    ):
        assert math.isfinite(row[key]), key
    assert (Path(recipe.train.out_dir) / "tensorboard").is_dir()


def _final_weights(result) -> dict[str, torch.Tensor]:
    raw = read_s3prl_checkpoint(result.checkpoint).raw
    return {
        **{f"s.{k}": v for k, v in raw["Distiller"].items()},
        **{f"h.{k}": v for k, v in raw["EnhancementHead"].items()},
    }


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact(make_recipe, tmp_path: Path, workers: int) -> None:
    # Dropout on, corruption on, an epoch boundary inside the run (3 batches of <= 6 per epoch):
    # every RNG and the data position have to be restored for the weights to agree.
    common = (
        *ROBUST,
        "optim.total_steps=4",
        "data.batch_size=6",
        "train.save_every=100",
        f"data.num_workers={workers}",
        "student.dropout=0.1",
        "enhancement.dropout=0.1",
        "enhancement.num_layers=2",
        f"corruption.noise.builtin_dir={tmp_path / 'noises'}",
    )
    straight = distill(make_recipe(*common, out="straight"))
    first = distill(make_recipe(*common, "train.stop_at_step=2", out="resumed"))
    assert first.step == 2 and first.checkpoint.name == "states-2.ckpt"
    resumed = distill(make_recipe(*common, out="resumed"), resume=True)
    assert resumed.step == 4 and len(resumed.losses) == 2
    assert resumed.losses == pytest.approx(straight.losses[2:], abs=1e-6)
    a, b = _final_weights(straight), _final_weights(resumed)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst


def test_corruption_finished_in_workers_trains_like_corruption_on_the_device(make_recipe, tmp_path: Path) -> None:
    common = (
        *ROBUST,
        "optim.total_steps=3",
        "train.save_every=100",
        "data.num_workers=2",
        f"corruption.noise.builtin_dir={tmp_path / 'noises'}",
    )
    device = distill(make_recipe(*common, "corruption.apply_on=device", out="device"))
    workers = distill(make_recipe(*common, "corruption.apply_on=workers", out="workers"))
    # The same plans, applied by the same CPU code in another process: float rounding at most.
    assert workers.losses == pytest.approx(device.losses, rel=1e-5)
    a, b = _final_weights(device), _final_weights(workers)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    # "auto" on CPU finishes in the workers, unless a curriculum makes the result depend on the step.
    assert DistillTrainer(make_recipe(*common, out="auto")).stream.collate.finish
    assert not DistillTrainer(make_recipe(*common, "corruption.inc_steps=10", out="curriculum")).stream.collate.finish


def test_non_finite_steps_are_skipped_then_abort(make_recipe, monkeypatch: pytest.MonkeyPatch) -> None:
    real = distillation_module.distillation_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] in (2, 3) or calls["n"] >= 5:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(distillation_module, "distillation_loss", sometimes_nan)
    trainer = DistillTrainer(make_recipe("train.max_bad_steps=3", "optim.total_steps=20"))
    with pytest.raises(TrainingDivergedError, match="3 non-finite steps in a row"):
        trainer.fit()
    # Steps 2-3 were skipped (scheduler not advanced), 4 was taken, the third bad one in a row
    # (the 7th step) aborted the run before it counted as done.
    assert trainer.step == 6 and trainer.bad_steps == 5
    assert trainer.scheduler.last_epoch == 2
    assert all(torch.isfinite(p).all() for p in trainer.objective.student.parameters())


def test_teacher_targets_match_unpadded_forward(tiny_teacher: Path) -> None:
    # The trainer runs the teacher once on the padded batch; that is only right because every row's
    # targets equal what the teacher gives the utterance alone (masked GroupNorm and attention).
    teacher = load_teacher(tiny_teacher)
    torch.manual_seed(0)
    lengths = torch.tensor([8000, 5000, 6543])
    wavs = torch.randn(3, 8000) * (torch.arange(8000) < lengths[:, None])
    frames = int(teacher.frame_lengths(lengths.max().unsqueeze(0)))
    targets = teacher_targets(teacher, wavs, lengths, [1, 3], frames)
    assert targets.shape == (3, 2, frames, 64)
    for row in range(3):
        alone = teacher(wavs[row : row + 1, : lengths[row]]).hidden_states
        n = alone[0].shape[1]
        for slot, layer in enumerate((1, 3)):
            assert torch.allclose(targets[row, slot, :n], alone[layer][0], atol=1e-4), (row, layer)
        assert not targets[row, :, n:].any()
    with pytest.raises(ValueError, match="outside the teacher's layers"):
        teacher_targets(teacher, wavs, lengths, [4], frames)
