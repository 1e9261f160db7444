import math

import pytest
import torch

from robustdistiller.models.enhancement import EnhancementConfig, EnhancementHead
from robustdistiller.train.losses import (
    MultiResolutionSTFTLoss,
    distillation_loss,
    enhancement_loss,
    feature_penalty,
    si_snr,
)


def neg_log_sigmoid(x: float) -> float:
    return math.log(1.0 + math.exp(-x))


# Two valid frames, D = 2: frame 0 identical (cos 1), frame 1 orthogonal (cos 0).
PRED = [[1.0, 0.0], [0.0, 1.0]]
TARGET = [[1.0, 0.0], [1.0, 0.0]]
# |diff| = [0, 0, 1, 1] -> L1 0.5; squared also 0.5 here, so L2 uses its own example below.
REC_L1 = 0.5
COS = (neg_log_sigmoid(1.0) + neg_log_sigmoid(0.0)) / 2


def test_distillation_loss_hand_computed():
    pred = torch.tensor([[PRED]])  # [1, 1, 2, 2]
    target = torch.tensor([[TARGET]])
    out = distillation_loss(pred, target, None, layer_ids=[4])
    assert out.total.item() == pytest.approx(REC_L1 + COS, abs=1e-6)
    assert out.per_layer["rec_l4"].item() == pytest.approx(REC_L1, abs=1e-6)
    assert out.per_layer["sim_l4"].item() == pytest.approx(0.5, abs=1e-6)
    assert out.per_layer["cos_l4"].item() == pytest.approx(COS, abs=1e-6)

    half = distillation_loss(pred, target, None, cosine_weight=0.5)
    assert half.total.item() == pytest.approx(REC_L1 + 0.5 * COS, abs=1e-6)


def test_distillation_loss_l2_and_layer_average():
    pred = torch.tensor([[[[2.0, 0.0]]], [[[0.0, 0.0]]]]).transpose(0, 1)  # [1, 2, 1, 2]
    target = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 1.0]]]]).transpose(0, 1)
    out = distillation_loss(pred, target, None, loss_type="l2", cosine_weight=0.0, layer_ids=[4, 8])
    # layer 4: (4 + 0) / 2 = 2; layer 8: (0 + 1) / 2 = 0.5; total = mean over layers.
    assert out.per_layer["rec_l4"].item() == pytest.approx(2.0)
    assert out.per_layer["rec_l8"].item() == pytest.approx(0.5)
    assert out.total.item() == pytest.approx(1.25)


def test_masked_vs_unmasked_with_garbage_padding():
    garbage_pred, garbage_target = [3.0, -1.0], [0.0, 2.0]
    pred = torch.tensor([[PRED + [garbage_pred]]])  # T = 3, frame 2 is padding
    target = torch.tensor([[TARGET + [garbage_target]]])
    mask = torch.tensor([[True, True, False]])

    masked = distillation_loss(pred, target, mask)
    assert masked.total.item() == pytest.approx(REC_L1 + COS, abs=1e-6)

    # Unmasked (s3prl's behaviour): the padded frame counts as a third frame.
    g_rec = (abs(3.0 - 0.0) + abs(-1.0 - 2.0)) / 2
    g_cos_sim = (3.0 * 0.0 + -1.0 * 2.0) / (math.sqrt(10.0) * 2.0)
    expected_rec = (2 * REC_L1 + g_rec) / 3
    expected_cos = (2 * COS + neg_log_sigmoid(g_cos_sim)) / 3
    unmasked = distillation_loss(pred, target, mask, masked=False)
    assert unmasked.total.item() == pytest.approx(expected_rec + expected_cos, abs=1e-6)
    assert distillation_loss(pred, target, None).total.item() == pytest.approx(unmasked.total.item())


def test_no_gradient_or_nan_from_padded_frames():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 5, 8, generator=g)
    target = torch.randn(2, 3, 5, 8, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    pred[1, :, 3:] = float("nan")
    target[1, :, 3:] = float("inf")
    pred.requires_grad_(True)
    out = distillation_loss(pred, target, mask)
    out.total.backward()
    assert torch.isfinite(out.total)
    assert torch.all(pred.grad[1, :, 3:] == 0)
    assert torch.all(pred.grad[0] != 0)


def test_frame_count_mismatch_is_trimmed_and_bounded():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 2, 6, 4, generator=g)
    target = torch.randn(2, 2, 5, 4, generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    trimmed = distillation_loss(pred, target, mask)
    reference = distillation_loss(pred[:, :, :5], target, mask[:, :5])
    assert trimmed.total.item() == pytest.approx(reference.total.item())
    with pytest.raises(ValueError, match="frame counts differ"):
        distillation_loss(pred, target[:, :, :2], mask)
    with pytest.raises(ValueError, match="layer_ids"):
        distillation_loss(pred, target, mask, layer_ids=[1])
    with pytest.raises(ValueError, match="no valid frame"):
        distillation_loss(pred, target, torch.zeros(2, 6, dtype=torch.bool))


def test_distillation_loss_under_autocast_is_fp32():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 2, 4, 8, generator=g)
    target = torch.randn(2, 2, 4, 8, generator=g)
    full = distillation_loss(pred, target, None).total
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = distillation_loss(pred.bfloat16(), target.bfloat16(), None).total
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)


