import io

import pytest
import torch

from robustdistiller.config import ConfigError
from robustdistiller.models import DistillerConfig, DistillerModel
from robustdistiller.models.pruning import PrunableConfig
from robustdistiller.models.teacher import TeacherConfig


def _golden_a4() -> list[tuple[str, tuple[int, ...]]]:
    """Reference A.4: the s3prl DistilHuBERT-4-8-12 state dict, in saved order."""
    keys = [
        ("feature_extractor.conv_layers.0.0.weight", (512, 1, 10)),
        ("feature_extractor.conv_layers.0.2.weight", (512,)),
        ("feature_extractor.conv_layers.0.2.bias", (512,)),
    ]
    keys += [(f"feature_extractor.conv_layers.{i}.0.weight", (512, 512, 3)) for i in range(1, 5)]
    keys += [(f"feature_extractor.conv_layers.{i}.0.weight", (512, 512, 2)) for i in (5, 6)]
    keys += [
        ("post_extract_proj.weight", (768, 512)),
        ("post_extract_proj.bias", (768,)),
        ("encoder.pos_conv.0.bias", (768,)),
        ("encoder.pos_conv.0.weight_g", (1, 1, 128)),
        ("encoder.pos_conv.0.weight_v", (768, 48, 128)),
    ]
    for layer in (0, 1):
        p = f"encoder.layers.{layer}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            keys += [(p + f"self_attn.{proj}.weight", (768, 768)), (p + f"self_attn.{proj}.bias", (768,))]
        keys += [
            (p + "self_attn_layer_norm.weight", (768,)),
            (p + "self_attn_layer_norm.bias", (768,)),
            (p + "fc1.weight", (3072, 768)),
            (p + "fc1.bias", (3072,)),
            (p + "fc2.weight", (768, 3072)),
            (p + "fc2.bias", (768,)),
            (p + "final_layer_norm.weight", (768,)),
            (p + "final_layer_norm.bias", (768,)),
        ]
    keys += [
        ("encoder.layer_norm.weight", (768,)),
        ("encoder.layer_norm.bias", (768,)),
        ("output_layer.0.weight", (2304, 768)),
        ("output_layer.0.bias", (2304,)),
        ("output_layer.2.weight", (3, 768, 768)),
        ("output_layer.2.bias", (1, 1, 3, 768)),
    ]
    return keys


@pytest.fixture(scope="module")
def default_student() -> DistillerModel:
    torch.manual_seed(0)
    return DistillerModel(DistillerConfig()).eval()


def test_default_state_dict_is_s3prl_distilhubert(default_student):
    got = [(k, tuple(v.shape)) for k, v in default_student.state_dict().items()]
    assert got == _golden_a4()
    assert len(got) == 52
    counts = default_student.parameter_counts()
    assert (counts.total, counts.without_heads) == (27_034_752, 23_491_200)


def test_one_second_gives_49_frames_and_six_hidden_states(default_student):
    with torch.no_grad():
        out = default_student(torch.randn(1, 16000))
        states = default_student.extract(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert out.cnn_features.shape == (1, 49, 512)
    assert out.projected.shape == (1, 49, 768)
    assert out.predictions.shape == (1, 3, 49, 768)
    assert out.frame_mask.all()
    assert len(states) == 6 and all(s.shape == (2, 49, 768) for s in states)
    assert default_student.frame_lengths(torch.tensor([16000, 8000])).tolist() == [49, 24]


def test_padded_batch_equals_single_items(tiny_student):
    torch.manual_seed(0)
    model = DistillerModel(tiny_student()).eval()
    lengths = torch.tensor([8000, 5300, 2000])
    wavs = torch.randn(3, 8000)
    for i, n in enumerate(lengths.tolist()):
        wavs[i, n:] = 0.0
    with torch.no_grad():
        batch = model(wavs, lengths)
        for i, n in enumerate(lengths.tolist()):
            single = model(wavs[i : i + 1, :n])
            t = single.projected.shape[1]
            assert batch.frame_mask[i].sum() == t and not batch.frame_mask[i, t:].any()
            pairs = [(batch.cnn_features, single.cnn_features), (batch.projected, single.projected)]
            pairs += list(zip(batch.hiddens, single.hiddens))
            for a, b in pairs:
                assert (a[i, :t] - b[0]).abs().max() < 1e-5
            assert (batch.predictions[i, :, :t] - single.predictions[0]).abs().max() < 1e-5
            assert (batch.projected[i, t:] == 0).all()


def test_predictions_follow_split_linear_layout(tiny_student):
    torch.manual_seed(0)
    model = DistillerModel(tiny_student()).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4000))
        h = model.output_layer[1](model.output_layer[0](out.hiddens[-1]))  # (B, T, N * D)
        w, b = model.output_layer[2].weight, model.output_layer[2].bias
        for n in range(3):
            expected = h[..., n * 64 : (n + 1) * 64] @ w[n] + b[0, 0, n]
            torch.testing.assert_close(out.predictions[:, n], expected)


def test_single_head_uses_plain_linear(tiny_student):
    model = DistillerModel(tiny_student(n_tasks=1, pred_layer_id=[2]))
    assert {"output_layer.2.layer.weight", "output_layer.2.layer.bias"} <= set(model.state_dict())
    assert model(torch.randn(1, 4000)).predictions.shape[1] == 1


