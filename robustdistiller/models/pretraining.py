"""HuBERT-style masked-prediction model: an ordinary :class:`TeacherModel` plus the parts that only
pre-training uses (mask embedding, final projection, cluster embeddings), and span masking.

Prediction follows HuBERT: the last layer is projected to ``final_dim``; the logit of cluster
``c`` at frame ``t`` is ``cos(proj(x_t), e_c) / logit_temp``. Only the ``encoder`` (a
:class:`TeacherModel`) is exported as the teacher (``checkpoints.teachers.save_teacher``); the mask
embedding goes along as Hugging Face's ``masked_spec_embed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .teacher import TeacherConfig, TeacherModel


def span_mask(
    frame_lengths: Tensor, num_frames: int, mask_prob: float, mask_length: int, rng: np.random.Generator
) -> Tensor:
    """HuBERT / wav2vec 2.0 span masking (fairseq ``compute_mask_indices``, "static" lengths).

    Per utterance of ``n`` valid frames: ``round(mask_prob * n / mask_length + u)`` span starts
    (``u`` uniform in [0, 1), for unbiased rounding; at least one), drawn without replacement from
    ``[0, n - mask_length]``; each masks ``mask_length`` frames. Spans may overlap, so the masked
    fraction is below ``mask_prob`` (about 0.5 for 0.8 and length 10).

    Args:
        frame_lengths: (B,) valid frames per row.
        num_frames: T, the padded frame count.
        mask_prob: expected fraction of frames that start a span, times ``mask_length``.
        mask_length: frames per span.
        rng: the only source of randomness (seeded per step by the caller, so resumes repeat it).

    Returns:
        (B, T) bool, True = masked; padded frames are never masked.
    """
    mask = np.zeros((len(frame_lengths), num_frames), dtype=bool)
    for row, n in enumerate(frame_lengths.tolist()):
        span = min(mask_length, n)
        count = max(1, int(mask_prob * n / mask_length + rng.random()))
        starts = rng.choice(n - span + 1, size=min(count, n - span + 1), replace=False)
        for start in starts:
            mask[row, start : start + span] = True
    return torch.from_numpy(mask)


@dataclass
class PretrainOutput:
    logits: Tensor
    """(B, T, K) cosine similarities to the K cluster embeddings over the temperature."""
    frame_mask: Tensor
    """(B, T) bool, True = valid frame."""


class HubertPretrainModel(nn.Module):
    """``encoder`` (the future teacher) + ``mask_emb`` (D), ``final_proj`` (D -> final_dim) and
    ``label_embs`` (K, final_dim)."""

    def __init__(
        self,
        config: TeacherConfig,
        num_clusters: int,
        *,
        final_dim: int = 256,
        logit_temp: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = TeacherModel(config, dropout=dropout)
        self.logit_temp = logit_temp
        self.mask_emb = nn.Parameter(torch.empty(config.embed_dim).uniform_())  # as fairseq
        self.final_proj = nn.Linear(config.embed_dim, final_dim)
        self.label_embs = nn.Parameter(torch.empty(num_clusters, final_dim).uniform_())

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return self.encoder.frame_lengths(lengths)

    def forward(self, wavs: Tensor, lengths: Tensor, time_mask: Tensor | None = None) -> PretrainOutput:
        """``wavs`` (B, L) with ``lengths`` (B,); frames where ``time_mask`` (B, T) is True are
        replaced by the mask embedding before the Transformer."""
        inputs = self.encoder.embed(wavs, lengths)
        if time_mask is not None:
            x = inputs.embedded
            inputs = inputs._replace(embedded=torch.where(time_mask[..., None], self.mask_emb.to(x.dtype), x))
        out = self.encoder.encode(inputs)
        # cosine similarity as a product of unit vectors: no (B, T, K, final_dim) broadcast
        proj = F.normalize(self.final_proj(out.last_hidden_state).float(), dim=-1)
        logits = proj @ F.normalize(self.label_embs.float(), dim=-1).T
        return PretrainOutput(logits / self.logit_temp, out.frame_mask)
