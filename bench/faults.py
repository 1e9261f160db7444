"""Fault injection: the CLI under hostile input, broken environments and signals, case by case.

Every case runs ``python -m robustdistiller.cli`` in a subprocess (its own process group, killed by
pid after ``--timeout`` seconds) and is judged as one of:

* ``ok``            the right result (a finished run, a correct file, a listed skip);
* ``clear error``   a refusal the case expects: non-zero exit, an ``error:`` line, no traceback;
* ``traceback``     a Python traceback for an input or environment error;
* ``hang``          still running at the timeout;
* ``wrong refusal`` an ``error:`` exit where the right answer was to succeed (skipping the bad part);
* ``silent wrong``  exit 0 with a wrong or unreported result;
* ``data lost``     an earlier run, model or feature file was deleted or overwritten.

A full disk is stood in for by ``RLIMIT_FSIZE`` (with SIGXFSZ ignored, writes past the limit fail
with EFBIG, as ENOSPC does). Assets (a tiny teacher, eight wavs, a two-step checkpoint) are built
once per run in ``--work``.

    PYTHONPATH=. python bench/faults.py                     # this checkout
    python bench/faults.py --repo /tmp/orig --work /tmp/f0  # another checkout (e.g. before a fix)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

OUTCOMES = ("ok", "clear error", "wrong refusal", "traceback", "hang", "silent wrong", "data lost")
SR = 16000
STUDENT = {
    "extractor_conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "encoder_layers": 2,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 4,
    "final_dim": 64,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "n_tasks": 2,
    "pred_layer_id": [2, 3],
}


@dataclass
class Result:
    rc: int | None
    out: str
    err: str
    hung: bool
    seconds: float

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.out + self.err

    @property
    def clear_error(self) -> bool:
        return self.rc not in (0, None) and "error" in self.err.lower()


class Env:
    """Paths and the CLI runner shared by the cases."""

    def __init__(self, repo: Path, work: Path, timeout: float) -> None:
        self.repo, self.work, self.timeout = repo, work, timeout
        self.assets = work / "assets"

    def cli(
        self,
        *args: str,
        fsize: int | None = None,
        timeout: float | None = None,
        signal_after: tuple[Path, int] | None = None,
        cwd: Path | None = None,
    ) -> Result:
        """Run the CLI; ``fsize`` caps file sizes (full disk); ``signal_after=(file, sig)`` sends ``sig``
        once ``file`` exists."""
        env = {**os.environ, "PYTHONPATH": str(self.repo), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

        def limit() -> None:
            os.setpgrp()
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "robustdistiller.cli", *args],
            env=env,
            cwd=cwd or self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit,
        )
        deadline = start + (timeout or self.timeout)
        if signal_after is not None:
            path, sig = signal_after
            while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            hung = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and any DataLoader worker it left
            out, err = proc.communicate()
            hung = True
        return Result(None if hung else proc.returncode, out, err, hung, time.monotonic() - start)

    # ------------------------------------------------------------------ recipe helpers
    def recipe(self, folder: Path, **sections: dict) -> Path:
        data = {
            "data": {
                "manifests": [str(self.assets / "audio" / "train.tsv")],
                "max_length": 12000,
                "batch_size": 4,
                "num_workers": 1,
                "seed": 3,
            },
            "corruption": {"p_clean": 1.0, "p_noise": 0.0, "p_reverb": 0.0, "p_noise_reverb": 0.0},
            "teacher": {"source": str(self.assets / "teacher")},
            "student": dict(STUDENT),
            "enhancement": {"use_enhancement": False, "input_dim": 32, "num_layers": 1, "hidden_size": 16},
            "optim": {"lr": 1e-3, "total_steps": 4, "warmup_proportion": 0.0, "grad_clip": 10.0},
            "train": {"out_dir": str(folder / "run"), "device": "cpu", "log_every": 1, "save_every": 2, "keep_last": 2},
        }
        for name, values in sections.items():
            data[name].update(values)
        path = folder / "recipe.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def distill(self, folder: Path, *overrides: str, resume: bool = False, **kw) -> Result:
        config = folder / "recipe.yaml"
        if not config.is_file():
            self.recipe(folder)
        return self.cli("distill", "--config", str(config), *(["--resume"] if resume else []), *overrides, **kw)

    @property
    def ckpt(self) -> Path:
        return self.assets / "model.ckpt"


# ------------------------------------------------------------------ assets
def build_assets(env: Env) -> None:
    sys.path.insert(0, str(env.repo / "tests"))
    from fixtures_tiny import hf_model, write_harmonic_manifest

    env.assets.mkdir(parents=True, exist_ok=True)
    hf_model("hubert", seed=0, num_hidden_layers=3).save_pretrained(env.assets / "teacher")
    (env.assets / "audio").mkdir(exist_ok=True)
    write_harmonic_manifest(env.assets / "audio", 8, (0.4, 0.9))
    folder = env.work / "seed_run"
    folder.mkdir(exist_ok=True)
    env.recipe(folder, optim={"total_steps": 2})
    res = env.distill(folder)
    if res.rc != 0:
        raise SystemExit(f"could not build the seed checkpoint:\n{res.err}")
    shutil.copy(folder / "run" / "states-2.ckpt", env.ckpt)


def edited_checkpoint(env: Env, dest: Path, edit: Callable[[dict], None]) -> Path:
    import torch

    raw = torch.load(env.ckpt, weights_only=False)
    edit(raw)
    torch.save(raw, dest)
    return dest


def nan_checkpoint(env: Env, dest: Path) -> Path:
    def poison(raw: dict) -> None:
        for key, value in raw["Distiller"].items():
            if value.is_floating_point() and "encoder.layers.0" in key:
                value.fill_(float("nan"))

    return edited_checkpoint(env, dest, poison)


def wav(path: Path, data: np.ndarray, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, SR, subtype=subtype)
    return path


def tone(seconds: float = 0.5, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    return (amp * np.sin(2 * np.pi * 200 * np.arange(n) / SR) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def manifest(folder: Path, rows: list[tuple[str, int]], root: Path) -> Path:
    lines = [f"# root: {root}", "path\tnum_samples"] + [f"{p}\t{n}" for p, n in rows]
    path = folder / "m.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------ judging
def judge(
    res: Result, *, refuse: bool, wrong: str | None = None, lost: str | None = None, rc_ok: int = 0
) -> tuple[str, str]:
    """Outcome and a note. ``refuse``: the right answer is a clear error. ``wrong`` / ``lost``: what the
    case found wrong with the result (None when the result is right). ``rc_ok``: the right exit status
    when the case should succeed."""
    if res.hung:
        return "hang", f"killed after {res.seconds:.0f} s"
    if res.traceback:
        return "traceback", _last_line(res.err)
    if lost:
        return "data lost", lost
    if wrong:
        return "silent wrong", wrong
    if refuse:
        if res.clear_error:
            return "clear error", _last_line(res.err)
        return "silent wrong", f"exit {res.rc}, no error line"
    if res.rc != rc_ok:
        return "wrong refusal" if res.clear_error else "silent wrong", f"exit {res.rc}: {_last_line(res.err)}"
    return "ok", ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


CASES: list[tuple[int, str, Callable[[Env, Path], tuple[str, str]]]] = []


def case(item: int, name: str) -> Callable:
    def register(fn: Callable[[Env, Path], tuple[str, str]]) -> Callable:
        CASES.append((item, name, fn))
        return fn

    return register


def bad_manifest(tmp: Path, count: int = 6) -> Path:
    for i in range(count):
        (tmp / f"b{i}.wav").write_bytes(os.urandom(3000))
    return manifest(tmp, [(f"b{i}.wav", 16000) for i in range(count)], tmp)


# ------------------------------------------------------------------ 1: hangs
@case(1, "distill: every file unreadable (1 worker)")
def _all_bad(env: Env, tmp: Path) -> tuple[str, str]:
    env.recipe(tmp, data={"manifests": [str(bad_manifest(tmp))]})
    return judge(env.distill(tmp), refuse=True)


@case(1, "distill: every file unreadable (0 workers)")
def _all_bad_0(env: Env, tmp: Path) -> tuple[str, str]:
    env.recipe(tmp, data={"manifests": [str(bad_manifest(tmp))], "num_workers": 0})
    return judge(env.distill(tmp), refuse=True)


@case(1, "distill: disk full at the first checkpoint")
def _full_disk_save(env: Env, tmp: Path) -> tuple[str, str]:
    env.recipe(tmp)
    res = env.distill(tmp, fsize=300_000)
    temps = [p.name for p in (tmp / "run").glob(".*tmp*")]
    return judge(res, refuse=True, wrong=f"temp files left: {temps}" if temps else None)


@case(1, "distill: SIGTERM, then the save fails (disk full)")
def _sigterm_full(env: Env, tmp: Path) -> tuple[str, str]:
    env.recipe(tmp, optim={"total_steps": 100000}, train={"save_every": 100000})
    res = env.distill(tmp, fsize=300_000, signal_after=(tmp / "run" / "log.jsonl", signal.SIGTERM))
    return judge(res, refuse=True)


@case(1, "distill: SIGTERM saves and exits 143")
def _sigterm(env: Env, tmp: Path) -> tuple[str, str]:
    env.recipe(tmp, optim={"total_steps": 100000}, train={"save_every": 100000})
    res = env.distill(tmp, signal_after=(tmp / "run" / "log.jsonl", signal.SIGTERM))
    return judge(res, refuse=False, rc_ok=143)


# ------------------------------------------------------------------ 2/3: run folders and resume
def _finished_run(env: Env, tmp: Path, steps: int = 4) -> Result:
    env.recipe(tmp, optim={"total_steps": steps})
    res = env.distill(tmp)
    assert res.rc == 0, res.err
    return res


@case(2, "distill: new run into a folder holding an older, longer run")
def _new_over_old(env: Env, tmp: Path) -> tuple[str, str]:
    _finished_run(env, tmp, 4)
    before = {p.name: p.read_bytes() for p in (tmp / "run").glob("states-*.ckpt")}
    res = env.distill(tmp, "optim.total_steps=2")
    after = {p.name: p.read_bytes() for p in (tmp / "run").glob("states-*.ckpt")}
    changed = sorted(name for name in before if after.get(name) != before[name])
    lost = f"old run's checkpoints overwritten or deleted: {changed}" if changed else None
    return judge(res, refuse=True, lost=lost)


@case(2, "distill: rerun of the same recipe into a finished run's folder")
def _rerun_same(env: Env, tmp: Path) -> tuple[str, str]:
    _finished_run(env, tmp, 4)
    return judge(env.distill(tmp), refuse=True)


@case(3, "distill --resume optim.total_steps=6 (extend a finished run)")
def _extend(env: Env, tmp: Path) -> tuple[str, str]:
    import torch

    _finished_run(env, tmp, 4)
    res = env.distill(tmp, "optim.total_steps=6", resume=True)
    ckpt = tmp / "run" / "states-6.ckpt"
    if res.rc != 0 or not ckpt.is_file():
        return judge(res, refuse=False, wrong=None if res.rc else "no states-6.ckpt")
    old = torch.load(tmp / "run" / "states-4.ckpt", weights_only=True)["Distiller"]
    new = torch.load(ckpt, weights_only=True)["Distiller"]
    moved = any(not torch.equal(old[k], new[k]) for k in old)
    return judge(res, refuse=False, wrong=None if moved else "weights unchanged over steps 5-6 (lr 0)")


@case(3, "distill: overrides after --resume")
def _override_after(env: Env, tmp: Path) -> tuple[str, str]:
    _finished_run(env, tmp, 4)
    config = tmp / "recipe.yaml"
    res = env.cli("distill", "--config", str(config), "--resume", "optim.total_steps=6")
    ok = (tmp / "run" / "states-6.ckpt").is_file()
    return judge(res, refuse=False, wrong=None if ok or res.rc else "no states-6.ckpt")


@case(3, "distill: override before --config and after --resume")
def _override_mixed(env: Env, tmp: Path) -> tuple[str, str]:
    _finished_run(env, tmp, 4)
    res = env.cli("distill", "optim.total_steps=6", "--config", str(tmp / "recipe.yaml"), "--resume")
    ok = (tmp / "run" / "states-6.ckpt").is_file()
    return judge(res, refuse=False, wrong=None if ok or res.rc else "no states-6.ckpt")


@case(3, "distill --resume with a changed batch size")
def _resume_batch(env: Env, tmp: Path) -> tuple[str, str]:
    _finished_run(env, tmp, 4)
    res = env.distill(tmp, "optim.total_steps=6", "data.batch_size=2", resume=True)
    named = "batch_size" in res.err
    return judge(
        res,
        refuse=True,
        wrong=None
        if named or res.rc == 0 and False
        else (None if res.rc else "resumed silently with another batch size"),
    )


@case(3, "distill --resume with a changed learning rate")
def _resume_lr(env: Env, tmp: Path) -> tuple[str, str]:
    import torch

    _finished_run(env, tmp, 4)
    res = env.distill(tmp, "optim.total_steps=6", "optim.lr=5e-3", resume=True)
    if res.rc != 0:
        return judge(res, refuse=True, wrong=None if "lr" in res.err else "refusal does not name optim.lr")
    sched = torch.load(tmp / "run" / "states-6.ckpt", weights_only=True)["Optimizer"]["param_groups"][0]
    applied = abs(sched.get("initial_lr", 0) - 5e-3) < 1e-12
    return judge(
        res, refuse=False, wrong=None if applied else f"lr override ignored (initial_lr {sched.get('initial_lr')})"
    )


@case(3, "distill --resume on a finished run with nothing changed")
def _resume_finished(env: Env, tmp: Path) -> tuple[str, str]:
    _finished_run(env, tmp, 4)
    res = env.distill(tmp, resume=True)
    return judge(res, refuse=False)


# ------------------------------------------------------------------ 4: ONNX
@case(4, "export onnx: disk full over an existing good model")
def _onnx_full(env: Env, tmp: Path) -> tuple[str, str]:
    out = tmp / "m.onnx"
    first = env.cli("export", str(env.ckpt), "--format", "onnx", "--out", str(out))
    if first.rc != 0:
        return judge(first, refuse=False)
    good = out.read_bytes()
    res = env.cli("export", str(env.ckpt), "--format", "onnx", "--out", str(out), "--layers", "0", fsize=20_000)
    lost = None if out.is_file() and out.read_bytes() == good else "previous model truncated or replaced"
    temps = [p.name for p in tmp.iterdir() if p.name.startswith(".")]
    return judge(res, refuse=True, lost=lost, wrong=f"temp files left {temps}" if temps else None)


@case(4, "export onnx: NaN weights")
def _onnx_nan(env: Env, tmp: Path) -> tuple[str, str]:
    ckpt = nan_checkpoint(env, tmp / "nan.ckpt")
    res = env.cli("export", str(ckpt), "--format", "onnx", "--out", str(tmp / "m.onnx"))
    return judge(res, refuse=True, wrong=None if not (tmp / "m.onnx").exists() or res.rc else "NaN model written")


@case(14, "export hf: NaN weights")
def _hf_nan(env: Env, tmp: Path) -> tuple[str, str]:
    ckpt = nan_checkpoint(env, tmp / "nan.ckpt")
    return judge(env.cli("export", str(ckpt), "--format", "hf", "--out", str(tmp / "hf")), refuse=True)


@case(14, "info: NaN weights")
def _info_nan(env: Env, tmp: Path) -> tuple[str, str]:
    ckpt = nan_checkpoint(env, tmp / "nan.ckpt")
    res = env.cli("info", str(ckpt))
    flagged = "NaN/inf" in res.out + res.err  # described, flagged, and a failing exit status
    return judge(res, refuse=True, wrong=None if flagged or res.rc else "NaN weights not reported")


@case(14, "extract: NaN weights")
def _extract_nan(env: Env, tmp: Path) -> tuple[str, str]:
    ckpt = nan_checkpoint(env, tmp / "nan.ckpt")
    res = env.cli("extract", "--model", str(ckpt), "--input", str(env.assets / "audio"), "--out", str(tmp / "f"))
    written = list((tmp / "f").glob("*.npy")) if (tmp / "f").is_dir() else []
    return judge(
        res, refuse=True, wrong=f"{len(written)} NaN feature files, exit 0" if written and res.rc == 0 else None
    )


# ------------------------------------------------------------------ 5/6/7: extract outputs
@case(5, "extract: manifest rows with ../ and absolute paths")
def _escape(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    inner = wav(src / "a" / "in.wav", tone())
    wav(src / "up.wav", tone(seed=1))  # the manifest's ../up.wav
    absolute = wav(tmp / "elsewhere" / "abs.wav", tone(seed=2))
    m = manifest(tmp, [("in.wav", 8000), ("../up.wav", 8000), (str(absolute), 8000)], inner.parent)
    out = tmp / "out"
    res = env.cli("extract", "--model", str(env.ckpt), "--input", str(m), "--out", str(out))
    strays = [str(p) for p in tmp.rglob("*.npy") if out not in p.parents]
    inside = list(out.rglob("*.npy")) if out.is_dir() else []
    wrong = (
        f"written outside --out: {strays}" if strays else (None if len(inside) == 3 else f"{len(inside)} of 3 written")
    )
    return judge(res, refuse=False, wrong=wrong)


@case(5, "prepare csv: rows outside --root")
def _csv_escape(env: Env, tmp: Path) -> tuple[str, str]:
    root = tmp / "root"
    wav(root / "in.wav", tone())
    wav(tmp / "up.wav", tone())
    csv = tmp / "list.csv"
    csv.write_text("file_path,length\nin.wav,8000\n../up.wav,8000\n")
    res = env.cli("prepare", "csv", str(csv), "--root", str(root), "--out", str(tmp / "m.tsv"))
    rows = (tmp / "m.tsv").read_text() if (tmp / "m.tsv").is_file() else ""
    listed = "up.wav" in res.out + res.err
    return judge(
        res,
        refuse=False,
        wrong="../ row kept in the manifest"
        if "../up.wav" in rows
        else (None if listed or res.rc else "row dropped without a line"),
    )


@case(6, "extract: x.wav and x.flac in one folder")
def _collide(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    wav(src / "x.wav", tone())
    sf.write(src / "x.flac", tone(seed=3), SR)
    wav(src / "y.wav", tone(seed=4))
    out = tmp / "out"
    res = env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(out))
    files = list(out.rglob("*.npy")) if out.is_dir() else []
    return judge(res, refuse=False, lost=None if len(files) == 3 or res.rc else f"3 inputs, {len(files)} files")


@case(7, "extract: two runs with different layers into one folder at once")
def _concurrent(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    for i in range(6):
        wav(src / f"u{i}.wav", tone(2.0, seed=i))
    out = tmp / "out"
    cmd = [
        sys.executable,
        "-m",
        "robustdistiller.cli",
        "extract",
        "--model",
        str(env.ckpt),
        "--input",
        str(src),
        "--out",
        str(out),
        "--layers",
    ]
    e = {**os.environ, "PYTHONPATH": str(env.repo), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd + [layer], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for layer in ("0", "2")
    ]
    outs = [p.communicate(timeout=env.timeout) for p in procs]
    codes = [p.returncode for p in procs]
    tb = any("Traceback" in o + e_ for o, e_ in outs)
    if tb:
        return "traceback", _last_line(outs[0][1] + outs[1][1])
    if codes.count(0) == 2:
        return "silent wrong", "both runs succeeded into one folder"
    if codes.count(0) == 1 and any("error" in e_.lower() for _, e_ in outs):
        return "clear error", "one run refused"
    return "silent wrong", f"exit codes {codes}"


@case(7, "extract: second run with other layers into a finished folder")
def _sequential(env: Env, tmp: Path) -> tuple[str, str]:
    src = env.assets / "audio"
    out = tmp / "out"
    env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(out), "--layers", "0")
    return judge(
        env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(out), "--layers", "2"),
        refuse=True,
    )


# ------------------------------------------------------------------ 8: crafted checkpoints
def _crafted(env: Env, tmp: Path, **section: object) -> tuple[str, str]:
    ckpt = edited_checkpoint(env, tmp / "c.ckpt", lambda raw: raw["Config"]["distiller"].update(section))
    res = env.cli("info", str(ckpt), timeout=30)
    return judge(res, refuse=True)


@case(8, "info: conv spec [(1,2,1)] * 10000 * 10000")
def _huge_conv(env: Env, tmp: Path) -> tuple[str, str]:
    return _crafted(env, tmp, extractor_conv_feature_layers="[(1,2,1)] * 10000 * 10000")


@case(8, "info: encoder_embed_dim=2000000")
def _huge_dim(env: Env, tmp: Path) -> tuple[str, str]:
    return _crafted(env, tmp, encoder_embed_dim=2_000_000, encoder_ffn_embed_dim=2_000_000)


@case(8, "info: encoder_layers=100000")
def _huge_layers(env: Env, tmp: Path) -> tuple[str, str]:
    return _crafted(env, tmp, encoder_layers=100_000)


@case(8, "export onnx: conv channels 10^7")
def _huge_channels(env: Env, tmp: Path) -> tuple[str, str]:
    ckpt = edited_checkpoint(
        env,
        tmp / "c.ckpt",
        lambda raw: raw["Config"]["distiller"].update(extractor_conv_feature_layers="[(10000000,10,5)]"),
    )
    return judge(
        env.cli("export", str(ckpt), "--format", "onnx", "--out", str(tmp / "m.onnx"), timeout=30), refuse=True
    )


# ------------------------------------------------------------------ 9: sample values
def _train_on(env: Env, tmp: Path, data: np.ndarray) -> tuple[Result, Path]:
    folder = tmp / "audio"
    rows = []
    for i in range(4):
        wav(folder / f"u{i}.wav", data if i == 0 else tone(0.6, seed=i))
        rows.append((f"u{i}.wav", len(data) if i == 0 else int(0.6 * SR)))
    m = manifest(folder, rows, folder)
    env.recipe(tmp, data={"manifests": [str(m)], "num_workers": 0})
    return env.distill(tmp), tmp / "run"


@case(9, "distill: int16-scale float WAV (peak 32767)")
def _int16_float(env: Env, tmp: Path) -> tuple[str, str]:
    res, run = _train_on(env, tmp, tone(0.6) * 32767 / 0.3)
    listed = (run / "bad_files.tsv").is_file() and "u0.wav" in (run / "bad_files.tsv").read_text()
    warned = "u0.wav" in res.err
    return judge(res, refuse=False, wrong=None if listed or warned or res.rc else "accepted silently")


@case(9, "distill: 1e30-amplitude float WAV")
def _huge_amp(env: Env, tmp: Path) -> tuple[str, str]:
    res, run = _train_on(env, tmp, tone(0.6) * 1e30)
    listed = (run / "bad_files.tsv").is_file() and "u0.wav" in (run / "bad_files.tsv").read_text()
    return judge(res, refuse=False, wrong=None if listed or res.rc else "never listed")


@case(9, "extract: int16-scale float WAV")
def _extract_int16(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    wav(src / "loud.wav", tone() * 32767 / 0.3)
    wav(src / "fine.wav", tone())
    res = env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(tmp / "o"))
    listed = "loud.wav" in res.out + res.err
    return judge(res, refuse=False, wrong=None if listed else "accepted silently")


# ------------------------------------------------------------------ 10: OS errors
def _out_cases() -> list[tuple[str, Callable[[Path], Path]]]:
    def a_file(tmp: Path) -> Path:
        (tmp / "f").write_text("x")
        return tmp / "f"

    def under_file(tmp: Path) -> Path:
        (tmp / "f").write_text("x")
        return tmp / "f" / "sub"

    def read_only(tmp: Path) -> Path:
        if os.geteuid() == 0:  # root writes through file modes: use a read-only file system instead
            return Path("/sys/rd_faults/sub")
        (tmp / "ro").mkdir()
        os.chmod(tmp / "ro", 0o555)
        return tmp / "ro" / "sub"

    return [("is a file", a_file), ("under a file", under_file), ("read-only", read_only)]


def _verb_out(verb: str, env: Env, tmp: Path, out: Path) -> Result:
    if verb == "distill":
        env.recipe(tmp, train={"out_dir": str(out)})
        return env.distill(tmp)
    if verb == "extract":
        return env.cli("extract", "--model", str(env.ckpt), "--input", str(env.assets / "audio"), "--out", str(out))
    if verb == "export-onnx":
        return env.cli("export", str(env.ckpt), "--format", "onnx", "--out", str(out / "m.onnx"))
    if verb == "export-hf":
        return env.cli("export", str(env.ckpt), "--format", "hf", "--out", str(out))
    if verb == "prepare":
        return env.cli("prepare", "folder", str(env.assets / "audio"), "--out", str(out / "m.tsv"))
    raise ValueError(verb)


for _verb in ("distill", "extract", "export-onnx", "export-hf", "prepare"):
    for _label, _make in _out_cases():

        def _os_case(env: Env, tmp: Path, verb: str = _verb, make: Callable = _make) -> tuple[str, str]:
            try:
                return judge(_verb_out(verb, env, tmp, make(tmp)), refuse=True)
            finally:
                for p in tmp.rglob("*"):
                    if p.is_dir():
                        os.chmod(p, 0o755)

        case(10, f"{_verb}: output {_label}")(_os_case)


@case(10, "distill: YAML with a tab")
def _tabs(env: Env, tmp: Path) -> tuple[str, str]:
    (tmp / "r.yaml").write_text("train:\n\tout_dir: x\n")
    return judge(env.cli("distill", "--config", str(tmp / "r.yaml")), refuse=True)


@case(10, "distill: train.device=gpu")
def _gpu(env: Env, tmp: Path) -> tuple[str, str]:
    return judge(env.distill(tmp, "train.device=gpu"), refuse=True)


@case(10, "extract: --threads 0")
def _threads0(env: Env, tmp: Path) -> tuple[str, str]:
    return judge(
        env.cli(
            "extract",
            "--model",
            str(env.ckpt),
            "--input",
            str(env.assets / "audio"),
            "--out",
            str(tmp / "o"),
            "--threads",
            "0",
        ),
        refuse=True,
    )


@case(10, "extract: disk full")
def _extract_full(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    wav(src / "long.wav", tone(30.0))
    res = env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(tmp / "o"), fsize=200_000)
    temps = [p.name for p in (tmp / "o").glob(".*tmp*")] if (tmp / "o").is_dir() else []
    return judge(res, refuse=True, wrong=f"temp files left {temps}" if temps else None)


@case(10, "prepare: disk full")
def _prepare_full(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    for i in range(300):
        wav(src / f"a_long_file_name_number_{i:05d}.wav", tone(0.05, seed=i), subtype="PCM_16")
    return judge(env.cli("prepare", "folder", str(src), "--out", str(tmp / "m.tsv"), fsize=2_000), refuse=True)


@case(10, "evaluate: output is a file")
def _evaluate_out(env: Env, tmp: Path) -> tuple[str, str]:
    (tmp / "f").write_text("x")
    res = env.cli("evaluate", "--help")
    if "--out" not in res.out:
        return "ok", "no --out"
    args = ["evaluate", "--model", str(env.ckpt), "--out", str(tmp / "f" / "x")]
    return judge(env.cli(*args), refuse=True)


# ------------------------------------------------------------------ 11: temp files
@case(11, "distill: stale temp files from a killed run are cleaned")
def _stale(env: Env, tmp: Path) -> tuple[str, str]:
    run = tmp / "run"
    run.mkdir()
    stale = run / ".states-2.ckpt.tmp-999999-abc.ckpt"
    stale.write_bytes(b"x" * 1000)
    env.recipe(tmp)
    res = env.distill(tmp)
    return judge(res, refuse=False, wrong="stale temp kept" if stale.exists() else None)


@case(11, "extract: stale temp files from a killed run are cleaned")
def _stale_extract(env: Env, tmp: Path) -> tuple[str, str]:
    out = tmp / "o"
    out.mkdir()
    stale = out / ".utt0.npy.tmp-999999-abc.npy"
    stale.write_bytes(b"x" * 1000)
    res = env.cli("extract", "--model", str(env.ckpt), "--input", str(env.assets / "audio"), "--out", str(out))
    return judge(res, refuse=False, wrong="stale temp kept" if stale.exists() else None)


@case(11, "export hf: failure leaves no half folder")
def _hf_half(env: Env, tmp: Path) -> tuple[str, str]:
    out = tmp / "hf"
    res = env.cli("export", str(env.ckpt), "--format", "hf", "--out", str(out), fsize=2_000)
    left = [p.name for p in tmp.iterdir()]
    return judge(res, refuse=True, wrong=f"left {left}" if left else None)


# ------------------------------------------------------------------ 12: bad values
@case(12, "distill: optim.lr=.inf")
def _lr_inf(env: Env, tmp: Path) -> tuple[str, str]:
    return judge(env.distill(tmp, "optim.lr=.inf"), refuse=True)


@case(12, "distill: optim.lr=.nan")
def _lr_nan(env: Env, tmp: Path) -> tuple[str, str]:
    return judge(env.distill(tmp, "optim.lr=.nan"), refuse=True)


@case(12, "distill: train.out_dir= (empty)")
def _out_empty(env: Env, tmp: Path) -> tuple[str, str]:
    cwd = tmp / "cwd"
    cwd.mkdir()
    env.recipe(tmp)
    res = env.cli("distill", "--config", str(tmp / "recipe.yaml"), "train.out_dir=", cwd=cwd)
    return judge(res, refuse=True)


@case(12, "distill: duplicate YAML key")
def _dup(env: Env, tmp: Path) -> tuple[str, str]:
    env.recipe(tmp)
    text = (tmp / "recipe.yaml").read_text() + "optim:\n  total_steps: 3\n"
    (tmp / "recipe.yaml").write_text(text)
    return judge(env.distill(tmp), refuse=True)


# ------------------------------------------------------------------ 13: dropped or misreported files
@case(13, "prepare folder: symlink loop and dangling link")
def _links(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    wav(src / "ok.wav", tone())
    (src / "dangling.wav").symlink_to(src / "nowhere.wav")
    (src / "loop.wav").symlink_to(src / "loop.wav")
    res = env.cli("prepare", "folder", str(src), "--out", str(tmp / "m.tsv"))
    text = res.out + res.err
    return judge(
        res,
        refuse=False,
        wrong=None if "dangling.wav" in text and "loop.wav" in text else "links left out without a line",
    )


@case(13, "extract: symlink loop and dangling link")
def _links_extract(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    wav(src / "ok.wav", tone())
    (src / "dangling.wav").symlink_to(src / "nowhere.wav")
    (src / "loop.wav").symlink_to(src / "loop.wav")
    res = env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(tmp / "o"))
    bad = tmp / "o" / "bad_files.tsv"
    text = res.out + res.err + (bad.read_text() if bad.is_file() else "")
    return judge(
        res,
        refuse=False,
        wrong=None if "dangling.wav" in text and "loop.wav" in text else "links left out without a line",
    )


@case(13, "prepare folder: phase-inverted stereo")
def _phase(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    x = tone()
    wav(src / "inv.wav", np.stack([x, -x], axis=1))
    wav(src / "ok.wav", tone(seed=2))
    res = env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(tmp / "o"))
    bad = tmp / "o" / "bad_files.tsv"
    text = bad.read_text() if bad.is_file() else ""
    if "inv.wav" in text and "silent" in text:
        return "silent wrong", "phase-inverted stereo reported as silent"
    return judge(res, refuse=False)


@case(13, "prepare folder: file name with a tab and a newline")
def _tab_name(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    wav(src / "ok.wav", tone())
    wav(src / "a\tb.wav", tone(seed=1))
    wav(src / "c\nd.wav", tone(seed=2))
    res = env.cli("prepare", "folder", str(src), "--out", str(tmp / "m.tsv"))
    if res.rc != 0:
        return judge(res, refuse=False)
    lines = (tmp / "m.tsv").read_text().splitlines()
    listed = "a\\tb.wav" in res.out + res.err or "a\tb.wav" in res.out + res.err or "3 files" in res.out
    return judge(res, refuse=False, wrong=None if listed and len(lines) >= 3 else "names dropped silently")


@case(13, "extract: non-UTF-8 file name")
def _non_utf8(env: Env, tmp: Path) -> tuple[str, str]:
    src = tmp / "src"
    wav(src / "ok.wav", tone())
    data = (src / "ok.wav").read_bytes()
    with open(os.path.join(os.fsencode(src), b"bad\xff.wav"), "wb") as fh:
        fh.write(data)
    res = env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(tmp / "o"))
    files = list((tmp / "o").glob("*.npy")) if (tmp / "o").is_dir() else []
    bad = tmp / "o" / "bad_files.tsv"
    listed = bad.is_file() and "bad" in bad.read_text(errors="replace") and "bad_name" in bad.read_text()
    return judge(
        res, refuse=False, wrong=None if len(files) == 2 or listed else f"{len(files)} of 2 files, none listed"
    )


@case(13, "distill: bad_files.tsv has reasons, warnings once")
def _train_bad(env: Env, tmp: Path) -> tuple[str, str]:
    folder = tmp / "audio"
    rows = [(f"u{i}.wav", int(0.6 * SR)) for i in range(4)]
    for i in range(4):
        wav(folder / f"u{i}.wav", tone(0.6, seed=i))
    (folder / "bad.wav").write_bytes(b"RIFF....garbage")
    m = manifest(folder, [("bad.wav", 9600)] + rows, folder)  # first: the sampler may leave the last row out
    env.recipe(tmp, data={"manifests": [str(m)], "num_workers": 1}, optim={"total_steps": 6})
    res = env.distill(tmp)
    tsv = tmp / "run" / "bad_files.tsv"
    header = tsv.read_text().splitlines()[0] if tsv.is_file() else ""
    repeats = res.err.count("bad.wav")
    wrong = None
    if "reason" not in header:
        wrong = f"bad_files.tsv header {header!r}"
    elif repeats > 2:
        wrong = f"bad.wav warned {repeats} times"
    return judge(res, refuse=False, wrong=wrong)


# ------------------------------------------------------------------ bad audio to every verb
def _bad_audio(kind: str, path: Path) -> None:
    """Write one kind of unusable audio file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    good = tone()
    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4000))
    elif kind == "truncated header":
        wav(path, good, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:30])
    elif kind == "zero frames":
        wav(path, good[:0])
    elif kind == "too short":
        wav(path, good[:100])
    elif kind == "all zeros":
        wav(path, np.zeros_like(good))
    elif kind == "NaN samples":
        bad = good.copy()
        bad[100:200] = np.nan
        wav(path, bad)
    elif kind == "inf samples":
        bad = good.copy()
        bad[5] = np.inf
        wav(path, bad)
    elif kind == "int16-scale float":
        wav(path, good * 32767 / 0.3)
    elif kind == "folder named .wav":
        path.mkdir()
    elif kind == "unreadable (mode 000)":
        wav(path, good)
        os.chmod(path, 0)
    else:
        raise ValueError(kind)


