from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistiller.data.audio import (
    AudioError,
    audio_info,
    load_audio,
    load_audio_channels,
    load_audio_segment,
    resampled_length,
)


def test_bad_file_matrix(bad_folder: tuple[Path, dict[str, str]]) -> None:
    root, reasons = bad_folder
    for name, reason in reasons.items():
        with pytest.raises(AudioError) as info:
            load_audio(root / name)
        assert info.value.reason == reason, name
        assert name in str(info.value)
    assert load_audio(root / "good.wav").shape == (8000,)


def test_missing_file_is_an_audio_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError) as info:
        load_audio(tmp_path / "nope.wav")
    assert info.value.reason == "missing"
    assert isinstance(info.value, ValueError)  # the CLI turns ValueErrors into one clean line


def test_silent_allowed_on_request(write_wav) -> None:
    wav = load_audio(write_wav("z.wav", np.zeros(1000, np.float32)), allow_silent=True)
    assert wav.shape == (1000,) and not wav.any()


def test_one_channel_or_all_channels_kept_apart(tone, write_wav) -> None:
    left, right = tone(3000, amp=0.5), tone(3000, freq=1000, amp=0.25)
    path = write_wav("stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, channel=1), right)
    channels = load_audio_channels(path)
    assert channels.shape == (2, 3000) and channels.dtype == np.float32
    np.testing.assert_array_equal(channels, np.stack([left, right]))
    for bad in (2, -1):
        with pytest.raises(AudioError) as info:
            load_audio(path, channel=bad)
        assert info.value.reason == "no_channel" and "the file has 2" in str(info.value)
    # Resampled per channel to the same length load_audio gives.
    path = write_wav("stereo_8k.wav", np.stack([left, right], axis=1), rate=8000, subtype="FLOAT")
    channels = load_audio_channels(path)
    assert channels.shape == (2, load_audio(path).shape[0]) == (2, resampled_length(3000, 8000))
    np.testing.assert_allclose(channels[1], load_audio(path, channel=1), atol=1e-6)
    with pytest.raises(AudioError) as info:
        load_audio_channels(write_wav("quiet.wav", np.zeros((1000, 2), np.float32)))
    assert info.value.reason == "silent"


def test_multichannel_is_mixed_to_mono(tone, write_wav) -> None:
    left, right = tone(2000, amp=0.5), tone(2000, freq=1000, amp=0.25)
    four = np.stack([left, right, -left, right], axis=1)
    wav = load_audio(write_wav("quad.wav", four, subtype="FLOAT"))
    assert wav.dtype == np.float32 and wav.ndim == 1
    np.testing.assert_allclose(wav, (left + right - left + right) / 4, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled(tone, write_wav, rate: int) -> None:
    n = rate // 2 + 37
    path = write_wav(f"r{rate}.wav", tone(n, rate, freq=300.0), rate=rate)
    wav = load_audio(path)
    assert wav.shape == (resampled_length(n, rate),)
    assert abs(wav.shape[0] - n * 16000 / rate) <= 0.5
    assert audio_info(path).num_samples_16k == wav.shape[0]
    # Same tone after resampling: compare away from the filter's edge effects.
    ref = tone(wav.shape[0], 16000, freq=300.0)
    np.testing.assert_allclose(wav[200:-200], ref[200:-200], atol=2e-3)


@pytest.mark.parametrize(("name", "subtype"), [("a.wav", "PCM_24"), ("a.flac", "PCM_24"), ("b.flac", "PCM_16")])
def test_24bit_and_flac(tone, write_wav, name: str, subtype: str) -> None:
    data = tone(5000)
    wav = load_audio(write_wav(name, data, subtype=subtype))
    step = 2.0 ** (-23 if subtype == "PCM_24" else -15)
    np.testing.assert_allclose(wav, data, atol=step)


def test_audio_info_reads_the_header(write_wav) -> None:
    info = audio_info(write_wav("st.wav", np.zeros((11025, 2), np.float32) + 0.1, rate=22050))
    assert (info.sample_rate, info.channels, info.num_samples_16k) == (22050, 2, 8000)
    assert info.duration_s == pytest.approx(0.5)


def test_audio_info_bad_files(bad_folder: tuple[Path, dict[str, str]]) -> None:
    root, _ = bad_folder
    with pytest.raises(AudioError, match="unreadable"):
        audio_info(root / "garbage.wav")
    assert audio_info(root / "empty.wav").num_samples_16k == 0


def test_segment_matches_full_decode(write_wav) -> None:
    data = np.random.default_rng(0).uniform(-0.5, 0.5, 20000).astype(np.float32)
    same_rate = write_wav("s16.wav", data, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio_segment(same_rate, 1234, 5000), data[1234:6234])
    other_rate = write_wav("s8.wav", data[:10000], rate=8000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio_segment(other_rate, 300, 4000), load_audio(other_rate)[300:4300])


def test_segment_errors(tone, write_wav, tmp_path: Path) -> None:
    path = write_wav("s.wav", tone(3000))
    with pytest.raises(AudioError, match="truncated"):
        load_audio_segment(path, 2500, 1000)
    nan = tone(3000)
    nan[2000] = np.nan
    with pytest.raises(AudioError, match="non_finite"):
        load_audio_segment(write_wav("n.wav", nan, subtype="FLOAT"), 1500, 1000)
    with pytest.raises(AudioError, match="silent"):
        load_audio_segment(write_wav("z.wav", np.zeros(3000, np.float32)), 0, 1000, allow_silent=False)
    (tmp_path / "junk.wav").write_bytes(b"junk" * 100)
    with pytest.raises(AudioError, match="unreadable"):
        load_audio_segment(tmp_path / "junk.wav", 0, 10)
    with pytest.raises(ValueError, match="invalid segment start=-1 num=10"):
        load_audio_segment(path, -1, 10)


def test_soundfile_agrees_on_written_length(tone, write_wav) -> None:
    # Guard for the header-only lengths in manifests: header frames == decoded frames.
    path = write_wav("len.flac", tone(12345))
    assert sf.info(str(path)).frames == load_audio(path).shape[0] == 12345
