import argparse
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from robustdistiller.checkpoints.teachers import load_teacher
from robustdistiller.models import Teacher, UnsupportedTeacherError
from robustdistiller.models.conv import lengths_to_mask

FAMILIES = ["hubert", "wav2vec2", "wavlm"]


def _normalised(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(wavs)
    for i, n in enumerate(lengths.tolist()):
        v = wavs[i, :n]
        out[i, :n] = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_post_ln_parity_with_transformers(family, hf_tiny, tmp_path, wave_batch):
    """Group-norm extractors: each padded item equals transformers on that item alone."""
    hf = hf_tiny(family)
    hf.save_pretrained(tmp_path / "m")
    teacher = load_teacher(tmp_path / "m")
    wavs, lengths = wave_batch
    out = teacher(wavs, lengths)
    assert len(out.hidden_states) == 3
    for i, n in enumerate(lengths.tolist()):
        with torch.no_grad():
            ref = hf(wavs[i : i + 1, :n], output_hidden_states=True)
        t = ref.hidden_states[0].shape[1]
        assert out.frame_mask[i].sum() == t
        for ours, theirs in zip(out.hidden_states, ref.hidden_states):
            assert (ours[i, :t] - theirs[0]).abs().max() <= 1e-5
        assert (out.last_hidden_state[i, :t] - ref.last_hidden_state[0]).abs().max() <= 1e-5


# transformers' own WavLM attention (the reference here, not our code) passes a bool padding mask
# beside a float position bias, which torch warns is deprecated.
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask:UserWarning")
@pytest.mark.parametrize("family", FAMILIES)
def test_pre_ln_parity_with_transformers_padded_batch(family, hf_tiny, tmp_path, wave_batch):
    """Layer-norm extractors / pre-LN (Large-style): the padded batch with attention_mask."""
    hf = hf_tiny(family, pre_ln=True)
    hf.save_pretrained(tmp_path / "m")
    teacher = load_teacher(tmp_path / "m")
    assert teacher.model.config.normalize_waveform and teacher.model.config.layer_norm_first
    wavs, lengths = wave_batch
    out = teacher(wavs, lengths)
    with torch.no_grad():
        # HF leaves waveform normalisation to its preprocessor; give it normalised audio.
        ref = hf(
            _normalised(wavs, lengths),
            attention_mask=lengths_to_mask(lengths, wavs.shape[1]).long(),
            output_hidden_states=True,
        )
    mask = out.frame_mask
    for ours, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert (ours - theirs)[mask].abs().max() <= 1e-5
    assert (out.last_hidden_state - ref.last_hidden_state)[mask].abs().max() <= 1e-5


def test_teacher_is_frozen_and_always_eval(hf_dir, wave_batch):
    teacher = load_teacher(hf_dir("hubert"))
    parent = torch.nn.ModuleDict({"teacher": teacher, "head": torch.nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    wavs, lengths = wave_batch
    out = teacher(wavs.requires_grad_(), lengths)
    assert not out.hidden_states[-1].requires_grad
    torch.testing.assert_close(teacher(wavs, lengths).hidden_states[-1], out.hidden_states[-1])  # no dropout
    assert (teacher.family, teacher.num_layers, teacher.embed_dim) == ("hubert", 2, 64)
    assert teacher.extract(wavs, lengths)[0].shape == (2, 24, 64)


def _fairseq_cfg(teacher: Teacher, name: str) -> dict:
    c = teacher.model.config
    return {
        "_name": name,
        "extractor_mode": c.extractor_mode,
        "conv_feature_layers": c.conv_layers,
        "conv_bias": c.conv_bias,
        "encoder_layers": c.num_layers,
        "encoder_embed_dim": c.embed_dim,
        "encoder_ffn_embed_dim": c.ffn_dim,
        "encoder_attention_heads": c.attention_heads,
        "layer_norm_first": c.layer_norm_first,
        "conv_pos": c.conv_pos,
        "conv_pos_groups": c.conv_pos_groups,
        "activation_fn": "gelu",
        "dropout": 0.1,
    }


def _pretraining_extras(teacher: Teacher) -> dict:
    d = teacher.embed_dim
    return {
        "mask_emb": torch.randn(d),
        "label_embs_concat": torch.randn(504, 16),
        "final_proj.weight": torch.randn(16, d),
    }


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
def test_fairseq_checkpoint_equals_hf_dir(family, hf_dir, tmp_path, wave_batch):
    ref = load_teacher(hf_dir(family))
    state = {**ref.model.state_dict(), **_pretraining_extras(ref)}
    path = tmp_path / "model.pt"
    cfg = {"common": {"seed": 1}, "model": _fairseq_cfg(ref, family), "task": {"normalize": False}}
    torch.save({"args": None, "cfg": cfg, "model": state, "optimizer_history": []}, path)
    teacher = load_teacher(path)
    wavs, lengths = wave_batch
    for a, b in zip(teacher(wavs, lengths).hidden_states, ref(wavs, lengths).hidden_states, strict=True):
        assert torch.equal(a, b)


def test_legacy_fairseq_checkpoint_with_pickled_objects(hf_dir, tmp_path, wave_batch, monkeypatch):
    """argparse-era wav2vec 2.0 file holding a Namespace and a fairseq Dictionary object."""
    dictionary_module = types.ModuleType("fairseq.data.dictionary")

    class Dictionary:
        def __init__(self) -> None:
            self.symbols = ["<s>", "<pad>"]

    Dictionary.__module__ = "fairseq.data.dictionary"
    Dictionary.__qualname__ = "Dictionary"
    dictionary_module.Dictionary = Dictionary
    for name in ("fairseq", "fairseq.data"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "fairseq.data.dictionary", dictionary_module)

    ref = load_teacher(hf_dir("wav2vec2"))
    cfg = _fairseq_cfg(ref, "wav2vec2")
    cfg.pop("_name")
    args = argparse.Namespace(arch="wav2vec2", normalize=False, **cfg)
    path = tmp_path / "legacy.pt"
    torch.save({"args": args, "model": ref.model.state_dict(), "task_state": {"dictionaries": [Dictionary()]}}, path)
    monkeypatch.delitem(sys.modules, "fairseq.data.dictionary")  # loading must not need it
    teacher = load_teacher(path)
    wavs, lengths = wave_batch
    torch.testing.assert_close(teacher(wavs, lengths).hidden_states[-1], ref(wavs, lengths).hidden_states[-1])


def test_unilm_wavlm_checkpoint_equals_hf_dir(hf_dir, tmp_path, wave_batch):
    ref = load_teacher(hf_dir("wavlm"))
    cfg = _fairseq_cfg(ref, "unused")
    cfg.pop("_name")
    cfg.update(relative_position_embedding=True, gru_rel_pos=True, num_buckets=16, max_distance=40, normalize=False)
    path = tmp_path / "WavLM-Tiny.pt"
    torch.save({"cfg": cfg, "model": {**ref.model.state_dict(), "mask_emb": torch.randn(64)}}, path)
    teacher = load_teacher(path)
    assert teacher.family == "wavlm"
    assert "encoder.layers.0.self_attn.relative_attention_bias.weight" in teacher.model.state_dict()
    assert "encoder.layers.1.self_attn.relative_attention_bias.weight" not in teacher.model.state_dict()
    wavs, lengths = wave_batch
    for a, b in zip(teacher(wavs, lengths).hidden_states, ref(wavs, lengths).hidden_states, strict=True):
        assert torch.equal(a, b)


def test_hf_legacy_weight_norm_keys_load_identically(hf_dir, wave_batch):
    path = hf_dir("hubert")
    ref = load_teacher(path)
    state = load_file(str(path / "model.safetensors"))
    renamed = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in state.items()
    }
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in renamed)
    save_file(renamed, str(path / "model.safetensors"))
    wavs, lengths = wave_batch
    torch.testing.assert_close(
        load_teacher(path)(wavs, lengths).hidden_states[-1], ref(wavs, lengths).hidden_states[-1]
    )


def test_missing_pos_conv_is_an_error_not_random(hf_dir):
    path = hf_dir("hubert")
    state = load_file(str(path / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "original1" not in k}, str(path / "model.safetensors"))
    with pytest.raises(UnsupportedTeacherError, match="pos_conv.0.weight_v"):
        load_teacher(path)


def test_unsupported_sources_fail_clearly(hf_dir, tmp_path):
    path = hf_dir("hubert")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(UnsupportedTeacherError, match="gelu"):
        load_teacher(path)
    other = tmp_path / "data2vec.pt"
    torch.save({"cfg": {"model": {"_name": "data2vec_audio"}}, "model": {"x": torch.zeros(1)}}, other)
    with pytest.raises(UnsupportedTeacherError, match="data2vec_audio"):
        load_teacher(other)
    bad = tmp_path / "not_a_checkpoint.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not_a_checkpoint.pt: not a readable torch checkpoint"):
        load_teacher(bad)
    with pytest.raises(FileNotFoundError, match="teacher source not found: .*missing.pt"):
        load_teacher(tmp_path / "missing.pt")