BAD_AUDIO = (
    "empty file",
    "random bytes",
    "truncated header",
    "zero frames",
    "too short",
    "all zeros",
    "NaN samples",
    "inf samples",
    "int16-scale float",
    "folder named .wav",
    "unreadable (mode 000)",
)


def _bad_audio_case(verb: str, kind: str) -> Callable[[Env, Path], tuple[str, str]]:
    def run(env: Env, tmp: Path) -> tuple[str, str]:
        src = tmp / "src"
        wav(src / "good.wav", tone(0.6))
        wav(src / "good2.wav", tone(0.6, seed=5))
        _bad_audio(kind, src / "bad.wav")
        if kind == "unreadable (mode 000)" and os.geteuid() == 0:
            return "ok", "root reads mode-000 files: not testable"
        if verb == "prepare":
            res = env.cli("prepare", "folder", str(src), "--out", str(tmp / "m.tsv"))
            kept = (tmp / "m.tsv").read_text() if (tmp / "m.tsv").is_file() else ""
            listed = "bad.wav" in res.out + res.err
            # Header-only checks cannot see bad samples: prepare may keep those rows (training lists them).
            sample_level = kind in ("all zeros", "NaN samples", "inf samples", "int16-scale float")
            ok = ("bad.wav" not in kept and listed) or (sample_level and "bad.wav" in kept)
            return judge(res, refuse=False, wrong=None if ok else "bad file neither kept nor listed")
        if verb == "extract":
            out = tmp / "o"
            res = env.cli("extract", "--model", str(env.ckpt), "--input", str(src), "--out", str(out))
            listed = (out / "bad_files.tsv").is_file() and "bad.wav" in (out / "bad_files.tsv").read_text()
            wrote = (out / "bad.npy").is_file()
            return judge(
                res, refuse=False, wrong=f"wrote bad.npy={wrote}, listed={listed}" if wrote or not listed else None
            )
        rows = [("good.wav", int(0.6 * SR)), ("good2.wav", int(0.6 * SR)), ("bad.wav", int(0.6 * SR))]
        env.recipe(
            tmp,
            data={"manifests": [str(manifest(src, rows, src))], "batch_size": 3, "num_workers": 1},
            optim={"total_steps": 2},
        )
        res = env.distill(tmp)
        tsv = tmp / "run" / "bad_files.tsv"
        listed = tsv.is_file() and "bad.wav" in tsv.read_text()
        return judge(res, refuse=False, wrong=None if listed else "bad file not listed in bad_files.tsv")

    return run


