"""Reduced-precision (bf16) CPU inference: accuracy against fp32, fp32 untouched, fallbacks logged.

The bf16 paths run on any CPU (slowly where bf16 units are missing), so the accuracy checks run
everywhere; the capability check is forced off or on by patching ``precision.cpu_flags``.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from fixtures_tiny import hf_model, perturb, tiny_prunable_config, tiny_student

from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.models import precision
from robustdistiller.models.conv import ConvFeatureExtractor, conv_as_matmul, conv_windows
from robustdistiller.models.precision import (
    MIN_COSINE,
    accuracy_batch,
    check_precision,
    layer_cosines,
    use_precision,
)
from robustdistiller.models.pruning import PrunableModel

# per-block channels, as pruning leaves them
PRUNED_CONV = [[24, 10, 5], [20, 3, 2], [28, 3, 2], [16, 3, 2], [32, 3, 2], [12, 2, 2], [32, 2, 2]]


def _pruned() -> PrunableModel:
    model = PrunableModel(
        tiny_prunable_config("wavlm", conv_layers=PRUNED_CONV, layer_heads=[[0, 1, 2], [1]], layer_ffn_dims=[96, 40])
    ).eval()
    perturb(model, seed=3)
    return model


def _teacher(tmp_path, family: str, pre_ln: bool):
    path = tmp_path / f"{family}-{int(pre_ln)}"
    hf_model(family, pre_ln=pre_ln).save_pretrained(path)
    return load_teacher(path)


@pytest.fixture
def no_bf16_units(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))


@pytest.fixture
def amx(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16", "avx512_bf16"}))


@pytest.mark.parametrize("kernel, stride", [(10, 5), (3, 2), (2, 2), (4, 1)])
def test_conv_as_matmul_equals_conv1d(kernel, stride):
    gen = torch.Generator().manual_seed(kernel)
    x = torch.randn(3, 7, 101, generator=gen)  # (B, C, T)
    weight, bias = torch.randn(5, 7, kernel, generator=gen), torch.randn(5, generator=gen)
    expected = F.conv1d(x, weight, bias, stride=stride)
    got = conv_as_matmul(x.transpose(1, 2), weight, bias, stride)
    torch.testing.assert_close(got.transpose(1, 2), expected, rtol=1e-5, atol=1e-5)
    assert conv_windows(x.transpose(1, 2), kernel, stride).shape == (3, expected.shape[-1], kernel * 7)


@pytest.mark.parametrize("mode", ["default", "layer_norm"])
def test_channels_last_cnn_is_close_to_fp32_on_padded_rows(mode):
    torch.manual_seed(0)
    cnn = ConvFeatureExtractor([(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)], mode=mode, conv_bias=True).eval()
    perturb(cnn, seed=1)
    wavs, lengths = accuracy_batch()
    wavs = wavs + 0.05  # a DC offset must cost no precision (windows are centred before bf16)
    wavs[1, lengths[1] :] = 0.0
    wavs[2, lengths[2] :] = 0.0
    with torch.inference_mode():
        reference = cnn(wavs, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = cnn(wavs, lengths)
    assert low.dtype == torch.bfloat16 and low.shape == reference.shape
    frames = cnn.output_lengths(lengths)
    for b, n in enumerate(frames.tolist()):
        cosine = F.cosine_similarity(low[b, :, :n].float(), reference[b, :, :n], dim=0).mean()
        assert cosine > 0.999, (b, float(cosine))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda tmp: tiny_student(perturb_norms=True), id="student"),
        pytest.param(lambda tmp: tiny_student(extractor_mode="layer_norm"), id="student-layer-norm-cnn"),
        pytest.param(lambda tmp: _teacher(tmp, "hubert", False), id="teacher-hubert"),
        pytest.param(lambda tmp: _teacher(tmp, "wavlm", True), id="teacher-wavlm-large-layout"),
        pytest.param(lambda tmp: _pruned(), id="pruned"),
    ],
)
def test_bf16_meets_the_cosine_check_on_mixed_length_batches(build, tmp_path):
    model = build(tmp_path)
    wavs, lengths = accuracy_batch()
    assert len(set(lengths.tolist())) == 3  # padded rows of mixed lengths
    cosines = layer_cosines(model, wavs, lengths, "bf16")
    assert len(cosines) == len(model.extract(wavs[:1], lengths[:1]))
    assert min(cosines) >= MIN_COSINE, cosines
    assert model.precision == "fp32"  # the comparison restores the model's own setting
    model.precision = "bf16"
    with torch.inference_mode():
        hidden = model.extract(wavs, lengths)
    assert all(h.dtype == torch.float32 for h in hidden)


def test_fp32_is_untouched_by_the_precision_machinery(wave_batch):
    model = tiny_student(perturb_norms=True)
    with torch.inference_mode():
        before = model.extract(*wave_batch)
        out = model(*wave_batch)
    assert use_precision(model, "fp32").precision == "fp32"
    with torch.inference_mode():
        after = model.extract(*wave_batch)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert torch.equal(after[0], out.projected)


def test_gated_models_keep_the_plain_path_under_autocast(wave_batch):
    model = PrunableModel(tiny_prunable_config(pruning_units=["conv", "head", "interm"])).eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.forward(*wave_batch).hidden_states  # the gates' hooks expect (B, C, T) outputs
    assert hidden[0].shape[:2] == (2, 24)


def test_auto_falls_back_and_logs_once_without_bf16_units(no_bf16_units, caplog):
    model = tiny_student()
    with caplog.at_level(logging.INFO, logger="robustdistiller.models.precision"):
        choice = use_precision(model, "auto")
    assert choice.precision == model.precision == "fp32"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no bf16 units" in lines[0] and "using fp32" in lines[0]


def test_forced_bf16_falls_back_without_units_and_runs_with_them(no_bf16_units, monkeypatch, caplog):
    model = tiny_student()
    with caplog.at_level(logging.INFO, logger="robustdistiller.models.precision"):
        assert use_precision(model, "bf16").precision == "fp32"
    assert "bf16 requested, but this CPU has no bf16 units" in caplog.text
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert use_precision(model, "bf16").reason == "bf16 requested; the CPU has AVX512-BF16"
    assert model.precision == "bf16"


def test_auto_takes_bf16_only_when_accurate(amx, monkeypatch, caplog):
    model = tiny_student(perturb_norms=True)
    with caplog.at_level(logging.INFO, logger="robustdistiller.models.precision"):
        choice = use_precision(model, "auto")
    assert choice.precision == model.precision == "bf16" and choice.min_cosine >= MIN_COSINE
    assert "DistillerModel runs in bf16: auto: bf16 on AMX-BF16, min layer cosine" in caplog.text

    monkeypatch.setattr(precision, "MIN_COSINE", 1.5)  # no model can pass: the accuracy gate decides
    choice = use_precision(model, "auto")
    assert choice.precision == model.precision == "fp32" and "inaccurate" in choice.reason


def test_teacher_targets_in_bf16_stay_fp32_and_close(tmp_path):
    teacher = _teacher(tmp_path, "wavlm", False)
    wavs, lengths = accuracy_batch()
    reference = teacher(wavs, lengths)
    teacher.precision = "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the student's autocast must not leak in or out
        low = teacher(wavs, lengths)
    assert all(h.dtype == torch.float32 for h in low.hidden_states)
    assert low.last_hidden_state.dtype == torch.float32
    for ref, got in zip(reference.hidden_states, low.hidden_states):
        valid = reference.frame_mask
        assert F.cosine_similarity(ref[valid], got[valid], dim=-1).mean() > MIN_COSINE


def test_precision_names_are_checked():
    with pytest.raises(ValueError, match="did you mean 'bf16'"):
        check_precision("bf61")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto"):
        use_precision(tiny_student(), "int4")


def test_extract_cli_logs_its_precision_and_falls_back(no_bf16_units, tmp_path, caplog, capsys):
    import soundfile as sf

    from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
    from robustdistiller.cli import main

    ckpt = save_s3prl_checkpoint(tmp_path / "states-1.ckpt", tiny_student(), step=1)
    wavs, lengths = accuracy_batch()
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", wavs[0, : lengths[0]].numpy(), 16000)
    argv = ["extract", "--model", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    with caplog.at_level(logging.INFO, logger="robustdistiller.models.precision"):
        assert main(argv) == 0  # --precision auto is the default
    assert "DistillerModel runs in fp32: auto requested, but this CPU has no bf16 units" in caplog.text
    assert main([*argv, "--backend", "onnx", "--precision", "bf16"]) == 1
    assert "precision bf16 applies to the torch backend" in capsys.readouterr().err


def _under_test(model):
    from robustdistiller.digest import state_fingerprint
    from robustdistiller.evaluate.models import ModelUnderTest

    return ModelUnderTest("m", "m.ckpt", "student", "s3prl", model, state_fingerprint(model), ["proj"])


def test_evaluation_precision_keys_its_feature_cache(monkeypatch, caplog):
    entry = _under_test(tiny_student())
    fp32_id = entry.model_id
    entry.set_precision("fp32")
    assert entry.model_id == fp32_id and entry.precision == entry.model.precision == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    entry.set_precision("bf16")
    # bf16 features are cached apart from fp32 ones, and the report says which precision ran
    assert entry.model_id == f"{fp32_id}@bf16" and entry.describe()["precision"] == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    with caplog.at_level(logging.INFO, logger="robustdistiller.models.precision"):
        entry.set_precision("auto")  # falls back on a CPU without units, with a log line
    assert entry.model_id == fp32_id and entry.precision == "fp32"
    assert "no bf16 units" in caplog.text


def test_evaluation_precision_leaves_models_without_a_reduced_path_in_fp32(caplog):
    entry = _under_test(torch.nn.Linear(2, 2))
    with caplog.at_level(logging.INFO, logger="robustdistiller.evaluate.models"):
        entry.set_precision("auto")
    assert entry.precision == "fp32" and "no reduced-precision path" in caplog.text


def test_evaluate_options_reject_an_unknown_precision():
    from robustdistiller.config import from_dict
    from robustdistiller.evaluate.runner import EvaluateOptions

    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto, got 'bf61'; did you mean 'bf16'"):
        from_dict(EvaluateOptions, {"precision": "bf61"})


def test_macs_of_a_bf16_model_are_its_fp32_macs():
    from robustdistiller.evaluate.efficiency import count_macs

    model = tiny_student()
    fp32 = count_macs(model, 0.5)
    model.precision = "bf16"
    assert count_macs(model, 0.5) == fp32 and model.precision == "bf16"


def test_load_defaults_to_auto_and_keeps_fp32_on_request(tmp_path, monkeypatch, caplog):
    import robustdistiller
    from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint

    path = save_s3prl_checkpoint(tmp_path / "s.ckpt", tiny_student())
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16", "avx512_bf16"}))
    with caplog.at_level(logging.INFO, logger="robustdistiller.models.precision"):
        assert robustdistiller.load(path).precision == "bf16"  # the fastest accurate path by default
    assert "DistillerModel runs in bf16: auto" in caplog.text
    assert robustdistiller.load(path, precision="fp32").precision == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    assert robustdistiller.load(path).precision == "fp32"  # no bf16 units: fp32, logged
