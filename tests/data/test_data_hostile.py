"""Hostile audio: out-of-range float samples and phase-cancelling channels are refused with a
reason instead of being trained on (or misreported as silent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistiller.data.audio import MAX_PEAK, AudioError, load_audio, load_audio_channels


def tone(n: int = 8000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 200 * np.arange(n) / 16000)).astype(np.float32)


@pytest.mark.parametrize("scale", [32767 / 0.3, 1e30])
def test_out_of_range_float_audio_is_refused(tmp_path: Path, scale: float) -> None:
    path = tmp_path / "loud.wav"
    sf.write(path, tone() * scale, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=f"peak .* > {MAX_PEAK}") as err:
        load_audio(path)
    assert err.value.reason == "out_of_range"


def test_slight_overshoot_and_unnormalised_rirs_are_kept(tmp_path: Path) -> None:
    sf.write(tmp_path / "hot.wav", tone() * 1.5 / 0.3, 16000, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "hot.wav")).max() == pytest.approx(1.5, rel=1e-3)
    sf.write(tmp_path / "rir.wav", tone() * 10, 16000, subtype="FLOAT")
    assert load_audio_channels(tmp_path / "rir.wav").shape == (1, 8000)


def test_phase_inverted_stereo_is_not_called_silent(tmp_path: Path) -> None:
    x = tone()
    sf.write(tmp_path / "inv.wav", np.stack([x, -x], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        load_audio(tmp_path / "inv.wav")
    assert err.value.reason == "channels_cancel"
    assert np.allclose(load_audio(tmp_path / "inv.wav", channel=1), -x)
