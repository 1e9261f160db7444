import math

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import stats

from robustdistiller.augment.mixing import mix_at_snr, reverberate
from robustdistiller.augment.noise import NoiseBank, index_folder
from robustdistiller.augment.policy import (
    OPS,
    CorruptionConfig,
    CorruptionPolicy,
    build_policy,
    curriculum,
    plan_rng,
)
from robustdistiller.augment.rir import RIR, RIRBank
from robustdistiller.augment.stats import summarize
from robustdistiller.config import ConfigError, from_dict


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for i, n in enumerate((3000, 12000, 30000)):
        sf.write(folder / f"n{i}.wav", (rng.standard_normal(n) * 0.1).astype(np.float32), 16000)
    rirs = []
    for i, m in enumerate((400, 1200, 2500)):
        h = (rng.standard_normal(m) * np.exp(-np.arange(m) / (m / 7))).astype(np.float32)
        h[0] = 2.0
        rirs.append(RIR(h, 0.1 * (i + 1), f"rir{i}"))
    return NoiseBank(index_folder(folder)), RIRBank(rirs=rirs)


def _policy(banks, **kw) -> CorruptionPolicy:
    return CorruptionPolicy.from_config(from_dict(CorruptionConfig, kw), *banks)


def _batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        wavs[b, :n] = torch.randn(n, generator=g) * 0.2
    return wavs, torch.tensor(lengths)


def test_config_validation():
    with pytest.raises(ConfigError, match="must be 1"):
        from_dict(CorruptionConfig, {"p_clean": 0.5})
    with pytest.raises(ConfigError, match="snr_low"):
        from_dict(CorruptionConfig, {"snr_low": 10, "snr_high": 5})
    with pytest.raises(ConfigError, match="white_noise_prob"):
        from_dict(CorruptionConfig, {"white_noise_prob": 0.8, "colored_noise_prob": 0.3})
    with pytest.raises(ConfigError, match="colors"):
        from_dict(CorruptionConfig, {"colored_noise_prob": 0.2, "colors": ["blue"]})
    with pytest.raises(ConfigError, match="did you mean 'inc_steps'"):
        from_dict(CorruptionConfig, {"inc_step": 5})
    with pytest.raises(ConfigError, match="rir_dirs"):
        from_dict(CorruptionConfig, {"rir": {"rir_dir": []}})
    cfg = from_dict(CorruptionConfig, {"rir": {"simulate_rirs": {"count": 3, "rt60_range": [0.3, 0.6]}}})
    assert cfg.rir.simulate_rirs.rt60_range == (0.3, 0.6)
    with pytest.raises(ValueError, match="no noise source"):
        CorruptionPolicy(CorruptionConfig())
    with pytest.raises(ValueError, match="reverb operations need RIRs"):
        CorruptionPolicy(from_dict(CorruptionConfig, {"white_noise_prob": 1.0}))
    # Noise-only with generated noise needs no files at all.
    policy = CorruptionPolicy(
        from_dict(
            CorruptionConfig,
            {"p_clean": 0.5, "p_noise": 0.5, "p_reverb": 0, "p_noise_reverb": 0, "white_noise_prob": 1.0},
        )
    )
    assert policy.noise_bank is None


def test_operation_frequencies_match_probabilities(banks):
    probs = {"p_clean": 0.1, "p_noise": 0.2, "p_reverb": 0.3, "p_noise_reverb": 0.4}
    policy = _policy(banks, **probs)
    ops = torch.cat([policy.plan([400] * 50, 400, plan_rng(7, 0, i)).ops for i in range(40)])
    counts = torch.bincount(ops, minlength=4).numpy()
    expected = np.array(list(probs.values())) * len(ops)
    assert stats.chisquare(counts, expected).pvalue > 0.001


