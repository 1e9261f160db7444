"""Inference: one numpy API over PyTorch and onnxruntime, batched extraction, chunked long audio."""

from robustdistiller.data.manifest import read_inputs
from robustdistiller.inference.backends import BACKENDS, Backend, OnnxBackend, TorchBackend, open_backend
from robustdistiller.inference.batched import ExtractSummary, extract_files
from robustdistiller.inference.chunked import ChunkConfig, extract_chunked, extract_long
from robustdistiller.inference.stream import stream_audio
from robustdistiller.inference.writer import FORMATS, NpyLayersWriter, save_features

__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxBackend",
    "TorchBackend",
    "open_backend",
    "ExtractSummary",
    "extract_files",
    "read_inputs",
    "ChunkConfig",
    "extract_chunked",
    "extract_long",
    "stream_audio",
    "FORMATS",
    "NpyLayersWriter",
    "save_features",
]
