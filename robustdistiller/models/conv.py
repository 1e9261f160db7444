"""The wav2vec2-family convolutional feature extractor (waveform -> 20 ms frames).

Module layout and parameter names follow fairseq's ``ConvFeatureExtractionModel`` so that s3prl /
fairseq / unilm state dicts load unchanged: block ``i`` is ``conv_layers.{i}`` =
``Sequential(Conv1d, Dropout, [norm], GELU)`` with the GroupNorm of the "default" mode at
``conv_layers.0.2`` and the per-block LayerNorm of the "layer_norm" mode at ``conv_layers.{i}.2.1``.
Channel counts are given per block so pruned extractors (fewer channels per block) reuse this code.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ConvLayer = tuple[int, int, int]
"""One block as ``(out_channels, kernel, stride)``."""

ExtractorMode = Literal["default", "layer_norm"]

DEFAULT_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"


# Sanity bounds for specs read from files (checkpoints may be hostile): far above any real front end
# (wav2vec 2.0: 7 blocks of 512 channels, kernels <= 10), far below what would exhaust memory.
MAX_CONV_BLOCKS = 64
CONV_LIMITS = (8192, 4096, 4096)
"""Largest channels, kernel, stride of one block."""


def parse_conv_layers(spec: str) -> list[ConvLayer]:
    """Parse s3prl/fairseq's ``conv_feature_layers`` string without ``eval``.

    Only list/tuple literals of integers combined with ``+`` and ``*`` are accepted, e.g.
    ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``.
    """
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"conv layer spec {spec!r} is not a valid expression: {exc.msg}") from None
    value = _eval_node(tree.body, spec)
    if not isinstance(value, list) or not value:
        raise ValueError(f"conv layer spec {spec!r} must evaluate to a non-empty list")
    return check_conv_blocks(value, f"conv layer spec {spec!r}")


def check_conv_blocks(blocks: Sequence[Sequence[int]], what: str) -> list[ConvLayer]:
    """Validate ``(channels, kernel, stride)`` blocks against :data:`CONV_LIMITS` and
    :data:`MAX_CONV_BLOCKS`; ``what`` names the source in the error (a spec, a config field)."""
    if len(blocks) > MAX_CONV_BLOCKS:
        raise ValueError(f"{what}: {len(blocks)} blocks, over the limit of {MAX_CONV_BLOCKS}")
    layers: list[ConvLayer] = []
    for item in blocks:
        if not (isinstance(item, (tuple, list)) and len(item) == 3 and all(type(v) is int for v in item)):
            raise ValueError(f"{what}: every block must be (channels, kernel, stride), got {item!r}")
        if min(item) <= 0:
            raise ValueError(f"{what}: values must be positive, got {item!r}")
        for value, name, limit in zip(item, ("channels", "kernel", "stride"), CONV_LIMITS):
            if value > limit:
                raise ValueError(f"{what}: {name} {value} is over the limit of {limit}")
        layers.append((item[0], item[1], item[2]))
    return layers


def _eval_node(node: ast.AST, spec: str) -> int | list | tuple:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.List):
        return [_eval_node(e, spec) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval_node(e, spec) for e in node.elts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _eval_node(node.left, spec), _eval_node(node.right, spec)
        if isinstance(node.op, ast.Add) and type(left) is type(right):
            if isinstance(left, int) and isinstance(right, int):
                return left + right
            if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
                if len(left) + len(right) > MAX_CONV_BLOCKS:
                    raise ValueError(f"conv layer spec {spec!r}: more than the limit of {MAX_CONV_BLOCKS} blocks")
                joined = [*left, *right]  # both lists or both tuples (same type, checked above)
                return joined if isinstance(left, list) else tuple(joined)
        if isinstance(node.op, ast.Mult) and isinstance(left, (list, tuple)) and isinstance(right, int):
            # Bound the result, not only the count: nested repeats multiply (a crafted checkpoint's
            # "[(1,2,1)] * 10000 * 10000" would otherwise build 10^8 blocks before any check).
            if right < 0 or len(left) * right > MAX_CONV_BLOCKS:
                raise ValueError(
                    f"conv layer spec {spec!r}: repeating {len(left)} item(s) {right} times is over the "
                    f"limit of {MAX_CONV_BLOCKS} blocks"
                )
            return left * right
    raise ValueError(
        f"conv layer spec {spec!r}: only list/tuple literals of ints with '+' and '*' are allowed "
        f"(found {ast.dump(node)[:60]})"
    )


def format_conv_layers(layers: Sequence[ConvLayer]) -> str:
    """Inverse of :func:`parse_conv_layers` (run-length grouped, s3prl style)."""
    groups: list[tuple[ConvLayer, int]] = []
    for layer in layers:
        if groups and groups[-1][0] == tuple(layer):
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((tuple(layer), 1))  # type: ignore[arg-type]
    parts = []
    for (c, k, s), n in groups:
        parts.append(f"[({c},{k},{s})]" + (f" * {n}" if n > 1 else ""))
    return " + ".join(parts)


def conv_output_lengths(lengths: Tensor, layers: Sequence[ConvLayer]) -> Tensor:
    """Frame counts after the extractor: ``floor((len - k) / s) + 1`` per block, clamped at 0."""
    out = lengths.to(torch.long)
    for _, kernel, stride in layers:
        out = torch.div(out - kernel, stride, rounding_mode="floor") + 1
    return out.clamp(min=0)


def receptive_field(layers: Sequence[ConvLayer]) -> int:
    """Smallest number of samples that yields one frame."""
    size = 1
    for _, kernel, stride in reversed(layers):
        size = (size - 1) * stride + kernel
    return size


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean ``(B, max_len)`` mask, True on the first ``lengths[b]`` positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def check_batch(wavs: Tensor, lengths: Tensor | None, min_samples: int) -> Tensor:
    """Validate a ``(wavs [B, L] float, lengths [B])`` batch; returns int64 lengths (full when None)."""
    if wavs.dim() != 2:
        raise ValueError(f"expected a (batch, samples) waveform tensor, got shape {tuple(wavs.shape)}")
    if not wavs.is_floating_point():
        raise ValueError(f"waveforms must be floating point, got {wavs.dtype}")
    if lengths is None:
        lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long, device=wavs.device)
    lengths = lengths.to(device=wavs.device, dtype=torch.long)
    if lengths.shape != (wavs.shape[0],):
        raise ValueError(f"lengths must have shape ({wavs.shape[0]},), got {tuple(lengths.shape)}")
    if bool((lengths > wavs.shape[1]).any()):
        raise ValueError(f"lengths {lengths.tolist()} exceed the padded length {wavs.shape[1]}")
    if bool((lengths < min_samples).any()):
        raise ValueError(
            f"every waveform needs at least {min_samples} samples (one frame); got lengths {lengths.tolist()}"
        )
    return lengths


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


class TransposeLast(nn.Module):
    """Swap the last two dims (so a LayerNorm over channels can run on ``(B, C, T)``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (stable under autocast), cast back to the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.type_as(x)


class Fp32GroupNorm(nn.GroupNorm):
    """Per-channel GroupNorm (``groups == channels``) over time, computed in fp32.

    With a frame mask the statistics use valid frames only, so an utterance gives the same features
    whether it is alone or zero-padded in a batch (fairseq normalises over the padded length,
    which makes features depend on batch composition; unpadded input gives identical results).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        xf = x.float()
        if mask is None or bool(mask.all()):
            out = F.group_norm(xf, self.num_groups, self.weight.float(), self.bias.float(), self.eps)
            return out.type_as(x)
        m = mask[:, None, :].to(xf.dtype)
        count = m.sum(-1, keepdim=True).clamp(min=1.0)
        mean = (xf * m).sum(-1, keepdim=True) / count
        var = (((xf - mean) * m) ** 2).sum(-1, keepdim=True) / count
        out = (xf - mean) * torch.rsqrt(var + self.eps)
        out = out * self.weight.float()[None, :, None] + self.bias.float()[None, :, None]
        return out.type_as(x)


class ConvFeatureExtractor(nn.Module):
    """Seven (or any number of) strided Conv1d blocks: ``(B, L)`` waveform -> ``(B, C, T)`` features."""

    conv_layers: nn.ModuleList

    def __init__(
        self,
        layers: Sequence[ConvLayer],
        mode: ExtractorMode = "default",
        conv_bias: bool = False,
        dropout: float = 0.0,
        feature_grad_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor mode must be 'default' or 'layer_norm', got {mode!r}")
        if not layers:
            raise ValueError("the conv feature extractor needs at least one block")
        self.layers: list[ConvLayer] = [tuple(layer) for layer in layers]  # type: ignore[misc]
        self.mode = mode
        self.feature_grad_mult = feature_grad_mult
        blocks = []
        in_ch = 1
        for i, (out_ch, kernel, stride) in enumerate(self.layers):
            conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, bias=conv_bias)
            nn.init.kaiming_normal_(conv.weight)
            parts: list[nn.Module] = [conv, nn.Dropout(dropout)]
            if mode == "layer_norm":
                parts.append(nn.Sequential(TransposeLast(), Fp32LayerNorm(out_ch), TransposeLast()))
            elif i == 0:
                parts.append(Fp32GroupNorm(out_ch, out_ch, affine=True))
            parts.append(nn.GELU())
            blocks.append(nn.Sequential(*parts))
            in_ch = out_ch
        self.conv_layers = nn.ModuleList(blocks)

    @property
    def out_channels(self) -> int:
        return self.layers[-1][0]

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return conv_output_lengths(lengths, self.layers)

    def frames(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, C)`` features and their ``(B, T)`` frame mask (True = valid): the common front of
        the student, teacher and prunable models. Runs through ``__call__`` so forward hooks (the
        pruning gates) still apply."""
        feats = self(wavs, lengths).transpose(1, 2)
        return feats, lengths_to_mask(self.output_lengths(lengths), feats.shape[1])

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``wavs`` (B, L) -> (B, C, T). ``lengths`` (valid samples per row) only affects the GroupNorm."""
        if self.feature_grad_mult == 0.0:
            with torch.no_grad():
                return self._run(wavs, lengths)
        x = self._run(wavs, lengths)
        if self.feature_grad_mult != 1.0 and x.requires_grad:
            x = _GradMultiply.apply(x, self.feature_grad_mult)
        return x

    def _run(self, wavs: Tensor, lengths: Tensor | None) -> Tensor:
        # eval only: the folded block 0 has no place for its dropout
        if reduced_precision_inference(wavs) and not self.training and not self._has_hooks():
            return self._run_channels_last(wavs, lengths).transpose(1, 2)
        x = wavs.unsqueeze(1)
        for i, block in enumerate(self._blocks()):
            x = block[1](block[0](x))
            norm = block[2] if len(block) == 4 else None
            if isinstance(norm, Fp32GroupNorm):
                mask = None
                if lengths is not None:
                    mask = lengths_to_mask(conv_output_lengths(lengths, self.layers[: i + 1]), x.shape[-1])
                x = norm(x, mask)
            elif norm is not None:
                x = norm(x)
            x = block[-1](x)
        return x

    def _blocks(self) -> list[nn.Sequential]:
        """``conv_layers`` typed: every block is a ``Sequential`` (to mypy a ``ModuleList`` holds plain modules)."""
        return cast(list[nn.Sequential], list(self.conv_layers))

    def _conv(self, i: int) -> nn.Conv1d:
        """The convolution of block ``i`` (its first module)."""
        return cast(nn.Conv1d, self._blocks()[i][0])

    def _has_hooks(self) -> bool:
        # Hooks (the pruning gates) expect (B, C, T) outputs of each module; only the plain path has them.
        return any(m._forward_hooks or m._forward_pre_hooks for m in self.conv_layers.modules())

    def _run_channels_last(self, wavs: Tensor, lengths: Tensor | None) -> Tensor:
        """The blocks of :meth:`_run` on ``(B, T, C)`` activations, each convolution one matrix product.

        Used under CPU bf16 autocast at inference: oneDNN's bf16 convolutions do not reach the AMX /
        AVX512-BF16 units for these strided 1-D shapes, its bf16 matrix products do (about 7x fp32 on
        a Sapphire Rapids core). Statistics of the norms are computed in fp32.

        Returns:
            ``(B, T, C)`` features in the autocast dtype.
        """
        if lengths is None:
            lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long, device=wavs.device)
        dtype = torch.get_autocast_dtype("cpu")
        blocks = self._blocks()
        fold = isinstance(blocks[0][2], Fp32GroupNorm)  # "default" mode
        x = self._first_block_folded(wavs, lengths) if fold else wavs.unsqueeze(-1)
        for i, block in enumerate(blocks):
            if i > 0 or not fold:
                conv = self._conv(i)
                x = block[1](conv_as_matmul(x, conv.weight, conv.bias, conv.stride[0]))
                if len(block) == 4:  # "layer_norm" mode; the LayerNorm sits between two TransposeLast
                    x = cast(nn.Sequential, block[2])[1](x)
            x = block[-1](x.to(dtype))
        return x

    def _first_block_folded(self, wavs: Tensor, lengths: Tensor) -> Tensor:
        """Block 0's convolution and per-channel GroupNorm as one bf16 product, before the GELU.

        The output of a linear map ``w`` of the input windows has mean ``w . mean`` and variance
        ``w S w^T`` over time (``S`` the ``k x k`` covariance of the windows), so the norm folds into
        the weights: the statistics come from the small ``(T, k)`` window matrix in fp32 and the
        ``(B, T, C)`` activation is written once. Windows are centred first, so a DC offset in the
        recording costs no precision. Any conv bias cancels in the norm.

        Args:
            wavs: ``(B, L)`` waveforms.
            lengths: ``(B,)`` valid samples; the statistics use each row's valid frames only.

        Returns:
            ``(B, T, C)`` normalised block-0 activations (before the GELU) in the autocast dtype.
        """
        conv, norm = self._conv(0), self._blocks()[0][2]
        assert isinstance(norm, Fp32GroupNorm)  # only the "default" mode folds
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        windows = conv_windows(wavs.float().unsqueeze(-1), kernel, stride)
        frames = conv_output_lengths(lengths, self.layers[:1]).tolist()
        weight = conv.weight.float()[:, 0, :]
        dtype = torch.get_autocast_dtype("cpu")
        out = windows.new_empty(windows.shape[0], windows.shape[1], weight.shape[0], dtype=dtype)
        with torch.autocast("cpu", enabled=False):
            for b, n in enumerate(frames):
                valid = windows[b, :n]
                centred = windows[b] - valid.mean(0)
                cov = centred[:n].T @ centred[:n] / n
                var = ((weight @ cov) * weight).sum(1)
                scaled = weight * (norm.weight.float() * torch.rsqrt(var + norm.eps))[:, None]
                torch.addmm(norm.bias.to(dtype), centred.to(dtype), scaled.T.to(dtype), out=out[b])
        return out


def conv_windows(x: Tensor, kernel: int, stride: int) -> Tensor:
    """``(B, T, C)`` -> ``(B, frames, kernel * C)``: the input of each output frame, window-major.

    On a contiguous channels-last tensor the ``kernel`` frames a window covers are ``kernel * C``
    consecutive numbers, so all windows are one strided view, copied once (rows overlap when
    ``kernel > stride``; matrix kernels want rows that do not).
    """
    x = x.contiguous()
    batch, steps, channels = x.shape
    frames = (steps - kernel) // stride + 1
    windows = x.as_strided((batch, frames, kernel * channels), (steps * channels, stride * channels, 1))
    return windows.contiguous()


def reduced_precision_inference(x: Tensor) -> bool:
    """True inside ``torch.autocast("cpu", torch.bfloat16)`` with gradients off and ``x`` on the CPU."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def conv_as_matmul(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """A strided Conv1d on channels-last input as one matrix product over its windows.

    Args:
        x: ``(B, T, C_in)`` input.
        weight: ``(C_out, C_in, k)`` Conv1d weight.
        bias: ``(C_out,)`` or None.
        stride: the convolution's stride.

    Returns:
        ``(B, floor((T - k) / stride) + 1, C_out)``, equal to ``conv1d`` up to rounding.
    """
    out_channels, in_channels, kernel = weight.shape
    # row o of the matrix is weight[o] laid out window-major: element j * C_in + c = weight[o, c, j]
    matrix = weight.permute(0, 2, 1).reshape(out_channels, kernel * in_channels)
    return F.linear(conv_windows(x, kernel, stride), matrix, bias)
