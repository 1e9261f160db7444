"""Speech-enhancement head (RobustDistiller's "reconstruction head") and the STFT helpers it uses.

The head reads student features at 50 Hz (the CNN output, as RobustDistiller's code does, or the last
transformer layer, as its README describes), repeats them to the 100 Hz STFT frame rate,
runs a bidirectional LSTM and predicts a sigmoid magnitude mask for the noisy STFT. The estimate
is ``mask * |STFT(noisy)|``; resynthesis reuses the noisy phase.

Differences from RobustDistiller's code, on purpose:
- the Hann window is built on the input's device (the original hard-codes ``"cuda"``);
- each utterance's LSTM only runs over its own frames (packed sequences), so the backward
  direction of a short utterance never reads the padding of a longer one in the same batch;
- samples beyond ``lengths`` are zeroed before the STFT, so whatever sits in the padding
  (e.g. noise mixed into it) cannot leak into the last valid frames.

The training losses for this head live in ``robustdistiller.train.losses.enhancement_loss`` (the
model layer does not import the training layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# Samples per student frame (the wav2vec2-family CNN stride): features run at 16000 / 320 = 50 Hz.
FEATURE_STRIDE = 320
# The repeated features and the STFT frames may differ by a few frames at the edges (CNN receptive
# field vs centred STFT frames); the original asserts |difference| < 5. A larger gap means the
# features do not belong to this audio.
_MAX_FRAME_DIFF = 4


@dataclass
class EnhancementConfig:
    """Enhancement head and its loss (RobustDistiller's YAML block ``enhancement_head`` + ``enhancement_loss``).

    ``weight`` is RobustDistiller's ``enhancement_head.lambda`` (a Python keyword, hence the rename):
    the training objective is ``distillation + weight * enhancement_loss``. ``loss`` is the
    original ``robust_env.enhancement_loss``. ``input`` picks the features fed to the head:
    ``"cnn"`` (conv features, 512-dim: what RobustDistiller's code does) or ``"last"`` (the last
    transformer layer, 768-dim for DistilHuBERT: what its README says); ``input_dim``
    must match. Off by default so that plain DistilHuBERT recipes need not mention it.
    """

    use_enhancement: bool = False
    weight: float = 2.0
    input: Literal["cnn", "last"] = "cnn"
    input_dim: int = 512
    num_bins: int = 257
    num_layers: int = 3
    hidden_size: int = 256
    dropout: float = 0.1
    bidirectional: bool = True
    loss: Literal["l1", "l2", "mrstft", "si_snr"] = "l1"
    n_fft: int = 512
    hop: int = 160
    win: int = 400

    def validate(self) -> None:
        for name in ("input_dim", "num_bins", "num_layers", "hidden_size", "n_fft", "hop", "win"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_bins != self.n_fft // 2 + 1:
            raise ValueError(f"num_bins ({self.num_bins}) must equal n_fft // 2 + 1 = {self.n_fft // 2 + 1}")
        if self.win > self.n_fft:
            raise ValueError(f"win ({self.win}) must not exceed n_fft ({self.n_fft})")
        if FEATURE_STRIDE % self.hop:
            raise ValueError(
                f"hop ({self.hop}) must divide the feature stride {FEATURE_STRIDE} so features "
                "can be repeated onto STFT frames"
            )

    @property
    def upsample(self) -> int:
        """How many STFT frames each 50 Hz feature frame covers (2 for hop 160)."""
        return FEATURE_STRIDE // self.hop


def stft(wavs: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    """Complex STFT ``[B, n_fft // 2 + 1, L // hop + 1]`` of ``wavs [B, L]``.

    Hann window built on the input's device, centred frames with reflect padding (torch's
    defaults, as the original), always computed in fp32 (half-precision FFTs are restricted and
    imprecise), even under autocast.
    """
    if wavs.dim() != 2:
        raise ValueError(f"expected waveforms [B, L], got shape {tuple(wavs.shape)}")
    if wavs.shape[-1] <= n_fft // 2:
        raise ValueError(
            f"waveforms of {wavs.shape[-1]} samples are too short for an STFT with n_fft={n_fft} "
            f"(need more than {n_fft // 2})"
        )
    window = torch.hann_window(win, device=wavs.device)
    with torch.autocast(device_type=wavs.device.type, enabled=False):
        return torch.stft(
            wavs.float(),
            n_fft,
            hop_length=hop,
            win_length=win,
            window=window,
            center=True,
            return_complex=True,
        )


def stft_frame_mask(lengths: Tensor, hop: int, num_frames: int) -> Tensor:
    """``[B, num_frames]`` bool mask of the STFT frames each utterance would have on its own.

    An unpadded signal of ``n`` samples has ``n // hop + 1`` centred frames; using that count (not
    every frame that touches a valid sample) keeps an utterance's valid frames independent of how
    long the other utterances in its batch are.
    """
    valid = (lengths.to(torch.long) // hop + 1).clamp(max=num_frames)
    return torch.arange(num_frames, device=lengths.device) < valid[:, None]


def sample_mask(lengths: Tensor, num_samples: int) -> Tensor:
    """``[B, num_samples]`` bool mask, True on each utterance's first ``lengths[b]`` samples."""
    return torch.arange(num_samples, device=lengths.device) < lengths[:, None]


