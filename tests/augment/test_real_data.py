"""Smoke test on the recordings in ../shared/data (skipped when absent)."""

import numpy as np
import pytest
import torch

from robustdistiller.augment.noise import NoiseBankConfig
from robustdistiller.augment.policy import CorruptionConfig, build_policy, plan_rng
from robustdistiller.augment.rir import RIRBankConfig
from robustdistiller.augment.stats import summarize
from robustdistiller.data.audio import load_audio


def test_corrupt_fsdd_with_real_noise_and_measured_rir(shared_data):
    cfg = CorruptionConfig(
        noise=NoiseBankConfig(noise_dirs=[shared_data / "noise"]), rir=RIRBankConfig(rir_dirs=[shared_data / "rir"])
    )
    policy = build_policy(cfg)
    assert len(policy.noise_bank) == 6 and len(policy.rir_bank) == len(list((shared_data / "rir").glob("*.wav")))

    names = [policy.rir_bank.get(i, np.random.default_rng(0)).name for i in range(len(policy.rir_bank))]
    clap = policy.rir_bank.get(next(i for i, n in enumerate(names) if "rir_clap" in n), np.random.default_rng(0))
    assert clap.samples.shape == (16000,)  # 1 s at 44.1 kHz, resampled to 16 kHz
    assert 0.05 < clap.rt60 < 2.0  # a room, not an anechoic chamber nor a cathedral

    files = sorted((shared_data / "fsdd").glob("*_jackson_0.wav"))[:8]  # 8 kHz digits
    utts = [load_audio(f) for f in files]
    lengths = torch.tensor([u.size for u in utts])
    wavs = torch.zeros(len(utts), int(lengths.max()))
    for b, u in enumerate(utts):
        wavs[b, : u.size] = torch.from_numpy(u)

    results = [
        policy.apply(wavs, lengths, policy.plan(lengths, wavs.shape[1], plan_rng(0, 0, i)), step=0) for i in range(6)
    ]
    for result in results:
        assert torch.isfinite(result.noisy).all()
        for b, n in enumerate(lengths.tolist()):
            assert torch.all(result.noisy[b, n:] == 0)
            if result.ops[b] == "noise":
                added = result.noisy[b, :n] - wavs[b, :n]
                snr = 10 * torch.log10(wavs[b, :n].square().sum() / added.square().sum())
                assert float(snr) == pytest.approx(float(result.snr_db[b]), abs=0.1)
    summary = summarize(results)
    assert summary["utterances"] == 48 and min(summary[f"ops/{op}"] for op in ("clean", "noise", "reverb")) > 0
    bank_rt60 = [policy.rir_bank.get(i, np.random.default_rng(0)).rt60 for i in range(len(policy.rir_bank))]
    assert np.nanmin(bank_rt60) <= summary["rt60_mean"] <= np.nanmax(bank_rt60)
