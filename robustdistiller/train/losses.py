"""Training losses: layer-wise distillation (DistilHuBERT), feature penalty, enhancement losses.

All losses are computed in fp32 with autocast disabled, whatever the inputs' dtype, and average
over valid frames/samples only (the original s3prl code averages over padding too; ``masked=False`` in
``distillation_loss`` and ``frame_mask=None`` in ``feature_penalty`` reproduce it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistiller.models.enhancement import (
    EnhancementHead,
    EnhancementOutput,
    sample_mask,
    stft,
    stft_frame_mask,
)


@dataclass
class DistillationLoss:
    """``total``: scalar with grad. ``per_layer``: detached scalars for logging, per teacher layer id:
    ``rec_l{id}`` (L1/L2), ``sim_l{id}`` (mean cosine similarity), ``cos_l{id}`` (the
    ``-log sigmoid(cos)`` term). Note: s3prl logs the ``-log sigmoid`` term as ``sim_l``.
    """

    total: Tensor
    per_layer: dict[str, Tensor]


def distillation_loss(
    pred: Tensor,
    target: Tensor,
    frame_mask: Tensor | None,
    *,
    loss_type: Literal["l1", "l2"] = "l1",
    cosine_weight: float = 1.0,
    masked: bool = True,
    layer_ids: Sequence[int] | None = None,
    max_frame_diff: int = 2,
) -> DistillationLoss:
    """DistilHuBERT loss between student predictions and teacher targets, both ``[B, N, T, D]``.

    Per predicted layer: ``rec = mean |pred - target|`` (or squared for ``"l2"``) over valid frames
    and D, ``cos = mean(-log sigmoid(cos_sim(pred_t, target_t)))`` over valid frames; ``total`` is the
    mean over layers of ``rec + cosine_weight * cos`` (equal to s3prl's mean over all
    elements, since every layer has the same number of frames).

    ``frame_mask [B, T]`` (True = valid) comes from the student. With ``masked=False`` or no mask,
    every frame counts, padding included (s3prl's behaviour). Padded frames are dropped
    before any arithmetic, so garbage (even NaN) there neither changes the loss nor gets a gradient.

    The student runs on the padded batch while the teacher may run on unpadded audio, so their
    frame counts can differ by a frame or two: all three tensors are trimmed to the shortest.
    A difference above ``max_frame_diff`` raises (features from mismatched audio).
    ``layer_ids`` (the teacher layer of each of the N predictions) only name the logged values;
    default ``0..N-1``.
    """
    if loss_type not in ("l1", "l2"):
        raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p, t = valid_frames(pred, target, frame_mask, masked=masked, max_frame_diff=max_frame_diff)
        layer_ids = list(range(p.shape[0])) if layer_ids is None else list(layer_ids)
        if len(layer_ids) != p.shape[0]:
            raise ValueError(f"{len(layer_ids)} layer_ids for {p.shape[0]} predicted layers")
        diff = p - t
        rec = (diff.abs() if loss_type == "l1" else diff.pow(2)).mean(dim=(1, 2))
        cos_sim = F.cosine_similarity(p, t, dim=-1)
        cos = -F.logsigmoid(cos_sim).mean(dim=1)
        total = (rec + cosine_weight * cos).mean() if cosine_weight else rec.mean()

    per_layer: dict[str, Tensor] = {}
    for i, layer in enumerate(layer_ids):
        per_layer[f"rec_l{layer}"] = rec[i].detach()
        per_layer[f"sim_l{layer}"] = cos_sim[i].mean().detach()
        per_layer[f"cos_l{layer}"] = cos[i].detach()
    return DistillationLoss(total=total, per_layer=per_layer)


def valid_frames(
    pred: Tensor, target: Tensor, frame_mask: Tensor | None, *, masked: bool = True, max_frame_diff: int = 2
) -> tuple[Tensor, Tensor]:
    """The frames a distillation loss sees: predictions and targets ``[B, N, T, D]`` as fp32
    ``[N, frames, D]`` each, padded frames left out (every frame, padding included, with
    ``masked=False`` or no mask: the reference behaviour).

    Padded frames are dropped before any arithmetic, so garbage (even NaN) there neither changes a
    loss nor gets a gradient. The student runs on the padded batch while the teacher may run on
    unpadded audio, so their frame counts can differ by a frame or two: all three tensors are
    trimmed to the shortest.

    Args:
        pred, target: ``[B, N, T, D]`` student predictions and teacher targets (T may differ).
        frame_mask: ``[B, T]`` bool, True = valid frame (from the student), or None.
        masked: leave the padded frames out (else the mask only bounds T).
        max_frame_diff: the largest frame-count difference accepted.

    Raises:
        ValueError: shapes differ beyond T, T differs by more than ``max_frame_diff`` (features
            from mismatched audio), or the mask has no valid frame.
    """
    p, t, valid = aligned_frames(pred, target, frame_mask, max_frame_diff=max_frame_diff)
    N, B, T, D = p.shape
    if not masked or valid is None:
        return p.reshape(N, B * T, D), t.reshape(N, B * T, D)
    if not bool(valid.any()):
        raise ValueError("frame_mask has no valid frame")
    return p[:, valid], t[:, valid]


def aligned_frames(
    pred: Tensor, target: Tensor, frame_mask: Tensor | None, *, max_frame_diff: int = 2
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Predictions and targets ``[B, N, T, D]`` as fp32 ``[N, B, T', D]``, with the mask ``[B, T']``
    (None without one), all trimmed to the shortest frame count T' (see :func:`valid_frames`).

    Raises:
        ValueError: shapes differ beyond T, or T differs by more than ``max_frame_diff``.
    """
    if pred.dim() != 4 or target.dim() != 4:
        raise ValueError(f"expected pred/target [B, N, T, D], got {tuple(pred.shape)} and {tuple(target.shape)}")
    B, N, _, D = pred.shape
    if (target.shape[0], target.shape[1], target.shape[3]) != (B, N, D):
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ beyond T")
    lengths = [pred.shape[2], target.shape[2]]
    if frame_mask is not None:
        if frame_mask.dim() != 2 or frame_mask.shape[0] != B:
            raise ValueError(f"expected frame_mask [{B}, T], got {tuple(frame_mask.shape)}")
        lengths.append(frame_mask.shape[1])
    T = min(lengths)
    if max(lengths) - T > max_frame_diff:
        raise ValueError(
            f"frame counts differ by more than {max_frame_diff}: pred {pred.shape[2]}, "
            f"target {target.shape[2]}, mask {frame_mask.shape[1] if frame_mask is not None else '-'}"
        )
    p = pred[:, :, :T].float().transpose(0, 1)
    t = target[:, :, :T].float().transpose(0, 1)
    return p, t, None if frame_mask is None else frame_mask[:, :T].to(torch.bool)


def utterance_mean_loss(pred: Tensor, target: Tensor, frame_mask: Tensor | None) -> Tensor:
    """L1 between the utterance means of predictions and targets: ``mean |mean_t pred - mean_t target|``
    over utterances, layers and D, each mean over the utterance's valid frames (every frame without a
    mask; padding never counts, whatever ``train.masked_loss`` says, since this term is not s3prl's).

    Why: corruption moves a student's frames by an error with a systematic part, which the frame loss
    weighs no more than the rest; averaged over an utterance it is what remains, and what an utterance
    probe (mean pooling, SUPERB's speaker id) reads.

    Args:
        pred, target: ``[B, N, T, D]`` student predictions (or layers) and clean teacher targets.
        frame_mask: ``[B, T]`` bool, True = valid frame, or None.
    Returns:
        A scalar with grad.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p, t, valid = aligned_frames(pred, target, frame_mask)
        diff = p - t  # [N, B, T, D]
        if valid is None:
            return diff.mean(dim=2).abs().mean()
        # masked_fill, not a product, so that garbage (even NaN) in padded frames stays out
        summed = diff.masked_fill(~valid[None, :, :, None], 0.0).sum(dim=2)
        count = valid.sum(dim=1).clamp(min=1).to(summed.dtype)[None, :, None]
        return (summed / count).abs().mean()


def layer_to_layer_loss(
    pred: Tensor,
    target: Tensor,
    frame_mask: Tensor,
    *,
    l1_weight: float,
    l2_weight: float,
    cos_weight: float,
    cos_type: Literal["raw", "log_sig"],
    layer_ids: Sequence[int],
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPHuBERT's ``DistillLoss`` over valid frames only.

    Args:
        pred, target: ``[B, N, T, D]`` projected student layers and teacher layers.
        frame_mask: ``[B, T]`` bool, True = valid frame.
        l1_weight, l2_weight, cos_weight: weights of mean |diff|, mean diff^2 and the cosine term.
        cos_type: ``raw`` = ``-cos`` (DPHuBERT), ``log_sig`` = ``-log sigmoid(cos)`` (DistilHuBERT).
        layer_ids: the teacher layer of each of the N predictions (names the logged scalars).

    Returns:
        ``(loss, scalars)``: the mean over layers of the weighted terms (with grad), and detached
        ``loss/l1_l{id}`` / ``loss/cos_l{id}`` (mean cosine similarity) per layer.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p, t = valid_frames(pred, target, frame_mask)
        diff = p - t
        l1 = diff.abs().mean(dim=(1, 2))
        l2 = diff.pow(2).mean(dim=(1, 2))
        cos = F.cosine_similarity(p, t, dim=-1)
        cos_term = (-cos if cos_type == "raw" else -F.logsigmoid(cos)).mean(dim=1)
        per_layer = l1_weight * l1 + l2_weight * l2 + cos_weight * cos_term
    scalars = {}
    for i, layer in enumerate(layer_ids):
        scalars[f"loss/l1_l{layer}"] = l1[i].detach()
        scalars[f"loss/cos_l{layer}"] = cos[i].mean().detach()
    return per_layer.mean(), scalars


def feature_penalty(features: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """Mean of squared features ``[B, T, C]`` over valid frames (s3prl's ``feat_pen_loss`` term).

    ``frame_mask=None`` averages over every frame, as s3prl does.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        x = features.float()
        if frame_mask is not None:
            T = min(x.shape[1], frame_mask.shape[1])
            x = x[:, :T][frame_mask[:, :T].to(torch.bool)]
        return x.pow(2).mean()


def _signal_pair_lengths(estimate: Tensor, reference: Tensor, lengths: Tensor | None) -> Tensor:
    """Check an ``(estimate, reference)`` pair of ``[B, L]`` waveforms; ``lengths`` (all of L when None)."""
    if estimate.shape != reference.shape or estimate.dim() != 2:
        raise ValueError(
            f"expected estimate/reference [B, L] of one shape, got {tuple(estimate.shape)} and {tuple(reference.shape)}"
        )
    if lengths is None:
        return torch.full(estimate.shape[:1], estimate.shape[1], device=estimate.device)
    return lengths


def si_snr(estimate: Tensor, reference: Tensor, lengths: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SNR in dB per utterance, ``[B]``, over the first ``lengths[b]`` samples.

    Both signals are made zero-mean over their valid samples; the estimate is projected onto the
    reference: ``10 log10(|s_target|^2 / |e - s_target|^2)``. ``eps`` keeps silent inputs finite.
    """
    lengths = _signal_pair_lengths(estimate, reference, lengths)
    with torch.autocast(device_type=estimate.device.type, enabled=False):
        valid = sample_mask(lengths, estimate.shape[1])
        count = lengths.to(torch.float32)[:, None].clamp(min=1)
        est = torch.where(valid, estimate.float(), 0.0)
        ref = torch.where(valid, reference.float(), 0.0)
        est = torch.where(valid, est - est.sum(dim=1, keepdim=True) / count, 0.0)
        ref = torch.where(valid, ref - ref.sum(dim=1, keepdim=True) / count, 0.0)
        scale = (est * ref).sum(dim=1, keepdim=True) / (ref.pow(2).sum(dim=1, keepdim=True) + eps)
        target = scale * ref
        noise = est - target
        ratio = target.pow(2).sum(dim=1) / (noise.pow(2).sum(dim=1) + eps)
        return 10 * torch.log10(ratio + eps)


class MultiResolutionSTFTLoss(nn.Module):
    """Multi-resolution STFT loss (ParallelWaveGAN/denoiser style, as RobustDistiller's ``mrstft``).

    Per resolution: spectral convergence ``||R - E||_F / ||R||_F`` and mean ``|log R - log E|``,
    magnitudes clamped to ``>= sqrt(1e-7)``; each averaged over resolutions, then
    ``sc_weight * SC + mag_weight * logmag``. Only STFT frames of valid samples count when
    ``lengths`` is given (samples beyond it are zeroed first).
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        sc_weight: float = 0.5,
        mag_weight: float = 0.5,
    ) -> None:
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths) > 0:
            raise ValueError("fft_sizes, hop_sizes and win_lengths must be non-empty and equally long")
        for n_fft, win in zip(fft_sizes, win_lengths):
            if win > n_fft:
                raise ValueError(f"window {win} longer than FFT size {n_fft}")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_lengths))
        self.sc_weight = sc_weight
        self.mag_weight = mag_weight

    def forward(self, estimate: Tensor, reference: Tensor, lengths: Tensor | None = None) -> Tensor:
        lengths = _signal_pair_lengths(estimate, reference, lengths)
        keep = sample_mask(lengths, estimate.shape[1])
        estimate = torch.where(keep, estimate, 0.0)
        reference = torch.where(keep, reference, 0.0)
        sc_total = estimate.new_zeros((), dtype=torch.float32)
        mag_total = estimate.new_zeros((), dtype=torch.float32)
        with torch.autocast(device_type=estimate.device.type, enabled=False):
            for n_fft, hop, win in self.resolutions:
                est_mag = _clamped_magnitude(stft(estimate, n_fft, hop, win))
                ref_mag = _clamped_magnitude(stft(reference, n_fft, hop, win))
                valid = stft_frame_mask(lengths, hop, est_mag.shape[-1])
                # [B, F, T] -> [frames, F]
                est_mag = est_mag.transpose(1, 2)[valid]
                ref_mag = ref_mag.transpose(1, 2)[valid]
                sc_total = sc_total + torch.linalg.norm(ref_mag - est_mag) / torch.linalg.norm(ref_mag)
                mag_total = mag_total + (ref_mag.log() - est_mag.log()).abs().mean()
        count = len(self.resolutions)
        return self.sc_weight * sc_total / count + self.mag_weight * mag_total / count