@pytest.mark.parametrize("pre_ln", [False, True])
def test_hf_key_maps_round_trip(hf_dir, pre_ln):
    from robustdistiller.models import hf_to_ours, ours_to_hf

    path = hf_dir("wavlm", pre_ln=pre_ln)
    state = load_teacher(path).model.state_dict()
    hf_state = ours_to_hf(state)
    assert set(hf_state) == set(load_file(str(path / "model.safetensors")))
    back = hf_to_ours(hf_state, group_norm=not pre_ln)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_fairseq_extra_state_with_numpy_arrays_loads(hf_dir, tmp_path, wave_batch):
    """fairseq keeps training metadata (meters, sampler state) in ``extra_state``: numpy arrays and
    scalars there are plain data, rebuilt as inert records, never imported or run."""
    import numpy as np

    ref = load_teacher(hf_dir("hubert"))
    extra_state = {
        "epoch": 3,
        "best": np.float64(1.5),
        "indices": np.arange(6, dtype=np.int64).reshape(2, 3),
        "names": np.array(["a", "bb"]),
        "meters": {"loss": np.array([0.5, 0.25], dtype=np.float32)},
    }
    path = tmp_path / "hubert.pt"
    cfg = {"model": _fairseq_cfg(ref, "hubert"), "task": {"normalize": False}}
    torch.save({"cfg": cfg, "model": ref.model.state_dict(), "extra_state": extra_state}, path)
    teacher = load_teacher(path)
    wavs, lengths = wave_batch
    assert torch.equal(teacher(wavs, lengths).hidden_states[-1], ref(wavs, lengths).hidden_states[-1])


