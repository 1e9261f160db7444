"""int8 quantisation of an exported ONNX model, checked against its fp32 original.

Two schemes (``INT8_SCHEMES``):
- ``dynamic``: only MatMul / Gemm weights are quantised, activations on the fly per batch; the CNN
  front end stays fp32.
- ``static-conv``: the same, plus the CNN convolutions (all but the first, which has one input
  channel and little work) quantised statically: per-channel int8 weights, uint8 activations with
  ranges calibrated on speech (QDQ format, which onnxruntime fuses into integer convolutions). The
  CNN is most of a student's work, and only int8 dot-product units (VNNI, AMX) make integer
  convolutions faster than fp32 ones.
``auto`` takes ``static-conv`` on a CPU with VNNI / AMX-INT8 units when it keeps every layer's
cosine >= ``MIN_COSINE`` against fp32, else ``dynamic``, and logs why.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustdistiller.atomic import atomic_path
from robustdistiller.errors import DataError, UsageError
from robustdistiller.runtime import OnnxModel

log = logging.getLogger(__name__)

QUANTIZE_MODES: tuple[str, ...] = ("int8",)
INT8_SCHEMES: tuple[str, ...] = ("auto", "dynamic", "static-conv")
QUANTIZED_OPS = ["MatMul", "Gemm"]
MIN_COSINE = 0.99
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
"""CPU flags of the int8 dot-product units onnxruntime's integer kernels use."""
CNN_CONV = re.compile(r"feature_extractor/conv_layers\.(\d+)\.0/Conv$")
"""How the exporter names block i's Conv node (``[/model]/feature_extractor/conv_layers.{i}.0/Conv``)."""


@dataclass
class QuantizeReport:
    path: Path
    scheme: str
    """The scheme used: "dynamic" or "static-conv"."""
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


def quantize_int8(
    source: str | Path, out: str | Path, *, scheme: str = "dynamic", calibration: Sequence[np.ndarray] | None = None
) -> QuantizeReport:
    """Write an int8-quantised copy of the exported model ``source`` to ``out`` (atomically).

    Args:
        source: an fp32 export (``export_onnx``).
        out: where the quantised model goes.
        scheme: one of ``INT8_SCHEMES`` (see the module docstring).
        calibration: mono 16 kHz float32 utterances for the static ranges; needed by
            ``static-conv`` and by ``auto`` on a CPU where it would pick ``static-conv``.

    Returns:
        The report with the per-layer cosine against ``source``. Logs the cosine, and warns
        below ``MIN_COSINE`` (``auto`` then falls back to ``dynamic``).
    """
    if scheme not in INT8_SCHEMES:
        raise UsageError(f"unknown int8 scheme {scheme!r}; choose from {', '.join(INT8_SCHEMES)}")
    source, out = Path(source), Path(out)
    chosen = _auto_scheme() if scheme == "auto" else scheme
    if chosen == "static-conv" and not calibration:
        raise UsageError("int8 scheme static-conv needs calibration audio (a non-empty list of utterances)")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = _quantize(source, out, chosen, calibration)
    if scheme == "auto" and chosen == "static-conv" and report.min_cosine < MIN_COSINE:
        log.info(
            "int8 auto: static-conv is inaccurate for this model (min cosine %.4f < %.2f): using dynamic",
            report.min_cosine,
            MIN_COSINE,
        )
        report = _quantize(source, out, "dynamic", None)
    log.info(
        "int8 (%s) vs fp32 cosine per layer: %s",
        report.scheme,
        ", ".join(f"{k}: {v:.4f}" for k, v in report.cosine.items()),
    )
    if report.min_cosine < MIN_COSINE:
        log.warning(
            "int8 model is far from fp32 (min cosine %.4f < %.2f): prefer the fp32 export",
            report.min_cosine,
            MIN_COSINE,
        )
    return report


