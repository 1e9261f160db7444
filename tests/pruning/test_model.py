"""PrunableModel: parity with transformers (full and pruned shapes), gates, exact prune + fold."""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures_tiny import hf_model, perturb
from fixtures_tiny import tiny_prunable_config as tiny_config

from robustdistiller.models.convert import hf_to_ours
from robustdistiller.models.pruning import PrunableConfig, PrunableModel, prune_model
from robustdistiller.models.teacher import TeacherModel, teacher_config_from_hf


def _from_hf(hf: torch.nn.Module, config: PrunableConfig) -> PrunableModel:
    model = PrunableModel(config).eval()
    state = hf_to_ours(hf.state_dict(), group_norm=True)
    state["dummy_weight"] = torch.ones(config.conv_spec[-1][0])
    model.load_state_dict(state, strict=True)
    return model


def _hf_states(hf: torch.nn.Module, wav: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = hf(wav, output_hidden_states=True)
        projected = hf.feature_projection(hf.feature_extractor(wav).transpose(1, 2))
    if isinstance(projected, tuple):  # wav2vec2 / WavLM also return the normalised features
        projected = projected[0]
    return [projected, *out.hidden_states[1:]]


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_full_shape_parity_with_transformers(family: str, wave_batch) -> None:
    hf = hf_model(family)
    config = PrunableConfig.from_teacher(
        teacher_config_from_hf(hf.config), dropout=0.0, attention_dropout=0.0, projection_dropout=0.0
    )
    model = _from_hf(hf, config)
    wav = wave_batch[0][:1]
    with torch.no_grad():
        ours = model.extract(wav)
    expected = _hf_states(hf, wav)
    assert len(ours) == config.num_layers + 1
    for a, b in zip(ours, expected):  # index 0 = projection output before the positional conv
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _shrink_hubert(hf: torch.nn.Module, channels: list[int], heads: list[int], ffn: list[int]) -> None:
    """Cut a transformers HubertModel down to per-layer sizes (its code infers heads from the shapes)."""

    def linear(old: torch.nn.Linear, rows: int | None, cols: int | None) -> torch.nn.Linear:
        w = old.weight[:rows, :cols]
        new = torch.nn.Linear(w.shape[1], w.shape[0])
        new.weight.data.copy_(w)
        new.bias.data.copy_(old.bias[:rows])
        return new

    c_in = 1
    for i, (block, c) in enumerate(zip(hf.feature_extractor.conv_layers, channels)):
        conv = torch.nn.Conv1d(c_in, c, block.conv.kernel_size, block.conv.stride, bias=False)
        conv.weight.data.copy_(block.conv.weight[:c, :c_in])
        block.conv = conv
        if i == 0:
            norm = torch.nn.GroupNorm(c, c, affine=True)
            norm.weight.data.copy_(block.layer_norm.weight[:c])
            norm.bias.data.copy_(block.layer_norm.bias[:c])
            block.layer_norm = norm
        c_in = c
    proj = hf.feature_projection
    ln = torch.nn.LayerNorm(c_in)
    ln.weight.data.copy_(proj.layer_norm.weight[:c_in])
    ln.bias.data.copy_(proj.layer_norm.bias[:c_in])
    proj.layer_norm, proj.projection = ln, linear(proj.projection, None, c_in)
    for layer, h, f in zip(hf.encoder.layers, heads, ffn):
        att, inner = layer.attention, h * layer.attention.head_dim
        att.q_proj, att.k_proj, att.v_proj = (linear(m, inner, None) for m in (att.q_proj, att.k_proj, att.v_proj))
        att.out_proj = linear(att.out_proj, None, inner)
        att.num_heads = h
        ff = layer.feed_forward
        ff.intermediate_dense = linear(ff.intermediate_dense, f, None)
        ff.output_dense = linear(ff.output_dense, None, f)


def test_pruned_shape_parity_with_transformers(wave_batch) -> None:
    hf = hf_model("hubert")
    channels, heads, ffn = [20, 24, 17, 32, 9, 30, 32], [3, 1], [70, 5]
    _shrink_hubert(hf, channels, heads, ffn)
    config = tiny_config(
        "hubert",
        conv_layers=[[c, k, s] for c, (_, k, s) in zip(channels, tiny_config().conv_spec)],
        layer_heads=[list(range(h)) for h in heads],
        layer_ffn_dims=ffn,
    )
    model = _from_hf(hf, config)
    wav = wave_batch[0][:1]
    with torch.no_grad():
        ours = model.extract(wav)
    for a, b in zip(ours, _hf_states(hf, wav)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _random_gates(model: PrunableModel, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("log_alpha"):
                p.copy_(torch.randn(p.shape, generator=gen) * 3.0)


ALL_UNITS = ["conv", "head", "interm", "attlayer", "ffnlayer"]


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_prune_folds_exactly_into_the_gated_eval_model(family: str, wave_batch) -> None:
    wavs, lengths = wave_batch
    for seed in range(3):
        torch.manual_seed(seed)
        model = PrunableModel(tiny_config(family, pruning_units=ALL_UNITS))
        perturb(model, seed)
        _random_gates(model, seed)
        if seed == 0:  # every head of layer 0 gated off (WavLM: the position-bias owner), FFN 1 gone
            with torch.no_grad():
                model.gates.heads["0"].log_alpha.fill_(-10.0)
                model.gates.ffn["1"].log_alpha.fill_(-10.0)
        model.eval()
        with torch.no_grad():
            gated = model.extract(wavs, lengths)
        pruned, report = prune_model(model)
        pruned.eval()
        assert pruned.gates is None and not pruned.config.pruning_units
        with torch.no_grad():
            out = pruned.extract(wavs, lengths)
        for a, b in zip(gated, out):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert report.params_after == sum(p.numel() for p in pruned.parameters()) < report.params_before
        if seed == 0:
            assert pruned.config.layer_ffn_dims[1] == 0 and pruned.encoder.layers[1].fc1 is None
            if family == "wavlm":  # kept, silent: the bias survives for layer 1
                assert len(pruned.config.layer_heads[0]) == 1 and any("WavLM layer 0" in n for n in report.notes)
                assert pruned.encoder.layers[0].self_attn.out_proj.weight.abs().sum() == 0
            else:
                assert pruned.config.layer_heads[0] == [] and pruned.encoder.layers[0].self_attn is None


def test_wavlm_pruning_keeps_original_head_indices(wave_batch) -> None:
    model = PrunableModel(tiny_config("wavlm", pruning_units=["head"]))
    perturb(model, 4)
    with torch.no_grad():
        model.gates.heads["1"].log_alpha.copy_(torch.tensor([5.0, -9.0, 5.0, -9.0]))
        model.gates.heads["0"].log_alpha.fill_(8.0)
    pruned, _ = prune_model(model.eval())
    assert pruned.config.layer_heads == [[0, 1, 2, 3], [0, 2]]
    attn = pruned.encoder.layers[1].self_attn
    assert attn.remaining_heads.tolist() == [0, 2] and attn.grep_a.shape[1] == 4


def test_gates_sample_in_training_and_survive_deepcopy(wave_batch) -> None:
    wavs, lengths = wave_batch
    model = PrunableModel(tiny_config("hubert", pruning_units=["conv", "head", "interm"]))
    model.train()
    torch.manual_seed(0)
    a = model.extract(wavs, lengths)[-1]
    b = model.extract(wavs, lengths)[-1]
    assert not torch.allclose(a, b)  # a new mask per forward
    a[0].sum().backward()
    assert all(g.log_alpha.grad is not None for g in model.gates.modules() if hasattr(g, "log_alpha"))
    clone = copy.deepcopy(model).eval()
    with torch.no_grad():
        clone.gates.heads["0"].log_alpha.fill_(-20.0)  # must act on the clone only
        ref = model.eval().extract(wavs, lengths)[1]
        assert not torch.allclose(clone.extract(wavs, lengths)[1], ref)
        assert torch.equal(model.extract(wavs, lengths)[1], ref)


def test_from_teacher_copies_weights_and_checks_shapes(wave_batch) -> None:
    hf = hf_model("wavlm")
    teacher = TeacherModel(teacher_config_from_hf(hf.config)).eval()
    teacher.load_state_dict(hf_to_ours(hf.state_dict(), group_norm=True))
    config = PrunableConfig.from_teacher(
        teacher.config, ["head"], dropout=0.0, attention_dropout=0.0, projection_dropout=0.0
    )
    student = PrunableModel.from_teacher(teacher, config).eval()
    with torch.no_grad():
        student.gates.heads["0"].log_alpha.fill_(50.0)
        student.gates.heads["1"].log_alpha.fill_(50.0)
        theirs = teacher(*wave_batch).hidden_states
        ours = student.extract(*wave_batch)
    # the soft eval mask of a fully-on gate is sigmoid(0.8 * 50 / beta) = 1
    torch.testing.assert_close(ours[-1], theirs[-1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not match|other shapes"):
        PrunableModel.from_teacher(teacher, tiny_config("wavlm", layer_ffn_dims=[64, 128]))
    with pytest.raises(ValueError, match="layer 0 has no attention"):
        tiny_config("wavlm", layer_heads=[[], [0]])
    with pytest.raises(ValueError, match="extractor_mode 'default'"):
        tiny_config("hubert", extractor_mode="layer_norm", pruning_units=["conv"])