def _unilm_file(ref: Teacher, path: Path, **cfg_changes) -> Path:
    cfg = _fairseq_cfg(ref, "unused")
    cfg.pop("_name")
    cfg.update(relative_position_embedding=True, gru_rel_pos=True, num_buckets=16, normalize=False)
    for key, value in cfg_changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    torch.save({"cfg": cfg, "model": ref.model.state_dict()}, path)
    return path


def test_unilm_cfg_fields_that_are_absent_take_unilm_defaults(hf_dir, tmp_path):
    ref = load_teacher(hf_dir("wavlm"))
    # No max_distance: unilm's WavLMConfig default is 1280 (800 is torchaudio's / HF's default).
    teacher = load_teacher(_unilm_file(ref, tmp_path / "a.pt", max_distance=None))
    assert teacher.model.config.max_distance == 1280
    assert load_teacher(_unilm_file(ref, tmp_path / "b.pt", max_distance=40)).model.config.max_distance == 40
    # No flags: read off the weights (a relative bias and gates are present).
    flagless = _unilm_file(ref, tmp_path / "c.pt", relative_position_embedding=None, gru_rel_pos=None)
    assert load_teacher(flagless).family == "wavlm"
    # No flags and no gate weights: unilm's default (gru_rel_pos False) is a model we cannot rebuild.
    state = {k: v for k, v in ref.model.state_dict().items() if "grep_" not in k}
    cfg = torch.load(flagless, weights_only=True)["cfg"]
    torch.save({"cfg": cfg, "model": state}, tmp_path / "d.pt")
    with pytest.raises(UnsupportedTeacherError, match="gated rel-pos is not supported"):
        load_teacher(tmp_path / "d.pt")


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
@pytest.mark.parametrize("pre_ln", [False, True])
def test_save_teacher_writes_the_familys_transformers_layout(family, pre_ln, hf_dir, tmp_path, wave_batch):
    from robustdistiller.checkpoints.teachers import save_teacher

    teacher = load_teacher(hf_dir(family, pre_ln=pre_ln))
    save_teacher(teacher.model, tmp_path / "written")
    config = json.loads((tmp_path / "written" / "config.json").read_text())
    assert config["model_type"] == family
    assert config["architectures"] == [{"hubert": "HubertModel", "wavlm": "WavLMModel"}[family]]
    again = load_teacher(tmp_path / "written")
    assert again.model.config == teacher.model.config
    wavs, lengths = wave_batch
    for ours, back in zip(teacher(wavs, lengths).hidden_states, again(wavs, lengths).hidden_states):
        assert torch.equal(ours, back)


def test_save_teacher_refuses_what_transformers_cannot_hold(hf_dir, tmp_path):
    import dataclasses

    from robustdistiller.checkpoints.teachers import save_teacher
    from robustdistiller.models.teacher import TeacherModel

    with pytest.raises(UnsupportedTeacherError, match="only families .* got 'wav2vec2'"):
        save_teacher(load_teacher(hf_dir("wav2vec2")).model, tmp_path / "w2v")
    wavlm = load_teacher(hf_dir("wavlm")).model.config
    with pytest.raises(UnsupportedTeacherError, match="WavLMModel always normalises the CNN features"):
        save_teacher(TeacherModel(dataclasses.replace(wavlm, feature_layer_norm=False)), tmp_path / "wavlm")
    assert not (tmp_path / "w2v").exists() and not (tmp_path / "wavlm").exists()
