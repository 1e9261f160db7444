"""The expected-size formula against real parameter counts."""

from __future__ import annotations

import torch
from fixtures_tiny import tiny_prunable_config as tiny_config

from robustdistiller.models.pruning import PrunableModel, config_params, prune_model, structure_params
from robustdistiller.models.teacher import TeacherConfig, TeacherModel


def _real(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("gates."))


def test_formula_equals_real_count_for_full_and_irregular_shapes() -> None:
    for family in ("hubert", "wavlm"):
        full = tiny_config(family)
        assert config_params(full) == _real(PrunableModel(full))
        odd = tiny_config(
            family,
            conv_layers=[[20, 10, 5], [7, 3, 2], [32, 3, 2]],
            layer_heads=[[1, 3], []],
            layer_ffn_dims=[0, 33],
            conv_bias=True,
        )
        assert config_params(odd) == _real(PrunableModel(odd))
    pre_ln = tiny_config("hubert", extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True)
    assert config_params(pre_ln) == _real(PrunableModel(pre_ln))


def test_teacher_size_is_the_reference_size_plus_dummy_weight() -> None:
    teacher = TeacherModel(
        TeacherConfig(
            family="wavlm",
            conv_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
            embed_dim=64,
            num_layers=2,
            attention_heads=4,
            ffn_dim=128,
            conv_pos=16,
            conv_pos_groups=4,
            num_buckets=16,
            max_distance=40,
        )
    )
    assert config_params(tiny_config("wavlm")) == sum(p.numel() for p in teacher.parameters()) + 32


def test_expected_size_tracks_gates_and_matches_the_pruned_model() -> None:
    config = tiny_config("wavlm", pruning_units=["conv", "head", "interm"])
    model = PrunableModel(config)
    with torch.no_grad():  # gates fully on / off: the expectation is the exact count
        for gate in model.gates.modules():
            if hasattr(gate, "log_alpha"):
                gate.log_alpha.fill_(30.0)
    assert float(model.expected_params().detach()) == config_params(config)
    assert abs(float(model.expected_sparsity().detach())) < 1e-6

    torch.manual_seed(3)
    with torch.no_grad():
        for gate in model.gates.modules():
            if hasattr(gate, "log_alpha"):
                gate.log_alpha.normal_(0.0, 2.0)
    expected = model.expected_params()
    expected.backward()
    assert all(g.log_alpha.grad is not None for g in model.gates.modules() if hasattr(g, "log_alpha"))
    pruned, report = prune_model(model)
    real = _real(pruned)
    assert report.params_after == real == pruned.num_params()
    # the eval mask drops round(n - E[L0]) units per gate: the pruned size is close to the expectation
    assert abs(real - float(expected.detach())) / config_params(config) < 0.03
    counts = structure_params(
        pruned.config, [c[0] for c in pruned.config.conv_spec], pruned.config.head_counts, pruned.config.layer_ffn_dims
    )
    assert counts == real
