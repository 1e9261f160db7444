import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistiller.augment.builtin import (
    babble,
    builtin_noises,
    colored_noise,
    texture,
    write_builtin_noises,
)
from robustdistiller.augment.noise import NoiseBank, NoiseBankConfig, index_folder, index_urbansound, tile
from robustdistiller.config import ConfigError, from_dict
from robustdistiller.data.report import BadFileReport


def _wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate)
    return path


def _ramp(n: int) -> np.ndarray:
    # Distinct values (exact in 16-bit PCM) so crops can be located in the source.
    return ((np.arange(n) % 20000) - 10000).astype(np.float32) / 32768


def test_segment_crops_longer_files_and_tiles_shorter_ones(tmp_path):
    src = _ramp(3000)
    _wav(tmp_path / "n.wav", src)
    for cache_mb in (0.0, 1.0):  # span decoding and cached decoding give the same samples
        bank = NoiseBank(index_folder(tmp_path), cache_mb=cache_mb)
        crop = bank.segment(0, 1000, np.random.default_rng(0))
        start = int(np.flatnonzero(np.isclose(src, crop[0]))[0])
        np.testing.assert_allclose(crop, src[start : start + 1000], atol=1e-6)
        tiled = bank.segment(0, 7000, np.random.default_rng(0))
        np.testing.assert_allclose(tiled, np.concatenate([src, src, src[:1000]]), atol=1e-6)
    starts = set()
    for seed in range(20):
        crop = NoiseBank(index_folder(tmp_path)).segment(0, 1000, np.random.default_rng(seed))
        starts.add(int(np.flatnonzero(np.isclose(src, crop[0]))[0]))
    assert len(starts) > 10  # crops are random, not always the head


def test_tile_and_cache_cap(tmp_path):
    assert tile(np.array([1.0, 2.0], np.float32), 5).tolist() == [1, 2, 1, 2, 1]
    for i in range(3):
        _wav(tmp_path / f"n{i}.wav", _ramp(16000))  # 64 kB each as float32
    bank = NoiseBank(index_folder(tmp_path), cache_mb=0.13)
    for i in range(3):
        bank.segment(i, 20000, np.random.default_rng(0))  # tiling decodes the whole file
    assert list(bank._cache) == [1, 2] and bank._cache_bytes <= 0.13 * 2**20


def _urbansound(root: Path) -> Path:
    rows = [
        ("100.wav", 1, "dog_bark"),
        ("101.wav", 2, "children_playing"),
        ("102.wav", 2, "street_music"),
        ("103.wav", 3, "siren"),
        ("104.wav", 3, "siren"),
    ]
    lines = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    for name, fold, cls in rows:
        lines.append(f"{name},1,0,1,1,{fold},0,{cls}")
        if name != "104.wav":  # listed but absent: reported, not fatal
            _wav(root / "audio" / f"fold{fold}" / name, np.random.default_rng(0).standard_normal(2205) * 0.1, 44100)
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "UrbanSound8K.csv").write_text("\n".join(lines) + "\n")
    return root


def test_urbansound_csv_excludes_classes_by_default(tmp_path):
    root = _urbansound(tmp_path / "us8k")
    report = BadFileReport()
    names = [f.name for f in index_urbansound(root, report=report)]
    assert names == ["urbansound/audio/fold1/100.wav", "urbansound/audio/fold3/103.wav"]
    assert [b.reason for b in report] == ["missing"]
    names = [f.name for f in index_urbansound(root, exclude=["siren"])]
    assert names == [
        "urbansound/audio/fold1/100.wav",
        "urbansound/audio/fold2/101.wav",
        "urbansound/audio/fold2/102.wav",
    ]
    # 44.1 kHz clips come out at 16 kHz
    bank = NoiseBank(index_urbansound(root))
    assert bank.files[0].num_samples == 800
    assert bank.segment(0, 1000, np.random.default_rng(0)).shape == (1000,)