@dataclass
class EnhancementOutput:
    """What the head predicts for one batch.

    ``mask``/``estimate_mag``: ``[B, num_bins, frames]``; ``noisy_stft``: complex, same shape;
    ``frame_mask``: ``[B, frames]`` bool (True = valid); ``lengths``: ``[B]`` samples.
    Mask values on padded frames are not meaningful (the LSTM never saw those frames); every loss
    uses ``frame_mask``.
    """

    mask: Tensor
    estimate_mag: Tensor
    noisy_stft: Tensor
    frame_mask: Tensor
    lengths: Tensor


class EnhancementHead(nn.Module):
    """BiLSTM magnitude-mask estimator on student features (see the module docstring).

    Default size (input 512): LSTM 4,730,880 + Linear 131,841 parameters, as the original.
    """

    def __init__(self, config: EnhancementConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.lstm = nn.LSTM(
            config.input_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
            batch_first=True,
        )
        directions = 2 if config.bidirectional else 1
        self.dropout = nn.Dropout(config.dropout)
        self.linear = nn.Linear(directions * config.hidden_size, config.num_bins)

    def forward(self, features: Tensor, noisy: Tensor, lengths: Tensor) -> EnhancementOutput:
        """Predict the magnitude mask for ``noisy [B, L]`` from ``features [B, T, input_dim]``.

        ``T`` is the student's frame count for the padded batch; ``lengths [B]`` are sample counts.
        """
        cfg = self.config
        if features.dim() != 3 or features.shape[-1] != cfg.input_dim:
            raise ValueError(f"expected features [B, T, {cfg.input_dim}], got shape {tuple(features.shape)}")
        if noisy.dim() != 2 or noisy.shape[0] != features.shape[0] or lengths.shape != noisy.shape[:1]:
            raise ValueError(
                f"batch mismatch: features {tuple(features.shape)}, noisy {tuple(noisy.shape)}, "
                f"lengths {tuple(lengths.shape)}"
            )
        if int(lengths.min()) < 1 or int(lengths.max()) > noisy.shape[1]:
            raise ValueError(f"lengths must lie in [1, {noisy.shape[1]}], got {lengths.tolist()}")

        noisy = noisy * sample_mask(lengths, noisy.shape[1])
        noisy_stft = stft(noisy, cfg.n_fft, cfg.hop, cfg.win)
        num_frames = noisy_stft.shape[-1]
        frame_mask = stft_frame_mask(lengths, cfg.hop, num_frames)

        x = self._match_frames(features.repeat_interleave(cfg.upsample, dim=1), num_frames)
        # Lengths for packing must live on the CPU.
        frame_lengths = frame_mask.sum(dim=1).cpu()
        packed = pack_padded_sequence(x, frame_lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(hidden, batch_first=True, total_length=num_frames)
        mask = torch.sigmoid(self.linear(self.dropout(hidden))).transpose(1, 2)
        estimate_mag = mask * noisy_stft.abs()
        return EnhancementOutput(mask, estimate_mag, noisy_stft, frame_mask, lengths)

    @staticmethod
    def _match_frames(x: Tensor, num_frames: int) -> Tensor:
        """Truncate or zero-pad ``x [B, T, C]`` along time to ``num_frames`` (as the original)."""
        diff = num_frames - x.shape[1]
        if abs(diff) > _MAX_FRAME_DIFF:
            raise ValueError(
                f"features give {x.shape[1]} frames after upsampling but the STFT has {num_frames}; "
                "the features do not match this audio (wrong stride or wrong batch?)"
            )
        if diff < 0:
            return x[:, :num_frames]
        return nn.functional.pad(x, (0, 0, 0, diff))

    def resynthesize(self, out: EnhancementOutput, length: int) -> Tensor:
        """Waveform ``[B, length]``: estimated magnitude with the noisy phase, inverse STFT.

        Samples beyond each utterance's length are zeroed.
        """
        cfg = self.config
        spec = torch.polar(out.estimate_mag.float(), out.noisy_stft.angle())
        window = torch.hann_window(cfg.win, device=spec.device)
        with torch.autocast(device_type=spec.device.type, enabled=False):
            wav = torch.istft(
                spec,
                cfg.n_fft,
                hop_length=cfg.hop,
                win_length=cfg.win,
                window=window,
                center=True,
                length=length,
            )
        return wav * sample_mask(out.lengths, length)

    @torch.no_grad()
    def enhance(self, features: Tensor, noisy: Tensor, lengths: Tensor) -> Tensor:
        """Enhanced waveforms ``[B, L]`` for inference/evaluation (call ``.eval()`` first)."""
        return self.resynthesize(self(features, noisy, lengths), noisy.shape[1])
