"""``PrunableConfig``: a wav2vec2-family encoder described layer by layer (what pruning changes).

Every size that structured pruning can shrink is listed per block: CNN channels per conv block,
the original head indices kept in each layer (WavLM needs the indices, not only the count, because
its relative-position bias is defined over the unpruned heads), FFN units per layer (0 = FFN
removed) and an empty head list for a layer whose attention was removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..conv import check_conv_blocks, parse_conv_layers
from ..spec import spec_from_prunable
from ..teacher import TeacherConfig

# DPHuBERT's names for the structured units that can carry gates.
PRUNING_UNITS: tuple[str, ...] = ("conv", "head", "interm", "attlayer", "ffnlayer")


def _base_conv() -> list[list[int]]:
    return [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2


@dataclass
class PrunableConfig:
    """Architecture of a (possibly pruned) HuBERT / wav2vec 2.0 / WavLM encoder plus its gates, in
    DPHuBERT's terms; the model reads it as :func:`~robustdistiller.models.spec.spec_from_prunable`.

    Defaults are the Base models. ``pruning_units`` (subset of ``conv, head, interm, attlayer,
    ffnlayer``) adds hard-concrete gates; an empty list is a plain (pruned or unpruned) model.
    """

    family: str = "hubert"
    conv_layers: list[list[int]] = field(default_factory=_base_conv)
    conv_bias: bool = False
    extractor_mode: str = "default"
    embed_dim: int = 768
    head_dim: int = 64
    total_heads: int = 12
    """Heads of the unpruned model (WavLM's position bias and its gate are defined over them)."""
    layer_heads: list[list[int]] = field(default_factory=lambda: [list(range(12)) for _ in range(12)])
    layer_ffn_dims: list[int] = field(default_factory=lambda: [3072] * 12)
    layer_norm_first: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    feature_layer_norm: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    normalize_waveform: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    projection_dropout: float = 0.1
    pruning_units: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.conv_layers:
            raise ValueError("conv_layers must list (channels, kernel, stride) triples, got none")
        check_conv_blocks(self.conv_layers, "conv_layers")  # before conv_spec reads the triples
        spec_from_prunable(self).validate(
            "prunable config", {"layers": "len(layer_heads)", "ffn_dim": "layer_ffn_dims", "heads": "total_heads"}
        )
        for i, heads in enumerate(self.layer_heads):
            if sorted(set(heads)) != list(heads) or any(not 0 <= h < self.total_heads for h in heads):
                raise ValueError(f"layer {i}: heads {heads} must be increasing indices below {self.total_heads}")
        if self.family == "wavlm" and self.embed_dim % self.total_heads:
            # WavLM's position bias and gates split the embedding over the unpruned heads; HuBERT /
            # wav2vec 2.0 keep head_dim separately, so a pruned widest layer (e.g. 11 heads of 64
            # in a 768-d model) need not divide the embedding.
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by total_heads {self.total_heads}")
        if self.family == "wavlm" and not self.layer_heads[0]:
            # Only layer 0 owns the relative-position bias every later layer uses.
            raise ValueError(
                "WavLM layer 0 has no attention heads: its relative-position bias, used by every "
                "layer, would be gone; keep at least one head in layer 0"
            )
        unknown = sorted(set(self.pruning_units) - set(PRUNING_UNITS))
        if unknown:
            raise ValueError(f"unknown pruning units {unknown}; valid: {', '.join(PRUNING_UNITS)}")
        if "conv" in self.pruning_units and self.extractor_mode != "default":
            # Per-block LayerNorms normalise over all channels: removing one changes the others.
            raise ValueError("CNN channel pruning needs extractor_mode 'default' (group norm); drop 'conv'")

    @property
    def num_layers(self) -> int:
        return len(self.layer_heads)

    @property
    def head_counts(self) -> list[int]:
        return [len(h) for h in self.layer_heads]

    @property
    def conv_spec(self) -> list[tuple[int, int, int]]:
        return [(c[0], c[1], c[2]) for c in self.conv_layers]

    @classmethod
    def from_teacher(
        cls,
        teacher: TeacherConfig,
        pruning_units: list[str] | None = None,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        projection_dropout: float = 0.1,
    ) -> PrunableConfig:
        """The teacher's architecture, as a trainable copy (with dropout) and optional gates."""
        config = cls(
            family=teacher.family,
            conv_layers=[list(c) for c in parse_conv_layers(teacher.conv_layers)],
            conv_bias=teacher.conv_bias,
            extractor_mode=teacher.extractor_mode,
            embed_dim=teacher.embed_dim,
            head_dim=teacher.head_dim,
            total_heads=teacher.attention_heads,
            layer_heads=[list(range(h)) for h in teacher.head_counts],
            layer_ffn_dims=teacher.ffn_dims,
            layer_norm_first=teacher.layer_norm_first,
            conv_pos=teacher.conv_pos,
            conv_pos_groups=teacher.conv_pos_groups,
            feature_layer_norm=teacher.feature_layer_norm,
            num_buckets=teacher.num_buckets,
            max_distance=teacher.max_distance,
            normalize_waveform=teacher.normalize_waveform,
            dropout=dropout,
            attention_dropout=attention_dropout,
            activation_dropout=activation_dropout,
            projection_dropout=projection_dropout,
            pruning_units=list(pruning_units or []),
        )
        config.validate()
        return config
