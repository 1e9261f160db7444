"""ONNX export of any model with ``extract(wavs, lengths)`` and ``frame_lengths(lengths)``.

The graph takes ``wavs`` float32 ``[B, L]`` and ``lengths`` int64 ``[B]`` (both axes dynamic) and
returns the selected hidden states ``[B, T, D]`` plus ``frame_lengths`` ``[B]``; the padding mask is
computed inside the graph from ``lengths``, exactly as the PyTorch model does.

Why the TorchScript-tracing exporter (``dynamo=False``): the dynamo exporter stops at the models'
data-dependent input checks (``if (lengths > L).any(): raise``). Tracing records one branch of each
data-dependent ``if``; the models only branch on "is anything padded?", and the padded branch is
also exact without padding, so we always trace a *padded* batch. Shapes are not baked in (sizes are
read with ``Shape`` ops); :func:`verify_onnx` proves it on every export by comparing onnxruntime with
PyTorch at several lengths and batch sizes other than the traced one.

Works unchanged for students, teachers and pruned students (per-layer head / FFN sizes): it only
uses ``extract`` and ``frame_lengths``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
from torch import Tensor, nn

from robustdistiller.atomic import atomic_path
from robustdistiller.errors import CheckpointFormatError, UsageError
from robustdistiller.runtime import (
    FRAME_LENGTHS_OUTPUT,
    META_GEOMETRY,
    META_LAYERS,
    META_SAMPLE_RATE,
    FrameGeometry,
    OnnxModel,
)

log = logging.getLogger(__name__)

OPSET = 17
SAMPLE_RATE = 16000
# fp32 parity bound, relative to the largest reference activation (teachers have a few large dims).
FP32_TOLERANCE = 1e-4


class Extractor(Protocol):
    def extract(self, wavs: Tensor, lengths: Tensor) -> list[Tensor]: ...

    def frame_lengths(self, lengths: Tensor) -> Tensor: ...


def as_extractor(model: nn.Module) -> Extractor:
    """``model`` (a student, teacher or pruned model) as the :class:`Extractor` it is; nn.Module's
    attribute typing cannot see ``extract`` / ``frame_lengths``."""
    return cast(Extractor, model)


@dataclass
class OnnxExportReport:
    path: Path
    layers: list[int]
    geometry: FrameGeometry
    max_abs_diff: float
    """Largest |onnxruntime - PyTorch| over valid frames of the verification batches."""
    checked_shapes: list[tuple[int, int]] = field(default_factory=list)
    """(batch, samples) of each verification batch."""


class _Outputs(nn.Module):
    """Selected hidden states + frame lengths as a flat tuple (what the ONNX graph returns)."""

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.layers = list(layers)

    def forward(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        model = as_extractor(self.model)
        hidden = model.extract(wavs, lengths)
        return (*(hidden[i] for i in self.layers), model.frame_lengths(lengths))


def frame_geometry(model: Extractor, max_samples: int = 200_000) -> FrameGeometry:
    """Receptive field and stride read off ``model.frame_lengths`` (checked against it up to ``max_samples``)."""
    samples = torch.arange(1, max_samples + 1)
    frames = model.frame_lengths(samples).to(torch.long)
    first = torch.nonzero(frames >= 1)
    second = torch.nonzero(frames >= 2)
    if len(first) == 0 or len(second) == 0:
        raise ValueError(f"the model emits fewer than 2 frames for {max_samples} samples")
    receptive = int(samples[first[0, 0]])
    geometry = FrameGeometry(receptive, int(samples[second[0, 0]]) - receptive)
    if not torch.equal(torch.from_numpy(geometry.frames(samples.numpy())), frames):
        raise ValueError("model.frame_lengths is not a strided-convolution length formula; cannot export")
    return geometry


def resolve_layers(available: int, layers: Sequence[int] | None) -> list[int]:
    """Indices into ``extract``'s list (negative counts from the end); None = all, in order."""
    if layers is None:
        return list(range(available))
    resolved = []
    for index in layers:
        if not -available <= index < available:
            raise UsageError(
                f"layer {index} out of range: the model has {available} hidden states (0..{available - 1})"
            )
        resolved.append(index % available)
    if len(set(resolved)) != len(resolved) or not resolved:
        raise UsageError(f"layers must be a non-empty list without repeats, got {list(layers)}")
    return resolved


