"""The DistilHuBERT student (s3prl's "distiller"): CNN, projection, a few Transformer layers, prediction heads.

``DistillerModel.state_dict()`` equals s3prl's key for key (reference-formats.md A.4), so checkpoints move both ways.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..config import from_dict
from .conv import parse_conv_layers
from .encoder import Encoder, EncoderOutput
from .precision import as_fp32, autocast
from .spec import spec_from_distiller
from .transformer import check_encoder_size

log = logging.getLogger(__name__)

# s3prl's code defaults where they differ from ours: a Config["distiller"] section read from an s3prl
# checkpoint means what s3prl would make of it, so missing fields take these values.
S3PRL_CODE_DEFAULTS: dict[str, Any] = {
    "feature_grad_mult": 1.0,
    "encoder_layers": 1,
    "n_tasks": 12,
    "cosine_loss": 0.0,
    "init_teacher_conv_layers": False,
    "init_teacher_encoder_layers": False,
}


# Student-only sizes, bounded like the encoder's (see ``check_encoder_size``) against hostile files.
HEAD_LIMITS = {"final_dim": 8192, "n_tasks": 128}
_S3PRL_SIZE_NAMES = {
    "layers": "encoder_layers",
    "embed_dim": "encoder_embed_dim",
    "ffn_dim": "encoder_ffn_embed_dim",
    "heads": "encoder_attention_heads",
}


@dataclass
class DistillerConfig:
    """s3prl's ``distiller`` section (same field names); defaults = the DistilHuBERT 4-8-12 model.
    The encoder part is read as :func:`~robustdistiller.models.spec.spec_from_distiller`."""

    extractor_mode: str = "default"
    extractor_conv_feature_layers: str = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    extractor_dropout: float = 0.0
    feature_grad_mult: float = 0.1
    conv_pos: int = 128
    conv_pos_groups: int = 16
    encoder_layers: int = 2
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    attention_type: str = "original"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    encoder_layerdrop: float = 0.0
    final_dim: int = 768
    out_layer_type: str = "expand-last"
    out_layer_inter_dim: int = -1
    n_tasks: int = 3
    task_emb_type: str = "expand-last"
    task_emb_size: int = 0
    layer_emb_size: int = 0
    loss_type: str = "l1"
    feat_pen_loss: float = 0.0
    cosine_loss: float = 1.0
    pred_layer_id: list[int] = field(default_factory=lambda: [4, 8, 12])
    init_teacher_conv_layers: bool = True
    init_teacher_encoder_layers: bool = True
    # Not in s3prl (which ignores unknown fields): per-layer sizes for pruned / non-uniform students.
    # None = uniform (encoder_attention_heads / encoder_ffn_embed_dim). Head size stays
    # encoder_embed_dim // encoder_attention_heads.
    encoder_layer_heads: list[int] | None = None
    encoder_layer_ffn_dims: list[int] | None = None
    # Not in s3prl either: layer-to-layer distillation (DistilHuBERT's ablation) on top of the heads'.
    # Entry i is the teacher layer that Transformer layer i + 1 also learns to reproduce, with the heads'
    # loss and weight, so that the robustness the student learns sits in the layers a downstream probe
    # reads and not only in its prediction heads. None = heads only (the reference).
    layer_targets: list[int] | None = None
    # Not in s3prl either: weight of an utterance-level term beside the frame loss, L1 between the
    # utterance means of each prediction head (and each ``layer_targets`` layer) and of its clean teacher
    # layer (train/losses.py, utterance_mean_loss): corruption shifts those means, which is what an
    # utterance probe reads. 0 = off (the reference).
    pooled_loss: float = 0.0

    def validate(self) -> None:
        self._check_sizes()
        if self.encoder_layers < 1:
            raise ValueError(f"encoder_layers must be >= 1, got {self.encoder_layers}")
        if self.encoder_attention_heads < 1 or self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(
                f"encoder_embed_dim {self.encoder_embed_dim} must be divisible by "
                f"encoder_attention_heads {self.encoder_attention_heads}"
            )
        for name in ("encoder_layer_heads", "encoder_layer_ffn_dims"):
            value = getattr(self, name)
            if value is not None and (len(value) != self.encoder_layers or min(value) < 0):
                raise ValueError(f"{name} must list {self.encoder_layers} non-negative sizes, got {value}")
        if self.activation_fn != "gelu":
            raise ValueError(f"only activation_fn 'gelu' is supported, got {self.activation_fn!r}")
        if self.attention_type != "original":
            raise ValueError(f"only attention_type 'original' is supported, got {self.attention_type!r}")
        if self.task_emb_type != "expand-last" or self.out_layer_type != "expand-last":
            raise ValueError(
                "only task_emb_type = out_layer_type = 'expand-last' is supported "
                f"(got {self.task_emb_type!r} / {self.out_layer_type!r})"
            )
        if self.n_tasks < 1 or self.n_tasks != len(self.pred_layer_id):
            raise ValueError(f"n_tasks ({self.n_tasks}) must equal len(pred_layer_id) ({len(self.pred_layer_id)})")
        if self.layer_targets is not None and not 1 <= len(self.layer_targets) <= self.encoder_layers:
            raise ValueError(
                f"layer_targets {self.layer_targets} must name a teacher layer for each of the first 1.."
                f"{self.encoder_layers} Transformer layers (or be null for heads only)"
            )
        if not math.isfinite(self.pooled_loss) or self.pooled_loss < 0:
            raise ValueError(f"pooled_loss must be a finite weight >= 0 (0 = off), got {self.pooled_loss}")
        if self.encoder_layerdrop != 0.0:
            raise ValueError("encoder_layerdrop must be 0 (every layer output is a training target)")
        if self.loss_type not in ("l1", "l2"):
            raise ValueError(f"loss_type must be 'l1' or 'l2', got {self.loss_type!r}")
        spec_from_distiller(self).validate("distiller config", _S3PRL_SIZE_NAMES)

    def _check_sizes(self) -> None:
        """Refuse sizes beyond the bounds before anything is allocated, the spec's per-layer lists
        included (a crafted checkpoint could otherwise ask for terabytes)."""
        for name, limit in HEAD_LIMITS.items():
            if getattr(self, name) > limit:
                raise ValueError(f"{name}={getattr(self, name)} is over the limit of {limit}")
        check_encoder_size(
            "distiller config",
            layers=self.encoder_layers,
            embed_dim=self.encoder_embed_dim,
            ffn_dims=self.encoder_layer_ffn_dims or [self.encoder_ffn_embed_dim],
            heads=self.encoder_layer_heads or [self.encoder_attention_heads],
            conv_pos=self.conv_pos,
            conv_pos_groups=self.conv_pos_groups,
            names=_S3PRL_SIZE_NAMES,
        )

    @property
    def conv_layers(self) -> list[tuple[int, int, int]]:
        return parse_conv_layers(self.extractor_conv_feature_layers)

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def layer_heads(self) -> list[int]:
        return list(self.encoder_layer_heads or [self.encoder_attention_heads] * self.encoder_layers)

    @property
    def layer_ffn_dims(self) -> list[int]:
        return list(self.encoder_layer_ffn_dims or [self.encoder_ffn_embed_dim] * self.encoder_layers)

    @classmethod
    def from_s3prl(cls, section: dict[str, Any]) -> DistillerConfig:
        """Read an s3prl ``Config["distiller"]`` dict: unknown fields are logged and ignored, missing
        ones take s3prl's code defaults, values are cast to the field types."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in section if k not in names)
        if unknown:
            log.warning("ignoring distiller config fields unknown here: %s", ", ".join(unknown))
        data = {**S3PRL_CODE_DEFAULTS, **{k: v for k, v in section.items() if k in names}}
        if "pred_layer_id" not in section:
            data["pred_layer_id"] = list(range(1, int(data["n_tasks"]) + 1))
        return from_dict(cls, data, "distiller")

    def to_s3prl(self) -> dict[str, Any]:
        """Plain-typed dict for ``Config["distiller"]`` (loads with ``torch.load(weights_only=True)``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue  # the optional per-layer lists; absent means uniform, as s3prl builds it
            out[f.name] = list(value) if isinstance(value, list) else value
        return out


class SplitLinear(nn.Module):
    """N independent Linear maps over N chunks of the input (s3prl layout: weight (N, Din, Dout))."""

    def __init__(self, in_dim: int, splits: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.splits, self.out_dim = in_dim, splits, out_dim
        bound = in_dim**-0.5
        if splits > 1:
            self.weight = nn.Parameter(torch.empty(splits, in_dim, out_dim).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(1, 1, splits, out_dim).uniform_(-bound, bound))
        else:
            # s3prl keeps an ordinary Linear for a single head (key ``layer``)
            self.layer = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, N * Din) -> (B, T, N * Dout)."""
        if self.splits == 1:
            return self.layer(x)
        b, t, _ = x.shape
        out = torch.einsum("btnd,nde->btne", x.reshape(b, t, self.splits, self.in_dim), self.weight) + self.bias
        return out.reshape(b, t, -1)


