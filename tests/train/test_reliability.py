"""Training under faults: failures end the process with one line, run folders belong to one run,
resume with changed settings applies them or refuses."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from robustdistiller.config import to_dict
from robustdistiller.train.recipe import DistillRecipe

TIMEOUT = 90


def run_cli(config: Path, *args: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    """``distill --config config args`` in a subprocess that must end within ``TIMEOUT`` seconds.
    ``fsize`` caps the size of every file it writes (a full disk: writes fail with EFBIG)."""

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "robustdistiller.cli", "distill", "--config", str(config), *args]
    # subprocess.run kills the child on timeout and raises TimeoutExpired: a hang fails the test.
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=limit)


def write_recipe(recipe: DistillRecipe, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_dict(recipe)))
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in last, last


def test_all_unreadable_manifest_exits_with_one_line(make_recipe, tmp_path: Path) -> None:
    """Used to print a traceback and then wait forever on the DataLoader worker."""
    for i in range(6):
        (tmp_path / f"b{i}.wav").write_bytes(os.urandom(3000))
    rows = "".join(f"b{i}.wav\t16000\n" for i in range(6))
    manifest = tmp_path / "bad.tsv"
    manifest.write_text(f"# root: {tmp_path}\npath\tnum_samples\n{rows}")
    recipe = make_recipe(f"data.manifests=[{manifest}]", "data.num_workers=1")
    proc = run_cli(write_recipe(recipe, tmp_path / "r.yaml"))
    assert_one_line_error(proc, "no file of the training data could be read")
    listed = (Path(recipe.train.out_dir) / "bad_files.tsv").read_text().splitlines()
    assert listed[0] == "path\treason\tdetail" and len(listed) == 7
    assert all(line.split("\t")[1] == "unreadable" for line in listed[1:])


def test_full_disk_at_checkpoint_exits_with_one_line(make_recipe, tmp_path: Path) -> None:
    recipe = make_recipe("data.num_workers=1", "train.save_every=2")
    proc = run_cli(write_recipe(recipe, tmp_path / "r.yaml"), fsize=300_000)
    assert_one_line_error(proc, "states-2.ckpt", "could not write")
    out = Path(recipe.train.out_dir)
    assert not list(out.glob("states-*")) and not list(out.glob(".states-*")), list(out.iterdir())