def test_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="MUSAN folder not found"):
        NoiseBank.from_config(NoiseBankConfig(musan=tmp_path / "nope"))
    (tmp_path / "musan" / "noise").mkdir(parents=True)
    _wav(tmp_path / "musan" / "noise" / "free-sound" / "a.wav", _ramp(2000))
    with pytest.raises(FileNotFoundError, match="MUSAN 'music' folder not found"):
        NoiseBank.from_config(NoiseBankConfig(musan=tmp_path / "musan", musan_subsets=["noise", "music"]))
    with pytest.raises(FileNotFoundError, match="noise folder not found"):
        NoiseBank.from_config(NoiseBankConfig(noise_dirs=[tmp_path / "dns_noise"]))
    with pytest.raises(FileNotFoundError, match="UrbanSound8K metadata"):
        NoiseBank.from_config(NoiseBankConfig(urbansound=tmp_path))
    with pytest.raises(ConfigError, match="musan_subsets"):
        from_dict(NoiseBankConfig, {"musan_subsets": ["nosie"]})
    bank = NoiseBank.from_config(NoiseBankConfig(musan=tmp_path / "musan"))
    assert bank.names == ["musan/noise/free-sound/a.wav"]


def test_bad_noise_files_are_skipped_and_reported(tmp_path, caplog):
    _wav(tmp_path / "good.wav", _ramp(4000))
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    _wav(tmp_path / "short.wav", _ramp(100))
    report = BadFileReport()
    with caplog.at_level(logging.WARNING):
        bank = NoiseBank.from_config(NoiseBankConfig(noise_dirs=[tmp_path]), report)
    assert bank.names == [f"{tmp_path.name}/good.wav"]
    assert report.counts() == {"unreadable": 1, "too_short": 1}
    # Recorded straight into the caller's report: each bad file is warned about once, not twice.
    assert [sum(name in r.getMessage() for r in caplog.records) for name in ("corrupt.wav", "short.wav")] == [1, 1]
    # A file that breaks after indexing is reported at draw time and replaced by another draw.
    _wav(tmp_path / "later.wav", _ramp(4000))
    bank = NoiseBank(index_folder(tmp_path), report=report)
    (tmp_path / "later.wav").write_bytes(b"broken")
    for seed in range(10):
        _, name = bank.draw(1000, np.random.default_rng(seed))
        assert name.endswith("good.wav")
    assert "unreadable" in [b.reason for b in report if b.path.endswith("later.wav")]
    (tmp_path / "good.wav").unlink()
    (tmp_path / "later.wav").unlink()
    with pytest.raises(ValueError, match="all 2 noise files .* are unusable"):
        index_folder(tmp_path)


def test_colored_noise_slopes():
    rng = np.random.default_rng(0)
    n = 1 << 16
    freqs = np.fft.rfftfreq(n)
    band_lo, band_hi = (freqs > 0.005) & (freqs < 0.01), (freqs > 0.2) & (freqs < 0.4)
    for color, expected in (("white", 0.0), ("pink", 1.0), ("brown", 2.0)):
        x = colored_noise(n, color, rng)
        assert abs(np.sqrt(np.mean(x.astype(np.float64) ** 2)) - 1) < 1e-4
        power = np.abs(np.fft.rfft(x)) ** 2
        ratio_db = 10 * np.log10(power[band_lo].mean() / power[band_hi].mean())
        slope = ratio_db / (10 * np.log10(np.mean(freqs[band_hi]) / np.mean(freqs[band_lo])))
        assert abs(slope - expected) < 0.2, (color, slope)
    with pytest.raises(ValueError, match="unknown noise colour"):
        colored_noise(10, "blue", rng)


