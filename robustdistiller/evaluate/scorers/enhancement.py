"""Enhancement scorer: PESQ-wb, STOI and SI-SNR of a model's enhancement head, per corrupted condition
(on the first ``max_utterances`` test utterances) and on real noisy / clean pairs (VoiceBank+DEMAND)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustdistiller.data.audio import SAMPLE_RATE, AudioError, load_audio
from robustdistiller.data.report import BadFileReport
from robustdistiller.errors import DataError
from robustdistiller.evaluate.metrics import pesq_wb, si_snr, stoi
from robustdistiller.evaluate.models import ModelUnderTest
from robustdistiller.evaluate.results import mean_of
from robustdistiller.evaluate.rows import EnhancementRow
from robustdistiller.evaluate.scorers.base import Observation, Scorer, ScoringContext

Pair = tuple[np.ndarray, np.ndarray]  # (clean [L], noisy [L]) float32 16 kHz
METRICS = ("pesq_wb", "stoi", "si_snr")  # the keys of _metrics; the noisy input's get a "noisy_" prefix


@torch.no_grad()
def _enhance(entry: ModelUnderTest, noisy: np.ndarray) -> np.ndarray:
    """The head's estimate of the clean signal, [L] -> [L]."""
    x = torch.from_numpy(noisy)[None]
    lengths = torch.tensor([x.shape[1]])
    out = entry.model(x, lengths)
    # A student's output lists its layers (``hiddens``); a pruned DPHuBERT model's names the last one.
    last = out.hiddens[-1] if hasattr(out, "hiddens") else out.last_hidden_state
    feats = out.cnn_features if entry.enhancement_input == "cnn" else last
    return entry.enhancement.enhance(feats, x, lengths)[0].numpy()  # type: ignore[union-attr]


def _metrics(clean: np.ndarray, signal: np.ndarray) -> dict[str, float | None]:
    """PESQ-wb, STOI and SI-SNR of ``signal`` against ``clean`` (None where a metric cannot score it)."""
    return {
        "pesq_wb": pesq_wb(clean, signal),
        "stoi": stoi(clean, signal, SAMPLE_RATE),
        "si_snr": si_snr(signal, clean),
    }


def noisy_scores(pairs: list[Pair]) -> dict[str, float | None]:
    """Mean metrics of the noisy input itself, ``noisy_*`` keys (the reference every head is compared with)."""
    per_pair = [_metrics(clean, noisy) for clean, noisy in pairs]
    return {f"noisy_{k}": mean_of([m[k] for m in per_pair]) for k in METRICS}


def enhancement_row(
    entry: ModelUnderTest,
    dataset: str,
    condition: str,
    pairs: list[Pair],
    noisy: dict[str, float | None] | None = None,
) -> EnhancementRow:
    """Mean PESQ-wb / STOI / SI-SNR of the model's enhancement head on (clean, noisy) pairs, and of the
    noisy input itself (unscorable utterances count as missing).

    Args:
        noisy: :func:`noisy_scores` of these ``pairs`` when already known (they depend on the audio only).
    """
    per_pair = [_metrics(clean, _enhance(entry, noisy_wav)) for clean, noisy_wav in pairs]
    means = {k: mean_of([m[k] for m in per_pair]) for k in METRICS}
    means.update(noisy if noisy is not None else noisy_scores(pairs))
    improvement = (
        None if means["si_snr"] is None or means["noisy_si_snr"] is None else means["si_snr"] - means["noisy_si_snr"]
    )
    return EnhancementRow(
        model=entry.name, dataset=dataset, condition=condition, n=len(pairs), **means, si_snr_improvement=improvement
    )


def voicebank_pairs(folder: str | Path, report: BadFileReport) -> list[Pair]:
    """Real (clean, noisy) pairs from ``folder/{clean,noisy}/<same name>``; unusable pairs are reported."""
    folder = Path(folder)
    clean_dir, noisy_dir = folder / "clean", folder / "noisy"
    if not clean_dir.is_dir() or not noisy_dir.is_dir():
        raise FileNotFoundError(f"{folder} must hold clean/ and noisy/ folders with the same file names")
    pairs = []
    for clean_path in sorted(clean_dir.glob("*.wav")):
        noisy_path = noisy_dir / clean_path.name
        try:
            clean, noisy = load_audio(clean_path), load_audio(noisy_path)
        except AudioError as exc:
            report.add(exc.path, exc.reason, exc.detail)
            continue
        if clean.shape != noisy.shape:
            report.add(noisy_path, "length_mismatch", f"{noisy.shape[0]} vs clean {clean.shape[0]} samples")
            continue
        pairs.append((clean, noisy))
    if not pairs:
        raise DataError(f"no usable clean/noisy pairs under {folder}")
    return pairs


class EnhancementScorer(Scorer):
    """One row per (model with an enhancement head, corrupted condition), plus one on ``real_pairs``."""

    name = "enhancement"

    def __init__(
        self, max_utterances: int, real_pairs: list[Pair] | None = None, real_dataset: str = "voicebank_demand"
    ) -> None:
        self.max_utterances = max_utterances  # per condition; 0 = no condition rows
        self.real_pairs, self.real_dataset = real_pairs, real_dataset
        # condition id (or "real") -> noisy_scores of its pairs: the same audio for every model, so PESQ
        # and STOI of the input run once per condition, not once per model with a head.
        self._noisy: dict[str, dict[str, float | None]] = {}

    def score(self, entry: ModelUnderTest, seen: Observation, ctx: ScoringContext) -> list[EnhancementRow]:
        if entry.enhancement is None or seen.condition.kind == "clean" or not self.max_utterances:
            return []
        uids = ctx.test_uids[: self.max_utterances]
        pairs = [(ctx.wavs[u], seen.wavs[u]) for u in uids]
        return [
            enhancement_row(entry, "conditions", seen.condition.id, pairs, self._noisy_of(seen.condition.id, pairs))
        ]

    def score_model(self, entry: ModelUnderTest, ctx: ScoringContext) -> list[EnhancementRow]:
        if entry.enhancement is None or self.real_pairs is None:
            return []
        return [
            enhancement_row(entry, self.real_dataset, "real", self.real_pairs, self._noisy_of("real", self.real_pairs))
        ]

    def _noisy_of(self, key: str, pairs: list[Pair]) -> dict[str, float | None]:
        if key not in self._noisy:
            self._noisy[key] = noisy_scores(pairs)
        return self._noisy[key]
