"""Files we did not write: every key and shape of the official releases (golden lists in
``golden_keys.py``, written from the public model definitions) loads strictly, and a file that
lacks one key or has one wrong shape fails naming it.

Files are built in the test with exactly the golden keys and shapes. Their tensors are zero-stride
views of a single element, so even a Large model's file is a few kB; Large models are only built on
the meta device (names and shapes, no weights in memory).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from golden_keys import DPHUBERT_RELEASES, FAIRSEQ_RELEASES, TRAINING_ONLY, Shapes

import robustdistiller
from robustdistiller.checkpoints.dphubert import ours_to_dphubert
from robustdistiller.checkpoints.teachers import load_strict, load_teacher, read_fairseq_checkpoint
from robustdistiller.models.convert import fairseq_to_ours
from robustdistiller.models.pruning import PrunableModel
from robustdistiller.models.teacher import TeacherModel, UnsupportedTeacherError, teacher_config_from_fairseq

# Loading into a meta model copies nothing (names and shapes are checked before that).
pytestmark = pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")

BASE_MODELS = ["hubert_base_ls960", "wav2vec_small", "WavLM-Base+"]
# One key per part of the model that a naming slip could hit.
PROBES = {
    "hubert_base_ls960": [
        "encoder.pos_conv.0.weight_g",
        "encoder.layers.11.fc2.bias",
        "feature_extractor.conv_layers.0.2.weight",
    ],
    "hubert_large_ll60k": [
        "feature_extractor.conv_layers.6.2.1.bias",
        "feature_extractor.conv_layers.3.0.bias",
        "encoder.layers.23.self_attn.out_proj.weight",
    ],
    "wav2vec_small": ["post_extract_proj.weight", "encoder.layers.5.self_attn_layer_norm.bias"],
    "WavLM-Base+": [
        "encoder.layers.0.self_attn.relative_attention_bias.weight",
        "encoder.layers.7.self_attn.grep_a",
        "encoder.layers.11.self_attn.grep_linear.weight",
    ],
    "WavLM-Large": [
        "encoder.layers.0.self_attn.relative_attention_bias.weight",
        "encoder.layer_norm.weight",
        "encoder.layers.23.self_attn.grep_linear.bias",
    ],
}


def _tensors(shapes: Shapes) -> dict[str, torch.Tensor]:
    """Tensors of the given shapes sharing a one-element storage (what torch.save writes)."""
    return {key: torch.full((1,), 0.5).expand(shape) for key, shape in shapes.items()}


def _fairseq_file(path: Path, name: str, shapes: Shapes | None = None) -> Path:
    golden, cfg = FAIRSEQ_RELEASES[name]
    torch.save(
        {
            **cfg,
            "model": _tensors(golden if shapes is None else shapes),
            "optimizer_history": [],
            "extra_state": {"epoch": 1},
        },
        path,
    )
    return path


def _meta_load(path: Path) -> TeacherModel:
    """What ``load_teacher`` does, with the model on the meta device: names and shapes only."""
    cfg, task, state = read_fairseq_checkpoint(path)
    config = teacher_config_from_fairseq(cfg, task, state)
    with torch.device("meta"):
        model = TeacherModel(config)
    load_strict(model, fairseq_to_ours(state), str(path))
    return model


def _encoder_part(golden: Shapes) -> Shapes:
    return {k: v for k, v in golden.items() if not k.startswith(TRAINING_ONLY)}


@pytest.mark.parametrize("name", BASE_MODELS)
def test_base_release_loads_strictly_end_to_end(name: str, tmp_path: Path) -> None:
    golden = FAIRSEQ_RELEASES[name][0]
    teacher = load_teacher(_fairseq_file(tmp_path / f"{name}.pt", name))
    ours = {k: tuple(v.shape) for k, v in teacher.model.state_dict().items()}
    assert ours == _encoder_part(golden)
    assert (teacher.num_layers, teacher.embed_dim) == (12, 768)
    assert teacher.family == {"hubert_base_ls960": "hubert", "wav2vec_small": "wav2vec2"}.get(name, "wavlm")


@pytest.mark.parametrize("name", sorted(FAIRSEQ_RELEASES))
def test_every_release_matches_the_architecture_read_from_its_config(name: str, tmp_path: Path) -> None:
    golden = FAIRSEQ_RELEASES[name][0]
    model = _meta_load(_fairseq_file(tmp_path / f"{name}.pt", name))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _encoder_part(golden)
    config = model.config
    large = "arge" in name
    assert (config.num_layers, config.embed_dim) == ((24, 1024) if large else (12, 768))
    assert config.layer_norm_first == config.normalize_waveform == large
    assert config.extractor_mode == ("layer_norm" if large else "default")
    if config.family == "wavlm":
        assert (config.num_buckets, config.max_distance) == (320, 800)


@pytest.mark.parametrize("name", sorted(FAIRSEQ_RELEASES))
def test_a_missing_key_or_a_wrong_shape_fails_naming_it(name: str, tmp_path: Path) -> None:
    golden = FAIRSEQ_RELEASES[name][0]
    for i, key in enumerate(PROBES[name]):
        missing = _fairseq_file(tmp_path / f"missing{i}.pt", name, {k: v for k, v in golden.items() if k != key})
        with pytest.raises(UnsupportedTeacherError, match=re.escape(f"missing: ['{key}']")):
            _meta_load(missing)
        wrong = (*golden[key][:-1], golden[key][-1] + 1)
        bad = _fairseq_file(tmp_path / f"shape{i}.pt", name, {**golden, key: wrong})
        with pytest.raises(UnsupportedTeacherError, match=re.escape(f"wrong shape: ['{key}: file {wrong}, config")):
            _meta_load(bad)


def test_a_missing_key_fails_through_load_teacher_too(tmp_path: Path) -> None:
    golden = FAIRSEQ_RELEASES["WavLM-Base+"][0]
    key = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    path = _fairseq_file(tmp_path / "wavlm.pt", "WavLM-Base+", {k: v for k, v in golden.items() if k != key})
    # the bias flags the file as WavLM; without it the cfg still says so, and the tensor is missing
    with pytest.raises(UnsupportedTeacherError, match=re.escape(key)):
        load_teacher(path)


@pytest.mark.parametrize("name", sorted(DPHUBERT_RELEASES))
def test_dphubert_release_with_uneven_heads_loads_strictly(name: str, tmp_path: Path) -> None:
    golden, config = DPHUBERT_RELEASES[name]
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": _tensors(golden), "config": config, "distill_linear_projs": {}}, path)
    model = robustdistiller.load(path)
    assert isinstance(model, PrunableModel)
    assert {k: tuple(v.shape) for k, v in ours_to_dphubert(model.state_dict()).items()} == golden
    assert model.config.head_counts == ([11, 9] if "HuBERT" in name else [12, 0])


@pytest.mark.parametrize("name", sorted(DPHUBERT_RELEASES))
def test_dphubert_file_missing_a_key_or_with_a_wrong_shape_fails_naming_it(name: str, tmp_path: Path) -> None:
    golden, config = DPHUBERT_RELEASES[name]
    key = "encoder.transformer.layers.0.attention.q_proj.weight"
    torch.save(
        {"state_dict": _tensors({k: v for k, v in golden.items() if k != key}), "config": config},
        tmp_path / "missing.pth",
    )
    with pytest.raises(ValueError, match=re.escape(f"missing: ['{key}']")):
        robustdistiller.load(tmp_path / "missing.pth")
    key = "encoder.transformer.layers.0.feed_forward.intermediate_dense.bias"
    torch.save({"state_dict": _tensors({**golden, key: (7,)}), "config": config}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=re.escape(f"wrong shape: ['{key}: file (7,), config")):
        robustdistiller.load(tmp_path / "shape.pth")
