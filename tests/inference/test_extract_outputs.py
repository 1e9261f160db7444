"""Where `extract` writes: never outside --out, never two inputs onto one file, one run per folder,
no leftovers, no NaN features."""

from __future__ import annotations

import csv
import fcntl
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from robustdistiller.data.manifest import Manifest, ManifestEntry
from robustdistiller.inference import TorchBackend, extract_files
from robustdistiller.inference.batched import LOCK_FILE, safe_relative


def test_rows_outside_the_root_stay_inside_out(student, write_wav, tmp_path: Path) -> None:
    """Rows with ../ or absolute paths used to write their features next to the source audio."""
    inner = write_wav("src/a/in.wav", 0.5)
    write_wav("src/up.wav", 0.5, seed=1)
    absolute = write_wav("elsewhere/abs.wav", 0.5, seed=2)
    rows = [ManifestEntry("in.wav", 8000), ManifestEntry("../up.wav", 8000), ManifestEntry(str(absolute), 8000)]
    manifest = Manifest(inner.parent, rows).write(tmp_path / "m.tsv")
    out = tmp_path / "out"
    summary = extract_files(TorchBackend(student, layers=[1]), manifest, out)
    assert summary.done == 3
    written = sorted(p.relative_to(out).as_posix() for p in tmp_path.rglob("*.npy"))
    assert written == ["_abs" + str(absolute.with_suffix(".npy")), "_up/up.npy", "in.npy"]


def test_safe_relative_never_climbs() -> None:
    assert safe_relative("a/../../b.wav") == Path("a/_up/_up/b.wav")
    assert safe_relative("/x/./y.wav") == Path("_abs/x/y.wav")


def test_colliding_names_keep_their_extension(student, write_wav, tmp_path: Path) -> None:
    """x.wav and x.flac used to report 3 files but write 2."""
    write_wav("src/x.wav", 0.5)
    sf.write(
        tmp_path / "src" / "x.flac", np.random.default_rng(3).standard_normal(8000).astype(np.float32) * 0.1, 16000
    )
    write_wav("src/y.wav", 0.5, seed=4)
    out = tmp_path / "out"
    assert extract_files(TorchBackend(student, layers=[1]), tmp_path / "src", out).done == 3
    assert sorted(p.name for p in out.glob("*.npy")) == ["x.flac.npy", "x.wav.npy", "y.npy"]
    assert not np.array_equal(np.load(out / "x.flac.npy"), np.load(out / "x.wav.npy"))


def test_second_run_into_a_locked_folder_is_refused(student, write_wav, tmp_path: Path) -> None:
    write_wav("src/a.wav", 0.5)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK_FILE, "a+") as held:  # another extract running
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another extract is writing into"):
            extract_files(TorchBackend(student, layers=[1]), tmp_path / "src", out)
    assert not (out / "a.npy").exists()
    assert extract_files(TorchBackend(student, layers=[1]), tmp_path / "src", out).done == 1


def test_stale_temps_are_removed_and_bad_names_listed(student, write_wav, tmp_path: Path) -> None:
    write_wav("src/ok.wav", 0.5)
    data = (tmp_path / "src" / "ok.wav").read_bytes()
    (tmp_path / "src" / "tab\tname.wav").write_bytes(data)
    with open(os.path.join(os.fsencode(tmp_path / "src"), b"bad\xff.wav"), "wb") as fh:
        fh.write(data)
    (tmp_path / "src" / "loop.wav").symlink_to(tmp_path / "src" / "loop.wav")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = out / "sub" / ".x.npy.tmp-999999-abc.npy"  # pid 999999: no such process
    stale.write_bytes(b"half")
    summary = extract_files(TorchBackend(student, layers=[1]), tmp_path / "src", out)
    assert summary.done == 1 and not stale.exists()
    with open(out / "bad_files.tsv", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    reasons = sorted(row[1] for row in rows)
    assert reasons == ["bad_name", "bad_name", "broken_link"], rows


def test_nan_features_are_not_written(student, write_wav, tmp_path: Path) -> None:
    write_wav("src/a.wav", 0.5)
    with torch.no_grad():
        student.encoder.layers[0].fc1.weight.fill_(float("nan"))
    out = tmp_path / "out"
    summary = extract_files(TorchBackend(student, layers=[2]), tmp_path / "src", out)
    assert summary.done == 0 and [b.reason for b in summary.bad] == ["non_finite_features"]
    assert not list(out.glob("*.npy"))
