"""`robustdistiller info` and `robustdistiller export`."""

from __future__ import annotations

import json

import pytest
import torch

from robustdistiller.checkpoints.load import load_student, open_model
from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.cli import main
from robustdistiller.export.exporters import EXPORTERS


@pytest.fixture
def checkpoint(tmp_path, student):
    return save_s3prl_checkpoint(
        tmp_path / "states-42.ckpt",
        student,
        step=42,
        extra_config={"teacher": {"model": "facebook/hubert-base-ls960"}},
        extra={"Optimizer": {"state": {}, "param_groups": []}},
    )


def test_info_json(checkpoint, student, capsys):
    assert main(["info", str(checkpoint), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    counts = student.parameter_counts()
    assert info["format"] == "s3prl"
    assert info["step"] == 42 and info["teacher"] == "facebook/hubert-base-ls960"
    assert info["parameters"] == {"total": counts.total, "without_heads": counts.without_heads}
    assert counts.total > counts.without_heads
    arch = info["architecture"]
    assert (arch["encoder_layers"], arch["embed_dim"], arch["attention_heads"]) == (2, 64, [4, 4])
    assert arch["pred_layer_id"] == [4, 8, 12]


def test_info_text(checkpoint, student, capsys):
    assert main(["info", str(checkpoint)]) == 0
    text = capsys.readouterr().out
    assert "format:       s3prl" in text
    assert f"{student.parameter_counts().without_heads:,} without prediction heads" in text
    assert "step:         42" in text and "teacher:      facebook/hubert-base-ls960" in text


def test_export_s3prl_is_slim_and_equal(tmp_path, checkpoint, student, batch, capsys):
    out = tmp_path / "slim.ckpt"
    assert main(["export", str(checkpoint), "--format", "s3prl", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    model, ckpt = load_student(out)
    assert set(ckpt.raw) == {"Distiller", "Config", "Step"}  # optimizer state dropped
    assert ckpt.step == 42 and ckpt.teacher == "facebook/hubert-base-ls960"
    with torch.no_grad():
        for a, b in zip(model.extract(*batch), student.extract(*batch), strict=True):
            assert torch.equal(a, b)


def test_export_hf_then_info(tmp_path, checkpoint, student, capsys):
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 0
    assert open_model(out).format == "hf"
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "hf" and info["step"] is None
    assert info["parameters"]["total"] == student.parameter_counts().without_heads


def test_cli_errors_are_one_line(tmp_path, checkpoint, capsys):
    assert main(["info", str(tmp_path / "missing.ckpt")]) == 1
    assert capsys.readouterr().err.startswith("error: no such checkpoint")

    hf_dir = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(hf_dir)]) == 0
    capsys.readouterr()
    assert main(["export", str(hf_dir), "--format", "s3prl", "--out", str(tmp_path / "back.ckpt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a distiller" in err and err.count("\n") == 1

    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "x.ckpt"), "--format", "tflite", "--out", "o"])
    assert "invalid choice" in capsys.readouterr().err
    assert set(EXPORTERS) >= {"hf", "s3prl"}
