"""Gates attached around the shared blocks with forward hooks (the blocks themselves stay unchanged).

Where each gate acts (DPHuBERT semantics):
- CNN channels of block i: on the output of the block's GELU (``conv_layers.{i}`` last module);
- attention heads: on the input of ``out_proj`` (each head's 64 columns scaled by its gate);
- FFN units: on the input of ``fc2``;
- whole attention / FFN sub-blocks (optional): on the output of ``out_proj`` / ``fc2``.
A sub-block whose units are all gated off contributes exactly 0 (its output bias is dropped too),
which is what the pruned model computes once that sub-block is removed.

The last CNN block gets no gate: the feature LayerNorm normalises over its channels, so removing
one would change every other one and the pruned model could not equal the gated one.
Hooks are bound methods of the gate modules, so ``copy.deepcopy`` of a gated model stays consistent.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .config import PrunableConfig
from .gates import HardConcrete

_Gate = TypeVar("_Gate", bound=HardConcrete)


def gate_at(group: nn.ModuleDict, index: int) -> HardConcrete | None:
    """The gate of block ``index`` in ``group`` (one of :class:`StructureGates`' dicts), or None when
    that block is not gated. Typed: to mypy a ``ModuleDict`` holds plain modules."""
    return cast("HardConcrete | None", group[str(index)] if str(index) in group else None)


def gate_items(group: nn.ModuleDict, kind: type[_Gate]) -> list[tuple[int, _Gate]]:
    """``(block index, gate)`` for every gate in ``group``, typed as ``kind``, the class ``group`` holds."""
    return [(int(i), cast(_Gate, gate)) for i, gate in group.items()]


class ChannelGate(HardConcrete):
    """Gates the channels of a ``(B, C, T)`` conv output."""

    def on_output(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return output * self().to(output.dtype)[:, None]


class UnitGate(HardConcrete):
    """Gates the last dim of a Linear's input in groups of ``repeat`` (a head = ``head_dim`` columns)."""

    def __init__(self, n: int, repeat: int = 1, init_mean: float = 0.01) -> None:
        super().__init__(n, init_mean)
        self.repeat = repeat
        self._mask: Tensor | None = None

    def on_input(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        mask = self()
        self._mask = mask
        x = inputs[0]
        scale = mask.repeat_interleave(self.repeat) if self.repeat > 1 else mask
        return (x * scale.to(x.dtype), *inputs[1:])

    def on_output(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        # all units off -> the sub-block is gone, bias included (no host sync: a 0/1 factor)
        assert self._mask is not None, "on_input must run before on_output"
        alive = self._mask.detach().gt(0).any().to(output.dtype)
        self._mask = None
        return output * alive


class LayerGate(HardConcrete):
    """One gate scaling a whole sub-block's output."""

    def __init__(self) -> None:
        super().__init__(1, init_mean=0.01)

    def on_output(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return output * self().to(output.dtype)


class StructureGates(nn.Module):
    """All gates of a model, by kind and block index (``conv.{i}``, ``heads.{l}``, ``ffn.{l}``,
    ``attention_layer.{l}``, ``ffn_layer.{l}``)."""

    def __init__(self, config: PrunableConfig) -> None:
        super().__init__()
        units = set(config.pruning_units)
        self.conv = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.ffn = nn.ModuleDict()
        self.attention_layer = nn.ModuleDict()
        self.ffn_layer = nn.ModuleDict()
        if "conv" in units:
            for i, (channels, _, _) in enumerate(config.conv_spec[:-1]):
                self.conv[str(i)] = ChannelGate(channels)
        for layer, (heads, ffn) in enumerate(zip(config.layer_heads, config.layer_ffn_dims)):
            if heads and "head" in units:
                self.heads[str(layer)] = UnitGate(len(heads), repeat=config.head_dim)
            if heads and "attlayer" in units:
                self.attention_layer[str(layer)] = LayerGate()
            if ffn and "interm" in units:
                self.ffn[str(layer)] = UnitGate(ffn, init_mean=0.5)
            if ffn and "ffnlayer" in units:
                self.ffn_layer[str(layer)] = LayerGate()

    def attach(self, feature_extractor: nn.Module, layers: nn.ModuleList) -> list[RemovableHandle]:
        """Register the hooks on the shared blocks of one model; returns the handles."""
        handles = []
        for i, channels in gate_items(self.conv, ChannelGate):
            block = cast(nn.Sequential, feature_extractor.get_submodule(f"conv_layers.{i}"))
            handles.append(block[-1].register_forward_hook(channels.on_output))
        for group, owner in ((self.heads, "self_attn.out_proj"), (self.ffn, "fc2")):
            for i, units in gate_items(group, UnitGate):
                target = layers[i].get_submodule(owner)
                handles.append(target.register_forward_pre_hook(units.on_input))
                handles.append(target.register_forward_hook(units.on_output))
        for group, owner in ((self.attention_layer, "self_attn.out_proj"), (self.ffn_layer, "fc2")):
            for i, whole in gate_items(group, LayerGate):
                handles.append(layers[i].get_submodule(owner).register_forward_hook(whole.on_output))
        return handles