def test_feature_penalty():
    feats = torch.tensor([[[1.0, 3.0], [100.0, 100.0]]])  # frame 1 is padding
    mask = torch.tensor([[True, False]])
    assert feature_penalty(feats, mask).item() == pytest.approx(5.0)
    assert feature_penalty(feats).item() == pytest.approx((1 + 9 + 1e4 + 1e4) / 4)


def test_si_snr_identical_scaled_and_known_snr():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 8000, generator=g)
    assert torch.all(si_snr(s, s) > 60)
    e = s + 0.3 * torch.randn(2, 8000, generator=g)
    # Invariant to the estimate's gain and DC offset.
    assert torch.allclose(si_snr(3.0 * e + 0.5, s), si_snr(e, s), atol=1e-3)

    # Zero-mean noise orthogonal to the zero-mean signal at exactly 5 dB.
    s = s - s.mean(dim=1, keepdim=True)
    n = torch.randn(2, 8000, generator=g)
    n = n - n.mean(dim=1, keepdim=True)
    n = n - (n * s).sum(1, keepdim=True) / s.pow(2).sum(1, keepdim=True) * s
    n = n - n.mean(dim=1, keepdim=True)
    n = n * torch.sqrt(s.pow(2).sum(1, keepdim=True) / n.pow(2).sum(1, keepdim=True) / 10**0.5)
    assert torch.allclose(si_snr(s + n, s), torch.full((2,), 5.0), atol=1e-3)


def test_si_snr_ignores_padding():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(1, 4000, generator=g)
    e = s + 0.1 * torch.randn(1, 4000, generator=g)
    padded_s = torch.cat([s, torch.randn(1, 1000, generator=g)], dim=1)
    padded_e = torch.cat([e, 50 * torch.randn(1, 1000, generator=g)], dim=1)
    lengths = torch.tensor([4000])
    assert si_snr(padded_e, padded_s, lengths).item() == pytest.approx(si_snr(e, s).item(), abs=1e-3)
    silent = torch.zeros(1, 4000)
    assert torch.isfinite(si_snr(silent, silent)).all()


def test_mrstft_zero_for_identical_positive_otherwise():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6000, generator=g)
    loss = MultiResolutionSTFTLoss()
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(x + 0.3 * torch.randn(2, 6000, generator=g), x).item() > 0.05
    # Padding beyond the lengths does not count.
    lengths = torch.tensor([6000, 4000])
    y = x.clone()
    y[1, 4000:] = torch.randn(2000, generator=g)
    assert loss(y, x, lengths).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(y, x).item() > 0


def _half_mask_head() -> EnhancementHead:
    """A head whose mask is exactly 0.5 everywhere (zero output layer)."""
    head = EnhancementHead(EnhancementConfig(input_dim=16, hidden_size=8, num_layers=1)).eval()
    torch.nn.init.zeros_(head.linear.weight)
    torch.nn.init.zeros_(head.linear.bias)
    return head


@pytest.mark.parametrize("kind", ["l1", "l2", "mrstft", "si_snr"])
def test_enhancement_loss_perfect_mask(kind: str):
    g = torch.Generator().manual_seed(6)
    head = _half_mask_head()
    lengths = torch.tensor([8000, 6000])
    clean = torch.randn(2, 8000, generator=g) * (torch.arange(8000) < lengths[:, None])
    noisy = 2.0 * clean  # the ideal ratio mask is exactly 0.5
    features = torch.randn(2, 24, 16, generator=g)
    out = head(features, noisy, lengths)
    loss = enhancement_loss(head, out, clean, lengths, kind).item()
    if kind == "si_snr":
        assert loss < -60
    else:
        assert loss == pytest.approx(0.0, abs=1e-4)
    # A wrong target gives a clearly positive (or, for SI-SNR, much higher) loss.
    wrong = enhancement_loss(head, out, torch.randn(2, 8000, generator=g), lengths, kind).item()
    assert wrong > loss + 0.1


def test_enhancement_loss_rejects_unknown_kind():
    head = _half_mask_head()
    out = head(torch.zeros(1, 24, 16), torch.randn(1, 8000), torch.tensor([8000]))
    with pytest.raises(ValueError, match="unknown enhancement loss"):
        enhancement_loss(head, out, torch.randn(1, 8000), torch.tensor([8000]), "l3")  # type: ignore[arg-type]
