"""robustdistiller.load: format detection, every supported format, clear errors for the rest."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

import robustdistiller
from robustdistiller.checkpoints.load import SUPPORTED_FORMATS, load_student, open_model
from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.models.student import DistillerModel

_TINY_HF = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=[32] * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    mask_time_prob=0.0,
)


def test_top_level_load_of_our_checkpoint(tmp_path, student, batch):
    path = save_s3prl_checkpoint(tmp_path / "m.ckpt", student, step=5)
    model = robustdistiller.load(path)
    assert isinstance(model, DistillerModel) and not model.training
    with torch.no_grad():
        states = model.extract(*batch)
    assert [tuple(s.shape) for s in states] == [(2, 49, 64)] * 6
    assert open_model(path).format == "s3prl"


@pytest.mark.parametrize(
    ("config_cls", "model_cls"),
    [(HubertConfig, HubertModel), (Wav2Vec2Config, Wav2Vec2Model), (WavLMConfig, WavLMModel)],
)
def test_hugging_face_directories(tmp_path, batch, config_cls, model_cls):
    torch.manual_seed(0)
    hf = model_cls(config_cls(**_TINY_HF)).eval()
    hf.save_pretrained(tmp_path / "hf")

    loaded = open_model(tmp_path / "hf")
    assert loaded.format == "hf" and loaded.checkpoint is None and not loaded.model.training
    wavs, lengths = batch
    with torch.no_grad():
        states = loaded.model.extract(wavs[:1], lengths[:1])
        expected = hf(wavs[:1], output_hidden_states=True).hidden_states
    assert len(states) == 3
    torch.testing.assert_close(states[-1], expected[-1], rtol=1e-5, atol=1e-5)


def test_unsupported_and_broken_inputs(tmp_path, student):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        robustdistiller.load(tmp_path / "missing.ckpt")

    torch.save({"state_dict": {}, "config": {}}, tmp_path / "DPHuBERT-sp0.75.pth")
    with pytest.raises(ValueError, match=r"DPHuBERT-sp0.75.pth: DPHuBERT config lacks"):
        robustdistiller.load(tmp_path / "DPHuBERT-sp0.75.pth")

    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="unsupported format: .*a pickled list") as info:
        robustdistiller.load(tmp_path / "list.pt")
    assert all(fmt in str(info.value) for fmt in SUPPORTED_FORMATS)

    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        robustdistiller.load(tmp_path / "junk.ckpt")

    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="directory without config.json"):
        robustdistiller.load(tmp_path / "empty_dir")

    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        robustdistiller.load(tmp_path / "bert")

    hf_dir = tmp_path / "hf"
    HubertModel(HubertConfig(**_TINY_HF)).save_pretrained(hf_dir)
    with pytest.raises(ValueError, match="not a distiller"):
        load_student(hf_dir)
