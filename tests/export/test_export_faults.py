"""Exports under faults: NaN weights are refused, a failed write leaves the previous model whole,
OS failures are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.cli import main
from robustdistiller.export import onnx as onnx_export


@pytest.fixture
def nan_checkpoint(tmp_path, student):
    with torch.no_grad():
        student.encoder.layers[0].fc1.weight[0, 0] = float("nan")
    return save_s3prl_checkpoint(tmp_path / "nan.ckpt", student, step=3)


def test_info_flags_nan_weights(nan_checkpoint, capsys) -> None:
    assert main(["info", str(nan_checkpoint)]) == 1
    captured = capsys.readouterr()
    assert "DAMAGED:      1 weight tensor(s) hold NaN/inf (e.g. encoder.layers.0.fc1.weight)" in captured.out
    assert captured.err.startswith("error: ")


@pytest.mark.parametrize("fmt", ["hf", "s3prl", "onnx"])
def test_export_refuses_nan_weights(nan_checkpoint, tmp_path, fmt, capsys) -> None:
    out = tmp_path / f"out.{fmt}"
    assert main(["export", str(nan_checkpoint), "--format", fmt, "--out", str(out)]) == 1
    assert "NaN/inf" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_onnx_export_keeps_the_previous_model(tmp_path, student, monkeypatch, capsys) -> None:
    ckpt = save_s3prl_checkpoint(tmp_path / "m.ckpt", student)
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    good = out.read_bytes()

    def full_disk(path, *args, **kwargs):  # the metadata rewrite runs out of space half-way
        Path(path).write_bytes(b"trunc")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(onnx_export, "_write_metadata", full_disk)
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out), "--layers", "0"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "m.onnx"]


@pytest.mark.parametrize("fmt", ["hf", "onnx", "s3prl"])
def test_output_under_a_file_is_one_line(tmp_path, student, fmt, capsys) -> None:
    ckpt = save_s3prl_checkpoint(tmp_path / "m.ckpt", student)
    (tmp_path / "f").write_text("x")
    assert main(["export", str(ckpt), "--format", fmt, "--out", str(tmp_path / "f" / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "is a file" in err
