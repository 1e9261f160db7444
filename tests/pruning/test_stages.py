"""Stage 1 -> pruning -> stage 2 on a tiny teacher, through the trainer (and the CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_tiny import ContractRecorder

import robustdistiller
from robustdistiller.checkpoints.safe_pickle import safe_load
from robustdistiller.cli import main
from robustdistiller.config import apply_overrides, from_dict
from robustdistiller.evaluate.metrics import si_snr
from robustdistiller.evaluate.models import load_model_under_test
from robustdistiller.evaluate.scorers import enhancement_row
from robustdistiller.export.info import describe
from robustdistiller.models.pruning import PrunableConfig, PrunableModel, config_params
from robustdistiller.train.prune_recipe import PruneRecipe
from robustdistiller.train.pruning import (
    DistillPruneTrainer,
    FinalDistillTrainer,
    run_prune,
    stage_recipe,
    write_pruned,
)


def _recipe(manifest: Path, teacher: Path, out: Path, *overrides: str) -> PruneRecipe:
    data = {
        "data": {"manifests": [str(manifest)], "max_length": 4000, "batch_size": 2, "num_workers": 0, "seed": 3},
        "corruption": {"p_clean": 1.0, "p_noise": 0.0, "p_reverb": 0.0, "p_noise_reverb": 0.0},
        "teacher": {"source": str(teacher)},
        "enhancement": {"use_enhancement": False, "input_dim": 32, "num_layers": 1, "hidden_size": 8},
        # toy schedule: target at once, fast gates/multipliers, no Adam momentum (less Lagrangian
        # overshoot); settles within +-0.005 of the target by step ~100 across seeds
        "pruning": {"target_sparsity": 0.3, "sparsity_warmup_steps": 0, "reg_lr": 0.2, "distill_layers": [[0], [2, 3]]},
        "optim": {"lr": 1e-3, "total_steps": 120, "warmup_proportion": 0.0, "betas": [0.0, 0.9]},
        "final": {"lr": 1e-3, "total_steps": 2, "warmup_proportion": 0.0},
        "train": {"out_dir": str(out), "device": "cpu", "log_every": 20, "save_every": 1000, "keep_last": 2},
    }
    return from_dict(PruneRecipe, apply_overrides(data, list(overrides)))


def _gated_from_states(path: Path) -> PrunableModel:
    state = safe_load(path)
    model = PrunableModel(from_dict(PrunableConfig, state["config"]))
    model.load_state_dict({k[len("model.") :]: v for k, v in state["Student"].items() if k.startswith("model.")})
    return model.eval()


def test_distill_prune_finetune_reaches_target_and_reloads(tiny_manifest, teacher_dir, tmp_path, wave_batch) -> None:
    out = tmp_path / "run"
    result = run_prune(_recipe(tiny_manifest, teacher_dir("hubert"), out))
    assert result.exit_code == 0 and result.final == out / "final.pth"

    gated = _gated_from_states(out / "stage1" / "states-120.ckpt")
    expected = float(gated.expected_sparsity().detach())
    assert abs(expected - 0.3) <= 0.02, expected

    pruned = robustdistiller.load(out / "pruned.pth", precision="fp32")
    wavs, lengths = wave_batch
    with torch.no_grad():
        for a, b in zip(gated.extract(wavs, lengths), pruned.extract(wavs, lengths)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)  # pruning folded exactly
    actual = 1 - pruned.num_params() / gated.num_params()
    assert abs(actual - 0.3) <= 0.05, actual  # per-gate rounding of 4 heads / 32 channels on a toy model

    final = robustdistiller.load(out / "final.pth")
    assert (out / "stage2" / "states-2.ckpt").is_file()
    assert not torch.equal(final.post_extract_proj.weight, pruned.post_extract_proj.weight)  # stage 2 trained
    raw = torch.load(out / "final.pth", weights_only=True)
    assert set(raw) >= {"state_dict", "config", "distill_linear_projs"}
    assert torch.equal(raw["distill_linear_projs"]["1.weight"], raw["distill_linear_projs"]["2.weight"])
    info = describe(out / "final.pth")
    assert info["format"] == "dphubert"
    assert info["parameters"]["total"] == config_params(final.config) == final.num_params()
    states = final.extract(wavs, lengths)
    assert len(states) == 4 and states[0].shape[-1] == 64


def test_robust_variant_stops_resumes_and_runs_from_the_cli(tiny_manifest, teacher_dir, tmp_path, capsys) -> None:
    out = tmp_path / "rd"
    robust = [
        "corruption.p_clean=0.5",
        "corruption.p_noise=0.5",
        "corruption.white_noise_prob=1.0",
        "enhancement.use_enhancement=true",
        "optim.total_steps=4",
        "pruning.units=[conv,head,interm,attlayer]",
    ]
    recipe = _recipe(tiny_manifest, teacher_dir("wavlm"), out, *robust, "train.stop_at_step=2")
    stopped = run_prune(recipe)
    assert stopped.stage == "distill_prune" and stopped.step == 2 and stopped.final is None
    assert not (out / "pruned.pth").exists()

    yaml_path = tmp_path / "rd.yaml"
    import yaml

    from robustdistiller.config import to_dict

    data = to_dict(_recipe(tiny_manifest, teacher_dir("wavlm"), out, *robust))
    yaml_path.write_text(yaml.safe_dump(data))
    assert main(["prune", "--config", str(yaml_path), "--resume"]) == 0
    assert "done:" in capsys.readouterr().out
    assert (out / "stage1" / "states-4.ckpt").is_file() and (out / "final.pth").is_file()
    raw = safe_load(out / "final.pth")
    assert "encoder_remaining_heads" in raw["config"] and "enhancement_head" in raw
    model = robustdistiller.load(out / "final.pth")
    assert model.config.family == "wavlm"
    _evaluate_scores_the_saved_head(out / "final.pth", raw)
    # a second --resume has nothing left to do
    assert main(["prune", "--config", str(yaml_path), "--resume"]) == 0

    with pytest.raises(ValueError, match="pruning.units"):
        _recipe(tiny_manifest, teacher_dir("wavlm"), out, "pruning.units=[conv,typo]")


def _evaluate_scores_the_saved_head(path: Path, raw: dict) -> None:
    """``evaluate`` rebuilds an RD-DPWavLM file's head from its weights and config and enhances with
    it: the pruned model's CNN features of the noisy input go in, a waveform of the input's length
    comes out."""
    mut = load_model_under_test(path, "rd-dpwavlm")
    assert mut.enhancement is not None and mut.describe()["has_enhancement"]
    for key, value in mut.enhancement.state_dict().items():
        assert torch.equal(value, raw["enhancement_head"][key]), key
    rng = np.random.default_rng(0)
    clean = (0.3 * np.sin(np.arange(8000) * 0.05)).astype(np.float32)
    noisy = clean + 0.1 * rng.standard_normal(8000).astype(np.float32)
    x = torch.from_numpy(noisy)[None]
    with torch.no_grad():
        expected = mut.enhancement.enhance(mut.model(x, torch.tensor([8000])).cnn_features, x, torch.tensor([8000]))
    row = enhancement_row(mut, "toy", "white", [(clean, noisy)])
    assert row["n"] == 1 and row["si_snr"] == pytest.approx(si_snr(expected[0].numpy(), clean), abs=1e-4)


@pytest.mark.parametrize("stage", ["distill_prune", "final_distill"])
def test_both_stages_give_the_teacher_clean_audio_and_the_student_corrupted(
    tiny_manifest, teacher_dir, tmp_path, stage
) -> None:
    always = [
        "corruption.p_clean=0.0",
        "corruption.p_noise=1.0",
        "corruption.white_noise_prob=1.0",
        "corruption.snr_high=5",
        "enhancement.use_enhancement=true",
        "optim.total_steps=2",
        "final.total_steps=2",
    ]
    recipe = _recipe(tiny_manifest, teacher_dir("wavlm"), tmp_path / "run", *always)
    if stage == "distill_prune":
        trainer = DistillPruneTrainer(stage_recipe(recipe, stage))
    else:
        first = DistillPruneTrainer(stage_recipe(recipe, "distill_prune"))
        pruned = write_pruned(first.objective, tmp_path / "pruned.pth")
        trainer = FinalDistillTrainer(stage_recipe(recipe, stage), pruned)
    recorder = ContractRecorder(trainer, trainer.objective.teacher)
    trainer.fit()
    recorder.check_inputs(steps=2)
    for (feats, head_audio, _), noisy, out in zip(
        recorder.log["head"], recorder.log["noisy"], recorder.log["student_out"]
    ):
        assert torch.equal(head_audio, noisy) and feats is out.out.cnn_features
