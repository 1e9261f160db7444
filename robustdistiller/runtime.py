"""Run an exported ONNX model with onnxruntime only: no torch needed at inference time.

``OnnxModel(path).extract(wavs, lengths)`` mirrors the PyTorch models' ``extract`` with numpy in and
out: ``wavs`` float32 ``[B, L]`` (zero-padded), ``lengths`` int64 ``[B]`` -> one float32
``[B, T, D]`` array per exported layer. The export (``robustdistiller.export.onnx``) stores which
layers the file holds and the CNN's frame geometry in the ONNX metadata, read back here.

This module must not import torch (directly or through other ``robustdistiller`` modules).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustdistiller.errors import CheckpointFormatError, UsageError

# Keys of the ONNX ``metadata_props`` written by the exporter.
META_LAYERS = "robustdistiller.layers"
META_GEOMETRY = "robustdistiller.frame_geometry"
META_SAMPLE_RATE = "robustdistiller.sample_rate"
FRAME_LENGTHS_OUTPUT = "frame_lengths"


@dataclass(frozen=True)
class FrameGeometry:
    """How samples map to frames: ``frames = max(0, (samples - receptive_field) // stride + 1)``.

    A stack of strided convolutions ``floor((len - k) / s) + 1`` collapses exactly to this form
    (nested floors of integer divisions compose), so two numbers describe any wav2vec2-style CNN.
    Frame ``t`` sees samples ``[t * stride, t * stride + receptive_field)``.
    """

    receptive_field: int
    stride: int

    def __post_init__(self) -> None:
        if self.receptive_field < 1 or self.stride < 1:
            raise ValueError(f"invalid frame geometry {self}")

    def frames(self, samples: np.ndarray | int) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.int64)
        return np.maximum((samples - self.receptive_field) // self.stride + 1, 0)

    def samples_for(self, frames: int) -> int:
        """Fewest samples that yield ``frames`` frames."""
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        return self.receptive_field + (frames - 1) * self.stride

    def to_json(self) -> str:
        return json.dumps({"receptive_field": self.receptive_field, "stride": self.stride})

    @classmethod
    def from_json(cls, text: str) -> FrameGeometry:
        data = json.loads(text)
        return cls(int(data["receptive_field"]), int(data["stride"]))


def check_batch(wavs: np.ndarray, lengths: np.ndarray | None, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a numpy ``(wavs [B, L], lengths [B])`` batch; returns float32 wavs and int64 lengths."""
    wavs = np.asarray(wavs)
    if wavs.ndim != 2:
        raise ValueError(f"expected a (batch, samples) waveform array, got shape {wavs.shape}")
    if not np.issubdtype(wavs.dtype, np.floating):
        raise ValueError(f"waveforms must be floating point, got {wavs.dtype}")
    if lengths is None:
        lengths = np.full((wavs.shape[0],), wavs.shape[1], dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (wavs.shape[0],):
        raise ValueError(f"lengths must have shape ({wavs.shape[0]},), got {lengths.shape}")
    if (lengths > wavs.shape[1]).any():
        raise ValueError(f"lengths {lengths.tolist()} exceed the padded length {wavs.shape[1]}")
    if (lengths < min_samples).any():
        raise ValueError(f"every waveform needs at least {min_samples} samples (one frame); got {lengths.tolist()}")
    return np.ascontiguousarray(wavs, dtype=np.float32), lengths


class OnnxModel:
    """An exported model run by onnxruntime on CPU, with the ``extract(wavs, lengths)`` API in numpy."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort  # imported here so the geometry helpers above stay usable without it

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise UsageError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise CheckpointFormatError(f"{path}: not a loadable ONNX model ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in (META_LAYERS, META_GEOMETRY) if k not in meta]
        if missing:
            raise CheckpointFormatError(
                f"{path}: not exported by robustdistiller (metadata {', '.join(missing)} missing)"
            )
        self.path = path
        self.layers: list[int] = json.loads(meta[META_LAYERS])
        self.geometry = FrameGeometry.from_json(meta[META_GEOMETRY])
        self.sample_rate = int(meta.get(META_SAMPLE_RATE, "16000"))
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.output_names[-1] != FRAME_LENGTHS_OUTPUT or len(self.output_names) != len(self.layers) + 1:
            raise CheckpointFormatError(f"{path}: unexpected outputs {self.output_names}")

    @property
    def min_samples(self) -> int:
        return self.geometry.receptive_field

    def frame_lengths(self, lengths: np.ndarray) -> np.ndarray:
        return self.geometry.frames(lengths)

    def extract(self, wavs: np.ndarray, lengths: np.ndarray | None = None) -> list[np.ndarray]:
        """Hidden states of the exported layers, each float32 ``[B, T, D]`` (padded frames included)."""
        wavs, lengths = check_batch(wavs, lengths, self.min_samples)
        outputs = self.session.run(None, {"wavs": wavs, "lengths": lengths})
        return list(outputs[:-1])

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, layers={self.layers}, {self.geometry})"


def load_onnx(path: str | Path, threads: int | None = None) -> OnnxModel:
    """Open an exported ``.onnx`` file; ``threads`` defaults to onnxruntime's choice (all cores)."""
    threads = threads if threads is not None else _env_threads()
    return OnnxModel(path, threads)


def _env_threads() -> int | None:
    # Honour OMP_NUM_THREADS like torch does, so `OMP_NUM_THREADS=1 robustdistiller extract ...` means one core.
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
