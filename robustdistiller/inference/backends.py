"""Inference backends with one numpy API: PyTorch models and exported ONNX files.

A backend offers ``layers`` (indices into the model's ``extract`` list), ``geometry`` (samples ->
frames) and ``extract(wavs [B, L] float32, lengths [B] int64) -> list[[B, T, D] float32]`` for those
layers, so batching and chunking code does not care which runtime does the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from robustdistiller.errors import UsageError
from robustdistiller.runtime import FrameGeometry, OnnxModel, load_onnx

BACKENDS: tuple[str, ...] = ("torch", "onnx")


class Backend(Protocol):
    layers: list[int]
    geometry: FrameGeometry

    def extract(self, wavs: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]: ...


class TorchBackend:
    """A PyTorch model with ``extract`` / ``frame_lengths`` (student, teacher, pruned student), on CPU."""

    def __init__(self, model: object, layers: Sequence[int] | None = None, threads: int | None = None) -> None:
        import torch

        from robustdistiller.export.onnx import frame_geometry, resolve_layers

        self.model = model.eval()  # type: ignore[attr-defined]
        self.precision: str = getattr(self.model, "precision", "fp32")
        self.geometry = frame_geometry(self.model)
        probe = torch.zeros(1, self.geometry.samples_for(2))
        with torch.inference_mode():
            available = len(self.model.extract(probe, torch.tensor([probe.shape[1]])))
        self.layers = resolve_layers(available, layers)
        self.threads = threads

    def extract(self, wavs: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        import torch

        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                hidden = self.model.extract(torch.from_numpy(wavs), torch.from_numpy(lengths))
                return [hidden[i].float().numpy() for i in self.layers]
        finally:
            torch.set_num_threads(previous)


class OnnxBackend:
    """An exported file run by onnxruntime; ``layers`` picks among the layers the file holds."""

    def __init__(self, model: OnnxModel, layers: Sequence[int] | None = None) -> None:
        self.model = model
        self.geometry = model.geometry
        wanted = list(model.layers if layers is None else layers)
        missing = [i for i in wanted if i not in model.layers]
        if missing:
            raise UsageError(f"{model.path} holds layers {model.layers}; layers {missing} were not exported")
        self.layers = wanted
        self._positions = [model.layers.index(i) for i in wanted]

    def extract(self, wavs: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        outputs = self.model.extract(wavs, lengths)
        return [outputs[p] for p in self._positions]


def open_backend(
    path: str | Path,
    backend: str = "torch",
    layers: Sequence[int] | None = None,
    threads: int | None = None,
    precision: str = "fp32",
) -> Backend:
    """``torch``: any checkpoint ``robustdistiller.load`` reads, run in ``precision`` (fp32 | bf16 |
    auto, see ``robustdistiller.models.precision``); ``onnx``: a file from ``export --format onnx``,
    which runs in the precision it was exported in (``precision`` must then be fp32 or auto)."""
    if backend == "onnx":
        if precision == "bf16":
            raise UsageError(
                "precision bf16 applies to the torch backend; an ONNX file runs as exported "
                "(export it with --quantize int8 for a faster file)"
            )
        return OnnxBackend(load_onnx(path, threads), layers)
    if backend == "torch":
        import torch

        from robustdistiller.checkpoints.load import load

        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)  # auto's speed check must see the threads extraction uses
        try:
            return TorchBackend(load(path, precision), layers, threads)
        finally:
            torch.set_num_threads(previous)
    raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
