"""Probe heads on stacked hidden states ``[B, L, T, D]``: the s3prl-style weighted layer sum, an
utterance classifier (mean over valid frames) and a CTC recogniser (per frame, index 0 = blank)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from robustdistiller.models.conv import lengths_to_mask


class WeightedLayerSum(nn.Module):
    """Softmax-weighted sum of stacked hidden states, weights starting uniform (s3prl Featurizer)."""

    def __init__(self, num_layers: int, layer_norm: bool = False) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.layer_norm = layer_norm

    def forward(self, feats: Tensor) -> Tensor:
        """[B, L, T, D] -> [B, T, D]."""
        if feats.shape[1] != self.weights.shape[0]:
            raise ValueError(f"expected {self.weights.shape[0]} layers, got {feats.shape[1]}")
        if self.layer_norm:
            feats = F.layer_norm(feats, feats.shape[-1:])
        return torch.einsum("l,bltd->btd", torch.softmax(self.weights, dim=0), feats)

    def layer_weights(self) -> list[float]:
        return torch.softmax(self.weights.detach(), dim=0).tolist()


class UtteranceClassifier(nn.Module):
    """Weighted layer sum -> mean over valid frames -> linear (``hidden=0``) or 1-hidden-layer MLP."""

    def __init__(self, num_layers: int, dim: int, num_classes: int, hidden: int = 0, layer_norm: bool = False):
        super().__init__()
        self.featurizer = WeightedLayerSum(num_layers, layer_norm)
        if hidden > 0:
            self.head: nn.Module = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        else:
            self.head = nn.Linear(dim, num_classes)

    def forward(self, feats: Tensor, frame_lengths: Tensor) -> Tensor:
        """[B, L, T, D], [B] -> logits [B, C]."""
        x = self.featurizer(feats)
        mask = lengths_to_mask(frame_lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


class CTCProbe(nn.Module):
    """Weighted layer sum -> BiLSTM (``hidden`` units per direction) or linear -> CTC log-probs.

    Output index 0 is the blank.
    """

    def __init__(self, num_layers: int, dim: int, num_classes: int, hidden: int = 0, layer_norm: bool = False):
        super().__init__()
        self.featurizer = WeightedLayerSum(num_layers, layer_norm)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True) if hidden > 0 else None
        self.out = nn.Linear(2 * hidden if hidden > 0 else dim, num_classes)

    def forward(self, feats: Tensor, frame_lengths: Tensor) -> Tensor:
        """[B, L, T, D], [B] -> log-probabilities [B, T, C]."""
        x = self.featurizer(feats)
        if self.lstm is not None:
            # Packing keeps padding out of the backward direction's state.
            packed = pack_padded_sequence(x, frame_lengths.cpu(), batch_first=True, enforce_sorted=False)
            x, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
        return F.log_softmax(self.out(x), dim=-1)

    @staticmethod
    def greedy_decode(log_probs: Tensor, frame_lengths: Tensor) -> list[list[int]]:
        """Best path: argmax per frame, merge repeats, drop blanks."""
        best = log_probs.argmax(-1).cpu()
        out = []
        for row, n in zip(best, frame_lengths.tolist()):
            tokens = torch.unique_consecutive(row[:n]).tolist()
            out.append([t for t in tokens if t != 0])
        return out
