"""int8 ONNX schemes: static (calibrated) CNN convolutions + dynamic matrix products, the auto choice,
calibration sets that cannot work, and the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from fixtures_tiny import hf_model, perturb, speechlike, tiny_prunable_config

from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.cli import main
from robustdistiller.export.onnx import export_onnx
from robustdistiller.export.quantize import MIN_COSINE, load_calibration, quantize_int8
from robustdistiller.models import precision
from robustdistiller.models.pruning import PrunableModel
from robustdistiller.runtime import OnnxModel


@pytest.fixture
def fp32_onnx(student, tmp_path: Path) -> Path:
    return export_onnx(student, tmp_path / "student.onnx").path


@pytest.fixture
def speech() -> list[np.ndarray]:
    return [speechlike(seconds, seed=seed) for seed, seconds in enumerate((1.5, 0.8, 2.0))]


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_static_conv_quantises_the_cnn_and_stays_close(fp32_onnx, speech, tmp_path):
    report = quantize_int8(fp32_onnx, tmp_path / "static.onnx", scheme="static-conv", calibration=speech)
    assert report.scheme == "static-conv" and report.min_cosine >= MIN_COSINE, report.cosine
    model = onnx.load(str(report.path))
    # weights of CNN blocks 1..6 are int8 initialisers that reach their Conv through DequantizeLinear (QDQ)
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    conv_weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv" and "conv_layers" in n.name]
    assert sum(w in dequantized for w in conv_weights) == 6  # block 0 (one input channel) stays fp32
    assert "DynamicQuantizeLinear" in _op_types(report.path)  # the matrix products, as in "dynamic"
    assert OnnxModel(report.path).layers == list(range(6))


@pytest.mark.parametrize("family", ["pruned", "teacher"])
def test_static_conv_on_pruned_and_teacher_models(family, speech, tmp_path):
    if family == "pruned":  # per-block CNN channels and per-layer heads, as pruning leaves them
        model = PrunableModel(
            tiny_prunable_config(
                "wavlm",
                conv_layers=[[24, 10, 5], [20, 3, 2], [28, 3, 2], [16, 3, 2], [32, 3, 2], [12, 2, 2], [32, 2, 2]],
                layer_heads=[[0, 1, 2], [1]],
                layer_ffn_dims=[96, 40],
            )
        ).eval()
        perturb(model, seed=3)
    else:
        hf_model("hubert").save_pretrained(tmp_path / "hf")
        model = load_teacher(tmp_path / "hf")
    fp32 = export_onnx(model, tmp_path / f"{family}.onnx").path
    report = quantize_int8(fp32, tmp_path / f"{family}-int8.onnx", scheme="static-conv", calibration=speech)
    assert report.min_cosine >= MIN_COSINE, report.cosine
    assert "QuantizeLinear" in _op_types(report.path)


def test_auto_follows_the_cpu_int8_units(fp32_onnx, speech, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    with caplog.at_level(logging.INFO, logger="robustdistiller.export.quantize"):
        report = quantize_int8(fp32_onnx, tmp_path / "auto.onnx", scheme="auto", calibration=speech)
    assert report.scheme == "dynamic" and "int8 auto: dynamic (no amx_int8" in caplog.text
    assert "QuantizeLinear" not in _op_types(report.path)

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    assert quantize_int8(fp32_onnx, tmp_path / "auto.onnx", scheme="auto", calibration=speech).scheme == "static-conv"

    monkeypatch.setattr("robustdistiller.export.quantize.MIN_COSINE", 1.5)  # static-conv can never pass now
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="robustdistiller.export.quantize"):
        report = quantize_int8(fp32_onnx, tmp_path / "auto.onnx", scheme="auto", calibration=speech)
    assert report.scheme == "dynamic" and "static-conv is inaccurate for this model" in caplog.text


def test_bad_calibration_sets_fail_before_export(student, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="calibration set .*empty: no audio files"):
        load_calibration(empty)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="holds no readable audio.*a.wav"):
        load_calibration(tmp_path / "junk")
    with pytest.raises(ValueError, match="static-conv needs calibration audio"):
        quantize_int8(tmp_path / "unused.onnx", tmp_path / "x.onnx", scheme="static-conv", calibration=[])

    ckpt = save_s3prl_checkpoint(tmp_path / "states-1.ckpt", student, step=1)
    out = tmp_path / "student-int8.onnx"
    argv = ["export", str(ckpt), "--format", "onnx", "--out", str(out), "--int8", "--calibration"]
    assert main([*argv, str(tmp_path / "junk")]) == 1
    assert "holds no readable audio" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "missing")]) == 1
    assert not out.exists()
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out), "--calibration", str(empty)]) == 1
    assert "add --int8" in capsys.readouterr().err


def test_export_cli_static_conv_with_a_calibration_folder(student, tmp_path, capsys):
    folder = tmp_path / "speech"
    folder.mkdir()
    for seed in range(3):
        sf.write(folder / f"{seed}.wav", speechlike(1.0, seed=seed), 16000)
    ckpt = save_s3prl_checkpoint(tmp_path / "states-1.ckpt", student, step=1)
    out = tmp_path / "student-int8.onnx"
    argv = [
        "export",
        str(ckpt),
        "--format",
        "onnx",
        "--out",
        str(out),
        "--int8",
        "--int8-scheme",
        "static-conv",
        "--calibration",
        str(folder),
        "--layers",
        "0",
        "2",
    ]
    assert main(argv) == 0 and "wrote onnx" in capsys.readouterr().out
    assert "QuantizeLinear" in _op_types(out) and OnnxModel(out).layers == [0, 2]
