"""``PrunableModel``: a HuBERT / wav2vec 2.0 / WavLM encoder with per-block sizes and optional gates.

Built from the shared blocks (``ConvFeatureExtractor``, ``TransformerEncoder``, ``SelfAttention`` /
``WavLMSelfAttention``) with fairseq parameter names, plus DPHuBERT's ``dummy_weight`` (per-channel
scale of the final CNN features, where pruning folds the last gated channel mask). Gates, when
configured, live under ``gates.*`` and act through hooks (see ``masking.py``).

``extract`` returns ``num_layers + 1`` hidden states as DPHuBERT does: index 0 is the feature
projection output (padded frames zeroed) *before* the positional conv, index i the output of layer i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..conv import ConvFeatureExtractor, check_batch, receptive_field
from ..precision import as_fp32, autocast
from ..teacher import Teacher, TeacherModel, normalize_waveforms
from ..transformer import WavLMOptions, build_encoder
from .config import PrunableConfig
from .masking import StructureGates
from .size import config_params, structure_params


@dataclass
class PrunableOutput:
    hidden_states: list[Tensor]
    """``num_layers + 1`` tensors (B, T, D); index 0 = projected features before the positional conv."""
    frame_mask: Tensor
    """(B, T) bool, True = valid frame."""
    cnn_features: Tensor
    """(B, T, C) final CNN features (after ``dummy_weight``; the enhancement head's input)."""
    last_hidden_state: Tensor


class PrunableModel(nn.Module):
    precision = "fp32"
    """What ``extract`` runs in: "fp32" or "bf16" (set by ``models.precision.use_precision``)."""

    def __init__(self, config: PrunableConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        conv = config.conv_spec
        self.min_samples = receptive_field(conv)
        self.feature_extractor = ConvFeatureExtractor(
            conv, mode=config.extractor_mode, conv_bias=config.conv_bias  # type: ignore[arg-type]
        )
        channels, dim = conv[-1][0], config.embed_dim
        # A frozen Parameter, as DPHuBERT: counted in the model size and saved in its state dict.
        self.dummy_weight = nn.Parameter(torch.ones(channels), requires_grad=False)
        self.layer_norm = nn.LayerNorm(channels) if config.feature_layer_norm else None
        self.post_extract_proj = nn.Linear(channels, dim)
        self.dropout_input = nn.Dropout(config.projection_dropout)
        wavlm = None
        if config.family == "wavlm":
            wavlm = WavLMOptions(config.num_buckets, config.max_distance, config.total_heads, config.layer_heads)
        self.encoder = build_encoder(
            dim,
            config.head_counts,
            config.layer_ffn_dims,
            head_dim=config.head_dim,
            layer_norm_first=config.layer_norm_first,
            conv_pos=config.conv_pos,
            conv_pos_groups=config.conv_pos_groups,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout,
            wavlm=wavlm,
        )
        self.gates: StructureGates | None = None
        if config.pruning_units:
            self.gates = StructureGates(config)
            self.gates.attach(self.feature_extractor, self.encoder.layers)

    # ------------------------------------------------------------------ running
    @property
    def num_layers(self) -> int:
        """Transformer layers (``extract`` returns ``num_layers + 1`` hidden states)."""
        return self.config.num_layers

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return self.feature_extractor.output_lengths(lengths)

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> PrunableOutput:
        lengths = check_batch(wavs, lengths, self.min_samples)
        if self.config.normalize_waveform:
            wavs = normalize_waveforms(wavs, lengths)
        feats, frame_mask = self.feature_extractor.frames(wavs, lengths)
        feats = feats * self.dummy_weight.to(wavs.dtype)
        x = self.layer_norm(feats) if self.layer_norm is not None else feats
        x = self.dropout_input(self.post_extract_proj(x)).masked_fill(~frame_mask[..., None], 0.0)
        enc = self.encoder(x, frame_mask)
        return PrunableOutput([x, *enc.layer_outputs], frame_mask, feats, enc.last_hidden_state)

    def extract(self, wavs: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """DPHuBERT's ``extract_features``: the ``num_layers + 1`` hidden states."""
        with autocast(self.precision):
            return as_fp32(self.forward(wavs, lengths).hidden_states)

    # ------------------------------------------------------------------ sizes
    def num_params(self) -> int:
        """Parameters of this architecture without the gates (= DPHuBERT's reported size)."""
        return config_params(self.config)

    def expected_params(self) -> Tensor:
        """Differentiable expected size under the gates (DPHuBERT ``get_num_params``)."""
        if self.gates is None:
            raise RuntimeError("this model has no gates (pruning_units is empty)")
        g, cfg = self.gates, self.config

        def expected(kind: nn.ModuleDict, i: int, full: int) -> Tensor | int:
            return kind[str(i)].l0_norm() if str(i) in kind else full

        conv = [expected(g.conv, i, c[0]) for i, c in enumerate(cfg.conv_spec)]
        heads = [expected(g.heads, i, h) for i, h in enumerate(cfg.head_counts)]
        ffn = [expected(g.ffn, i, f) for i, f in enumerate(cfg.layer_ffn_dims)]
        attn_keep = [expected(g.attention_layer, i, 1) for i in range(cfg.num_layers)]
        ffn_keep = [expected(g.ffn_layer, i, 1) for i in range(cfg.num_layers)]
        total = structure_params(cfg, conv, heads, ffn, attn_keep, ffn_keep)
        return total if isinstance(total, Tensor) else torch.tensor(float(total))

    def expected_sparsity(self, reference_params: int | None = None) -> Tensor:
        """``1 - expected size / reference size`` (default reference: this ungated architecture)."""
        reference = reference_params if reference_params is not None else self.num_params()
        return 1.0 - self.expected_params() / reference

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_teacher(cls, teacher: Teacher | TeacherModel, config: PrunableConfig) -> PrunableModel:
        """A copy of ``teacher``'s weights in a model of ``config`` (the teacher's architecture,
        typically with gates and training dropout): DPHuBERT's stage-1 student."""
        source = teacher.model if isinstance(teacher, Teacher) else teacher
        model = cls(config)
        state = {k: v for k, v in source.state_dict().items()}
        own = model.state_dict()
        own_keys = {k for k in own if not k.startswith("gates.") and k != "dummy_weight"}
        missing, unexpected = sorted(own_keys - set(state)), sorted(set(state) - own_keys)
        if missing or unexpected:
            raise ValueError(
                "the teacher does not match the prunable architecture "
                f"(missing: {missing[:6]}; unexpected: {unexpected[:6]})"
            )
        shapes = [k for k in own_keys if own[k].shape != state[k].shape]
        if shapes:
            raise ValueError(f"teacher tensors have other shapes than the config says: {shapes[:6]}")
        model.load_state_dict(state, strict=False)
        return model
