"""Dynamic int8 quantisation of an exported ONNX model, checked against its fp32 original.

Only MatMul / Gemm weights are quantised (activations are quantised on the fly per batch): that is
where a Transformer spends its time, while onnxruntime's int8 convolutions are slower on CPU than
its fp32 ones, so the CNN front end stays fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustdistiller.runtime import OnnxModel

log = logging.getLogger(__name__)

QUANTIZE_MODES: tuple[str, ...] = ("int8",)
QUANTIZED_OPS = ["MatMul", "Gemm"]
MIN_COSINE = 0.99


@dataclass
class QuantizeReport:
    path: Path
    cosine: dict[int, float]
    """Exported layer index -> mean cosine similarity (int8 vs fp32) over valid frames."""

    @property
    def min_cosine(self) -> float:
        return min(self.cosine.values())


def frame_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the cosine similarity between ``a[i]`` and ``b[i]`` (``[N, D]`` each)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(np.mean((a64 * b64).sum(1) / np.maximum(norms, 1e-12)))


def compare_models(reference: OnnxModel, candidate: OnnxModel, seed: int = 0) -> dict[int, float]:
    """Per-layer mean frame cosine of ``candidate`` against ``reference`` on the verification batches."""
    from robustdistiller.export.onnx import valid_frames, verification_batches

    sums = dict.fromkeys(reference.layers, 0.0)
    batches = verification_batches(reference.geometry, seed)
    for wavs, lengths in batches:
        frames = reference.frame_lengths(lengths)
        for layer, r, c in zip(reference.layers, reference.extract(wavs, lengths), candidate.extract(wavs, lengths)):
            sums[layer] += frame_cosine(valid_frames(r, frames), valid_frames(c, frames))
    return {layer: total / len(batches) for layer, total in sums.items()}


def quantize_int8(source: str | Path, out: str | Path) -> QuantizeReport:
    """Write a dynamically int8-quantised copy of the exported model ``source`` to ``out``.

    Logs the per-layer cosine similarity against ``source`` and warns below ``MIN_COSINE``.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, out = Path(source), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # onnxruntime logs one INFO line per tensor on the root logger; keep the CLI's output readable.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        # quantize_dynamic copies metadata_props, so the runtime still finds the layers and geometry.
        quantize_dynamic(source, out, op_types_to_quantize=QUANTIZED_OPS, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    report = QuantizeReport(out, compare_models(OnnxModel(source), OnnxModel(out)))
    log.info("int8 vs fp32 cosine per layer: %s", ", ".join(f"{k}: {v:.4f}" for k, v in report.cosine.items()))
    if report.min_cosine < MIN_COSINE:
        log.warning("int8 model is far from fp32 (min cosine %.4f < %.2f): prefer the fp32 export", report.min_cosine, MIN_COSINE)
    return report
