import pytest
import torch

from robustdistiller.config import ConfigError, from_dict
from robustdistiller.models.enhancement import (
    EnhancementConfig,
    EnhancementHead,
    stft,
    stft_frame_mask,
)
from robustdistiller.train.losses import enhancement_loss


def conv_frames(num_samples: int) -> int:
    """Frames of the wav2vec2-family CNN (receptive field 400, stride 320)."""
    return (num_samples - 400) // 320 + 1


def small_head(**overrides) -> EnhancementHead:
    torch.manual_seed(0)
    cfg = dict(input_dim=16, hidden_size=8, num_layers=2)
    cfg.update(overrides)
    return EnhancementHead(from_dict(EnhancementConfig, cfg))


def test_default_parameter_count():
    head = EnhancementHead(EnhancementConfig(use_enhancement=True))
    assert sum(p.numel() for p in head.lstm.parameters()) == 4_730_880
    assert sum(p.numel() for p in head.linear.parameters()) == 131_841
    assert sum(p.numel() for p in head.parameters()) == 4_730_880 + 131_841


def test_config_validation():
    cfg = from_dict(EnhancementConfig, {"use_enhancement": True, "weight": 2, "loss": "mrstft"})
    assert cfg.upsample == 2 and cfg.weight == 2.0
    with pytest.raises(ConfigError, match="lambda"):
        from_dict(EnhancementConfig, {"lambda": 2.0})
    with pytest.raises(ConfigError, match="num_bins"):
        from_dict(EnhancementConfig, {"n_fft": 1024})
    with pytest.raises(ConfigError, match="hop"):
        from_dict(EnhancementConfig, {"hop": 150})
    with pytest.raises(ConfigError, match="loss: 'l3' is not one of"):
        from_dict(EnhancementConfig, {"loss": "l3"})


def test_shapes_and_frame_matching_for_unequal_lengths():
    head = small_head().eval()
    lengths = torch.tensor([16000, 9000, 4001])
    noisy = torch.randn(3, 16000)
    features = torch.randn(3, conv_frames(16000), 16)  # 49 frames -> 98 after x2
    out = head(features, noisy, lengths)
    frames = 16000 // 160 + 1
    assert out.mask.shape == out.estimate_mag.shape == out.noisy_stft.shape == (3, 257, frames)
    assert out.noisy_stft.is_complex()
    assert out.frame_mask.sum(1).tolist() == [101, 57, 26]
    assert torch.all((out.mask >= 0) & (out.mask <= 1))
    wav = head.enhance(features, noisy, lengths)
    assert wav.shape == (3, 16000)
    assert torch.all(wav[1, 9000:] == 0) and torch.all(wav[2, 4001:] == 0)
    # Features that cannot belong to this audio are refused, not silently stretched.
    with pytest.raises(ValueError, match="do not match"):
        head(torch.randn(3, 30, 16), noisy, lengths)


def test_stft_helpers():
    x = torch.randn(2, 1000)
    assert stft(x, 512, 160, 400).shape == (2, 257, 1000 // 160 + 1)
    mask = stft_frame_mask(torch.tensor([1000, 320]), 160, 7)
    assert mask.sum(1).tolist() == [7, 3]
    with pytest.raises(ValueError, match="too short"):
        stft(torch.randn(1, 200), 512, 160, 400)


def test_padding_does_not_change_valid_outputs():
    head = small_head().eval()
    g = torch.Generator().manual_seed(1)
    short_len, long_len = 6400, 16000
    short_frames = short_len // 160 + 1  # 41 STFT frames -> needs 21 feature frames
    short_feats = torch.randn(1, (short_frames + 1) // 2, 16, generator=g)
    short_wav = torch.randn(1, short_len, generator=g)
    alone = head(short_feats, short_wav, torch.tensor([short_len]))

    feats = 100 * torch.randn(2, conv_frames(long_len), 16, generator=g)  # garbage padding
    feats[1, : short_feats.shape[1]] = short_feats[0]
    wavs = 100 * torch.randn(2, long_len, generator=g)
    wavs[1, :short_len] = short_wav[0]
    batched = head(feats, wavs, torch.tensor([long_len, short_len]))
    torch.testing.assert_close(batched.mask[1, :, :short_frames], alone.mask[0], atol=1e-6, rtol=1e-5)


def test_gradients_flow_from_l1_loss():
    head = small_head()
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([8000, 5000])
    features = torch.randn(2, conv_frames(8000), 16, generator=g)
    clean = torch.randn(2, 8000, generator=g)
    noisy = clean + torch.randn(2, 8000, generator=g)
    loss = enhancement_loss(head, head(features, noisy, lengths), clean, lengths, "l1")
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
