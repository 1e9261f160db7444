"""The onnxruntime loader runs without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from robustdistiller.export.onnx import export_onnx
from robustdistiller.runtime import FrameGeometry, OnnxModel, check_batch

NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from robustdistiller.runtime import load_onnx
model = load_onnx(sys.argv[1], threads=1)
wavs = np.zeros((2, 8000), dtype=np.float32)
wavs[0] = np.sin(np.arange(8000) / 7.0)
wavs[1, :5000] = np.cos(np.arange(5000) / 5.0)
out = model.extract(wavs, np.array([8000, 5000]))
np.save(sys.argv[2], out[-1])
print(model.frame_lengths(np.array([8000, 5000])).tolist(), [o.shape for o in out])
"""


def test_runtime_without_torch(student, tmp_path):
    path = export_onnx(student, tmp_path / "s.onnx", layers=[0, 5]).path
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(path), str(tmp_path / "last.npy")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[24, 15] [(2, 24, 64), (2, 24, 64)]"
    # same numbers as in this (torch-importing) process
    wavs = np.zeros((2, 8000), dtype=np.float32)
    wavs[0] = np.sin(np.arange(8000) / 7.0)
    wavs[1, :5000] = np.cos(np.arange(5000) / 5.0)
    np.testing.assert_array_equal(
        np.load(tmp_path / "last.npy"), OnnxModel(path).extract(wavs, np.array([8000, 5000]))[-1]
    )


def test_runtime_rejects_bad_input(student, tmp_path):
    path = export_onnx(student, tmp_path / "s.onnx", layers=[0]).path
    model = OnnxModel(path)
    with pytest.raises(ValueError, match="at least 400 samples"):
        model.extract(np.zeros((1, 300), dtype=np.float32))
    with pytest.raises(ValueError, match="exceed"):
        check_batch(np.zeros((1, 500), dtype=np.float32), np.array([600]), 400)
    with pytest.raises(ValueError, match="batch, samples"):
        model.extract(np.zeros(8000, dtype=np.float32))
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a loadable ONNX"):
        OnnxModel(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError, match="ONNX model not found: .*missing.onnx"):
        OnnxModel(tmp_path / "missing.onnx")


def test_frame_geometry_matches_cnn_formula(student):
    import torch

    geometry = FrameGeometry(400, 320)
    samples = np.arange(0, 50_000)
    np.testing.assert_array_equal(geometry.frames(samples), student.frame_lengths(torch.from_numpy(samples)).numpy())
    assert geometry.samples_for(49) == 15760 and geometry.frames(15759) == 48 and geometry.frames(16000) == 49