def test_per_layer_sizes(tiny_student):
    model = DistillerModel(tiny_student(encoder_layer_heads=[2, 0], encoder_layer_ffn_dims=[48, 96]))
    sd = model.state_dict()
    assert sd["encoder.layers.0.self_attn.q_proj.weight"].shape == (32, 64)
    assert "encoder.layers.1.self_attn.q_proj.weight" not in sd
    assert sd["encoder.layers.1.fc1.weight"].shape == (96, 64)
    assert model(torch.randn(1, 4000)).hiddens[1].shape == (1, 12, 64)


def test_config_s3prl_round_trip_is_plain(tiny_student):
    cfg = tiny_student(encoder_layer_heads=[4, 2])
    section = cfg.to_s3prl()
    buf = io.BytesIO()
    torch.save({"distiller": section}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["distiller"]
    assert DistillerConfig.from_s3prl(loaded) == cfg
    assert "encoder_layer_ffn_dims" not in DistillerConfig().to_s3prl()


def test_from_s3prl_uses_s3prl_defaults_and_ignores_unknown(caplog):
    cfg = DistillerConfig.from_s3prl({"n_tasks": "2", "layer_norm_first": "false", "something_new": 1})
    assert cfg.n_tasks == 2 and cfg.pred_layer_id == [1, 2]
    assert cfg.encoder_layers == 1 and cfg.feature_grad_mult == 1.0 and cfg.layer_norm_first is False
    assert "something_new" in caplog.text


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"n_tasks": 2, "pred_layer_id": [4, 8, 12]}, "n_tasks"),
        ({"task_emb_type": "add"}, "expand-last"),
        ({"extractor_conv_feature_layers": "eval('1')"}, "conv layer spec"),
        ({"encoder_attention_heads": 5}, "divisible"),
        ({"encoder_layerdrop": 0.1}, "layerdrop"),
        ({"attention_type": "sparse"}, "attention_type"),
        ({"encoder_layer_heads": [12, 12, 12]}, "encoder_layer_heads"),
    ],
)
def test_validate_rejects_unsupported(bad, match):
    with pytest.raises(ConfigError, match=match):
        DistillerConfig.from_s3prl({"n_tasks": 3, "pred_layer_id": [4, 8, 12], **bad})


def test_bad_batches_fail_clearly(tiny_student):
    model = DistillerModel(tiny_student())
    with pytest.raises(ValueError, match="at least 400 samples"):
        model(torch.randn(2, 1000), torch.tensor([1000, 399]))
    with pytest.raises(ValueError, match="batch, samples"):
        model(torch.randn(1000))
    with pytest.raises(ValueError, match="exceed"):
        model(torch.randn(1, 1000), torch.tensor([1001]))
    with pytest.raises(ValueError, match="floating"):
        model(torch.zeros(1, 1000, dtype=torch.int16))


def test_predict_false_skips_heads(tiny_student):
    model = DistillerModel(tiny_student()).eval()
    wavs = torch.randn(1, 4000)
    out = model(wavs, predict=False)
    assert out.predictions is None
    torch.testing.assert_close(out.hiddens[-1], model(wavs).hiddens[-1])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"extractor_conv_feature_layers": "[(1,2,1)] * 10000 * 10000"}, "over the limit of 64 blocks"),
        ({"extractor_conv_feature_layers": "[(100000,10,5)]"}, "channels 100000 is over the limit of 8192"),
        ({"encoder_embed_dim": 2_000_000, "encoder_attention_heads": 1}, "encoder_embed_dim=2000000 is over the limit"),
        ({"encoder_layers": 100_000}, "encoder_layers=100000 is over the limit of 128"),
        (
            {"encoder_layers": 128, "encoder_embed_dim": 8192, "encoder_attention_heads": 8},
            "parameters, over the limit",
        ),
    ],
)
def test_hostile_sizes_are_refused_before_allocation(overrides: dict, message: str) -> None:
    """A crafted checkpoint's config used to run for minutes at 8 GB or try to allocate terabytes."""
    section = {**DistillerConfig().to_s3prl(), **overrides}
    with pytest.raises(ValueError, match=message):
        DistillerConfig.from_s3prl(section)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TeacherConfig(embed_dim=2_000_000, attention_heads=1), "teacher config: embed_dim=2000000 is over"),
        (lambda: TeacherConfig(num_layers=100_000), "teacher config: num_layers=100000 is over the limit of 128"),
        (
            lambda: PrunableConfig(
                embed_dim=2_000_000, head_dim=1, total_heads=1, layer_heads=[[0]], layer_ffn_dims=[8]
            ),
            "prunable config: embed_dim=2000000",
        ),
        (lambda: PrunableConfig(conv_layers=[[100_000, 10, 5]]), "conv_layers: channels 100000 is over the limit"),
        (lambda: PrunableConfig(conv_layers=[[4, 2, 1]] * 65), "conv_layers: 65 blocks, over the limit of 64"),
    ],
)
def test_teacher_and_prunable_configs_are_bounded_before_allocation(build, message):
    with pytest.raises(ValueError, match=message):
        build().validate()
