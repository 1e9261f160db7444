"""The enhancement term of RobustDistiller: a head on the student's features predicts a mask on the
noisy STFT, scored against the clean audio. Composed into the distillation objectives (DistilHuBERT
style and both pruning stages) as ``loss = distillation + weight x enhancement``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from robustdistiller.checkpoints.heads import head_weights, store_head
from robustdistiller.errors import CheckpointFormatError
from robustdistiller.models.enhancement import EnhancementConfig, EnhancementHead
from robustdistiller.train.losses import enhancement_loss
from robustdistiller.train.objective import LoopTools, MicroBatch

HEAD_NAME = "head"
"""The head's name among an objective's modules (DDP wrapper, optimizer parameter names)."""


class EnhancementTerm:
    """The head (built on ``device``) and its weighted loss.

    Args:
        config: the recipe's ``enhancement`` section (``use_enhancement`` true).
        device: where the head lives.
    """

    def __init__(self, config: EnhancementConfig, device: Any) -> None:
        self.config = config
        self.head = EnhancementHead(config).to(device)

    @classmethod
    def from_config(cls, config: EnhancementConfig, device: Any) -> EnhancementTerm | None:
        """The term when ``config.use_enhancement``, else None."""
        return cls(config, device) if config.use_enhancement else None

    def features(self, cnn_features: Tensor, last_hidden: Tensor) -> Tensor:
        """The head's input, ``(B, T, input_dim)``: the CNN features or the last layer, as configured."""
        return cnn_features if self.config.input == "cnn" else last_hidden

    def loss(self, features: Tensor, batch: MicroBatch, tools: LoopTools) -> tuple[Tensor, dict[str, Tensor]]:
        """``(weight x loss, scalars)`` of one micro-batch: the head reads ``features`` (B, T, C) and
        the noisy audio, the target is the clean audio."""
        with tools.phase("enhancement"), tools.autocast():
            out = tools.nets[HEAD_NAME](features, batch.noisy, batch.lengths)
            loss = enhancement_loss(self.head, out, batch.clean, batch.lengths, self.config.loss)
        return self.config.weight * loss, {"loss/enhancement": loss.detach()}

    def store(self, payload: dict[str, Any], fmt: str = "s3prl") -> None:
        """Put the head and its config into the checkpoint ``payload`` where format ``fmt`` keeps them
        (``checkpoints.heads``: the one layout ``evaluate`` and ``load`` read)."""
        store_head(payload, fmt, self.head)

    def load(self, state: dict[str, Any], path: Any, fmt: str = "s3prl") -> None:
        """Restore the head from a checkpoint's ``state`` (read from ``path``, format ``fmt``)."""
        weights = head_weights(state, fmt)
        if weights is None:
            raise CheckpointFormatError(
                f"{path} has no enhancement head but the recipe enables one "
                "(enhancement.use_enhancement=true): set it to false or start a new run"
            )
        self.head.load_state_dict(weights)
