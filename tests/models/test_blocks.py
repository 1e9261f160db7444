import pytest
import torch
from torch import nn

from robustdistiller.models.attention import SelfAttention, WavLMSelfAttention, relative_position_buckets
from robustdistiller.models.positional import ConvPositionalEmbedding
from robustdistiller.models.transformer import EncoderLayer, TransformerEncoder


def test_pos_conv_legacy_names_and_weight_norm_math():
    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(64, kernel_size=16, groups=4)
    assert list(pos.state_dict()) == ["0.bias", "0.weight_g", "0.weight_v"]
    assert pos.state_dict()["0.weight_g"].shape == (1, 1, 16)
    assert pos.state_dict()["0.weight_v"].shape == (64, 16, 16)
    # same function as torch's own weight-norm conv with the same g, v
    ref = nn.utils.parametrizations.weight_norm(nn.Conv1d(64, 64, 16, padding=8, groups=4), name="weight", dim=2)
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(2.0 * pos[0].weight_g)
        ref.parametrizations.weight.original1.copy_(pos[0].weight_v)
        ref.bias.copy_(torch.randn(64))
    pos.load_state_dict({f"0.{k}": v for k, v in ref.state_dict().items()})  # parametrized names accepted
    x = torch.randn(2, 64, 30)
    expected = nn.functional.gelu(ref(x)[..., :-1])
    torch.testing.assert_close(pos(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pos[0].weight_g, ref.parametrizations.weight.original0)


def test_pos_conv_refuses_both_naming_styles_and_missing_keys():
    pos = ConvPositionalEmbedding(64, kernel_size=16, groups=4)
    sd = pos.state_dict()
    both = {**sd, "0.parametrizations.weight.original0": sd["0.weight_g"]}
    with pytest.raises(ValueError, match="both"):
        pos.load_state_dict(both)
    partial = {k: v for k, v in sd.items() if k != "0.weight_v"}
    with pytest.raises(RuntimeError, match="weight_v"):
        pos.load_state_dict(partial)


def test_self_attention_matches_torch_mha_with_padding():
    torch.manual_seed(0)
    ours = SelfAttention(64, 4, head_dim=16).eval()
    ref = nn.MultiheadAttention(64, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    assert [n.split(".")[0] for n, _ in ours.named_parameters()][::2] == ["k_proj", "v_proj", "q_proj", "out_proj"]
    x = torch.randn(2, 9, 64)
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    got, _ = ours(x, mask)
    want, _ = ref(x, x, x, key_padding_mask=~mask, need_weights=False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_relative_position_buckets_match_transformers():
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    ref = WavLMAttention(64, 4, num_buckets=320, max_distance=800)
    pos = torch.arange(1200)
    rel = pos[None, :] - pos[:, None]
    assert torch.equal(relative_position_buckets(rel, 320, 800), ref._relative_positions_bucket(rel))


def test_wavlm_remaining_heads_equal_a_head_masked_full_layer():
    torch.manual_seed(0)
    full = WavLMSelfAttention(64, 4, 16, has_relative_attention_bias=True, num_buckets=16, max_distance=40).eval()
    keep = [0, 2]
    pruned = WavLMSelfAttention(
        64,
        2,
        16,
        has_relative_attention_bias=True,
        num_buckets=16,
        max_distance=40,
        bias_heads=4,
        remaining_heads=keep,
    ).eval()
    rows = torch.cat([torch.arange(h * 16, (h + 1) * 16) for h in keep])
    with torch.no_grad():
        for name in ("q_proj", "k_proj", "v_proj"):
            getattr(pruned, name).weight.copy_(getattr(full, name).weight[rows])
            getattr(pruned, name).bias.copy_(getattr(full, name).bias[rows])
        pruned.out_proj.weight.copy_(full.out_proj.weight[:, rows])
        pruned.out_proj.bias.copy_(full.out_proj.bias)
        pruned.relative_attention_bias.weight.copy_(full.relative_attention_bias.weight)
        pruned.grep_linear.load_state_dict(full.grep_linear.state_dict())
        pruned.grep_a.copy_(torch.rand(1, 4, 1, 1))
        full.grep_a.copy_(pruned.grep_a)
        # silence the dropped heads in the full layer
        dropped = torch.cat([torch.arange(h * 16, (h + 1) * 16) for h in (1, 3)])
        full.out_proj.weight[:, dropped] = 0.0
    x = torch.randn(2, 11, 64)
    mask = torch.tensor([[True] * 11, [True] * 7 + [False] * 4])
    torch.testing.assert_close(pruned(x, mask)[0], full(x, mask)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="remaining_heads"):
        WavLMSelfAttention(64, 2, 16, has_relative_attention_bias=False, bias_heads=4, remaining_heads=[0, 4])


def test_encoder_layers_without_attention_or_ffn():
    torch.manual_seed(0)
    layers = [
        EncoderLayer(64, 0, SelfAttention(64, 4, 16), dropout=0.0, activation_dropout=0.0),
        EncoderLayer(64, 96, None, dropout=0.0, activation_dropout=0.0),
    ]
    enc = TransformerEncoder(64, layers, conv_pos=16, conv_pos_groups=4, dropout=0.0).eval()
    keys = list(enc.state_dict())
    assert "layers.0.fc1.weight" not in keys and "layers.1.self_attn.q_proj.weight" not in keys
    assert {"layers.0.self_attn_layer_norm.weight", "layers.1.final_layer_norm.weight"} <= set(keys)
    out = enc(torch.randn(2, 12, 64), torch.ones(2, 12, dtype=torch.bool))
    assert len(out.layer_outputs) == 2 and out.layer_outputs[1].shape == (2, 12, 64)
    # post-LN layer without attention still applies its first LayerNorm
    x = out.layer_outputs[0]
    l1 = enc.layers[1]
    h = l1.self_attn_layer_norm(x)
    expected = l1.final_layer_norm(h + l1.fc2(torch.nn.functional.gelu(l1.fc1(h))))
    torch.testing.assert_close(out.layer_outputs[1], expected)
