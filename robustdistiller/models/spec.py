"""``EncoderSpec``: the one description of a wav2vec2-family encoder, and the translations into it.

Three config dialects describe the same architecture under different names, and stay because they
are file formats and recipe keys: s3prl's ``Config["distiller"]`` section (:class:`DistillerConfig`),
the teacher config read from Hugging Face / fairseq / unilm files (:class:`TeacherConfig`) and
DPHuBERT's per-block config (:class:`PrunableConfig`). Each is translated here, once, into an
:class:`EncoderSpec`, which is all that :class:`~robustdistiller.models.encoder.Encoder` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .conv import ConvLayer, check_conv_blocks, parse_conv_layers
from .transformer import check_encoder_size

if TYPE_CHECKING:  # the dialect configs import this module to build their models
    from .pruning.config import PrunableConfig
    from .student import DistillerConfig
    from .teacher import TeacherConfig

FAMILIES: tuple[str, ...] = ("hubert", "wav2vec2", "wavlm")
EXTRACTOR_MODES: tuple[str, ...] = ("default", "layer_norm")


@dataclass
class EncoderSpec:
    """A wav2vec2-family encoder: CNN -> [scale] -> [LayerNorm] -> [projection] -> positional conv
    -> Transformer layers. Sizes are per layer, so pruned and non-uniform encoders are specs too."""

    family: str
    """"hubert", "wav2vec2" or "wavlm" (WavLM adds gated relative-position attention)."""
    conv_layers: list[ConvLayer]
    """CNN blocks as ``(out_channels, kernel, stride)``."""
    embed_dim: int
    """Transformer width D."""
    head_dim: int
    """Size of one attention head (per-layer head counts may leave ``heads * head_dim != D``)."""
    layer_heads: list[int]
    """Attention heads per layer; 0 = the layer's attention was removed."""
    layer_ffn_dims: list[int]
    """FFN units per layer; 0 = the layer's FFN was removed."""
    conv_bias: bool = False
    """Bias in the CNN convolutions (the Large models' layer-norm CNN has one)."""
    extractor_mode: str = "default"
    """"default" = GroupNorm after block 0 only; "layer_norm" = LayerNorm after every block."""
    extractor_dropout: float = 0.0
    """Dropout after each convolution."""
    feature_grad_mult: float = 1.0
    """Scale of the gradient reaching the CNN (0 = frozen CNN, run without autograd)."""
    cnn_scale: bool = False
    """DPHuBERT's frozen per-channel ``dummy_weight`` on the CNN output (where pruning folds a mask)."""
    feature_layer_norm: bool = False
    """LayerNorm over the CNN channels before the projection (fairseq's ``layer_norm``)."""
    always_project: bool = False
    """Keep ``post_extract_proj`` when the CNN channels equal D (DPHuBERT always has it)."""
    projection_dropout: float = 0.0
    """Dropout on the projected features (fairseq's ``dropout_input``)."""
    normalize_waveform: bool = False
    """Per-utterance zero-mean / unit-variance input, as the Large models were trained."""
    layer_norm_first: bool = False
    """Pre-LN layers (Large models) instead of post-LN (Base models, DistilHuBERT)."""
    conv_pos: int = 128
    """Kernel of the positional convolution."""
    conv_pos_groups: int = 16
    """Groups of the positional convolution."""
    dropout: float = 0.0
    """Residual dropout in the Transformer (and after the positional conv)."""
    attention_dropout: float = 0.0
    """Dropout on the attention weights."""
    activation_dropout: float = 0.0
    """Dropout after the FFN activation."""
    total_heads: int = 12
    """WavLM: heads of the unpruned model, over which the relative-position bias is defined."""
    kept_heads: list[list[int]] | None = None
    """WavLM: the original indices of the heads each layer kept (None = all of ``layer_heads``)."""
    num_buckets: int = 320
    """WavLM: relative-position buckets."""
    max_distance: int = 800
    """WavLM: largest bucketed relative distance."""

    @property
    def num_layers(self) -> int:
        return len(self.layer_heads)

    def validate(self, what: str = "encoder spec", names: Mapping[str, str] | None = None) -> None:
        """Refuse sizes beyond the bounds, then inconsistent structure.

        Args:
            what: names the config in the size errors.
            names: the config's own field names for :func:`check_encoder_size`'s keys.
        Raises:
            ValueError: naming the field, its value and what is allowed.
        """
        check_conv_blocks(self.conv_layers, "conv_layers")
        check_encoder_size(
            what,
            layers=self.num_layers,
            embed_dim=self.embed_dim,
            ffn_dims=self.layer_ffn_dims,
            heads=[*self.layer_heads, self.total_heads],
            conv_pos=self.conv_pos,
            conv_pos_groups=self.conv_pos_groups,
            names=names,
        )
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise ValueError(f"extractor_mode must be one of {EXTRACTOR_MODES}, got {self.extractor_mode!r}")
        if not self.layer_heads or len(self.layer_heads) != len(self.layer_ffn_dims):
            raise ValueError(
                f"layer_heads ({len(self.layer_heads)}) and layer_ffn_dims ({len(self.layer_ffn_dims)}) "
                "must list the same, non-zero number of layers"
            )
        if min(self.layer_heads) < 0 or min(self.layer_ffn_dims) < 0 or self.head_dim < 1:
            raise ValueError(
                f"need head_dim >= 1 and sizes >= 0; got head_dim={self.head_dim}, "
                f"layer_heads={self.layer_heads}, layer_ffn_dims={self.layer_ffn_dims}"
            )
        if self.kept_heads is not None and [len(h) for h in self.kept_heads] != self.layer_heads:
            raise ValueError(f"kept_heads {self.kept_heads} do not match layer_heads {self.layer_heads}")
        for name in ("extractor_dropout", "projection_dropout", "dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


# ---------------------------------------------------------------- the dialects


def spec_from_distiller(config: DistillerConfig) -> EncoderSpec:
    """s3prl's DistilHuBERT student: HuBERT layout, no feature LayerNorm, trained with dropout."""
    return EncoderSpec(
        family="hubert",
        conv_layers=parse_conv_layers(config.extractor_conv_feature_layers),
        conv_bias=False,
        extractor_mode=config.extractor_mode,
        extractor_dropout=config.extractor_dropout,
        feature_grad_mult=config.feature_grad_mult,
        embed_dim=config.encoder_embed_dim,
        head_dim=config.head_dim,
        layer_heads=config.layer_heads,
        layer_ffn_dims=config.layer_ffn_dims,
        total_heads=config.encoder_attention_heads,
        layer_norm_first=config.layer_norm_first,
        conv_pos=config.conv_pos,
        conv_pos_groups=config.conv_pos_groups,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
    )


def spec_from_teacher(config: TeacherConfig, *, dropout: float = 0.0) -> EncoderSpec:
    """A teacher read from Hugging Face / fairseq / unilm; ``dropout`` (residual and attention) is
    for pre-training only, a teacher in use runs in eval."""
    return EncoderSpec(
        family=config.family,
        conv_layers=parse_conv_layers(config.conv_layers),
        conv_bias=config.conv_bias,
        extractor_mode=config.extractor_mode,
        feature_layer_norm=config.feature_layer_norm,
        normalize_waveform=config.normalize_waveform,
        embed_dim=config.embed_dim,
        head_dim=config.head_dim,
        layer_heads=config.head_counts,
        layer_ffn_dims=config.ffn_dims,
        total_heads=config.attention_heads,
        layer_norm_first=config.layer_norm_first,
        conv_pos=config.conv_pos,
        conv_pos_groups=config.conv_pos_groups,
        dropout=dropout,
        attention_dropout=dropout,
        num_buckets=config.num_buckets,
        max_distance=config.max_distance,
    )


def spec_from_prunable(config: PrunableConfig) -> EncoderSpec:
    """DPHuBERT's per-block config: CNN scale, projection always present, kept head indices."""
    return EncoderSpec(
        family=config.family,
        conv_layers=config.conv_spec,
        conv_bias=config.conv_bias,
        extractor_mode=config.extractor_mode,
        cnn_scale=True,
        feature_layer_norm=config.feature_layer_norm,
        always_project=True,
        projection_dropout=config.projection_dropout,
        normalize_waveform=config.normalize_waveform,
        embed_dim=config.embed_dim,
        head_dim=config.head_dim,
        layer_heads=config.head_counts,
        layer_ffn_dims=list(config.layer_ffn_dims),
        total_heads=config.total_heads,
        kept_heads=[list(h) for h in config.layer_heads],
        layer_norm_first=config.layer_norm_first,
        conv_pos=config.conv_pos,
        conv_pos_groups=config.conv_pos_groups,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        num_buckets=config.num_buckets,
        max_distance=config.max_distance,
    )


__all__ = [
    "EXTRACTOR_MODES",
    "FAMILIES",
    "EncoderSpec",
    "spec_from_distiller",
    "spec_from_prunable",
    "spec_from_teacher",
]
