"""Hostile input to the data layer: out-of-range float samples and phase-cancelling channels are
refused with a reason; links, unstorable names and rows outside the root are listed, never dropped
silently or written outside a folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistiller.cli import main
from robustdistiller.data.audio import MAX_PEAK, AudioError, load_audio, load_audio_channels, load_audio_segment
from robustdistiller.data.manifest import Manifest, manifest_from_csv


def tone(n: int = 8000) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 200 * np.arange(n) / 16000)).astype(np.float32)


@pytest.mark.parametrize("scale", [32767 / 0.3, 1e30])
def test_out_of_range_float_audio_is_refused(tmp_path: Path, scale: float) -> None:
    path = tmp_path / "loud.wav"
    sf.write(path, tone() * scale, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=f"peak .* > {MAX_PEAK}") as err:
        load_audio(path, max_peak=MAX_PEAK)
    assert err.value.reason == "out_of_range"
    with pytest.raises(AudioError, match="out_of_range"):
        load_audio_segment(path, 100, 4000, max_peak=MAX_PEAK)


def test_slight_overshoot_and_unnormalised_noise_are_kept(tmp_path: Path) -> None:
    sf.write(tmp_path / "hot.wav", tone() * 1.5 / 0.3, 16000, subtype="FLOAT")
    assert np.abs(load_audio(tmp_path / "hot.wav", max_peak=MAX_PEAK)).max() == pytest.approx(1.5, rel=1e-3)
    sf.write(tmp_path / "noise.wav", tone() * 10, 16000, subtype="FLOAT")  # noise / RIRs: no bound
    assert load_audio(tmp_path / "noise.wav").shape == (8000,)
    assert load_audio_channels(tmp_path / "noise.wav").shape == (1, 8000)


def test_phase_inverted_stereo_is_not_called_silent(tmp_path: Path) -> None:
    x = tone()
    sf.write(tmp_path / "inv.wav", np.stack([x, -x], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        load_audio(tmp_path / "inv.wav")
    assert err.value.reason == "channels_cancel"
    assert np.allclose(load_audio(tmp_path / "inv.wav", channel=1), -x)


# ------------------------------------------------------------------ prepare: nothing dropped silently
def test_prepare_lists_links_and_unstorable_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "ok.wav", tone(), 16000)
    sf.write(src / "a\tb.wav", tone(), 16000)
    sf.write(src / "c\nd.wav", tone(), 16000)
    (src / "dangling.wav").symlink_to(src / "nowhere.wav")
    (src / "loop.wav").symlink_to(src / "loop.wav")
    (src / "folder.wav").mkdir()
    os.mkfifo(src / "fifo.wav")  # reading it would block forever
    assert (
        main(["prepare", "folder", str(src), "--out", str(tmp_path / "m.tsv"), "--report", str(tmp_path / "r.tsv")])
        == 0
    )
    assert [e.path for e in Manifest.read(tmp_path / "m.tsv").entries] == ["ok.wav"]
    with open(tmp_path / "r.tsv", newline="") as fh:
        reasons = {Path(row[0]).name: (row[1], row[2]) for row in list(csv.reader(fh, delimiter="\t"))[1:]}
    assert reasons["dangling.wav"][0] == reasons["loop.wav"][0] == "broken_link"
    assert "symbolic link loop" in reasons["loop.wav"][1] and "nowhere.wav" in reasons["dangling.wav"][1]
    assert reasons["a\tb.wav"][0] == reasons["c\nd.wav"][0] == "bad_name"
    assert reasons["folder.wav"] == ("not_a_file", "a folder")
    assert reasons["fifo.wav"] == ("not_a_file", "not a regular file")


def test_prepare_csv_refuses_rows_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    sf.write(root / "in.wav", tone(), 16000)
    sf.write(tmp_path / "up.wav", tone(), 16000)
    table = tmp_path / "list.csv"
    table.write_text(f"file_path\nin.wav\n../up.wav\n{tmp_path / 'up.wav'}\n")
    manifest, report = manifest_from_csv(table, root)
    assert [e.path for e in manifest.entries] == ["in.wav"]
    assert [b.reason for b in report] == ["outside_root"]  # the same file twice: listed once


def test_prepare_output_problems_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "ok.wav", tone(), 16000)
    (tmp_path / "f").write_text("x")
    assert main(["prepare", "folder", str(src), "--out", str(tmp_path / "f" / "m.tsv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "is a file" in err
