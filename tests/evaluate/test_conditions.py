"""Evaluation condition sets: deterministic materialisation, exact SNRs, RT60 bins, input errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistiller.config import ConfigError, from_dict
from robustdistiller.evaluate.conditions import ConditionConfig, ConditionSet

SR = 16000


def _config(cache: Path, **overrides: object) -> ConditionConfig:
    base = {
        "noises": ["builtin"],
        "noise_types": ["white", "pink"],
        "snrs": [0.0, 10.0],
        "rt60s": [0.3],
        "rirs_per_bin": 1,
        "mixed_snrs": [5.0],
        "mixed_rt60s": [0.3],
        "seed": 7,
        "cache_dir": str(cache),
    }
    return from_dict(ConditionConfig, {**base, **overrides})


def _speechlike(seed: int, seconds: float = 0.8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    wav = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * np.hanning(t.size)
    return (0.2 * wav + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


def _digest(cset: ConditionSet, utterances: dict[str, np.ndarray], order: list[str]) -> dict[tuple[str, str], str]:
    return {
        (c.id, uid): hashlib.sha1(cset.corrupt(c, uid, utterances[uid]).tobytes()).hexdigest()
        for c in cset
        for uid in order
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("material")


def test_same_seed_gives_identical_audio_across_builds_and_call_order(cache: Path) -> None:
    utts = {f"u{i}": _speechlike(i) for i in range(3)}
    first = ConditionSet.build(_config(cache))
    second = ConditionSet.build(_config(cache))  # a second run / another model's evaluation
    a = _digest(first, utts, list(utts))
    b = _digest(second, utts, list(reversed(utts)))  # utterances in another order
    assert a == b
    assert [c.id for c in first] == [
        "clean",
        "noise/pink/snr+0",
        "noise/pink/snr+10",
        "noise/white/snr+0",
        "noise/white/snr+10",
        "reverb/rt0.3",
        "noise+reverb/pink/snr+5/rt0.3",
        "noise+reverb/white/snr+5/rt0.3",
    ]
    assert first.fingerprint() == second.fingerprint()
    assert [first.condition_hash(c) for c in first] == [second.condition_hash(c) for c in second]
    # Corrupted conditions change the audio, and differently per utterance and per condition.
    assert len({a[(c.id, "u0")] for c in first}) == len(first)
    assert a[("noise/white/snr+0", "u0")] != a[("noise/white/snr+0", "u1")]


def test_another_seed_changes_the_audio_and_the_hashes(cache: Path) -> None:
    utts = {"u0": _speechlike(0)}
    one = ConditionSet.build(_config(cache))
    other = ConditionSet.build(_config(cache, seed=8))
    noisy = one.get("noise/white/snr+0")
    assert not np.array_equal(one.corrupt(noisy, "u0", utts["u0"]), other.corrupt(noisy, "u0", utts["u0"]))
    assert one.condition_hash(noisy) != other.condition_hash(noisy)
    assert one.fingerprint() != other.fingerprint()


def test_noise_is_mixed_at_the_exact_snr_and_clean_is_untouched(cache: Path) -> None:
    cset = ConditionSet.build(_config(cache))
    wav = _speechlike(3)
    assert cset.corrupt(cset.get("clean"), "u", wav) is wav
    for cid, target in (("noise/white/snr+0", 0.0), ("noise/pink/snr+10", 10.0)):
        noisy = cset.corrupt(cset.get(cid), "u", wav)
        noise = noisy.astype(np.float64) - wav
        snr = 10 * np.log10(np.sum(wav.astype(np.float64) ** 2) / np.sum(noise**2))
        assert snr == pytest.approx(target, abs=0.05)


def test_reverb_bins_hold_rirs_of_their_rt60(cache: Path) -> None:
    cset = ConditionSet.build(_config(cache))
    rirs = cset.rirs[0.3]
    assert rirs and all(abs(r.rt60 - 0.3) <= 0.15 for r in rirs)
    described = {d["id"]: d for d in cset.describe()}
    assert described["reverb/rt0.3"]["num_rirs"] == len(rirs)
    wet = cset.corrupt(cset.get("reverb/rt0.3"), "u", _speechlike(4))
    assert wet.shape == (int(0.8 * SR),) and np.isfinite(wet).all()


def test_folder_noise_types_are_subfolders_or_files(tmp_path: Path, cache: Path) -> None:
    rng = np.random.default_rng(0)
    for rel in ("street/a.wav", "street/b.wav", "cafe/c.wav"):
        (tmp_path / "noises" / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "noises" / rel, 0.1 * rng.standard_normal(SR).astype(np.float32), SR)
    (tmp_path / "flat").mkdir()
    sf.write(tmp_path / "flat" / "fan.wav", 0.1 * rng.standard_normal(SR).astype(np.float32), SR)
    cfg = _config(
        cache,
        noises=[str(tmp_path / "noises"), f"folder:{tmp_path / 'flat'}"],
        noise_types=[],
        rt60s=[],
        mixed_snrs=[],
        mixed_rt60s=[],
        snrs=[5.0],
    )
    cset = ConditionSet.build(cfg)
    assert sorted(cset.noises) == ["cafe", "fan", "street"]
    assert len(cset.noises["street"]) == 2
    assert [c.id for c in cset] == ["clean", "noise/cafe/snr+5", "noise/fan/snr+5", "noise/street/snr+5"]


def test_bad_configurations_fail_early(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'snrs'"):
        from_dict(ConditionConfig, {"snr": [0]})
    with pytest.raises(ConfigError, match="mixed_rt60s"):
        from_dict(ConditionConfig, {"rt60s": [0.3], "mixed_rt60s": [0.9]})
    with pytest.raises(FileNotFoundError, match="noise folder not found"):
        ConditionSet.build(_config(cache, noises=[str(tmp_path / "missing")], noise_types=[]))
    with pytest.raises(ValueError, match="noise_types"):
        ConditionSet.build(_config(cache, noise_types=["jet-engine"]))
    with pytest.raises(KeyError, match="no condition"):
        ConditionSet.build(_config(cache, rt60s=[], mixed_snrs=[], mixed_rt60s=[])).get("reverb/rt9")
