"""Our checkpoint format (= s3prl's distiller format): round trips, released-style files, bad input."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from robustdistiller.checkpoints.load import load, load_student
from robustdistiller.checkpoints.s3prl import read_s3prl_checkpoint, save_s3prl_checkpoint
from robustdistiller.models.student import DistillerModel


def _assert_same_outputs(a: DistillerModel, b: DistillerModel, wavs, lengths) -> None:
    with torch.no_grad():
        for x, y in zip(a.extract(wavs, lengths), b.extract(wavs, lengths), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_round_trip_keeps_weights_config_and_outputs(tmp_path, student, batch):
    path = save_s3prl_checkpoint(
        tmp_path / "sub" / "states-7.ckpt",
        student,
        step=7,
        extra_config={"teacher": {"model": "facebook/hubert-base-ls960"}},
        extra={"Optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.98)}]}},
    )

    ckpt = read_s3prl_checkpoint(path)
    assert ckpt.step == 7 and ckpt.teacher == "facebook/hubert-base-ls960"
    assert ckpt.config == student.config
    assert list(ckpt.state_dict) == list(student.state_dict())
    for key, value in student.state_dict().items():
        assert torch.equal(ckpt.state_dict[key], value), key
    assert ckpt.raw["Config"]["teacher"]["n_layers"] == 12
    assert ckpt.raw["Config"]["audio"] == {"target_level": "None"}
    assert ckpt.raw["Optimizer"]["param_groups"][0]["betas"] == (0.9, 0.98)

    model, again = load_student(path)
    assert not model.training and again.step == 7
    _assert_same_outputs(student, model, *batch)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_our_files_need_nothing_beyond_weights_only(tmp_path, student):
    path = save_s3prl_checkpoint(tmp_path / "a.ckpt", student, step=3)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"Distiller", "Config", "Step"}
    assert raw["Config"]["distiller"] == student.config.to_s3prl()
    assert all(v.dtype == torch.float32 for v in raw["Distiller"].values())


def test_half_precision_model_is_saved_as_fp32(tmp_path, student):
    path = save_s3prl_checkpoint(tmp_path / "h.ckpt", student.half())
    assert all(v.dtype == torch.float32 for v in read_s3prl_checkpoint(path).state_dict.values())


def test_overwrite_is_atomic_replacement(tmp_path, student):
    path = tmp_path / "s.ckpt"
    save_s3prl_checkpoint(path, student, step=1)
    save_s3prl_checkpoint(path, student, step=2)
    assert read_s3prl_checkpoint(path).step == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s.ckpt"]


def test_writer_refuses_non_plain_values_and_reserved_keys(tmp_path, student):
    with pytest.raises(ValueError, match="reserved"):
        save_s3prl_checkpoint(tmp_path / "x.ckpt", student, extra={"Step": 3})
    with pytest.raises(ValueError, match=r"Namespace is not a plain value"):
        save_s3prl_checkpoint(tmp_path / "x.ckpt", student, extra={"Args": argparse.Namespace(a=1)})
    with pytest.raises(ValueError, match=r"\['teacher'\]\['model'\]: PosixPath"):
        save_s3prl_checkpoint(tmp_path / "x.ckpt", student, extra_config={"teacher": {"model": tmp_path}})
    assert not list(tmp_path.iterdir())


class _Schedule:
    def __init__(self) -> None:
        self.warmup, self.t_total, self.warned_for_t_total_at_progress = 0.07, 200000.0, -1


def test_released_style_checkpoint_loads_without_s3prl(tmp_path, student, batch, fake_global):
    """What s3prl's run_pretrain.py writes: Namespace under Args, schedule objects in the optimizer."""
    fake_global("optimizers", _Schedule, "WarmupLinearSchedule")
    section = {**student.config.to_s3prl(), "some_future_field": 1}
    del section["feature_grad_mult"]  # absent fields take s3prl's code defaults
    raw = {
        "Distiller": student.state_dict(),
        "Config": {
            "distiller": section,
            "teacher": {"model": "hubert_base", "n_layers": 12},
            "task": {"sequence_length": 250000},
            "audio": {"target_level": "None"},
            "enhancement_head": {"n_fft": 512},
        },
        "Optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "schedule": _Schedule(), "params": [0, 1]}]},
        "Step": 199999,
        "Args": argparse.Namespace(upstream="distiller", config="config_runner.yaml", seed=1337),
    }
    path = tmp_path / "states-epoch-17.ckpt"
    torch.save(raw, path)
    sys.modules.pop("optimizers")

    ckpt = read_s3prl_checkpoint(path)
    assert ckpt.step == 199999 and ckpt.teacher == "hubert_base"
    assert ckpt.config.feature_grad_mult == 1.0
    assert ckpt.raw["Args"].seed == 1337
    assert ckpt.raw["Optimizer"]["param_groups"][0]["schedule"].t_total == 200000.0
    _assert_same_outputs(student, load(path, precision="fp32"), *batch)


def test_bad_checkpoints_give_clear_errors(tmp_path, student):
    torch.save({"Distiller": student.state_dict(), "Config": {"runner": {}}}, tmp_path / "noconf.ckpt")
    with pytest.raises(ValueError, match=r"Config\['distiller'\] is missing"):
        read_s3prl_checkpoint(tmp_path / "noconf.ckpt")

    torch.save({"model": student.state_dict()}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not an s3prl distiller checkpoint"):
        read_s3prl_checkpoint(tmp_path / "other.ckpt")

    section = {**student.config.to_s3prl(), "encoder_layerz": 3}
    section["n_tasks"] = 2  # does not match pred_layer_id
    torch.save({"Distiller": student.state_dict(), "Config": {"distiller": section}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"invalid Config\['distiller'\].*n_tasks"):
        read_s3prl_checkpoint(tmp_path / "bad.ckpt")

    state = student.state_dict()
    state.pop("encoder.layer_norm.bias")
    torch.save({"Distiller": state, "Config": {"distiller": student.config.to_s3prl()}}, tmp_path / "short.ckpt")
    with pytest.raises(ValueError, match=r"weights do not match.*encoder\.layer_norm\.bias"):
        load(tmp_path / "short.ckpt")
