"""``Encoder``: the one wav2vec2-family encoder module, built from an :class:`EncoderSpec`.

The teacher (:class:`~robustdistiller.models.teacher.TeacherModel`, frozen by ``Teacher``), the
prunable model (+ gates) and the DistilHuBERT student (+ prediction heads) are subclasses, so their
parameter names stay fairseq's at the top level: ``feature_extractor.*``, ``dummy_weight``,
``layer_norm``, ``post_extract_proj``, ``encoder.*``. Every one returns an :class:`EncoderOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from .attention import SelfAttention, WavLMSelfAttention
from .conv import ConvFeatureExtractor, ExtractorMode, check_batch, lengths_to_mask, receptive_field
from .spec import EncoderSpec
from .transformer import EncoderLayer, TransformerEncoder, init_bert_params


@dataclass
class EncoderOutput:
    hidden_states: list[Tensor]
    """``num_layers + 1`` tensors (B, T, D): index 0 = input of layer 1 (after the positional conv,
    and its LayerNorm in post-LN encoders), index i = output of layer i (pre-LN: before the final
    LayerNorm). Hugging Face's ``hidden_states`` and the teachers' targets use this order."""
    frame_mask: Tensor
    """(B, T) bool, True = valid frame."""
    last_hidden_state: Tensor
    """(B, T, D) encoder output (after the final LayerNorm of pre-LN encoders)."""
    projected: Tensor
    """(B, T, D) encoder input before the positional conv, padded frames zeroed: index 0 of s3prl's
    and DPHuBERT's hidden-state lists (see :meth:`projected_states`)."""
    cnn_features: Tensor
    """(B, T, C) CNN features (after DPHuBERT's ``dummy_weight``, before any LayerNorm): the
    enhancement head's input."""

    @property
    def layer_outputs(self) -> list[Tensor]:
        """Output of each layer, (B, T, D) each."""
        return self.hidden_states[1:]

    def projected_states(self) -> list[Tensor]:
        """s3prl / DPHuBERT order: ``projected``, then the output of each layer."""
        return [self.projected, *self.hidden_states[1:]]


class EncoderInput(NamedTuple):
    """What :meth:`Encoder.embed` hands to :meth:`Encoder.encode`."""

    cnn_features: Tensor
    """(B, T, C)."""
    embedded: Tensor
    """(B, T, D) projected features, padded frames zeroed; masked pre-training replaces frames here."""
    frame_mask: Tensor
    """(B, T) bool, True = valid frame."""


def normalize_waveforms(wavs: Tensor, lengths: Tensor) -> Tensor:
    """Zero mean, unit variance over each row's valid samples (fairseq ``F.layer_norm(wav, wav.shape)``)."""
    mask = lengths_to_mask(lengths, wavs.shape[1]).to(wavs.dtype)
    count = lengths.to(wavs.dtype)[:, None]
    mean = (wavs * mask).sum(1, keepdim=True) / count
    var = (((wavs - mean) * mask) ** 2).sum(1, keepdim=True) / count
    return (wavs - mean) * torch.rsqrt(var + 1e-5) * mask


def build_transformer(spec: EncoderSpec) -> TransformerEncoder:
    """The BERT-initialised Transformer of ``spec`` (per-layer heads / FFN sizes; 0 = removed block)."""
    layers = []
    for i, (heads, ffn) in enumerate(zip(spec.layer_heads, spec.layer_ffn_dims)):
        attn: nn.Module | None = None
        if heads > 0 and spec.family == "wavlm":
            attn = WavLMSelfAttention(
                spec.embed_dim,
                heads,
                spec.head_dim,
                spec.attention_dropout,
                has_relative_attention_bias=i == 0,
                num_buckets=spec.num_buckets,
                max_distance=spec.max_distance,
                bias_heads=spec.total_heads,
                remaining_heads=spec.kept_heads[i] if spec.kept_heads is not None else None,
            )
        elif heads > 0:
            attn = SelfAttention(spec.embed_dim, heads, spec.head_dim, spec.attention_dropout)
        layers.append(
            EncoderLayer(
                spec.embed_dim,
                ffn,
                attn,
                layer_norm_first=spec.layer_norm_first,
                dropout=spec.dropout,
                activation_dropout=spec.activation_dropout,
            )
        )
    encoder = TransformerEncoder(
        spec.embed_dim,
        layers,
        conv_pos=spec.conv_pos,
        conv_pos_groups=spec.conv_pos_groups,
        layer_norm_first=spec.layer_norm_first,
        dropout=spec.dropout,
    )
    init_bert_params(encoder)
    return encoder


class Encoder(nn.Module):
    """CNN -> [``dummy_weight``] -> [LayerNorm] -> [projection] -> positional conv -> layers.

    ``forward(wavs (B, L), lengths (B,))`` -> :class:`EncoderOutput`. Submodules are created in
    this order, which is also the order they draw their random initial weights in.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        spec.validate()
        self.spec = spec
        self.min_samples = receptive_field(spec.conv_layers)
        self.feature_extractor = ConvFeatureExtractor(
            spec.conv_layers,
            # spec.validate() above checked the str field against EXTRACTOR_MODES
            mode=cast(ExtractorMode, spec.extractor_mode),
            conv_bias=spec.conv_bias,
            dropout=spec.extractor_dropout,
            feature_grad_mult=spec.feature_grad_mult,
        )
        channels, dim = self.feature_extractor.out_channels, spec.embed_dim
        # A frozen Parameter, as DPHuBERT: counted in the model size and saved in its state dict.
        self.dummy_weight = nn.Parameter(torch.ones(channels), requires_grad=False) if spec.cnn_scale else None
        self.layer_norm = nn.LayerNorm(channels) if spec.feature_layer_norm else None
        self.post_extract_proj = nn.Linear(channels, dim) if spec.always_project or channels != dim else None
        self.dropout_input = nn.Dropout(spec.projection_dropout)
        self.encoder = build_transformer(spec)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) valid samples -> (B,) valid frames."""
        return self.feature_extractor.output_lengths(lengths)

    def embed(self, wavs: Tensor, lengths: Tensor | None = None) -> EncoderInput:
        """The Transformer's input for ``wavs`` (B, L) with ``lengths`` (B,) valid samples
        (None = all), padded frames zeroed."""
        lengths = check_batch(wavs, lengths, self.min_samples)
        if self.spec.normalize_waveform:
            wavs = normalize_waveforms(wavs, lengths)
        feats, frame_mask = self.feature_extractor.frames(wavs, lengths)
        if self.dummy_weight is not None:
            feats = feats * self.dummy_weight.to(wavs.dtype)
        x = self.layer_norm(feats) if self.layer_norm is not None else feats
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return EncoderInput(feats, self.dropout_input(x).masked_fill(~frame_mask[..., None], 0.0), frame_mask)

    def encode(self, inputs: EncoderInput) -> EncoderOutput:
        """The Transformer over :meth:`embed`'s output."""
        enc = self.encoder(inputs.embedded, inputs.frame_mask)
        return EncoderOutput(
            [enc.layer_input, *enc.layer_outputs],
            inputs.frame_mask,
            enc.last_hidden_state,
            inputs.embedded,
            inputs.cnn_features,
        )

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        return self.encode(self.embed(wavs, lengths))


__all__ = ["Encoder", "EncoderInput", "EncoderOutput", "EncoderSpec", "build_transformer", "normalize_waveforms"]