@dataclass
class DistillerOutput(EncoderOutput):
    """The encoder's output plus the prediction heads'."""

    predictions: Tensor | None = None
    """(B, N, T, final_dim): head n predicts teacher layer pred_layer_id[n]; None if not requested."""

    @property
    def hiddens(self) -> list[Tensor]:
        """Output of each Transformer layer, (B, T, D) (= ``layer_outputs``)."""
        return self.layer_outputs


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    without_heads: int


class DistillerModel(Encoder):
    """DistilHuBERT student = :class:`Encoder` + prediction heads;
    ``forward(wavs (B, L), lengths (B,))`` -> :class:`DistillerOutput`."""

    precision = "fp32"
    """What ``extract`` runs in: "fp32" or "bf16" (set by ``models.precision.use_precision``)."""

    def __init__(self, config: DistillerConfig) -> None:
        config.validate()
        super().__init__(spec_from_distiller(config))
        self.config = config
        dim = config.encoder_embed_dim
        inter = config.out_layer_inter_dim if config.out_layer_inter_dim > 0 else dim
        self.output_layer = nn.Sequential(
            nn.Linear(dim, inter * config.n_tasks), nn.GELU(), SplitLinear(inter, config.n_tasks, config.final_dim)
        )

    def forward(self, wavs: Tensor, lengths: Tensor | None = None, *, predict: bool = True) -> DistillerOutput:
        """``predict=False`` skips the prediction heads (feature extraction that only needs the layers)."""
        out = super().forward(wavs, lengths)
        pred = None
        if predict:
            b, t, _ = out.last_hidden_state.shape
            pred = self.output_layer(out.last_hidden_state).view(b, t, self.config.n_tasks, -1).permute(0, 2, 1, 3)
        return DistillerOutput(**vars(out), predictions=pred)

    def extract(self, wavs: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """s3prl ``hidden_states`` order: projected features, each layer, each prediction head."""
        with autocast(self.precision):
            out = self.forward(wavs, lengths)
        assert out.predictions is not None
        return as_fp32([*out.projected_states(), *out.predictions.unbind(1)])

    def parameter_counts(self) -> ParameterCounts:
        total = sum(p.numel() for p in self.parameters())
        heads = sum(p.numel() for p in self.output_layer.parameters())
        return ParameterCounts(total=total, without_heads=total - heads)
