"""checkpoints.formats (one format detection for load and evaluate) and checkpoints.heads (one way to
store the enhancement head in every format)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from fixtures_tiny import perturb, tiny_prunable_config

import robustdistiller
from robustdistiller.checkpoints.dphubert import save_dphubert_checkpoint
from robustdistiller.checkpoints.formats import detect_format
from robustdistiller.checkpoints.heads import HEAD_LAYOUTS, read_head, store_head
from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.config import from_dict
from robustdistiller.errors import CheckpointFormatError, RobustDistillerError
from robustdistiller.evaluate.models import load_model_under_test
from robustdistiller.evaluate.scorers.enhancement import enhancement_row
from robustdistiller.models.enhancement import EnhancementConfig, EnhancementHead
from robustdistiller.models.pruning import PrunableModel


def _pruned_student() -> PrunableModel:
    model = PrunableModel(tiny_prunable_config("hubert", layer_heads=[[0, 1, 2], [1]], layer_ffn_dims=[50, 0]))
    perturb(model, 3)
    return model.eval()


def _head(input_dim: int, features: str) -> EnhancementHead:
    cfg = from_dict(
        EnhancementConfig,
        {
            "use_enhancement": True,
            "input": features,
            "input_dim": input_dim,
            "num_layers": 1,
            "hidden_size": 8,
            "dropout": 0.0,
        },
    )
    torch.manual_seed(0)
    return EnhancementHead(cfg).eval()


def test_each_kind_is_detected_from_the_content(tmp_path, student) -> None:
    ours = save_s3prl_checkpoint(tmp_path / "ours.bin", student)
    pruned = save_dphubert_checkpoint(tmp_path / "pruned.ckpt", _pruned_student())
    tensors = {"w": torch.zeros(1)}
    torch.save({"model": tensors, "cfg": {"model": {"_name": "hubert"}, "task": {}}}, tmp_path / "hydra.pt")
    torch.save({"model": tensors, "args": argparse.Namespace(arch="wav2vec2")}, tmp_path / "argparse.pt")
    torch.save({"model": tensors, "cfg": {"encoder_layers": 12}}, tmp_path / "wavlm.pt")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "wavlm"}))

    kinds = {
        name: detect_format(tmp_path / name).kind
        for name in ("ours.bin", "pruned.ckpt", "hydra.pt", "argparse.pt", "wavlm.pt", "hf")
    }
    assert kinds == {
        "ours.bin": "s3prl",
        "pruned.ckpt": "dphubert",
        "hydra.pt": "fairseq",
        "argparse.pt": "fairseq",
        "wavlm.pt": "unilm",
        "hf": "hf",
    }
    assert detect_format(ours).is_student and detect_format(pruned).is_student  # a pruned student is a student
    assert not detect_format(tmp_path / "wavlm.pt").is_student
    assert detect_format(pruned).raw["config"]["encoder_num_heads"] == [3, 1]  # read once, handed on

    assert detect_format("facebook/hubert-base-ls960", hub_ids=True).kind == "hf-hub"
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        detect_format("facebook/hubert-base-ls960")
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing.pt", hub_ids=True)  # a checkpoint suffix is never a hub id
    torch.save({"weights": tensors}, tmp_path / "other.pt")
    with pytest.raises(CheckpointFormatError, match=r"unsupported format: .* a dict with keys \['weights'\]"):
        detect_format(tmp_path / "other.pt")


def test_load_refuses_a_teacher_file_that_evaluate_accepts(tmp_path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": {"encoder_layers": 12}}, tmp_path / "wavlm.pt")
    with pytest.raises(CheckpointFormatError, match="a unilm checkpoint .*use load_teacher"):
        robustdistiller.load(tmp_path / "wavlm.pt")


def test_evaluate_scores_the_head_of_a_dphubert_format_student(tmp_path) -> None:
    """RD-DPWavLM's head used to be stored as weights only and never scored; the scores of a head
    in such a file are checked in tests/pruning/test_dphubert.py."""
    model = _pruned_student()
    head = _head(64, "last")
    path = save_dphubert_checkpoint(tmp_path / "final.pth", model, head=head)
    raw = torch.load(path, weights_only=True)
    assert set(raw["enhancement_head"]) == set(head.state_dict())  # DPHuBERT files keep their keys
    assert raw["enhancement_config"]["input"] == "last"

    mut = load_model_under_test(path, "rd-dp")
    assert mut.kind == "student" and mut.format == "dphubert"  # a pruned student is not a teacher
    assert mut.enhancement is not None and mut.enhancement_input == "last"
    clean = (0.3 * np.sin(np.arange(4000) * 0.07)).astype(np.float32)
    noisy = clean + 0.05 * np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    row = enhancement_row(mut, "toy", "white", [(clean, noisy)])
    assert row["n"] == 1 and row["si_snr"] is not None and row["si_snr_improvement"] is not None


def test_an_s3prl_file_stores_the_head_where_s3prl_ignores_it(tmp_path, student) -> None:
    head = _head(student.config.extractor_conv_feature_layers[-1][0], "cnn")
    path = save_s3prl_checkpoint(tmp_path / "rd.ckpt", student, head=head)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"Distiller", "Config", "Step", "EnhancementHead"}
    assert raw["Config"]["enhancement_head"]["input"] == "cnn"
    mut = load_model_under_test(path, "rd")
    assert mut.enhancement is not None and mut.enhancement_input == "cnn" and not mut.enhancement.training
    for name, value in head.state_dict().items():
        torch.testing.assert_close(mut.enhancement.state_dict()[name], value)


def test_a_head_that_does_not_fit_its_config_is_refused(tmp_path) -> None:
    head = _head(64, "last")
    raw: dict = {}
    layout = HEAD_LAYOUTS["dphubert"]
    store_head(raw, "dphubert", head)
    raw[layout.config[0]]["hidden_size"] = 16
    with pytest.raises(CheckpointFormatError, match="enhancement head does not match its config") as info:
        read_head(raw, "dphubert", "f.pth")
    assert isinstance(info.value, RobustDistillerError) and "\n" not in str(info.value)
    assert read_head({}, "dphubert", "f.pth") is None and read_head(raw, "hf", "x") is None
