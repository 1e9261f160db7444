"""Paths users take that the core trainer tests do not: bf16 and fp16 (GradScaler) training,
gradient accumulation with resume, resuming at an epoch boundary, and audio that turns bad while
a run is going."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
from fixtures_tiny import write_harmonic_manifest

from robustdistiller.checkpoints.s3prl import read_s3prl_checkpoint
from robustdistiller.train.checkpointing import load_latest_checkpoint
from robustdistiller.train.distillation import DistillTrainer, distill

# Dropout on, so a resume must restore every RNG to match.
DROPOUT = ("student.dropout=0.1", "train.save_every=100")


def _weights(result) -> dict[str, torch.Tensor]:
    return read_s3prl_checkpoint(result.checkpoint).raw["Distiller"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst


def test_bf16_autocast_trains_the_student_in_fp32_against_fp32_targets(make_recipe, monkeypatch) -> None:
    from robustdistiller.train import distillation as trainer_module

    seen: dict[str, torch.dtype] = {}
    real_loss = trainer_module.distillation_loss

    def recording(predictions, targets, *args, **kwargs):
        seen["targets"] = targets.dtype
        return real_loss(predictions, targets, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "distillation_loss", recording)
    trainer = DistillTrainer(
        make_recipe("train.precision=bf16", "optim.total_steps=4", "train.save_every=100", out="bf16")
    )
    trainer.objective.student.register_forward_hook(lambda _m, _a, out: seen.update(hidden=out.hiddens[-1].dtype))
    bf16 = trainer.fit()
    monkeypatch.undo()
    fp32 = distill(make_recipe("optim.total_steps=4", "train.save_every=100", out="fp32"))

    assert seen == {"hidden": torch.bfloat16, "targets": torch.float32}  # autocast on the student only
    assert bf16.bad_steps == 0 and all(math.isfinite(x) for x in bf16.losses)
    # bf16 keeps 8 bits of mantissa: the losses follow the fp32 run to a few percent
    assert bf16.losses == pytest.approx(fp32.losses, rel=0.03)
    assert bf16.losses[-1] < bf16.losses[0]
    assert all(v.dtype == torch.float32 for v in _weights(bf16).values() if v.is_floating_point())


def test_fp16_grad_scaler_skips_overflow_steps_backs_off_and_resumes(make_recipe, monkeypatch) -> None:
    # fp16 autocast runs on CPU in this torch; the trainer only refuses it there because it is slow.
    # The device check is stubbed so the GradScaler logic runs here.
    fp32 = DistillTrainer(make_recipe("optim.total_steps=3", "train.save_every=100", "optim.grad_clip=1e9", out="fp32"))
    fp32_norm = fp32.train_step([fp32.next_batch(iter(fp32.stream))]).grad_norm  # the same first batch
    monkeypatch.setattr(DistillTrainer, "_check_precision", lambda self: None)
    recipe = make_recipe("train.precision=fp16", "optim.total_steps=3", "train.save_every=100", "optim.grad_clip=1e9")
    trainer = DistillTrainer(recipe)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    # Step 1 finite; step 2 gets an inf gradient (fp16 overflow); step 3 finite again.
    param = trainer.objective.student.post_extract_proj.weight
    param.register_hook(lambda grad: grad * math.inf if trainer.step == 1 else grad)
    norms: list[float] = []
    real_step = DistillTrainer._optimizer_step

    def observe(self, loss):
        before = param.detach().clone()
        taken, norm = real_step(self, loss)
        norms.append(norm)
        assert torch.equal(param.detach(), before) != taken  # weights move only on taken steps
        return taken, norm

    monkeypatch.setattr(DistillTrainer, "_optimizer_step", observe)
    result = trainer.fit()

    assert result.step == 3 and result.bad_steps == 0  # an overflow is the scaler's business, not a bad step
    assert math.isnan(result.losses[1]) and math.isfinite(result.losses[0]) and math.isfinite(result.losses[2])
    assert trainer.scheduler.last_epoch == 2  # the skipped step did not advance the schedule
    assert trainer.scaler.get_scale() == 512.0  # backed off once
    # gradients are unscaled before clipping / reporting: step 1's norm is the fp32 run's, not 1024x it
    assert norms[0] == pytest.approx(fp32_norm, rel=0.05)
    assert math.isfinite(norms[2]) and not math.isfinite(norms[1])

    resumed = DistillTrainer(recipe, resume=True)
    assert resumed.scaler.get_scale() == 512.0 and resumed.step == 3


def test_gradient_accumulation_resumes_exactly(make_recipe) -> None:
    common = (*DROPOUT, "optim.grad_accum=2", "optim.total_steps=3")
    straight = distill(make_recipe(*common, out="straight"))
    first = distill(make_recipe(*common, "train.stop_at_step=1", out="resumed"))
    assert first.step == 1
    resumed = distill(make_recipe(*common, out="resumed"), resume=True)
    assert resumed.losses == pytest.approx(straight.losses[1:], abs=1e-6)
    _assert_same_weights(_weights(straight), _weights(resumed))


def test_resuming_when_the_saved_epoch_is_used_up_starts_the_next_one(make_recipe) -> None:
    # 16 utterances in batches of 8: 2 batches per epoch; stopping after step 2 uses epoch 0 up.
    common = (*DROPOUT, "data.batch_size=8", "optim.total_steps=3")
    batches = len(DistillTrainer(make_recipe(*common, out="probe")).stream.sampler)
    assert batches == 2
    straight = distill(make_recipe(*common, out="straight"))
    first = distill(make_recipe(*common, f"train.stop_at_step={batches}", out="resumed"))
    _, state = load_latest_checkpoint(first.checkpoint.parent)
    assert (state["Resume"]["data"]["epoch"], state["Resume"]["data"]["position"]) == (1, 0)

    resumed = distill(make_recipe(*common, out="resumed"), resume=True)
    assert resumed.step == 3 and resumed.losses == pytest.approx(straight.losses[2:], abs=1e-6)
    _assert_same_weights(_weights(straight), _weights(resumed))


@pytest.mark.parametrize("workers", [0, 2])
def test_audio_that_turns_bad_during_training_is_skipped_counted_and_listed(
    make_recipe, tmp_path: Path, workers: int
) -> None:
    # Private audio: one file is removed and one cut short after the trainer read the manifest.
    manifest = write_harmonic_manifest(tmp_path, 16, (0.4, 0.9))
    recipe = make_recipe(
        f"data.manifests=[{manifest}]", f"data.num_workers={workers}", "optim.total_steps=4", "train.save_every=100"
    )
    trainer = DistillTrainer(recipe)
    gone, cut = tmp_path / "utt0.wav", tmp_path / "utt1.wav"
    gone.unlink()
    wav, rate = sf.read(cut, dtype="float32")
    sf.write(cut, wav[: len(wav) // 3], rate)  # a valid file, now a third as long

    result = trainer.fit()  # 4 steps of 4 utterances: one epoch, every file is met
    assert result.step == 4 and all(math.isfinite(x) for x in result.losses)  # the run went on
    reasons = {Path(f.path).name: f.reason for f in result.bad_files}
    assert reasons == {"utt0.wav": "missing", "utt1.wav": "truncated"}
    with (Path(recipe.train.out_dir) / "bad_files.tsv").open() as fh:
        listed = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(fh, delimiter="\t")}
    assert listed == reasons
