from __future__ import annotations

from pathlib import Path

import pytest

from robustdistiller.cli import main
from robustdistiller.data.manifest import Manifest


def test_prepare_folder_writes_manifest_and_report(tmp_path: Path, write_wav, tone, capsys) -> None:
    write_wav("wavs/a.wav", tone(16000))
    write_wav("wavs/sub/b.flac", tone(8000))
    (tmp_path / "wavs" / "broken.wav").write_bytes(b"xx" * 50)
    out, bad = tmp_path / "m.tsv", tmp_path / "bad.tsv"
    assert (
        main(["prepare", "folder", str(tmp_path / "wavs"), "--out", str(out), "--report", str(bad), "--workers", "2"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "2 files" in printed and "unreadable: 1" in printed
    assert [e.path for e in Manifest.read(out).entries] == ["a.wav", "sub/b.flac"]
    assert bad.read_text().splitlines()[1].startswith(str(tmp_path / "wavs" / "broken.wav"))


def test_prepare_librispeech_and_csv(tmp_path: Path, write_wav, tone) -> None:
    rel = "train-clean-100/19/198/19-198-0001.flac"
    write_wav(f"Libri/{rel}", tone(32000))
    assert (
        main(
            [
                "prepare",
                "librispeech",
                str(tmp_path / "Libri"),
                "--splits",
                "train-clean-100",
                "--out",
                str(tmp_path / "l.tsv"),
            ]
        )
        == 0
    )
    assert Manifest.read(tmp_path / "l.tsv").entries[0].path == rel
    (tmp_path / "list.csv").write_text(f",file_path,length,label\n0,{rel},32000,\n")
    assert (
        main(
            [
                "prepare",
                "csv",
                str(tmp_path / "list.csv"),
                "--root",
                str(tmp_path / "Libri"),
                "--out",
                str(tmp_path / "c.tsv"),
            ]
        )
        == 0
    )
    assert Manifest.read(tmp_path / "c.tsv").lengths == [32000]


def test_prepare_user_errors_are_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "Libri" / "dev-clean").mkdir(parents=True)
    assert (
        main(
            [
                "prepare",
                "librispeech",
                str(tmp_path / "Libri"),
                "--splits",
                "train-clean-100",
                "--out",
                str(tmp_path / "l.tsv"),
            ]
        )
        == 1
    )
    assert "splits found: dev-clean" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"nope")
    assert main(["prepare", "folder", str(tmp_path / "bad"), "--out", str(tmp_path / "b.tsv")]) == 1
    assert "all 1 files" in capsys.readouterr().err
    assert not (tmp_path / "b.tsv").exists()


def test_prepare_help_has_an_example(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "robustdistiller prepare librispeech" in capsys.readouterr().out