def load_calibration(source: str | Path, max_utterances: int = 32, max_seconds: float = 10.0) -> list[np.ndarray]:
    """Utterances for static ranges from an audio folder or manifest, each cut to ``max_seconds``.

    Raises:
        FileNotFoundError: ``source`` is neither a folder nor a manifest file.
        ValueError: no utterance in ``source`` could be read (the reasons are listed).
    """
    from robustdistiller.data.audio import AudioError, load_audio
    from robustdistiller.data.manifest import read_inputs

    try:
        manifest, bad = read_inputs(source)
    except ValueError as exc:  # e.g. a folder without audio files
        raise DataError(f"calibration set {source}: {exc}") from None
    utterances: list[np.ndarray] = []
    reasons = [f"{b.path}: {b.reason}" for b in bad]
    for index in range(len(manifest)):
        if len(utterances) == max_utterances:
            break
        try:
            utterances.append(load_audio(manifest.abspath(index))[: int(max_seconds * 16000)])
        except AudioError as exc:
            reasons.append(str(exc))
    if not utterances:
        detail = f" ({'; '.join(reasons[:3])})" if reasons else ""
        raise DataError(
            f"calibration set {source} holds no readable audio{detail}; pass a folder or manifest "
            "of speech recordings with --calibration"
        )
    return utterances


def _auto_scheme() -> str:
    """``static-conv`` where the CPU has int8 dot-product units, else ``dynamic`` (logged either way)."""
    from robustdistiller.models.precision import cpu_flags

    units = [flag for flag in INT8_DOT_FLAGS if flag in cpu_flags()]
    if units:
        log.info("int8 auto: static-conv (the CPU has %s)", ", ".join(units))
        return "static-conv"
    log.info(
        "int8 auto: dynamic (no %s on this CPU: integer convolutions would be slower than fp32)",
        " / ".join(INT8_DOT_FLAGS),
    )
    return "dynamic"


def _quantize(source: Path, out: Path, scheme: str, calibration: Sequence[np.ndarray] | None) -> QuantizeReport:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(out) as tmp, _quiet_root_logger(), tempfile.TemporaryDirectory(dir=out.parent) as work:
        matmul_input = source
        if scheme == "static-conv":
            assert calibration is not None
            matmul_input = Path(work) / "conv-int8.onnx"
            _quantize_convs(source, matmul_input, calibration)
        # quantize_dynamic copies metadata_props, so the runtime still finds the layers and geometry.
        quantize_dynamic(matmul_input, tmp, op_types_to_quantize=QUANTIZED_OPS, weight_type=QuantType.QInt8)
    return QuantizeReport(out, scheme, compare_models(OnnxModel(source), OnnxModel(out)))


def _cnn_index(name: str) -> int:
    """Layer index of the CNN Conv node ``name`` (one that ``CNN_CONV`` matches)."""
    match = CNN_CONV.search(name)
    assert match is not None
    return int(match.group(1))


def _quantize_convs(source: Path, out: Path, calibration: Sequence[np.ndarray]) -> None:
    """Static QDQ quantisation of the CNN's convolutions but the first, ranges from ``calibration``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    convs = [n.name for n in onnx.load(str(source)).graph.node if n.op_type == "Conv"]
    cnn = sorted((n for n in convs if CNN_CONV.search(n)), key=_cnn_index)
    if len(cnn) < 2:
        raise ValueError(
            f"{source}: found {len(cnn)} CNN convolutions (Conv nodes named like "
            f"{CNN_CONV.pattern!r}); only robustdistiller exports can use static-conv"
        )
    quantize_static(
        source,
        out,
        _Calibration(calibration),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        nodes_to_exclude=[n for n in convs if n not in cnn[1:]],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        # averaged per-utterance ranges: one loud click in the calibration set must not widen them all
        extra_options={"CalibMovingAverage": True, "CalibMaxIntermediateOutputs": 8},
    )


class _Calibration:
    """onnxruntime's ``CalibrationDataReader`` protocol over utterances, one unpadded batch each."""

    def __init__(self, utterances: Sequence[np.ndarray]) -> None:
        self._feeds = iter(
            [{"wavs": np.asarray(u, dtype=np.float32)[None], "lengths": np.array([len(u)])} for u in utterances]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # onnxruntime logs one INFO line per tensor, and generic advice as warnings ("consider
    # pre-processing", "already quantized?" on the second pass), on the root logger.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)
