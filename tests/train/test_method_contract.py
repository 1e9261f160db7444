"""The method itself: the teacher hears clean speech, the student (and the enhancement head) the
corrupted speech, and the head is trained to give back the clean signal.

Each model's input is recorded with hooks while the real trainer runs, so swapping ``wavs`` and
``noisy`` anywhere in the trainer makes a test here fail.
"""

from __future__ import annotations

import torch
from fixtures_tiny import ContractRecorder

from robustdistiller.train import enhancement as trainer_module
from robustdistiller.train.distillation import DistillTrainer

# Every utterance corrupted (white noise: no files needed), enhancement head on.
ALWAYS_CORRUPT = (
    "corruption.p_clean=0.0",
    "corruption.p_noise=1.0",
    "corruption.p_reverb=0.0",
    "corruption.p_noise_reverb=0.0",
    "corruption.white_noise_prob=1.0",
    "corruption.snr_low=0",
    "corruption.snr_high=5",
    "enhancement.use_enhancement=true",
    "optim.total_steps=2",
    "train.save_every=100",
)


def test_teacher_hears_clean_audio_and_student_the_corrupted(make_recipe) -> None:
    trainer = DistillTrainer(make_recipe(*ALWAYS_CORRUPT))
    recorder = ContractRecorder(trainer, trainer.objective.teacher.model)
    trainer.fit()
    recorder.check_inputs(steps=2)  # every row corrupted at <= 5 dB: none equals its clean row


def test_enhancement_head_maps_student_features_of_noisy_audio_to_the_clean_signal(make_recipe, monkeypatch) -> None:
    targets: list[torch.Tensor] = []
    real_loss = trainer_module.enhancement_loss

    def recording_loss(head, out, clean, lengths, loss):
        targets.append(clean.clone())
        return real_loss(head, out, clean, lengths, loss)

    monkeypatch.setattr(trainer_module, "enhancement_loss", recording_loss)
    trainer = DistillTrainer(make_recipe(*ALWAYS_CORRUPT))
    seen = ContractRecorder(trainer, trainer.objective.teacher.model).log
    trainer.fit()

    assert len(targets) == len(seen["head"]) == 2
    for target, clean, noisy, (feats, head_audio, _lengths), out in zip(
        targets, seen["clean"], seen["noisy"], seen["head"], seen["student_out"]
    ):
        assert torch.equal(target, clean)  # the loss compares the head's output with the clean signal
        assert torch.equal(head_audio, noisy)  # the mask is applied to the noisy STFT
        assert feats is out.cnn_features  # ... computed from the student's features of the noisy audio
