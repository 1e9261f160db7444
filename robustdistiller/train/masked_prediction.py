"""The masked-prediction objective of HuBERT pre-training (:class:`MaskedPrediction`, an
:class:`~robustdistiller.train.objective.Objective`): the model it trains, its loss on a batch, its
parameter groups, its checkpoint (the model; masks need no state: the mask of each step is drawn
from a generator seeded by (seed, step, micro-batch), so a resumed run draws the same masks).

Per micro-batch: cluster labels come from the *clean* audio (MFCC or an earlier model's layer),
the model hears ``noisy`` (the clean audio, or its corrupted copy for the robust variant; with
WavLM's utterance mixing, some rows also carry a segment of another row's clean audio) with
spans of frames replaced by the mask embedding, and the loss is the cross-entropy of the labels
on masked frames (plus ``unmasked_weight`` x the same on the other valid frames).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistiller.atomic import atomic_write
from robustdistiller.augment.overlap import Overlay, UtteranceMixing, overlay
from robustdistiller.errors import CheckpointFormatError
from robustdistiller.models.pretraining import HubertPretrainModel, span_mask
from robustdistiller.train.clusters import CLUSTERS_FILE, FrameLabeller
from robustdistiller.train.objective import LoopTools, MicroBatch, Objective, StepLoss
from robustdistiller.train.optim import decay_groups
from robustdistiller.train.recipe import OptimSection

# Mixed into the mask / overlay generators' seeds so they never share a stream with crops, corruption
# plans or each other.
_MASK_SALT = 0x3A5C
_MIX_SALT = 0x3A5D
MODEL_NAME = "model"
"""The pre-training model's name among the objective's modules."""


@dataclass
class MaskedPredictionLoss:
    total: Tensor
    """``masked + unmasked_weight * unmasked`` (with grad)."""
    masked: Tensor
    """Mean cross-entropy over masked valid frames."""
    unmasked: Tensor
    """Mean cross-entropy over unmasked valid frames (0 when there are none)."""
    accuracy: Tensor
    """Top-1 accuracy of the cluster label on masked frames (detached)."""


def masked_prediction_loss(
    logits: Tensor, labels: Tensor, time_mask: Tensor, frame_mask: Tensor, unmasked_weight: float = 0.0
) -> MaskedPredictionLoss:
    """HuBERT's loss on one batch.

    Args:
        logits: (B, T, K) scores of the K clusters (cosine / temperature).
        labels: (B, T) int64 cluster of each frame (ignored on padded frames).
        time_mask: (B, T) bool, True = the frame was replaced by the mask embedding.
        frame_mask: (B, T) bool, True = valid frame.
        unmasked_weight: weight of the loss on unmasked valid frames (HuBERT: 0).

    Returns:
        :class:`MaskedPredictionLoss`; the means run over frames, so batches of any length weigh
        the same per frame.
    """
    masked = time_mask & frame_mask
    if not bool(masked.any()):
        raise ValueError("masked_prediction_loss: no masked valid frame in the batch (check the span mask)")
    flat_logits = logits.float()
    ce_masked = F.cross_entropy(flat_logits[masked], labels[masked])
    unmasked = ~time_mask & frame_mask
    ce_unmasked = (
        F.cross_entropy(flat_logits[unmasked], labels[unmasked]) if bool(unmasked.any()) else flat_logits.new_zeros(())
    )
    accuracy = (flat_logits[masked].argmax(-1) == labels[masked]).float().mean().detach()
    total = ce_masked + unmasked_weight * ce_unmasked if unmasked_weight else ce_masked
    return MaskedPredictionLoss(total, ce_masked, ce_unmasked, accuracy)


class MaskedPrediction(Objective):
    """HuBERT masked prediction over one :class:`HubertPretrainModel`.

    Args:
        model: the model being pre-trained, on the device.
        labeller: labels for the clean audio (its cluster model already fitted).
        mask_prob, mask_length: span masking (:func:`span_mask`).
        unmasked_weight: loss weight on unmasked frames.
        mixing: WavLM's utterance mixing of the input (off by default).
        seed: seeds the per-step mask and overlay generators.
        clock: the job's training time (saved in checkpoints; default: starts now).
        description: the log line of a new run.
    """

    label = "pretrain"

    def __init__(
        self,
        model: HubertPretrainModel,
        labeller: FrameLabeller,
        *,
        mask_prob: float,
        mask_length: int,
        unmasked_weight: float,
        seed: int,
        mixing: UtteranceMixing | None = None,
        clock: TrainingClock | None = None,
        description: str = "",
    ) -> None:
        self.model = model
        self.labeller = labeller
        self.mask_prob = mask_prob
        self.mask_length = mask_length
        self.unmasked_weight = unmasked_weight
        self.seed = seed
        self.mixing = mixing or UtteranceMixing()
        self.description = description
        self.clock = clock or TrainingClock()

    def modules(self) -> dict[str, nn.Module]:
        return {MODEL_NAME: self.model}

    def param_groups(self, optim: OptimSection) -> list[dict[str, Any]]:
        """Every trainable tensor of the model, in two groups (decay on matrices, none on biases and
        norms; see :func:`decay_groups`). No state beyond the model: masks are a pure function of
        (seed, step, micro-batch), so a resumed run draws the same masks."""
        return decay_groups(self.model.named_parameters(), optim.weight_decay, match_reference=optim.match_reference)

    def loss(self, batch: MicroBatch, tools: LoopTools) -> StepLoss:
        """Labels from ``batch.clean``; the model (``tools.nets``) hears ``batch.noisy`` (with the
        utterance overlays of (seed, step, micro-batch) when mixing is on) with the span mask of (seed,
        step, micro-batch), all under autocast."""
        with tools.phase("student"), tools.autocast():
            frame_lengths = self.model.frame_lengths(batch.lengths)
            num_frames = int(self.model.frame_lengths(torch.tensor([batch.clean.shape[1]]))[0])
            labels = self.labeller.labels(batch.clean, batch.lengths, frame_lengths, num_frames)
            rng = np.random.default_rng([self.seed, _MASK_SALT, batch.step, batch.micro])
            time_mask = span_mask(frame_lengths.cpu(), num_frames, self.mask_prob, self.mask_length, rng)
            overlays = self.overlays(batch)
            heard = overlay(batch.noisy, batch.lengths, batch.clean, overlays)
            device = batch.noisy.device
            out = tools.nets[MODEL_NAME](heard, batch.lengths, time_mask.to(device))
            result = masked_prediction_loss(
                out.logits, labels, time_mask.to(device), out.frame_mask, self.unmasked_weight
            )
        scalars = {
            "loss/masked": result.masked.detach(),
            "loss/unmasked": result.unmasked.detach(),
            "accuracy/masked": result.accuracy,
            "mask/fraction": (time_mask.sum() / frame_lengths.sum().cpu()).to(device).float(),
        }
        if self.mixing.prob:
            scalars["mix/fraction"] = torch.tensor(len(overlays) / len(batch.lengths), device=device)
        return StepLoss(result.total, scalars)

    def overlays(self, batch: MicroBatch) -> list[Overlay]:
        """The utterance overlays of ``batch`` (none when mixing is off): a function of (seed, step,
        micro-batch), so a resumed run draws the same."""
        rng = np.random.default_rng([self.seed, _MIX_SALT, batch.step, batch.micro])
        return self.mixing.plan(batch.lengths.tolist(), rng)

    def save_checkpoint(self, path: Path, step: int, loop_state: dict[str, Any]) -> None:
        """``Model`` (the whole pre-training model) and ``Config.pretrain`` (training time, threads,
        the cluster file's name) plus ``loop_state``."""
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        config = {
            "pretrain": {
                "elapsed_seconds": self.clock.elapsed_seconds,
                "threads": self.clock.threads,
                "clusters": CLUSTERS_FILE,
            }
        }
        payload = {"Model": state, "Config": config, "Step": int(step), **loop_state}
        atomic_write(path, lambda fh: torch.save(payload, fh))

    def load_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        if "Model" not in state:
            raise CheckpointFormatError(
                f"{path} has no pre-training 'Model' state: train.out_dir holds another kind of run"
            )
        self.model.load_state_dict(state["Model"])
        self.clock.restore(state["Config"]["pretrain"])


class TrainingClock:
    """Training wall time over every run of a job (resumes included) and the torch thread count of
    the training run, for the model card."""

    def __init__(self) -> None:
        self.before = 0.0
        self.threads = torch.get_num_threads()
        self.started = time.perf_counter()

    @property
    def elapsed_seconds(self) -> float:
        return self.before + time.perf_counter() - self.started

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's ``Config.pretrain`` (``elapsed_seconds``, ``threads``)."""
        self.before = float(saved["elapsed_seconds"])
        self.threads = int(saved.get("threads", self.threads))
        self.started = time.perf_counter()
