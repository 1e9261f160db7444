"""ONNX export: parity with PyTorch at unseen lengths / batch sizes, int8, layers, pruned students, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_tiny import tiny_prunable_config

from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.cli import main
from robustdistiller.export.exporters import export
from robustdistiller.export.onnx import export_onnx, valid_frames
from robustdistiller.export.quantize import MIN_COSINE, quantize_int8
from robustdistiller.models.pruning import PrunableModel, prune_model
from robustdistiller.runtime import OnnxModel


@pytest.fixture
def exported(student: torch.nn.Module, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = student
    path = tmp_path / "student.onnx"
    report = export_onnx(model, path)
    assert report.max_abs_diff < 1e-4 and len(report.checked_shapes) == 6
    return model, path


def _padded_batch(lengths: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    wavs = np.zeros((len(lengths), max(lengths)), dtype=np.float32)
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * rng.standard_normal(n)
    return wavs, np.array(lengths, dtype=np.int64)


def test_onnxruntime_matches_pytorch(exported):
    # Three padded lengths x batch sizes 1 and 2, none of them the traced (2, 16000) example.
    model, path = exported
    onnx_model = OnnxModel(path)
    for lengths in ([4321], [23456], [11111], [4321, 3000], [23456, 8000], [11111, 11111]):
        wavs, lens = _padded_batch(lengths, seed=len(lengths) * 100 + lengths[0])
        with torch.inference_mode():
            expected = model.extract(torch.from_numpy(wavs), torch.from_numpy(lens))
            expected_frames = model.frame_lengths(torch.from_numpy(lens)).numpy()
        got = onnx_model.extract(wavs, lens)
        frames = onnx_model.frame_lengths(lens)
        np.testing.assert_array_equal(frames, expected_frames)
        assert len(got) == len(expected) == 6
        for e, g in zip(expected, got):
            assert g.shape == tuple(e.shape)
            assert np.abs(valid_frames(g, frames) - valid_frames(e.numpy(), frames)).max() < 1e-4
        # frame_lengths is also a graph output, computed from `lengths` inside the graph
        graph_frames = onnx_model.session.run(["frame_lengths"], {"wavs": wavs, "lengths": lens})[0]
        np.testing.assert_array_equal(graph_frames, expected_frames)


def test_padding_does_not_change_an_utterance(exported):
    _, path = exported
    onnx_model = OnnxModel(path)
    wavs, lens = _padded_batch([16000, 6000], seed=3)
    alone = onnx_model.extract(wavs[1:, :6000], lens[1:])
    batched = onnx_model.extract(wavs, lens)
    frames = int(onnx_model.frame_lengths(lens[1:])[0])
    for a, b in zip(alone, batched):
        np.testing.assert_allclose(b[1, :frames], a[0], atol=1e-4)


def test_int8_close_to_fp32(exported, tmp_path):
    _, path = exported
    report = quantize_int8(path, tmp_path / "student-int8.onnx")
    assert sorted(report.cosine) == list(range(6))
    assert report.min_cosine >= MIN_COSINE
    assert report.path.stat().st_size < path.stat().st_size
    # the runtime reads the quantised file like any export (metadata survives quantisation)
    assert OnnxModel(report.path).layers == list(range(6))


def test_layer_selection(make_student, tmp_path):
    model = make_student(seed=1)
    report = export_onnx(model, tmp_path / "sel.onnx", layers=[-1, 0, 2])
    onnx_model = OnnxModel(report.path)
    assert onnx_model.layers == [5, 0, 2]
    wavs, lens = _padded_batch([9000, 5000], seed=5)
    with torch.inference_mode():
        expected = model.extract(torch.from_numpy(wavs), torch.from_numpy(lens))
    for layer, got in zip(onnx_model.layers, onnx_model.extract(wavs, lens)):
        np.testing.assert_allclose(got[0], expected[layer][0].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        export_onnx(model, tmp_path / "bad.onnx", layers=[6])


def test_pruned_student_exports(make_student, tmp_path):
    # Per-layer head / FFN sizes with a removed attention block: what structured pruning leaves.
    model = make_student(seed=2, encoder_layer_heads=[2, 0], encoder_layer_ffn_dims=[96, 0])
    report = export_onnx(model, tmp_path / "pruned.onnx")
    assert report.max_abs_diff < 1e-4


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_pruned_model_exports(family: str, tmp_path: Path) -> None:
    # A real pruned model (DPHuBERT path): gated-off CNN channels, heads and FFN units removed and
    # folded, WavLM keeping its original head indices for the relative position bias.
    torch.manual_seed(3)
    model = PrunableModel(tiny_prunable_config(family, pruning_units=["conv", "head", "interm"]))
    with torch.no_grad():
        for gate in model.gates.modules():
            if hasattr(gate, "log_alpha"):
                gate.log_alpha.copy_(torch.randn_like(gate.log_alpha) * 4)
    pruned, report = prune_model(model.eval())
    assert report.params_after < report.params_before
    result = export_onnx(pruned.eval(), tmp_path / "pruned.onnx")
    assert result.max_abs_diff < 1e-4 and len(result.layers) == len(pruned.extract(torch.zeros(1, 4000)))
    wavs, lens = _padded_batch([7000, 4800], seed=5)
    with torch.no_grad():
        expected = pruned.extract(torch.from_numpy(wavs), torch.from_numpy(lens))
    got = OnnxModel(result.path).extract(wavs, lens)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a[1, :10], b[1, :10].numpy(), atol=1e-4)


def test_export_cli_onnx_int8(student, tmp_path, capsys):
    ckpt = save_s3prl_checkpoint(tmp_path / "states-1.ckpt", student, step=1)
    out = tmp_path / "student-int8.onnx"
    assert (
        main(["export", str(ckpt), "--format", "onnx", "--out", str(out), "--layers", "0", "2", "--quantize", "int8"])
        == 0
    )
    assert "wrote onnx" in capsys.readouterr().out
    onnx_model = OnnxModel(out)
    assert onnx_model.layers == [0, 2]
    assert not list(tmp_path.glob("*fp32*")), "the temporary fp32 export is removed"
    got = onnx_model.extract(*_padded_batch([7000], seed=0))
    assert [g.shape for g in got] == [(1, 21, 64), (1, 21, 64)]


def test_onnx_options_rejected_for_other_formats(student, tmp_path):
    ckpt = save_s3prl_checkpoint(tmp_path / "states-1.ckpt", student, step=1)
    with pytest.raises(ValueError, match="do not apply"):
        export(ckpt, "s3prl", tmp_path / "slim.ckpt", layers=[0])
    with pytest.raises(SystemExit):  # argparse refuses an unknown quantisation
        main(["export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "x.onnx"), "--quantize", "int4"])
