"""Hard-concrete statistics, the deterministic eval mask and the Lagrangian sparsity term."""

from __future__ import annotations

import math

import pytest
import torch

from robustdistiller.models.pruning import STRETCH, TEMPERATURE, HardConcrete, SparsityConstraint


def test_expected_l0_is_dphuberts_formula_and_the_sampled_rate() -> None:
    gate = HardConcrete(5)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-4.0, -1.0, 0.0, 1.5, 4.6]))
    # sum sigmoid(log_alpha - beta log(-l/r)) = sum sigmoid(log_alpha + 1.5986)
    assert TEMPERATURE * math.log(-STRETCH[0] / STRETCH[1]) == pytest.approx(-1.5986, abs=1e-4)
    expected = torch.sigmoid(gate.log_alpha.detach() + 1.5986).sum()
    assert float(gate.l0_norm().detach()) == pytest.approx(float(expected), abs=1e-3)
    # ... which is the probability that a training sample is non-zero
    torch.manual_seed(0)
    gate.train()
    samples = torch.stack([gate() for _ in range(20000)])
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert bool((samples == 0).any()) and bool((samples == 1).any())  # the stretch makes exact 0 / 1
    rate = (samples > 0).float().mean(0)
    torch.testing.assert_close(rate, torch.sigmoid(gate.log_alpha.detach() + 1.5986), atol=0.015, rtol=0)


def test_eval_mask_zeroes_the_expected_number_of_lowest_units_and_keeps_soft_values() -> None:
    gate = HardConcrete(8).eval()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([3.0, -3.0, 2.0, -2.5, 0.5, -4.0, 1.0, 5.0]))
    mask = gate()
    num_zeros = round(8 - float(gate.l0_norm().detach()))
    assert num_zeros == 3
    zeroed = set(torch.nonzero(mask == 0).flatten().tolist())
    assert zeroed == {1, 3, 5}  # the three smallest log_alpha
    soft = torch.sigmoid(gate.log_alpha.detach() / TEMPERATURE * 0.8)
    keep = mask != 0
    torch.testing.assert_close(mask[keep], soft[keep])  # kept units keep their soft value (< 1)
    assert torch.equal(gate(), mask)  # deterministic
    assert not mask.requires_grad


def test_gate_initialisation_means() -> None:
    torch.manual_seed(0)
    assert float(HardConcrete(1000, init_mean=0.01).log_alpha.detach().mean()) == pytest.approx(math.log(99), abs=0.01)
    assert float(HardConcrete(1000, init_mean=0.5).log_alpha.detach().mean()) == pytest.approx(0.0, abs=0.01)
    with pytest.raises(ValueError, match="at least one unit"):
        HardConcrete(0)


def test_sparsity_target_ramp_and_gradient_ascent_on_the_multipliers() -> None:
    constraint = SparsityConstraint(0.75, warmup_steps=100)
    assert [constraint.target_at(s) for s in (0, 50, 100, 5000)] == [0.0, 0.375, 0.75, 0.75]
    assert SparsityConstraint(0.5, 0).target_at(0) == 0.5
    with pytest.raises(ValueError, match="target sparsity"):
        SparsityConstraint(1.0, 10)

    expected = torch.tensor(0.25, requires_grad=True)
    opt = torch.optim.AdamW([{"params": constraint.parameters(), "lr": -0.02, "weight_decay": 0.0}])
    loss = constraint(expected, step=200)  # s - t = -0.5
    assert float(loss.detach()) == 0.0  # multipliers start at 0
    loss.backward()
    assert float(expected.grad) == 0.0
    opt.step()
    # ascent: lambda1 follows the sign of (s - t), lambda2 grows; the next penalty is positive
    assert float(constraint.lambda1.detach()) < 0 and float(constraint.lambda2.detach()) > 0
    again = constraint(expected, step=200)
    assert float(again.detach()) > 0
    again.backward()
    assert float(expected.grad) < 0  # minimising it now raises the expected sparsity