def test_snr_is_integer_uniform_and_white_noise_share(banks):
    policy = _policy(banks, p_clean=0, p_noise=1, p_reverb=0, p_noise_reverb=0, snr_low=2, snr_high=6)
    wavs, lengths = _batch([800] * 400)
    result = policy.apply(wavs, lengths, policy.plan(lengths, wavs.shape[1], np.random.default_rng(0)), step=0)
    assert set(result.snr_db.tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}
    counts = np.bincount(result.snr_db.int().numpy())[2:]
    assert stats.chisquare(counts).pvalue > 0.001
    white = sum(n == "white" for n in result.noise_names)
    assert stats.binomtest(white, 400, 0.3).pvalue > 0.001
    assert all(n == "white" or n.startswith("noise") for n in result.noise_names)


def test_curriculum_schedule_values():
    # The original: round(linspace(20, 0, 11))[step] and linspace(0, 1, 11)[step], last value after.
    assert curriculum(0, 11, 0, 20) == (20, 0.0)
    assert curriculum(5, 11, 0, 20) == (10, 0.5)
    assert curriculum(3, 11, 0, 20)[0] == 14
    assert curriculum(10, 11, 0, 20) == (0, 1.0)
    assert curriculum(500, 11, 0, 20) == (0, 1.0)
    assert curriculum(123, -1, 0, 20) == (0, 1.0)
    ref = torch.round(torch.linspace(20, 0, 7))
    assert [curriculum(s, 7, 0, 20)[0] for s in range(7)] == ref.int().tolist()


def test_curriculum_resolves_at_apply_time_per_step(banks):
    policy = _policy(banks, p_clean=0, p_noise=0, p_reverb=0, p_noise_reverb=1, inc_steps=101)
    wavs, lengths = _batch([600] * 300)
    plan = policy.plan(lengths, 600, plan_rng(0, 0, 0))
    start = policy.apply(wavs, lengths, plan, step=0)
    assert torch.all(start.snr_db == 20) and set(start.ops) == {"noise"} and torch.isnan(start.rt60).all()
    mid = policy.apply(wavs, lengths, plan, step=50)
    assert mid.snr_db.min() >= 10
    share = sum(op == "noise+reverb" for op in mid.ops) / 300
    assert 0.4 < share < 0.6
    end = policy.apply(wavs, lengths, plan, step=100)
    assert set(end.ops) == {"noise+reverb"} and end.snr_db.min() == 0


