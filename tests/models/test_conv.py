import pytest
import torch

from robustdistiller.models.conv import (
    DEFAULT_CONV_LAYERS,
    MAX_CONV_BLOCKS,
    ConvFeatureExtractor,
    conv_output_lengths,
    format_conv_layers,
    parse_conv_layers,
    receptive_field,
)

TINY = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2


def test_parse_default_spec():
    layers = parse_conv_layers(DEFAULT_CONV_LAYERS)
    assert layers == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    assert parse_conv_layers(format_conv_layers(layers)) == layers
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]") == layers


@pytest.mark.parametrize(
    "spec",
    [
        "__import__('os').system('echo pwned')",
        "[(512,10,5)] + open('x')",
        "[(a,10,5)]",
        "[(512,10.5,5)]",
        "[(512,10)]",
        "[(512,10,5)] * 10**9",
        "[(512,10,5)] - [(1,1,1)]",
        "[]",
        "[(0,10,5)]",
        "[(512,10,5)",
    ],
)
def test_parse_rejects_anything_but_int_literals(spec):
    with pytest.raises(ValueError, match="conv layer spec"):
        parse_conv_layers(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "[(4,10,5)] * 10000 * 100",  # each repeat within a per-factor cap, a million blocks in all
        "[(4,10,5)] * 10000 * 10000 * 10000",  # used to end in MemoryError
        "[(4,10,5)] * 60 + [(4,10,5)] * 60",
        "([(4,10,5)] * 64) * 2",
    ],
)
def test_parse_bounds_the_size_of_chained_repeats(spec):
    with pytest.raises(ValueError, match=rf"limit of {MAX_CONV_BLOCKS} blocks"):
        parse_conv_layers(spec)
    assert len(parse_conv_layers(f"[(4,10,5)] * {MAX_CONV_BLOCKS}")) == MAX_CONV_BLOCKS


def test_frame_lengths_and_receptive_field():
    layers = parse_conv_layers(DEFAULT_CONV_LAYERS)
    got = conv_output_lengths(torch.tensor([16000, 250000, 400, 399, 0]), layers)
    assert got.tolist() == [49, 781, 1, 0, 0]
    assert receptive_field(layers) == 400


def test_frame_count_matches_conv_output():
    ext = ConvFeatureExtractor(TINY).eval()
    for n in (400, 401, 719, 720, 16000):
        assert ext(torch.randn(1, n)).shape[-1] == conv_output_lengths(torch.tensor([n]), TINY).item()


def test_state_dict_keys_per_mode():
    default = ConvFeatureExtractor(TINY, mode="default")
    keys = list(default.state_dict())
    assert keys[:3] == ["conv_layers.0.0.weight", "conv_layers.0.2.weight", "conv_layers.0.2.bias"]
    assert "conv_layers.1.2.weight" not in keys
    layer_norm = ConvFeatureExtractor(TINY, mode="layer_norm", conv_bias=True)
    keys = set(layer_norm.state_dict())
    for i in range(7):
        assert {f"conv_layers.{i}.0.bias", f"conv_layers.{i}.2.1.weight", f"conv_layers.{i}.2.1.bias"} <= keys
    with pytest.raises(ValueError, match="mode"):
        ConvFeatureExtractor(TINY, mode="group")  # type: ignore[arg-type]


def test_per_layer_channels():
    layers = [(16, 10, 5), (24, 3, 2), (8, 3, 2)]
    ext = ConvFeatureExtractor(layers)
    assert ext.conv_layers[1][0].weight.shape == (24, 16, 3)
    assert ext(torch.randn(2, 4000)).shape[1] == 8


def test_feature_grad_mult_scales_gradient_only():
    torch.manual_seed(0)
    a = ConvFeatureExtractor(TINY, feature_grad_mult=1.0)
    b = ConvFeatureExtractor(TINY, feature_grad_mult=0.1)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 4000)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    ga, gb = a.conv_layers[0][0].weight.grad, b.conv_layers[0][0].weight.grad
    torch.testing.assert_close(gb, 0.1 * ga)


def test_group_norm_statistics_ignore_padding():
    torch.manual_seed(0)
    ext = ConvFeatureExtractor(TINY).eval()
    x = torch.randn(2, 6000)
    x[1, 3000:] = 0.0
    lengths = torch.tensor([6000, 3000])
    batched = ext(x, lengths)
    alone = ext(x[1:, :3000])
    t = alone.shape[-1]
    assert (batched[1, :, :t] - alone[0]).abs().max() < 1e-5
    # without lengths the statistics include the zero padding, as in fairseq
    assert (ext(x)[1, :, :t] - alone[0]).abs().max() > 1e-3
