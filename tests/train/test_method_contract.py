"""The method itself: the teacher hears clean speech, the student (and the enhancement head) the
corrupted speech, and the head is trained to give back the clean signal.

Each model's input is recorded with hooks while the real trainer runs, so swapping ``wavs`` and
``noisy`` anywhere in the trainer makes a test here fail.
"""

from __future__ import annotations

from typing import Any

import torch

from robustdistiller.train import trainer as trainer_module
from robustdistiller.train.trainer import DistillTrainer

# Every utterance corrupted (white noise: no files needed), enhancement head on.
ALWAYS_CORRUPT = (
    "corruption.p_clean=0.0", "corruption.p_noise=1.0", "corruption.p_reverb=0.0",
    "corruption.p_noise_reverb=0.0", "corruption.white_noise_prob=1.0",
    "corruption.snr_low=0", "corruption.snr_high=5", "enhancement.use_enhancement=true",
    "optim.total_steps=2", "train.save_every=100",
)


class _Recorder:
    """Records, per micro-batch, the clean batch, the corrupted one and what each model received."""

    def __init__(self, trainer: DistillTrainer) -> None:
        self.log: dict[str, list[Any]] = {k: [] for k in
                                          ("clean", "noisy", "teacher", "student", "student_out", "head", "target")}
        real_next, real_apply = trainer.next_batch, trainer.policy.apply

        def next_batch(data):
            item = real_next(data)
            self.log["clean"].append(item.batch.wavs.clone())
            return item

        def apply(*args, **kwargs):
            result = real_apply(*args, **kwargs)
            self.log["noisy"].append(result.noisy.detach().clone())
            return result

        trainer.next_batch, trainer.policy.apply = next_batch, apply
        trainer.teacher.model.register_forward_pre_hook(lambda _m, args: self.log["teacher"].append(args[0].clone()))
        trainer.student.register_forward_pre_hook(lambda _m, args: self.log["student"].append(args[0].clone()))
        trainer.student.register_forward_hook(lambda _m, _a, out: self.log["student_out"].append(out))
        trainer.head.register_forward_pre_hook(lambda _m, args: self.log["head"].append(args))


def test_teacher_hears_clean_audio_and_student_the_corrupted(make_recipe) -> None:
    trainer = DistillTrainer(make_recipe(*ALWAYS_CORRUPT))
    seen = _Recorder(trainer).log
    trainer.fit()

    assert len(seen["clean"]) == len(seen["teacher"]) == len(seen["student"]) == 2
    for clean, noisy, teacher_in, student_in in zip(seen["clean"], seen["noisy"], seen["teacher"], seen["student"]):
        assert torch.equal(teacher_in, clean)
        assert torch.equal(student_in, noisy)
        # every row was corrupted (SNR <= 5 dB), so no row of the student's input is the clean one
        differs = (student_in - clean).abs().amax(dim=1)
        assert bool((differs > 1e-3).all()), differs


def test_enhancement_head_maps_student_features_of_noisy_audio_to_the_clean_signal(make_recipe, monkeypatch) -> None:
    targets: list[torch.Tensor] = []
    real_loss = trainer_module.enhancement_loss

    def recording_loss(head, out, clean, lengths, loss):
        targets.append(clean.clone())
        return real_loss(head, out, clean, lengths, loss)

    monkeypatch.setattr(trainer_module, "enhancement_loss", recording_loss)
    trainer = DistillTrainer(make_recipe(*ALWAYS_CORRUPT))
    seen = _Recorder(trainer).log
    trainer.fit()

    assert len(targets) == len(seen["head"]) == 2
    for target, clean, noisy, (feats, head_audio, _lengths), out in zip(
            targets, seen["clean"], seen["noisy"], seen["head"], seen["student_out"]):
        assert torch.equal(target, clean)  # the loss compares the head's output with the clean signal
        assert torch.equal(head_audio, noisy)  # the mask is applied to the noisy STFT
        assert feats is out.cnn_features  # ... computed from the student's features of the noisy audio