def _example(geometry: FrameGeometry) -> tuple[Tensor, Tensor]:
    # Padded on purpose: tracing keeps the masked code paths, which are also exact without padding.
    long = max(SAMPLE_RATE, geometry.samples_for(8))
    short = max(geometry.receptive_field, long * 3 // 5)
    wavs = 0.1 * torch.randn(2, long, generator=torch.Generator().manual_seed(0))
    wavs[1, short:] = 0.0
    return wavs, torch.tensor([long, short])


def export_onnx(
    model: nn.Module, out: str | Path, *, layers: Sequence[int] | None = None, opset: int = OPSET, verify: bool = True
) -> OnnxExportReport:
    """Export ``model`` in eval mode to a single ``.onnx`` file and check it against PyTorch.

    The model is left in eval mode (the exporter re-applies the wrapper's train/eval flag afterwards).
    """
    out = Path(out)
    model.eval()
    geometry = frame_geometry(as_extractor(model))
    wavs, lengths = _example(geometry)
    with torch.inference_mode():
        available = len(as_extractor(model).extract(wavs, lengths))
    chosen = resolve_layers(available, layers)
    names = [f"hidden_{i}" for i in chosen]
    dynamic: dict[str, dict[int, str]] = {"wavs": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}}
    dynamic.update({n: {0: "batch", 1: "frames"} for n in names})
    dynamic[FRAME_LENGTHS_OUTPUT] = {0: "batch"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings about the data-dependent `if`s are expected: see the module docstring.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Outputs(model, chosen).eval(),
            (wavs, lengths),
            str(out),
            input_names=["wavs", "lengths"],
            output_names=[*names, FRAME_LENGTHS_OUTPUT],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    _write_metadata(out, chosen, geometry)
    report = OnnxExportReport(out, chosen, geometry, max_abs_diff=float("nan"))
    if verify:
        report.max_abs_diff, report.checked_shapes = verify_onnx(model, out)
    return report


def _write_metadata(path: Path, layers: list[int], geometry: FrameGeometry) -> None:
    import onnx

    proto = onnx.load(str(path))
    values = {META_LAYERS: json.dumps(layers), META_GEOMETRY: geometry.to_json(), META_SAMPLE_RATE: str(SAMPLE_RATE)}
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))  # < 2 GB for every supported model, so one file without external data


