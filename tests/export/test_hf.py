"""Student -> Hugging Face HubertModel directory: clean reload and equal layer outputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import HubertModel

from robustdistiller.checkpoints.load import load
from robustdistiller.export.hf import export_hf
from robustdistiller.models.teacher import Teacher


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_hf_layers_match_ours_with_padding(tmp_path, batch, make_student, layer_norm_first):
    student = make_student(layer_norm_first=layer_norm_first)
    out = export_hf(student, tmp_path / "hf")

    hf, info = HubertModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    hf.eval()
    config = json.loads((out / "config.json").read_text())
    assert config["feat_proj_layer_norm"] is False
    assert config["do_stable_layer_norm"] is layer_norm_first
    assert config["conv_dim"] == [32] * 7 and config["conv_stride"] == [5, 2, 2, 2, 2, 2, 2]
    assert not any(k.startswith("output_layer") for k in load_file(out / "model.safetensors"))

    wavs, lengths = batch
    with torch.no_grad():
        ours = student.extract(wavs, lengths)  # padded batch
        for b, length in enumerate(lengths.tolist()):
            # HF's GroupNorm would see the padding; give it each utterance alone
            theirs = hf(wavs[b : b + 1, :length], output_hidden_states=True).hidden_states
            frames = theirs[1].shape[1]
            # HF index 0 is after pos-conv + LayerNorm, ours before: layers 1..L correspond
            for i in range(1, student.config.encoder_layers + 1):
                torch.testing.assert_close(ours[i][b, :frames], theirs[i][0], rtol=1e-5, atol=1e-5)


def test_load_reads_the_exported_directory(tmp_path, student, batch):
    out = export_hf(student, tmp_path / "hf")
    model = load(out, precision="fp32")
    assert isinstance(model, Teacher) and not model.training
    assert (model.family, model.num_layers, model.embed_dim) == ("hubert", 2, 64)
    wavs, lengths = batch
    with torch.no_grad():
        ours = student.extract(wavs, lengths)
        theirs = model.extract(wavs, lengths)
    assert len(theirs) == 3
    valid = student.frame_lengths(lengths)
    for i in (1, 2):
        for b, n in enumerate(valid.tolist()):
            torch.testing.assert_close(theirs[i][b, :n], ours[i][b, :n], rtol=1e-5, atol=1e-5)


def test_non_uniform_layers_are_refused(tmp_path, make_student):
    student = make_student(encoder_layer_heads=[4, 2])
    with pytest.raises(ValueError, match="same head count"):
        export_hf(student, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
