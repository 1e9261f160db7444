from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from robustdistiller.checkpoints.s3prl import read_s3prl_checkpoint
from robustdistiller.config import to_dict
from robustdistiller.train.checkpointing import load_latest_checkpoint
from robustdistiller.train.distillation import DistillTrainer


def test_sigterm_saves_a_resumable_checkpoint(make_recipe, tmp_path: Path) -> None:
    recipe = make_recipe(
        "optim.total_steps=100000", "train.save_every=100000", "train.log_every=1", "data.num_workers=1"
    )
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(to_dict(recipe)))
    out = Path(recipe.train.out_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "robustdistiller.cli", "distill", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "log.jsonl").is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (out / "log.jsonl").is_file(), proc.stdout.read().decode() if proc.poll() is not None else "no step"
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "resume with --resume" in output

    # A temp file of a write that never finished, and a damaged file with a checkpoint name, are
    # both newer than the real checkpoint; neither may be picked.
    found = load_latest_checkpoint(out)
    assert found is not None
    path, _ = found
    saved = read_s3prl_checkpoint(path)
    assert saved.step >= 1 and path.name == f"states-{saved.step}.ckpt"
    (out / f".states-{saved.step + 50}.ckpt.x1y2.tmp").write_bytes(b"half a checkpoint")
    (out / f"states-{saved.step + 100}.ckpt").write_bytes(b"damaged")
    assert load_latest_checkpoint(out)[0] == path

    resumed = DistillTrainer(make_recipe("optim.total_steps=100000", "train.save_every=100000"), resume=True)
    assert resumed.step == saved.step
