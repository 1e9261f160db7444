"""``PrunableModel``: a HuBERT / wav2vec 2.0 / WavLM encoder with per-block sizes and optional gates.

The shared :class:`~robustdistiller.models.encoder.Encoder` with fairseq parameter names and
DPHuBERT's ``dummy_weight`` (per-channel scale of the final CNN features, where pruning folds the
last gated channel mask). Gates, when
configured, live under ``gates.*`` and act through hooks (see ``masking.py``).

``extract`` returns ``num_layers + 1`` hidden states as DPHuBERT does: index 0 is the feature
projection output (padded frames zeroed) *before* the positional conv, index i the output of layer i.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..encoder import Encoder, EncoderOutput
from ..precision import as_fp32, autocast
from ..spec import spec_from_prunable
from ..teacher import Teacher, TeacherModel
from .config import PrunableConfig
from .masking import StructureGates, gate_at
from .size import config_params, structure_params

PrunableOutput = EncoderOutput
"""A prunable model's output (the encoder's; the name is kept for callers). DPHuBERT's hidden-state
list is :meth:`EncoderOutput.projected_states`."""


class PrunableModel(Encoder):
    """:class:`Encoder` described by a :class:`PrunableConfig`, plus its gates (when configured)."""

    precision = "fp32"
    """What ``extract`` runs in: "fp32" or "bf16" (set by ``models.precision.use_precision``)."""

    def __init__(self, config: PrunableConfig) -> None:
        config.validate()
        super().__init__(spec_from_prunable(config))
        self.config = config
        self.gates: StructureGates | None = None
        if config.pruning_units:
            self.gates = StructureGates(config)
            self.gates.attach(self.feature_extractor, self.encoder.layers)

    # ------------------------------------------------------------------ running
    @property
    def num_layers(self) -> int:
        """Transformer layers (``extract`` returns ``num_layers + 1`` hidden states)."""
        return self.config.num_layers

    def extract(self, wavs: Tensor, lengths: Tensor | None = None) -> list[Tensor]:
        """DPHuBERT's ``extract_features``: the ``num_layers + 1`` hidden states."""
        with autocast(self.precision):
            return as_fp32(self.forward(wavs, lengths).projected_states())

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
            gate = gate_at(kind, i)
            return gate.l0_norm() if gate is not None else full

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