def test_plan_is_reproducible_and_apply_is_exact(banks):
    policy = _policy(banks)
    lengths = [5000, 3000, 900, 4200, 5000, 2500]
    wavs, lens = _batch(lengths)
    a = policy.plan(lens, 5000, plan_rng(3, 1, 17))
    b = policy.plan(lens, 5000, plan_rng(3, 1, 17))
    c = policy.plan(lens, 5000, plan_rng(3, 1, 18))
    for name in ("ops", "noise", "rirs", "rir_lengths", "u_snr", "u_reverb"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.noise_names == b.noise_names and a.rir_names == b.rir_names
    assert not torch.equal(a.u_snr, c.u_snr)
    noise_rows = [b_ for b_, op in enumerate(a.ops.tolist()) if OPS[op] in ("noise", "noise+reverb")]
    assert a.noise.shape == (len(noise_rows), 5000)  # one row per noisy batch row, in batch order
    for k, b_ in enumerate(noise_rows):
        assert torch.all(a.noise[k, lengths[b_] :] == 0) and a.noise[k, : lengths[b_]].abs().sum() > 0

    result = policy.apply(wavs, lens, a, step=0)
    assert result.noisy.shape == wavs.shape
    for row, (n, op) in enumerate(zip(lengths, result.ops)):
        x = wavs[row : row + 1]
        length = lens[row : row + 1]
        if "noise" in op:
            k = noise_rows.index(row)
            x = mix_at_snr(x, a.noise[k : k + 1], length, result.snr_db[row : row + 1])
        if "reverb" in op:
            m = int(a.rir_lengths[row])
            x = reverberate(x, length, a.rirs[row : row + 1, :m], a.rir_lengths[row : row + 1])
            assert result.rt60[row] == pytest.approx(0.1 * (int(result.rir_names[row][-1]) + 1))
        else:
            assert math.isnan(result.rt60[row]) and result.rir_names[row] == ""
        torch.testing.assert_close(result.noisy[row : row + 1], x)
        assert torch.all(result.noisy[row, n:] == 0)
        assert (op == "clean") == torch.equal(result.noisy[row], wavs[row])


def test_state_round_trip_gives_same_corruption(banks, caplog):
    policy = _policy(banks, inc_steps=50)
    state = policy.state_dict()
    restored = _policy(banks, inc_steps=50)
    with caplog.at_level("WARNING"):
        restored.load_state_dict(state)
    assert not caplog.records
    wavs, lens = _batch([2000, 1500, 2000])
    r1 = policy.apply(wavs, lens, policy.plan(lens, 2000, plan_rng(1, 2, 3)), step=20)
    r2 = restored.apply(wavs, lens, restored.plan(lens, 2000, plan_rng(1, 2, 3)), step=20)
    assert torch.equal(r1.noisy, r2.noisy) and r1.ops == r2.ops
    other = CorruptionPolicy.from_config(
        from_dict(CorruptionConfig, {"inc_steps": 50}),
        banks[0],
        RIRBank(rirs=[RIR(np.ones(3, np.float32), 0.1, "different")]),
    )
    with caplog.at_level("WARNING"):
        other.load_state_dict(state)
    assert "fingerprint differs" in caplog.text


def test_plan_survives_dataloader_pinning_and_device_moves(banks):
    policy = _policy(banks)
    plan = policy.plan([1000, 500], 1000, plan_rng(0, 0, 0))
    moved = plan.to("cpu")
    assert torch.equal(moved.noise, plan.noise) and moved.noise_names == plan.noise_names
    if torch.cuda.is_available():
        assert plan.pin_memory().noise.is_pinned()


def test_summarize_counts_ops_snr_and_rt60(banks):
    policy = _policy(banks)
    wavs, lens = _batch([800] * 64)
    results = [
        policy.apply(wavs, lens, policy.plan(lens, wavs.shape[1], np.random.default_rng(i)), step=0) for i in range(3)
    ]
    summary = summarize(results)
    assert summary["utterances"] == 192
    assert sum(summary[f"ops/{op}"] for op in OPS) == 192
    noisy = sum(r.snr_db.isnan().logical_not().sum().item() for r in results)
    assert sum(v for k, v in summary.items() if k.startswith("snr_hist/")) == noisy
    assert 0.1 <= summary["rt60_mean"] <= 0.3 and 0 <= summary["snr_mean"] <= 20
    empty = summarize([])
    assert empty["utterances"] == 0 and math.isnan(empty["rt60_mean"])


def test_build_policy_from_config_section(tmp_path):
    cfg = from_dict(
        CorruptionConfig,
        {
            "noise": {"builtin": True, "builtin_dir": str(tmp_path / "builtin")},
            "rir": {"simulate_rirs": {"count": 2, "rt60_range": [0.2, 0.3], "cache_dir": str(tmp_path / "rirs")}},
        },
    )
    policy = build_policy(cfg)
    assert len(policy.noise_bank) == 7 and len(policy.rir_bank) == 2
    wavs, lens = _batch([4000, 4000, 3000, 2000])
    result = policy.apply(wavs, lens, policy.plan(lens, wavs.shape[1], np.random.default_rng(0)), step=0)
    assert result.noisy.shape == wavs.shape and torch.isfinite(result.noisy).all()


def test_plan_finished_in_advance_equals_apply_for_every_step(banks):
    policy = _policy(banks)
    lengths = [5000, 3000, 900, 4200, 5000, 2500, 4000, 3500]
    wavs, lens = _batch(lengths, seed=4)
    plain = policy.plan(lens, 5000, plan_rng(0, 0, 5))
    done = policy.plan(lens, 5000, plan_rng(0, 0, 5), wavs=wavs)
    assert plain.noisy is None and done.noisy is not None
    assert set(done.ops.tolist()) == {0, 1, 2, 3}
    expected = policy.apply(wavs, lens, plain, step=0)
    for step in (0, 10_000):  # no curriculum: nothing depends on the step
        got = policy.apply(wavs, lens, done, step)
        # The same arithmetic on the same CPU: bit for bit.
        assert torch.equal(got.noisy, expected.noisy) and got.ops == expected.ops
        assert got.noise_names == expected.noise_names and got.rir_names == expected.rir_names
        torch.testing.assert_close(got.snr_db, expected.snr_db, equal_nan=True)
    with pytest.raises(ValueError, match="do not match"):
        policy.plan(lens, 6000, plan_rng(0, 0, 5), wavs=wavs)


def test_curriculum_refuses_plans_finished_in_advance(banks):
    policy = _policy(banks, inc_steps=20)
    wavs, lens = _batch([3000, 2000])
    with pytest.raises(ValueError, match="curriculum"):
        policy.plan(lens, 3000, plan_rng(0, 0, 1), wavs=wavs)


def test_apply_on_choice_and_validation():
    auto = CorruptionConfig()
    assert auto.finish_in_workers("cpu") and not auto.finish_in_workers("cuda")
    assert not from_dict(CorruptionConfig, {"inc_steps": 100}).finish_in_workers("cpu")
    assert from_dict(CorruptionConfig, {"apply_on": "workers"}).finish_in_workers("cuda")
    assert not from_dict(CorruptionConfig, {"apply_on": "device"}).finish_in_workers("cpu")
    with pytest.raises(ConfigError, match="apply_on must be one of"):
        from_dict(CorruptionConfig, {"apply_on": "gpu"})
    with pytest.raises(ConfigError, match="curriculum"):
        from_dict(CorruptionConfig, {"apply_on": "workers", "inc_steps": 100})


class _PlanBatches(torch.utils.data.Dataset):
    """Each item is one batch's plan, drawn (and with ``finish``, applied) in whichever worker loads it,
    and whether its big tensors were already in shared memory there."""

    def __init__(self, policy: CorruptionPolicy, finish: bool = False) -> None:
        self.policy, self.finish = policy, finish

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        wavs = _batch([900, 700], seed=index)[0] if self.finish else None
        plan = self.policy.plan([900, 700], 900, plan_rng(11, 2, index), wavs=wavs)
        big = plan.noisy if self.finish else plan.noise
        return plan, big.is_shared()


@pytest.mark.parametrize("finish", [False, True])
def test_plans_from_dataloader_workers_equal_in_process_plans(banks, finish):
    policy = _policy(banks)
    loader = torch.utils.data.DataLoader(_PlanBatches(policy, finish), batch_size=None, num_workers=2)
    for index, (plan, shared_in_worker) in enumerate(loader):
        assert shared_in_worker  # written straight into shared memory: sending it copies nothing
        wavs = _batch([900, 700], seed=index)[0] if finish else None
        local = policy.plan([900, 700], 900, plan_rng(11, 2, index), wavs=wavs)
        assert torch.equal(plan.rirs, local.rirs) and torch.equal(plan.u_snr, local.u_snr)
        assert plan.noise_names == local.noise_names and plan.rir_names == local.rir_names
        if finish:  # the noise is mixed in and stays in the worker
            assert plan.noise is None and local.noise is None and torch.equal(plan.noisy, local.noisy)
            assert not local.noisy.is_shared()  # outside a worker: ordinary memory
        else:
            assert torch.equal(plan.noise, local.noise) and not local.noise.is_shared()