def test_builtin_noises_are_deterministic_and_form_a_bank(tmp_path):
    speech = [np.sin(np.arange(3000) / 7.0).astype(np.float32), np.random.default_rng(1).standard_normal(5000)]
    a = builtin_noises(seconds=0.5, seed=3, speech=speech)
    b = builtin_noises(seconds=0.5, seed=3, speech=speech)
    assert set(a) == {"white", "pink", "brown", "hum50", "hum60", "clicks", "babble"}
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].shape == (8000,)
    assert not np.array_equal(a["white"], builtin_noises(seconds=0.5, seed=4, speech=speech)["white"])
    hum = np.abs(np.fft.rfft(a["hum60"]))
    assert int(np.argmax(hum)) == 30  # 60 Hz at 2 Hz resolution
    assert set(builtin_noises(seconds=0.1, speech=None)) == {"white", "pink", "brown", "hum50", "hum60", "clicks"}
    with pytest.raises(ValueError, match="silent"):
        babble(100, [np.zeros(10)], np.random.default_rng(0))

    paths = write_builtin_noises(tmp_path / "builtin", seconds=0.5, speech=speech)
    assert len(paths) == 7
    bank = NoiseBank.from_config(NoiseBankConfig(builtin=True, builtin_dir=tmp_path / "builtin2"))
    assert len(bank) == 7  # babble from the synthetic corpus by default
    seg, name = bank.draw(4000, np.random.default_rng(0))
    assert seg.shape == (4000,) and name.startswith("builtin2/builtin_")


def _frame_rms(x: np.ndarray, frame: int = 800) -> np.ndarray:
    frames = x[: x.size // frame * frame].astype(np.float64).reshape(-1, frame)
    return np.sqrt(np.mean(frames**2, axis=1))


def test_noise_textures_are_varied_deterministic_and_leave_the_fixed_noises_alone():
    plain = builtin_noises(seconds=0.5, seed=3, speech=None)
    more = builtin_noises(seconds=0.5, seed=3, speech=None, textures=3)
    assert list(more) == [*plain, "texture000", "texture001", "texture002"]
    for name in plain:
        np.testing.assert_array_equal(plain[name], more[name])
    np.testing.assert_array_equal(
        more["texture001"], builtin_noises(seconds=0.5, seed=3, speech=None, textures=2)["texture001"]
    )

    rate, n = 16000, 32000
    textures = [texture(n, np.random.default_rng([7, i]), sample_rate=rate) for i in range(40)]
    centroids, swings = [], []
    for x in textures:
        assert x.shape == (n,) and x.dtype == np.float32 and np.all(np.isfinite(x))
        assert abs(np.sqrt(np.mean(x.astype(np.float64) ** 2)) - 1) < 1e-4
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(n, 1 / rate)
        centroids.append(float(np.sum(freqs * power) / np.sum(power)))
        level = _frame_rms(x)
        swings.append(float(level.max() / np.median(level)))
    # Spectra spread over more than two octaves of centroid, and the bank holds steady textures as
    # well as strongly modulated or bursty ones.
    assert max(centroids) / min(centroids) > 4
    assert min(swings) < 1.5 and max(swings) > 4


def test_builtin_textures_join_the_bank_and_only_this_run_s_files_are_indexed(tmp_path):
    folder = tmp_path / "builtin"
    bank = NoiseBank.from_config(NoiseBankConfig(builtin=True, builtin_dir=folder, builtin_textures=4))
    assert len(bank) == 11 and sum("texture" in name for name in bank.names) == 4
    # A later run asking for fewer textures in the same folder must not draw the earlier run's.
    assert len(NoiseBank.from_config(NoiseBankConfig(builtin=True, builtin_dir=folder, builtin_textures=1))) == 8
    assert len(NoiseBank.from_config(NoiseBankConfig(builtin=True, builtin_dir=folder))) == 7
    with pytest.raises(ConfigError, match="builtin_textures is 2 but builtin is false"):
        from_dict(NoiseBankConfig, {"builtin_textures": 2})
    with pytest.raises(ConfigError, match="builtin_textures must be >= 0"):
        from_dict(NoiseBankConfig, {"builtin": True, "builtin_textures": -1})
