import io

import pytest
import torch
from torch import nn

from robustdistiller.train.optim import build_optimizer, clip_and_check, warmup_linear_schedule


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.layer_norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_weight_decay_groups_default_and_s3prl():
    model = Tiny()
    opt = build_optimizer(model)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert _ids(decay["params"]) == {id(model.proj.weight)}
    assert _ids(no_decay["params"]) == _ids([model.proj.bias, model.layer_norm.weight, model.layer_norm.bias])
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.9, 0.98)
    assert opt.defaults["eps"] == 1e-6

    ref = build_optimizer(model, match_reference=True)
    decay, no_decay = ref.param_groups
    # s3prl decays everything whose name lacks "bias", LayerNorm scales included.
    assert _ids(decay["params"]) == _ids([model.proj.weight, model.layer_norm.weight])
    assert _ids(no_decay["params"]) == _ids([model.proj.bias, model.layer_norm.bias])
    # Frozen (teacher-like) parameters are never optimised.
    all_ids = set().union(*(_ids(g["params"]) for g in ref.param_groups))
    assert not all_ids & _ids(model.frozen.parameters())


def test_extra_groups_and_named_params():
    model, head = Tiny(), nn.Linear(4, 2)
    opt = build_optimizer(
        model.named_parameters(), lr=1e-3, extra_groups=[{"params": list(head.parameters()), "lr": 5e-3}]
    )
    assert len(opt.param_groups) == 3
    assert opt.param_groups[2]["lr"] == 5e-3 and opt.param_groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False))


def test_schedule_values():
    opt = build_optimizer(nn.Linear(2, 2), lr=1.0)
    sched = warmup_linear_schedule(opt, total_steps=1000, warmup_proportion=0.1)
    lrs = []
    for _ in range(1001):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0
    assert lrs[50] == pytest.approx(0.5)
    assert lrs[100] == pytest.approx(1.0)  # warm-up end
    assert lrs[550] == pytest.approx(0.5)  # middle of the decay
    assert lrs[1000] == pytest.approx(0.0)  # end
    assert max(lrs) == pytest.approx(1.0)


def test_schedule_state_round_trip():
    def make():
        torch.manual_seed(0)
        model = nn.Linear(3, 3)
        opt = build_optimizer(model, lr=1e-2)
        return model, opt, warmup_linear_schedule(opt, total_steps=200)

    def train(model, opt, sched, steps):
        lrs = []
        for _ in range(steps):
            model(torch.ones(1, 3)).sum().backward()
            opt.step()
            opt.zero_grad()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        return lrs

    model, opt, sched = make()
    straight = train(model, opt, sched, 60)

    model, opt, sched = make()
    first = train(model, opt, sched, 25)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    model, opt, sched = make()
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    resumed = first + train(model, opt, sched, 35)
    assert resumed == straight


def test_schedule_rejects_bad_settings():
    opt = build_optimizer(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="total_steps must be positive, got 0"):
        warmup_linear_schedule(opt, total_steps=0)
    with pytest.raises(ValueError, match=r"warmup_proportion must be in \[0, 1\), got 1.0"):
        warmup_linear_schedule(opt, total_steps=10, warmup_proportion=1.0)


def test_clip_and_check():
    model = nn.Linear(2, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    norm, finite = clip_and_check(model.parameters(), max_norm=1.0)
    assert norm == pytest.approx(5.0) and finite
    assert model.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)

    model.weight.grad = torch.tensor([[float("nan"), 1.0]])
    norm, finite = clip_and_check(model.parameters(), max_norm=1.0)
    assert not finite
    assert clip_and_check(nn.Linear(2, 2).parameters(), 1.0) == (0.0, True)
