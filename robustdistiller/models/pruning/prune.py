"""Turn a gated model into a smaller plain one: drop gated-off units, fold the soft mask values.

With the deterministic eval masks (``HardConcrete.eval_mask``) every kept unit still carries its
soft mask value; it is folded into the weights that consume the unit, so the pruned model computes
exactly what the gated model computes in eval mode (up to float rounding):

- CNN channels of block i -> input channels of conv i+1 (the last block is never gated);
- attention heads -> ``out_proj`` input columns; a whole-attention gate scales ``out_proj``;
- FFN units -> ``fc2`` input columns; a whole-FFN gate scales ``fc2``;
- a sub-block left with no unit (or a zero layer gate) is removed, as the gated model already
  gives it no contribution.

WavLM edge case (reference-formats.md C.8): only layer 0 owns the relative-position bias used by *every* layer.
If layer 0's attention is gated off entirely, removing it would silently remove the bias from all
layers. Instead one head (the highest-scoring) is kept with ``out_proj`` zeroed: the attention still
contributes exactly 0 and the bias survives. The report says when this happened.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .masking import StructureGates, gate_at
from .model import PrunableModel


@dataclass
class PruneReport:
    params_before: int
    params_after: int
    conv_channels: list[int]
    heads: list[int]
    ffn_units: list[int]
    notes: list[str] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.params_after / self.params_before

    def summary(self) -> str:
        lines = [
            f"pruned {self.params_before:,} -> {self.params_after:,} parameters (sparsity {self.sparsity:.3f})",
            f"CNN channels {self.conv_channels}",
            f"heads per layer {self.heads}",
            f"FFN units per layer {self.ffn_units}",
        ]
        return "\n".join(lines + self.notes)


def _kept(mask: Tensor) -> Tensor:
    return mask.nonzero().squeeze(1)


def _head_rows(heads: Tensor, head_dim: int) -> Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def _drop(state: dict[str, Tensor], prefix: str) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]


def prune_model(model: PrunableModel) -> tuple[PrunableModel, PruneReport]:
    """A new, ungated :class:`PrunableModel` equal to ``model``'s eval-mode output (``model`` is unchanged)."""
    gates = model.gates
    if gates is None:
        raise ValueError("the model has no gates to prune with (pruning_units is empty)")
    cfg = model.config
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("gates.")}
    notes: list[str] = []

    conv_layers = [list(c) for c in cfg.conv_layers]
    for i in range(len(conv_layers)):
        gate = gate_at(gates.conv, i)
        if gate is None:
            continue
        mask = gate.eval_mask().cpu()
        keep = _kept(mask)
        if keep.numel() == 0:
            # keep one silent channel: a conv block needs an output channel; its value is folded as 0
            keep = mask.new_zeros(1, dtype=torch.long) + int(torch.argmax(gate.log_alpha.detach().cpu()))
            notes.append(f"CNN block {i}: every channel was gated off; one zero-weighted channel kept")
        prefix = f"feature_extractor.conv_layers.{i}."
        for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
            if prefix + name in state:
                state[prefix + name] = state[prefix + name][keep]
        nxt = f"feature_extractor.conv_layers.{i + 1}.0.weight"
        state[nxt] = state[nxt][:, keep] * mask[keep][None, :, None]
        conv_layers[i][0] = int(keep.numel())

    layer_heads = [list(h) for h in cfg.layer_heads]
    ffn_dims = list(cfg.layer_ffn_dims)
    for layer in range(cfg.num_layers):
        p = f"encoder.layers.{layer}."
        if layer_heads[layer]:
            layer_heads[layer] = _prune_attention(
                state, p + "self_attn.", gates, layer, layer_heads[layer], cfg.head_dim, cfg.family == "wavlm", notes
            )
        if ffn_dims[layer]:
            ffn_dims[layer] = _prune_ffn(state, p, gates, layer)

    new_cfg = copy.deepcopy(cfg)
    new_cfg.conv_layers = conv_layers
    new_cfg.layer_heads = layer_heads
    new_cfg.layer_ffn_dims = ffn_dims
    new_cfg.pruning_units = []
    pruned = PrunableModel(new_cfg)
    pruned.load_state_dict(state, strict=True)
    pruned.train(model.training)
    report = PruneReport(
        params_before=model.num_params(),
        params_after=pruned.num_params(),
        conv_channels=[c[0] for c in conv_layers],
        heads=[len(h) for h in layer_heads],
        ffn_units=ffn_dims,
        notes=notes,
    )
    return pruned, report


def _prune_attention(
    state: dict[str, Tensor],
    prefix: str,
    gates: StructureGates,
    layer: int,
    heads: list[int],
    head_dim: int,
    wavlm: bool,
    notes: list[str],
) -> list[int]:
    head_gate, layer_gate = gate_at(gates.heads, layer), gate_at(gates.attention_layer, layer)
    mask = head_gate.eval_mask().cpu() if head_gate is not None else torch.ones(len(heads))
    scale = layer_gate.eval_mask().cpu() if layer_gate is not None else torch.ones(1)
    keep = _kept(mask) if float(scale) != 0.0 else mask.new_zeros(0, dtype=torch.long)
    silent = False
    if keep.numel() == 0:
        if not (wavlm and layer == 0):
            _drop(state, prefix)
            return []
        score = head_gate.log_alpha.detach().cpu() if head_gate is not None else torch.zeros(len(heads))
        keep = torch.argmax(score).reshape(1)
        silent = True
        notes.append(
            "WavLM layer 0 lost all heads: one head kept with a zero out_proj so the "
            "relative-position bias (owned by layer 0, used by all layers) survives"
        )
    rows = _head_rows(keep, head_dim)
    for proj in ("q_proj", "k_proj", "v_proj"):
        state[f"{prefix}{proj}.weight"] = state[f"{prefix}{proj}.weight"][rows]
        state[f"{prefix}{proj}.bias"] = state[f"{prefix}{proj}.bias"][rows]
    column_scale = mask[keep].repeat_interleave(head_dim) * scale
    state[f"{prefix}out_proj.weight"] = state[f"{prefix}out_proj.weight"][:, rows] * column_scale[None, :]
    state[f"{prefix}out_proj.bias"] = state[f"{prefix}out_proj.bias"] * scale
    if silent:
        state[f"{prefix}out_proj.weight"].zero_()
        state[f"{prefix}out_proj.bias"].zero_()
    return [heads[int(j)] for j in keep]


def _prune_ffn(state: dict[str, Tensor], prefix: str, gates: StructureGates, layer: int) -> int:
    units = state[prefix + "fc1.weight"].shape[0]
    unit_gate, layer_gate = gate_at(gates.ffn, layer), gate_at(gates.ffn_layer, layer)
    mask = unit_gate.eval_mask().cpu() if unit_gate is not None else torch.ones(units)
    scale = layer_gate.eval_mask().cpu() if layer_gate is not None else torch.ones(1)
    keep = _kept(mask) if float(scale) != 0.0 else mask.new_zeros(0, dtype=torch.long)
    if keep.numel() == 0:
        _drop(state, prefix + "fc1.")
        _drop(state, prefix + "fc2.")
        return 0
    state[prefix + "fc1.weight"] = state[prefix + "fc1.weight"][keep]
    state[prefix + "fc1.bias"] = state[prefix + "fc1.bias"][keep]
    state[prefix + "fc2.weight"] = state[prefix + "fc2.weight"][:, keep] * (mask[keep] * scale)[None, :]
    state[prefix + "fc2.bias"] = state[prefix + "fc2.bias"] * scale
    return int(keep.numel())
