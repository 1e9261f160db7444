"""`extract`: batched over a folder, bad files reported, resumable, both backends, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustdistiller.checkpoints.s3prl import save_s3prl_checkpoint
from robustdistiller.cli import main
from robustdistiller.data.audio import load_audio
from robustdistiller.export.onnx import export_onnx
from robustdistiller.inference import ChunkConfig, OnnxBackend, TorchBackend, extract_files
from robustdistiller.runtime import OnnxModel


@pytest.fixture
def folder(tmp_path, write_wav):
    root = tmp_path / "audio"
    write_wav("audio/a.wav", 1.2, seed=1)
    write_wav("audio/sub/b.wav", 0.7, rate=8000, channels=2, seed=2)
    write_wav("audio/c.flac", 2.0, seed=3)
    write_wav("audio/long.wav", 7.5, seed=4)
    (root / "broken.wav").write_bytes(b"RIFF not really a wav file")
    return root


class Counting(TorchBackend):
    calls = 0

    def extract(self, wavs, lengths):
        Counting.calls += 1
        return super().extract(wavs, lengths)


def test_folder_with_bad_file_then_resume(student, folder, tmp_path):
    out = tmp_path / "feats"
    backend = Counting(student, layers=[0, 2])
    chunk = ChunkConfig(chunk_seconds=3.0, overlap_seconds=0.5, full_context_seconds=5.0)
    summary = extract_files(backend, folder, out, chunk=chunk, batch_seconds=3.0)
    assert summary.done == 4 and summary.skipped_existing == 0
    assert [f.path for f in summary.bad] == [str(folder / "broken.wav")]
    assert "broken.wav\tunreadable" in (out / "bad_files.tsv").read_text()
    for rel in ("a", "sub/b", "c"):
        feats = np.load(out / f"{rel}.npy")
        src = next(folder.glob(f"{rel}.*"))
        wav = load_audio(src)
        with torch.inference_mode():
            expected = student.extract(torch.from_numpy(wav)[None], None)
        assert feats.shape == (2, expected[0].shape[1], 64)
        np.testing.assert_allclose(feats[1], expected[2][0].numpy(), atol=1e-4)  # batched = alone
    assert np.load(out / "long.npy").shape == (2, 374, 64)  # chunked: 7.5 s > full_context_seconds

    Counting.calls = 0
    again = extract_files(backend, folder, out, chunk=chunk, batch_seconds=3.0)
    assert again.done == 0 and again.skipped_existing == 4 and Counting.calls == 0

    with pytest.raises(ValueError, match="another --out"):
        extract_files(TorchBackend(student, layers=[1]), folder, out, chunk=chunk)


def test_onnx_backend_matches_torch(student, folder, tmp_path):
    path = export_onnx(student, tmp_path / "s.onnx", layers=[0, 1, 3]).path
    backend = OnnxBackend(OnnxModel(path), layers=[3, 0])
    extract_files(backend, folder, tmp_path / "onnx", fmt="pt")
    extract_files(TorchBackend(student, layers=[3, 0]), folder, tmp_path / "torch", fmt="pt")
    for name in ("a.pt", "c.pt", "long.pt"):
        a = torch.load(tmp_path / "onnx" / name)
        b = torch.load(tmp_path / "torch" / name)
        assert len(a) == 2 and all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="were not exported"):
        OnnxBackend(OnnxModel(path), layers=[2])


def test_extract_cli(student, folder, tmp_path, capsys):
    ckpt = save_s3prl_checkpoint(tmp_path / "states-1.ckpt", student, step=1)
    out = tmp_path / "cli"
    argv = ["extract", "full_context_seconds=10", "--model", str(ckpt), "--input", str(folder), "--out", str(out)]
    assert main([*argv, "--layers", "0"]) == 0
    assert "extracted 4 file(s), 0 already done, 1 bad" in capsys.readouterr().out
    assert main([*argv, "--layers", "0"]) == 0
    assert "extracted 0 file(s), 4 already done" in capsys.readouterr().out
    assert main(["extract", "chunk_secnds=3", *argv[2:]]) == 1
    assert "did you mean 'chunk_seconds'" in capsys.readouterr().err
    assert main(["extract", "--model", str(ckpt), "--input", str(tmp_path / "nope"), "--out", str(out)]) == 1
