from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from robustdistiller.config import to_dict
from robustdistiller.train.distillation import DistillTrainer

# Each rank trains with its gradients recorded as the optimizer step sees them (after DDP's
# all-reduce, before clipping), then saves them and its weights (checkpoints come from rank 0 only).
DRIVER = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_ddp import record_gradients
from robustdistiller.train.recipe import load_recipe
from robustdistiller.train.distributed import init_distributed, shutdown
from robustdistiller.train.distillation import DistillTrainer

recipe = load_recipe(sys.argv[1])
ctx = init_distributed("cpu")
grads = record_gradients(DistillTrainer)
trainer = DistillTrainer(recipe, ctx=ctx)
result = trainer.fit()
torch.save({"student": trainer.objective.student.state_dict(), "losses": result.losses, "grads": grads},
           f"{recipe.train.out_dir}/rank{ctx.rank}.pt")
shutdown(ctx)
"""

# Corruption (white noise at 0-20 dB on 3 of 4 utterances) and the enhancement head on; no dropout,
# whose random masks differ between ranks by design.
ROBUST_NO_DROPOUT = (
    "corruption.p_clean=0.25",
    "corruption.p_noise=0.75",
    "corruption.p_reverb=0.0",
    "corruption.p_noise_reverb=0.0",
    "corruption.white_noise_prob=1.0",
    "enhancement.use_enhancement=true",
    "enhancement.dropout=0.0",
)


def record_gradients(trainer_class: type[DistillTrainer]) -> list[dict[str, torch.Tensor]]:
    """Patch ``trainer_class`` so every optimizer step first appends the gradients of the student
    (``s.``) and the enhancement head (``h.``) to the returned list."""
    grads: list[dict[str, torch.Tensor]] = []
    real = trainer_class._optimizer_step

    def recording(self, loss):
        named = [("s." + n, p) for n, p in self.modules["student"].named_parameters()]
        if "head" in self.modules:
            named += [("h." + n, p) for n, p in self.modules["head"].named_parameters()]
        grads.append({n: p.grad.detach().clone() for n, p in named if p.grad is not None})
        return real(self, loss)

    trainer_class._optimizer_step = recording
    return grads


def test_torchrun_two_ranks_have_the_gradients_of_one_process_on_the_same_global_batch(
    make_recipe, tmp_path: Path, monkeypatch
) -> None:
    # Per rank: batches of 4; 2 ranks = global batch of two buckets. The single process sees the same
    # two buckets per step through gradient accumulation (rank r takes every r-th batch of the shuffled
    # order; accumulation takes consecutive ones), with the loss of each halved = DDP's average.
    # Corruption plans are seeded by the batch's manifest rows, so both sides corrupt alike.
    steps = (*ROBUST_NO_DROPOUT, "optim.total_steps=2", "train.save_every=100", "data.num_workers=0")
    ddp = make_recipe(*steps, out="ddp")
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(to_dict(ddp)))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(tmp_path / "driver.py"),
            str(config),
            str(Path(__file__).parent),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0 = torch.load(Path(ddp.train.out_dir) / "rank0.pt")
    rank1 = torch.load(Path(ddp.train.out_dir) / "rank1.pt")
    for key, value in rank0["student"].items():
        assert torch.equal(value, rank1["student"][key]), key

    monkeypatch.setattr(DistillTrainer, "_optimizer_step", DistillTrainer._optimizer_step)  # undone after
    single_grads = record_gradients(DistillTrainer)
    DistillTrainer(make_recipe(*steps, "optim.grad_accum=2", out="single")).fit()

    assert len(rank0["grads"]) == len(single_grads) == 2
    for step, (ours, reference) in enumerate(zip(rank0["grads"], single_grads)):
        assert ours.keys() == reference.keys() and any(k.startswith("h.") for k in ours)
        # Only the reduction order differs (gloo sums two float32 gradients then divides; accumulation
        # adds two halves): float32 rounding. Measured against the largest gradient entry, because
        # some gradients are zero up to rounding (attention key biases cancel in the softmax).
        scale = max(float(g.abs().max()) for g in reference.values())
        for name, grad in reference.items():
            error = float((ours[name] - grad).abs().max()) / scale
            assert error <= 1e-5, (step, name, error)
            assert torch.equal(ours[name], rank1["grads"][step][name]), (step, name)
        # ... and a real gradient: a rank that kept its own half would be off by far more than that
        assert scale > 1e-3