def _clamped_magnitude(spec: Tensor) -> Tensor:
    # Clamping the power (not the magnitude) keeps the sqrt differentiable at silent bins.
    return (spec.real.pow(2) + spec.imag.pow(2)).clamp(min=1e-7).sqrt()


def enhancement_loss(
    head: EnhancementHead,
    out: EnhancementOutput,
    clean: Tensor,
    lengths: Tensor,
    kind: Literal["l1", "l2", "mrstft", "si_snr"] | None = None,
) -> Tensor:
    """Scalar loss of the head's prediction ``out`` against the clean waveforms ``[B, L]``.

    ``kind`` defaults to ``head.config.loss``. ``"l1"``/``"l2"``: between the estimated and the
    clean STFT magnitude, over valid frames and all bins. ``"mrstft"``: multi-resolution STFT loss
    on the resynthesised waveform. ``"si_snr"``: minus the mean SI-SNR (dB) of the resynthesised
    waveform. Samples of ``clean`` beyond ``lengths`` are ignored.
    """
    kind = kind or head.config.loss
    cfg = head.config
    clean = torch.where(sample_mask(lengths, clean.shape[1]), clean, 0.0)
    if kind in ("l1", "l2"):
        with torch.autocast(device_type=clean.device.type, enabled=False):
            clean_mag = stft(clean, cfg.n_fft, cfg.hop, cfg.win).abs()
            if clean_mag.shape != out.estimate_mag.shape:
                raise ValueError(
                    f"clean STFT {tuple(clean_mag.shape)} does not match the estimate "
                    f"{tuple(out.estimate_mag.shape)}: pass the clean batch of the same length"
                )
            diff = (out.estimate_mag.float() - clean_mag).transpose(1, 2)[out.frame_mask]
            return diff.abs().mean() if kind == "l1" else diff.pow(2).mean()
    if kind not in ("mrstft", "si_snr"):
        raise ValueError(f"unknown enhancement loss {kind!r}; use l1, l2, mrstft or si_snr")
    estimate = head.resynthesize(out, clean.shape[1])
    if kind == "mrstft":
        return MultiResolutionSTFTLoss()(estimate, clean, lengths)
    return -si_snr(estimate, clean, lengths).mean()
