"""Atomic feature files: ``.npy`` (``[layers, frames, dim]`` float32) or ``.pt`` (list of tensors).

Every file is written under a temporary name in the destination folder and renamed into place, so an
interrupted run never leaves a half-written file that a rerun would mistake for a finished one.
:class:`NpyLayersWriter` fills a ``.npy`` file chunk by chunk (seek + write through the page cache,
not a memory map), which keeps the writer's resident memory at one chunk for hour-long recordings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from robustdistiller.atomic import atomic_write, commit, temp_path
from robustdistiller.errors import UsageError

FORMATS: tuple[str, ...] = ("npy", "pt")
_HEADER_BYTES = 128  # npy v1.0 header, padded with spaces to a multiple of 64


def save_features(path: Path, layers: Sequence[np.ndarray], fmt: str) -> Path:
    """Write one utterance's ``[T, D]`` arrays atomically; npy stacks them to ``[L, T, D]``."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown feature format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "npy":
        atomic_write(path, lambda fh: np.save(fh, stack_layers(layers)))
    else:
        import torch

        atomic_write(path, lambda fh: torch.save([torch.from_numpy(np.ascontiguousarray(a)) for a in layers], fh))
    return path


def stack_layers(layers: Sequence[np.ndarray]) -> np.ndarray:
    dims = {a.shape[-1] for a in layers}
    if len(dims) != 1:
        raise UsageError(f"layers have different widths {sorted(dims)}: choose --layers of one width or --format pt")
    return np.stack(layers).astype(np.float32, copy=False)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    body = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    if len(body) + 10 != _HEADER_BYTES:
        raise ValueError(f"npy header for shape {shape} does not fit in {_HEADER_BYTES} bytes")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


class NpyLayersWriter:
    """Write a ``[layers, frames, dim]`` float32 ``.npy`` file in frame ranges, then rename it into place."""

    def __init__(self, path: Path, num_layers: int, frames: int, dim: int) -> None:
        self.path, self.shape = path, (num_layers, frames, dim)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temp_path(path)
        self._fh = self._tmp.open("wb")
        self._written = 0
        try:
            self._fh.write(_npy_header(self.shape))
            self._fh.truncate(_HEADER_BYTES + 4 * num_layers * frames * dim)
        except BaseException:  # e.g. a full disk: no full-size temp file may stay behind
            self.abort()
            raise

    def write(self, start: int, layers: Sequence[np.ndarray]) -> None:
        """Frames ``[start, start + n)`` of every layer (``[n, dim]`` arrays); ranges must be written in order."""
        num_layers, frames, dim = self.shape
        n = layers[0].shape[0]
        if len(layers) != num_layers or start != self._written or start + n > frames:
            raise ValueError(f"out-of-order or oversized write: frames {start}..{start + n} of {frames}")
        for i, layer in enumerate(layers):
            if layer.shape != (n, dim):
                raise ValueError(f"layer {i}: expected ({n}, {dim}), got {layer.shape}")
            self._fh.seek(_HEADER_BYTES + 4 * dim * (i * frames + start))
            self._fh.write(np.ascontiguousarray(layer, dtype="<f4").tobytes())
        self._written = start + n

    @property
    def written(self) -> int:
        """Frames written so far (per layer)."""
        return self._written

    def close(self) -> Path:
        """Finish: every frame must have been written; the file appears atomically at ``path``."""
        self._fh.close()
        if self._written != self.shape[1]:
            self.abort()
            raise ValueError(f"{self.path}: only {self._written} of {self.shape[1]} frames were written")
        return commit(self._tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> NpyLayersWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