def verification_batches(geometry: FrameGeometry, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three padded lengths x two batch sizes, none equal to the traced example's shapes."""
    rng = np.random.default_rng(seed)
    batches = []
    for padded in rng.integers(geometry.samples_for(3), 3 * SAMPLE_RATE, size=3):
        for batch in (1, 3):
            lengths = np.concatenate([[padded], rng.integers(geometry.receptive_field, padded, size=batch - 1)])
            wavs = (0.1 * rng.standard_normal((batch, int(padded)))).astype(np.float32)
            wavs[np.arange(padded)[None, :] >= lengths[:, None]] = 0.0
            batches.append((wavs, lengths.astype(np.int64)))
    return batches


def valid_frames(hidden: np.ndarray, frame_lengths: np.ndarray) -> np.ndarray:
    """``[N, D]`` rows of the frames inside each utterance."""
    return np.concatenate([hidden[b, : int(n)] for b, n in enumerate(frame_lengths)])


def verify_onnx(model: nn.Module, path: Path, seed: int = 0) -> tuple[float, list[tuple[int, int]]]:
    """Max |onnxruntime - PyTorch| over valid frames; raises ValueError above the fp32 bound."""
    session = OnnxModel(path)
    worst, scale, shapes = 0.0, 1.0, []
    for wavs, lengths in verification_batches(session.geometry, seed):
        with torch.inference_mode():
            reference = as_extractor(model).extract(torch.from_numpy(wavs), torch.from_numpy(lengths))
        expected = [reference[i].float().numpy() for i in session.layers]
        got = session.extract(wavs, lengths)
        frames = session.frame_lengths(lengths)
        for e, g in zip(expected, got):
            if e.shape != g.shape:
                raise ValueError(f"{path}: ONNX output shape {g.shape} != PyTorch {e.shape} for input {wavs.shape}")
            ev, gv = valid_frames(e, frames), valid_frames(g, frames)
            # max() ignores NaN (every comparison with it is False): a NaN model would pass as verified.
            if not (np.isfinite(ev).all() and np.isfinite(gv).all()):
                raise CheckpointFormatError(
                    f"{path}: the model outputs NaN/inf values (damaged or diverged weights?); "
                    "check it with `robustdistiller info`"
                )
            worst = max(worst, float(np.abs(ev - gv).max()))
            scale = max(scale, float(np.abs(ev).max()))
        shapes.append(wavs.shape)
    if worst > FP32_TOLERANCE * scale:
        raise ValueError(f"{path}: ONNX differs from PyTorch by {worst:.3g} (bound {FP32_TOLERANCE * scale:.3g})")
    log.info("onnx export verified on %d batches: max abs diff %.3g", len(shapes), worst)
    return worst, shapes


def export_onnx_file(
    source: Path,
    out: Path,
    *,
    layers: Sequence[int] | None = None,
    quantize: str | None = None,
    int8_scheme: str | None = None,
    calibration: str | Path | None = None,
) -> Path:
    """The ``export --format onnx`` entry point: load ``source`` with ``robustdistiller.load``, export
    (fp32, verified), and with ``quantize="int8"`` write the quantised model to ``out`` instead.

    ``int8_scheme`` (default "auto") and ``calibration`` (an audio folder or manifest; default the
    built-in synthetic speech) are described in ``robustdistiller.export.quantize``; the calibration
    set is read before anything is exported, so a bad one fails fast.
    """
    from robustdistiller.checkpoints.load import check_finite_weights, load
    from robustdistiller.export.quantize import INT8_SCHEMES, QUANTIZE_MODES, quantize_int8

    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise UsageError(f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZE_MODES)}")
    if quantize is None and (int8_scheme is not None or calibration is not None):
        raise UsageError("--int8-scheme and --calibration apply to int8 exports; add --int8")
    scheme = int8_scheme or "auto"
    if scheme not in INT8_SCHEMES:
        raise UsageError(f"unknown int8 scheme {scheme!r}; choose from {', '.join(INT8_SCHEMES)}")
    utterances = calibration_audio(calibration) if quantize is not None and scheme != "dynamic" else None
    model = load(source, precision="fp32")  # the graph is traced, and verified, in fp32
    check_finite_weights(model, source)
    # Written and verified under a temp name, then renamed: a failed export (full disk, NaN outputs)
    # leaves the previous file at ``out`` whole.
    with atomic_path(out) as tmp:
        if quantize is None:
            export_onnx(model, tmp, layers=layers)
        else:
            with tempfile.TemporaryDirectory(dir=out.parent) as folder:
                fp32 = Path(folder) / "fp32.onnx"
                export_onnx(model, fp32, layers=layers)
                quantize_int8(fp32, tmp, scheme=scheme, calibration=utterances)
    return out


def calibration_audio(calibration: str | Path | None) -> list[np.ndarray]:
    """Utterances from ``calibration``, or the built-in synthetic speech when it is None (logged)."""
    from robustdistiller.export.quantize import load_calibration
    from robustdistiller.models.precision import accuracy_batch

    if calibration is not None:
        return load_calibration(calibration)
    log.info(
        "int8 calibration on the built-in synthetic speech; pass --calibration with recordings "
        "like the ones you will run on for the most accurate ranges"
    )
    wavs, lengths = accuracy_batch()
    return [wavs[b, :n].numpy() for b, n in enumerate(lengths.tolist())]
