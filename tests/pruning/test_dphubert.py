"""DPHuBERT / DPWavLM checkpoint format: files written by hand in DPHuBERT's layout load and run."""

from __future__ import annotations

import pytest
import torch
from fixtures_tiny import perturb
from fixtures_tiny import tiny_prunable_config as tiny_config

import robustdistiller
from robustdistiller.checkpoints.dphubert import (
    config_from_dphubert,
    config_to_dphubert,
    ours_to_dphubert,
    save_dphubert_checkpoint,
)
from robustdistiller.evaluate.models import load_model_under_test
from robustdistiller.export.info import describe
from robustdistiller.models.pruning import PrunableModel

CONV = [(20, 10, 5), (24, 3, 2), (17, 3, 2), (32, 3, 2), (9, 3, 2), (30, 2, 2), (32, 2, 2)]


def _wavlm_config_dict() -> dict:
    """What DPHuBERT's prune.py writes for a WavLM student (reference-formats.md C.7), at toy size."""
    return {
        "extractor_mode": "group_norm",
        "extractor_conv_layer_config": CONV,
        "extractor_conv_bias": False,
        "encoder_embed_dim": 64,
        "encoder_projection_dropout": 0.1,
        "encoder_pos_conv_kernel": 16,
        "encoder_pos_conv_groups": 4,
        "encoder_num_layers": 2,
        "encoder_use_attention": [True, True],
        "encoder_use_feed_forward": [True, False],
        "encoder_total_num_heads": [4, 4],
        "encoder_remaining_heads": [[0, 2, 3], [1]],
        "encoder_num_buckets": 16,
        "encoder_max_distance": 40,
        "encoder_attention_dropout": 0.1,
        "encoder_ff_interm_features": [50, 0],
        "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.1,
        "encoder_layer_norm_first": False,
        "encoder_layer_drop": 0.05,
        "aux_num_out": None,
        "normalize_waveform": False,
        "extractor_prune_conv_channels": False,
        "encoder_prune_attention_heads": False,
        "encoder_prune_attention_layer": False,
        "encoder_prune_feed_forward_intermediate": False,
        "encoder_prune_feed_forward_layer": False,
    }


def _dphubert_model() -> PrunableModel:
    config = tiny_config(
        "wavlm", conv_layers=[list(c) for c in CONV], layer_heads=[[0, 2, 3], [1]], layer_ffn_dims=[50, 0]
    )
    model = PrunableModel(config)
    perturb(model, 7)
    with torch.no_grad():
        model.dummy_weight.uniform_(0.2, 1.0)  # soft mask values folded by pruning
    return model.eval()