for _verb in ("prepare", "extract", "distill"):
    for _kind in BAD_AUDIO:
        case(13, f"{_verb}: bad audio ({_kind})")(_bad_audio_case(_verb, _kind))


# ------------------------------------------------------------------ damaged and malicious checkpoints
class _Payload:
    """Unpickling this runs a shell command: the malicious-checkpoint stand-in."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoint(kind: str, env: Env, path: Path) -> Path:
    import pickle

    import torch

    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(os.urandom(5000))
    elif kind == "truncated":
        path.write_bytes(env.ckpt.read_bytes()[: env.ckpt.stat().st_size // 2])
    elif kind == "pickle payload":
        with open(path, "wb") as fh:
            pickle.dump({"Distiller": _Payload(path.with_suffix(".pwned")), "Config": {}}, fh)
    elif kind == "torch.save payload":
        torch.save({"Distiller": _Payload(path.with_suffix(".pwned")), "Config": {}}, path)
    elif kind == "missing Config":
        edited_checkpoint(env, path, lambda raw: raw.pop("Config"))
    elif kind == "wrong tensor shapes":
        edited_checkpoint(env, path, lambda raw: raw["Config"]["distiller"].update(encoder_embed_dim=128))
    elif kind == "a folder":
        path.mkdir()
    else:
        raise ValueError(kind)
    return path


BAD_CHECKPOINTS = (
    "empty file",
    "random bytes",
    "truncated",
    "pickle payload",
    "torch.save payload",
    "missing Config",
    "wrong tensor shapes",
    "a folder",
)


def _bad_checkpoint_case(verb: str, kind: str) -> Callable[[Env, Path], tuple[str, str]]:
    def run(env: Env, tmp: Path) -> tuple[str, str]:
        ckpt = _bad_checkpoint(kind, env, tmp / "bad.ckpt")
        args = {
            "info": ["info", str(ckpt)],
            "export": ["export", str(ckpt), "--format", "onnx", "--out", str(tmp / "m.onnx")],
            "extract": ["extract", "--model", str(ckpt), "--input", str(env.assets / "audio"), "--out", str(tmp / "o")],
        }[verb]
        res = env.cli(*args)
        ran = ckpt.with_suffix(".pwned").exists()
        return judge(res, refuse=True, wrong="the pickle payload ran" if ran else None)

    return run


for _verb in ("info", "export", "extract"):
    for _kind in BAD_CHECKPOINTS:
        case(8, f"{_verb}: checkpoint {_kind}")(_bad_checkpoint_case(_verb, _kind))


# ------------------------------------------------------------------ kill -9 and resume
@case(1, "distill: kill -9 mid-run, then --resume finishes")
def _kill9(env: Env, tmp: Path) -> tuple[str, str]:
    env.recipe(tmp, optim={"total_steps": 8}, train={"save_every": 2})
    first = env.distill(tmp, signal_after=(tmp / "run" / "states-2.ckpt", signal.SIGKILL))
    if first.hung:
        return "hang", "the killed run did not end"
    res = env.distill(tmp, resume=True)
    done = (tmp / "run" / "states-8.ckpt").is_file()
    return judge(res, refuse=False, wrong=None if done else "no states-8.ckpt after resume")


# ------------------------------------------------------------------ driver
def run_cases(env: Env, only: list[str] | None) -> list[dict]:
    rows = []
    for index, (item, name, fn) in enumerate(CASES):
        if only and not any(part in name for part in only):
            continue
        tmp = env.work / "cases" / f"{index:03d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        start = time.monotonic()
        try:
            outcome, note = fn(env, tmp)
        except Exception as exc:  # the harness itself must go on; such a row is marked
            outcome, note = "harness error", f"{type(exc).__name__}: {exc}"
        rows.append(
            {
                "item": item,
                "case": name,
                "outcome": outcome,
                "note": note,
                "seconds": round(time.monotonic() - start, 1),
            }
        )
        print(f"[{item:2d}] {outcome:13s} {name}  {note[:100]}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    counts = Counter(r["outcome"] for r in rows)
    lines = ["| outcome | cases |", "|---|---|"] + [f"| {o} | {counts.get(o, 0)} |" for o in OUTCOMES]
    if counts.get("harness error"):
        lines.append(f"| harness error | {counts['harness error']} |")
    lines.append(f"| total | {len(rows)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1], help="checkout under test")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rd_faults"), help="scratch folder (emptied)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    parser.add_argument("--only", action="append", help="run only cases whose name contains this (repeatable)")
    parser.add_argument("--json", type=Path, help="also write every row to this JSON file")
    args = parser.parse_args()
    env = Env(args.repo.resolve(), args.work.resolve(), args.timeout)
    if not env.ckpt.is_file():
        build_assets(env)
    rows = run_cases(env, args.only)
    print(table(rows))
    if args.json:
        from robustdistiller.atomic import atomic_write

        atomic_write(args.json, lambda fh: fh.write(json.dumps(rows, indent=1).encode()))


if __name__ == "__main__":
    main()
