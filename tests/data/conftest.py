from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

WriteWav = Callable[..., Path]


def tone(num: int, rate: int = 16000, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(num) / rate)).astype(np.float32)


@pytest.fixture(name="tone")
def tone_fixture() -> Callable[..., np.ndarray]:
    """tone(num, rate=16000, freq=440.0, amp=0.5): a float32 sine (test files cannot import conftest)."""
    return tone


@pytest.fixture
def write_wav(tmp_path: Path) -> WriteWav:
    """write_wav(rel, data, rate=16000, subtype=None) -> absolute path under tmp_path."""

    def write(rel: str, data: np.ndarray, rate: int = 16000, subtype: str | None = None) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, rate, subtype=subtype)
        return path

    return write


@pytest.fixture
def bad_folder(tmp_path: Path, write_wav: WriteWav) -> tuple[Path, dict[str, str]]:
    """A folder with one good file and one file per bad case; returns (root, {name: reason})."""
    root = tmp_path / "mixed"
    write_wav("mixed/good.wav", tone(8000))
    (root / "garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
    (root / "zero_bytes.wav").write_bytes(b"")
    write_wav("mixed/empty.wav", np.zeros(0, np.float32))
    write_wav("mixed/short.wav", tone(300))
    write_wav("mixed/short_8k.wav", tone(199, 8000), rate=8000)  # 398 samples at 16 kHz
    nan = tone(4000)
    nan[100] = np.nan
    write_wav("mixed/nan.wav", nan, subtype="FLOAT")
    inf = tone(4000)
    inf[7] = np.inf
    write_wav("mixed/inf.wav", inf, subtype="FLOAT")
    write_wav("mixed/silent.wav", np.zeros(4000, np.float32))
    reasons = {
        "garbage.wav": "unreadable",
        "zero_bytes.wav": "unreadable",
        "empty.wav": "empty",
        "short.wav": "too_short",
        "short_8k.wav": "too_short",
        "nan.wav": "non_finite",
        "inf.wav": "non_finite",
        "silent.wav": "silent",
    }
    return root, reasons