def test_hand_written_wavlm_form_file_loads_strictly_and_runs(tmp_path, wave_batch) -> None:
    model = _dphubert_model()
    state = ours_to_dphubert(model.state_dict())
    assert "feature_extractor.dummy_weight" in state
    assert "encoder.transformer.layers.0.attention.rel_attn_embed.weight" in state
    assert "encoder.transformer.layers.1.attention.gru_rel_pos_const" in state
    assert not any(k.startswith("encoder.transformer.layers.1.feed_forward") for k in state)
    projs = {
        f"{i}.{n}": torch.randn(64, 64) if n == "weight" else torch.zeros(64)
        for i in range(4)
        for n in ("weight", "bias")
    }
    path = tmp_path / "DPWavLM-toy.pth"
    torch.save({"state_dict": state, "config": _wavlm_config_dict(), "distill_linear_projs": projs}, path)

    loaded = robustdistiller.load(path, precision="fp32")
    assert isinstance(loaded, PrunableModel) and not loaded.training
    assert loaded.config.layer_heads == [[0, 2, 3], [1]]
    assert loaded.encoder.layers[1].self_attn.remaining_heads.tolist() == [1]
    wavs, lengths = wave_batch
    with torch.no_grad():
        states = loaded.extract(wavs, lengths)
        reference = model.extract(wavs, lengths)
    assert len(states) == 3
    for a, b in zip(states, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    info = describe(path)
    assert info["parameters"]["total"] == loaded.num_params() == sum(p.numel() for p in model.parameters())
    assert info["architecture"]["attention_heads"] == [3, 1]
    assert load_model_under_test(path, "dpwavlm").layer_names == ["L0 (input)", "L1", "L2"]  # evaluate reads it


def test_write_read_round_trip_and_weights_only(tmp_path) -> None:
    model = _dphubert_model()
    path = save_dphubert_checkpoint(tmp_path / "out.pth", model, extra={"note": "toy"})
    raw = torch.load(path, weights_only=True)
    assert raw["config"] == config_to_dphubert(model.config)
    assert set(raw["config"]) == set(_wavlm_config_dict())  # exactly DPHuBERT's kwargs
    again = config_from_dphubert(raw["config"])
    assert again.layer_heads == model.config.layer_heads and again.layer_ffn_dims == [50, 0]
    hubert = tiny_config("hubert", layer_heads=[[0, 1], []], layer_ffn_dims=[7, 128])
    form = config_to_dphubert(hubert)
    assert form["encoder_num_heads"] == [2, 0] and form["encoder_use_attention"] == [True, False]
    assert "encoder_remaining_heads" not in form
    path = save_dphubert_checkpoint(tmp_path / "hubert.pth", PrunableModel(hubert))
    assert robustdistiller.load(path).config.head_counts == [2, 0]


def test_bad_files_fail_clearly(tmp_path) -> None:
    model = _dphubert_model()
    state = ours_to_dphubert(model.state_dict())
    cases = {
        "missing": (
            {k: v for k, v in state.items() if "pos_conv" not in k},
            _wavlm_config_dict(),
            r"missing: \[.encoder.transformer.pos_conv_embed.conv.bias",
        ),
        "gated": (state, {**_wavlm_config_dict(), "encoder_prune_attention_heads": True}, "prune it first"),
        "typo": (state, {**_wavlm_config_dict(), "encoder_num_layer": 2}, "unknown DPHuBERT config keys"),
        "shape": (state, {**_wavlm_config_dict(), "encoder_ff_interm_features": [49, 0]}, "do not match"),
        "layer0": (state, {**_wavlm_config_dict(), "encoder_use_attention": [False, True]}, "layer 0 has no"),
        "gate_keys": (
            {**state, "feature_extractor.conv_layers.0.hard_concrete.log_alpha": torch.zeros(20)},
            _wavlm_config_dict(),
            "gated stage-1",
        ),
    }
    for name, (sd, cfg, message) in cases.items():
        torch.save({"state_dict": sd, "config": cfg}, tmp_path / f"{name}.pth")
        with pytest.raises(ValueError, match=message):
            robustdistiller.load(tmp_path / f"{name}.pth")
    gated = PrunableModel(tiny_config("wavlm", pruning_units=["head"]))
    with pytest.raises(ValueError, match="prune it first"):
        save_dphubert_checkpoint(tmp_path / "gated.pth", gated)


def test_hubert_form_with_a_widest_layer_that_does_not_divide_the_embedding_loads(tmp_path, wave_batch) -> None:
    # DPHuBERT's HuBERT form stores the head size separately: 3 heads of 16 in a 64-d model (like
    # [11, 9] of 64 in a 768-d release) is valid, and stage 2 of `prune` reads its own pruned.pth back.
    config = tiny_config("hubert", layer_heads=[[0, 1, 2], [0, 1]], layer_ffn_dims=[40, 128])
    model = PrunableModel(config)
    perturb(model, 3)
    path = save_dphubert_checkpoint(tmp_path / "pruned.pth", model.eval())
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["encoder_num_heads"] == [3, 2] and raw["config"]["encoder_head_dim"] == 16

    loaded = robustdistiller.load(path, precision="fp32")
    assert loaded.config.head_counts == [3, 2] and loaded.config.head_dim == 16
    wavs, lengths = wave_batch
    with torch.no_grad():
        for a, b in zip(loaded.extract(wavs, lengths), model.extract(wavs, lengths), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # WavLM keeps the rule: its position bias is split over the unpruned heads.
    with pytest.raises(ValueError, match="not divisible by total_heads 3"):
        tiny_config("wavlm", total_heads=3, layer_heads=[[0, 1, 2], [0]])


def test_evaluate_rebuilds_a_saved_head_that_reads_the_last_layer(tmp_path, caplog) -> None:
    import numpy as np

    from robustdistiller.config import from_dict, to_dict
    from robustdistiller.evaluate.metrics import si_snr
    from robustdistiller.evaluate.scorers import enhancement_row
    from robustdistiller.models.enhancement import EnhancementConfig, EnhancementHead

    model = _dphubert_model()
    cfg = from_dict(
        EnhancementConfig,
        {"use_enhancement": True, "input": "last", "input_dim": 64, "num_layers": 1, "hidden_size": 8, "dropout": 0.0},
    )
    torch.manual_seed(0)
    head = EnhancementHead(cfg).eval()
    path = save_dphubert_checkpoint(
        tmp_path / "rd.pth", model, extra={"enhancement_head": head.state_dict(), "enhancement_config": to_dict(cfg)}
    )
    mut = load_model_under_test(path, "rd")
    assert mut.enhancement is not None and mut.enhancement_input == "last"

    clean = (0.3 * np.sin(np.arange(6000) * 0.07)).astype(np.float32)
    noisy = clean + 0.05 * np.random.default_rng(1).standard_normal(6000).astype(np.float32)
    x, lengths = torch.from_numpy(noisy)[None], torch.tensor([6000])
    with torch.no_grad():
        expected = head.enhance(model(x, lengths).last_hidden_state, x, lengths)[0].numpy()
    row = enhancement_row(mut, "toy", "white", [(clean, noisy)])
    assert row["si_snr"] == pytest.approx(si_snr(expected, clean), abs=1e-4)

    # A file written before heads kept their config: the head is reported and left out, not guessed.
    old = save_dphubert_checkpoint(tmp_path / "old.pth", model, extra={"enhancement_head": head.state_dict()})
    assert load_model_under_test(old, "old").enhancement is None
    assert "no enhancement_config" in caplog.text
