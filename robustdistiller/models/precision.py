"""Reduced-precision CPU inference: can this CPU run bf16 fast, and does a model stay accurate in it?

A model that has a ``precision`` attribute (student, teacher wrapper, pruned model) runs its
``extract`` under ``torch.autocast("cpu", torch.bfloat16)`` when it is ``"bf16"``: matrix products
go to oneDNN's AMX / AVX512-BF16 kernels, the CNN front end computes each convolution as a matrix
product (``models/conv.py``), norm statistics and the returned hidden states stay fp32. ``"fp32"``
(the default) leaves every computation exactly as it was.

:func:`use_precision` resolves ``fp32 | bf16 | auto`` for one model on the CPU at hand and logs
the choice once: ``bf16`` falls back to fp32 (one log line, never an error) on a CPU without bf16
units; ``auto`` takes bf16 only when the CPU has the units and every hidden state keeps a mean frame
cosine >= :data:`MIN_COSINE` against fp32 on a padded, mixed-length batch of synthetic speech. The
choice does not time anything: with AMX or AVX512-BF16 units bf16 matrix products are several
times faster than fp32 ones (``bench/inference.py`` prints by how much), and a timing on a busy
machine would make the choice, and so the features written, change from run to run.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
from torch import Tensor, nn

from robustdistiller.data.corpus import SPEAKERS, WORDS, synthesize_utterance

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")
MIN_COSINE = 0.99
"""Smallest per-layer mean frame cosine (reduced precision vs fp32) ``auto`` accepts."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (``/proc/cpuinfo``); empty where that file is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the machine type where that is unavailable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_units() -> str | None:
    """Name of the CPU's bf16 matrix units that torch's oneDNN kernels use, or None without them."""
    if not torch.backends.mkldnn.is_available():
        return None
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def check_precision(value: str, key: str = "precision") -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else a ValueError naming ``key`` and the closest match."""
    if value in PRECISIONS:
        return value
    close = difflib.get_close_matches(str(value), PRECISIONS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{key} must be one of {', '.join(PRECISIONS)}, got {value!r}{hint}")


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The context a forward in ``precision`` ("fp32" | "bf16") runs under; fp32 changes nothing."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def as_fp32(hidden: list[Tensor]) -> list[Tensor]:
    """Hidden states as fp32 (fp32 tensors are returned as they are, not copied)."""
    return [h.float() for h in hidden]


class PrecisionModel(Protocol):
    """What the precision choice needs of a model (students, teacher wrappers and pruned models have it)."""

    precision: str
    """"fp32" or "bf16": what ``extract`` runs in."""

    def extract(self, wavs: Tensor, lengths: Tensor) -> list[Tensor]:
        """Hidden states ``[B, T, D]`` of the ``(B, L)`` batch ``wavs`` with ``lengths`` ``(B,)`` valid samples."""
        ...

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Valid frames ``(B,)`` of utterances of ``lengths`` ``(B,)`` samples."""
        ...


@dataclass(frozen=True)
class PrecisionChoice:
    """What a model runs in, and why."""

    precision: str
    """"fp32" or "bf16"."""
    reason: str
    min_cosine: float | None = None
    """Worst per-layer mean frame cosine of bf16 vs fp32 on the check batch (None: not checked)."""


def choose_precision(model: PrecisionModel, requested: str) -> PrecisionChoice:
    """Resolve ``requested`` ("fp32" | "bf16" | "auto") for ``model`` on this CPU; see the module docstring.

    Args:
        model: a model with ``extract(wavs [B, L], lengths [B]) -> list[Tensor[B, T, D]]``,
            ``frame_lengths`` and a ``precision`` attribute (left unchanged here).
        requested: the user's setting.

    Returns:
        The precision to use and a one-line reason.
    """
    check_precision(requested)
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32 requested")
    units = bf16_units()
    if units is None:
        return PrecisionChoice(
            "fp32",
            f"{requested} requested, but this CPU has no bf16 units "
            "(neither amx_bf16 nor avx512_bf16, or torch lacks oneDNN): using fp32",
        )
    if requested == "bf16":
        return PrecisionChoice("bf16", f"bf16 requested; the CPU has {units}")
    wavs, lengths = accuracy_batch()
    worst = min(layer_cosines(model, wavs, lengths, "bf16"))
    if worst < MIN_COSINE:
        return PrecisionChoice(
            "fp32",
            f"auto: bf16 is inaccurate for this model (min layer cosine {worst:.4f} < {MIN_COSINE}): using fp32",
            worst,
        )
    return PrecisionChoice("bf16", f"auto: bf16 on {units}, min layer cosine {worst:.4f} against fp32", worst)


def use_precision(model: nn.Module, requested: str) -> PrecisionChoice:
    """Choose ``model``'s precision (:func:`choose_precision`), set ``model.precision`` and log why, once."""
    if not hasattr(model, "precision"):
        raise TypeError(f"{type(model).__name__} has no 'precision' attribute; it cannot run in reduced precision")
    # checked above; mypy reads any attribute of an nn.Module as a Tensor or Module
    reducible = cast(PrecisionModel, model)
    choice = choose_precision(reducible, requested)
    reducible.precision = choice.precision
    if requested != "fp32":
        log.info("%s runs in %s: %s", type(model).__name__, choice.precision, choice.reason)
    return choice


@contextlib.contextmanager
def precision_of(model: PrecisionModel, precision: str) -> Iterator[None]:
    """Temporarily run ``model`` in ``precision`` (for comparisons); its own setting is restored."""
    previous = model.precision
    model.precision = precision
    try:
        yield
    finally:
        model.precision = previous


def layer_cosines(model: PrecisionModel, wavs: Tensor, lengths: Tensor, precision: str) -> list[float]:
    """Per hidden state: mean over valid frames of the cosine between ``precision`` and fp32 outputs.

    Args:
        model: a model with ``extract``, ``frame_lengths`` and ``precision``.
        wavs: ``(B, L)`` zero-padded batch.
        lengths: ``(B,)`` valid samples.
        precision: the precision to compare with fp32.

    Returns:
        One mean cosine per hidden state of ``extract``.
    """
    with torch.inference_mode():
        with precision_of(model, "fp32"):
            reference = model.extract(wavs, lengths)
        with precision_of(model, precision):
            candidate = model.extract(wavs, lengths)
        valid = model.frame_lengths(lengths).tolist()
        cosines = []
        for ref, cand in zip(reference, candidate):
            rows = [
                torch.cosine_similarity(ref[b, :n].double(), cand[b, :n].double(), dim=-1) for b, n in enumerate(valid)
            ]
            cosines.append(float(torch.cat(rows).mean()))
    return cosines


def accuracy_batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    """Three synthetic-speech utterances (about 4, 2.5 and 1 s, one speaker each), zero-padded.

    Speech rather than noise: quiet stretches and formant structure are where low precision shows.
    """
    rng = np.random.default_rng(seed)
    words, speakers = list(WORDS), list(SPEAKERS)
    rows: list[np.ndarray] = []
    for seconds in (4.0, 2.5, 1.0):
        speaker = speakers[len(rows) % len(speakers)]
        parts: list[np.ndarray] = []
        while sum(len(p) for p in parts) < seconds * 16000:
            parts.append(synthesize_utterance(words[rng.integers(len(words))], speaker, rng))
        rows.append(np.concatenate(parts)[: int(seconds * 16000)])
    lengths = torch.tensor([len(r) for r in rows])
    wavs = torch.zeros(len(rows), int(lengths.max()))
    for b, row in enumerate(rows):
        wavs[b, : len(row)] = torch.from_numpy(row)
    return wavs, lengths
