from __future__ import annotations

import csv
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from robustdistiller.data.manifest import (
    Manifest,
    ManifestEntry,
    manifest_from_csv,
    manifest_from_folder,
    manifest_from_librispeech,
    validate_manifest,
)
from robustdistiller.data.report import BadFileReport

HEADER_LEVEL = ("unreadable", "empty", "too_short")


def test_report_counts_logs_once_and_writes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    report = BadFileReport()
    with caplog.at_level(logging.WARNING):
        assert report.add("a.wav", "unreadable", "bad header")
        assert not report.add("a.wav", "unreadable")  # the same file in a later epoch
        assert report.extend([("b.wav", "too_short"), ("c.wav", "too_short", "12 samples")]) == 2
    assert len(report) == 3
    assert report.counts() == {"too_short": 2, "unreadable": 1}
    assert sum("a.wav" in r.message for r in caplog.records) == 1
    assert "3 bad file(s)" in report.summary() and "too_short: 2" in report.summary()
    rows = (tmp_path / "bad.tsv").read_text() if report.write(tmp_path / "bad.tsv") else ""
    assert rows.splitlines() == [
        "path\treason\tdetail",
        "a.wav\tunreadable\tbad header",
        "b.wav\ttoo_short\t",
        "c.wav\ttoo_short\t12 samples",
    ]
    clone = pickle.loads(pickle.dumps(report))
    assert clone.counts() == report.counts() and clone.add("d.wav", "empty")
    assert BadFileReport().summary() == "no bad files"


def test_folder_manifest_round_trip(tmp_path: Path, write_wav, tone) -> None:
    write_wav("corpus/b/two.flac", tone(24000))
    write_wav("corpus/a/one.wav", tone(16000))
    write_wav("corpus/a/eight_k.WAV", tone(8000, 8000), rate=8000)
    (tmp_path / "corpus/notes.txt").write_text("not audio")
    manifest, report = manifest_from_folder(tmp_path / "corpus", workers=2)
    assert len(report) == 0
    assert [(e.path, e.num_samples) for e in manifest.entries] == [
        ("a/eight_k.WAV", 16000),
        ("a/one.wav", 16000),
        ("b/two.flac", 24000),
    ]
    assert manifest.total_seconds == pytest.approx(3.5)
    out = manifest.write(tmp_path / "m.tsv")
    assert out.read_text().splitlines()[:2] == [f"# root: {tmp_path / 'corpus'}", "path\tnum_samples"]
    assert Manifest.read(out) == manifest


def test_labels_and_relative_root_round_trip(tmp_path: Path) -> None:
    manifest = Manifest(
        tmp_path / "audio", [ManifestEntry("x.wav", 800, {"word": "yes", "speaker": "s1"})], ["word", "speaker"]
    )
    path = manifest.write(tmp_path / "lists" / "m.tsv", relative_root=True)
    assert path.read_text().splitlines()[0] == "# root: ../audio"
    assert Manifest.read(path) == manifest
    with pytest.raises(ValueError, match="tab"):
        Manifest(tmp_path, [ManifestEntry("a\tb.wav", 800)]).write(tmp_path / "bad.tsv")


def test_reads_fairseq_dphubert_tsv(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("/data/LibriSpeech\ntrain-clean-100/1/2/1-2-0.flac\t32000\n")
    manifest = Manifest.read(tmp_path / "train.tsv")
    assert manifest.root == Path("/data/LibriSpeech")
    assert manifest.entries == [ManifestEntry("train-clean-100/1/2/1-2-0.flac", 32000)]


def test_read_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "m.tsv").write_text("# root: /x\npath\tnum_samples\na.wav\tmany\n")
    with pytest.raises(ValueError, match=r"m.tsv:3: num_samples 'many'"):
        Manifest.read(tmp_path / "m.tsv")
    (tmp_path / "m.tsv").write_text("# root: /x\na.wav\t12\n")
    with pytest.raises(ValueError, match="header"):
        Manifest.read(tmp_path / "m.tsv")
    with pytest.raises(FileNotFoundError, match="manifest not found: .*absent.tsv"):
        Manifest.read(tmp_path / "absent.tsv")


def test_bad_files_are_skipped_with_reasons(bad_folder: tuple[Path, dict[str, str]]) -> None:
    root, reasons = bad_folder
    manifest, report = manifest_from_folder(root, workers=3)
    header_bad = {n for n, r in reasons.items() if r in HEADER_LEVEL}
    assert {Path(f.path).name: f.reason for f in report} == {n: reasons[n] for n in header_bad}
    # Content problems (NaN, inf, silence) need decoding: the dataset catches those.
    assert {e.path for e in manifest.entries} == {"good.wav"} | (set(reasons) - header_bad)


def test_callers_report_collects_bad_files_logged_once(
    bad_folder: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = bad_folder
    report = BadFileReport()
    report.add("elsewhere.wav", "missing")
    with caplog.at_level(logging.WARNING):
        _, returned = manifest_from_folder(root, report=report)
    assert returned is report and {Path(f.path).name for f in report} >= {"elsewhere.wav", "garbage.wav"}
    warned = [r.getMessage() for r in caplog.records if "garbage.wav" in r.getMessage()]
    assert len(warned) == 1


def test_all_bad_files_give_a_clear_error(tmp_path: Path, write_wav, tone) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"garbage")
    write_wav("bad/y.wav", tone(100))
    manifest, report = manifest_from_folder(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"(?s)all 2 files .* were bad.*unreadable: 1.*too_short: 1"):
        validate_manifest(manifest, report)
    with pytest.raises(ValueError, match="no rows"):
        validate_manifest(Manifest(tmp_path, []))


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="audio folder not found: .*missing"):
        manifest_from_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        manifest_from_folder(tmp_path / "empty")


def _fake_librispeech(root: Path, write_wav, tone) -> list[str]:
    rels = []
    for split, spk, chapter, n in [("train-clean-100", "103", "1240", 3), ("dev-clean", "84", "121", 2)]:
        for k in range(n):
            rel = f"{split}/{spk}/{chapter}/{spk}-{chapter}-{k:04d}.flac"
            write_wav(f"{root.name}/{rel}", tone(1600 * (k + 1)))
            rels.append(rel)
        (root / split / spk / chapter / f"{spk}-{chapter}.trans.txt").write_text("TEXT\n")
    return rels


def test_librispeech_layout(tmp_path: Path, write_wav, tone) -> None:
    root = tmp_path / "LibriSpeech"
    rels = _fake_librispeech(root, write_wav, tone)
    manifest, report = manifest_from_librispeech(root, ["train-clean-100", "dev-clean"], workers=2)
    assert len(report) == 0
    assert sorted(e.path for e in manifest.entries) == sorted(rels)
    assert {e.labels["speaker"] for e in manifest.entries} == {"103", "84"}
    assert Manifest.read(manifest.write(tmp_path / "libri.tsv")) == manifest
    only_train, _ = manifest_from_librispeech(root, ["train-clean-100"])
    assert sorted(e.num_samples for e in only_train.entries) == [1600, 3200, 4800]
    assert all(e.path.startswith("train-clean-100/") for e in only_train.entries)


def test_librispeech_missing_split_lists_found(tmp_path: Path, write_wav, tone) -> None:
    root = tmp_path / "LibriSpeech"
    _fake_librispeech(root, write_wav, tone)
    with pytest.raises(FileNotFoundError, match=r"train-other-500.*splits found: dev-clean, train-clean-100"):
        manifest_from_librispeech(root, ["train-clean-100", "train-other-500"])


def test_s3prl_len_for_bucket_csv(tmp_path: Path, write_wav, tone) -> None:
    root = tmp_path / "LibriSpeech"
    rels = _fake_librispeech(root, write_wav, tone)
    csv_path = tmp_path / "len_for_bucket" / "train-clean-100.csv"
    csv_path.parent.mkdir()
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["", "file_path", "length", "label"])
        for i, rel in enumerate(rels[:3] + ["train-clean-100/1/1/gone.flac"]):
            writer.writerow([i, rel, 0, ""])
    manifest, report = manifest_from_csv(csv_path, root=root, workers=2)
    assert [e.path for e in manifest.entries] == rels[:3]
    assert [e.num_samples for e in manifest.entries] == [1600, 3200, 4800]  # from headers, not the CSV
    assert [(Path(f.path).name, f.reason) for f in report] == [("gone.flac", "missing")]
    assert Manifest.read(manifest.write(tmp_path / "m.tsv")) == manifest


def test_csv_with_labels_and_absolute_paths(tmp_path: Path, write_wav, tone) -> None:
    wav = write_wav("clips/a.wav", tone(2000))
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"path,word,extra\n{wav},yes,1\nclips/a.wav,no,2\n")
    manifest, _ = manifest_from_csv(csv_path, label_columns=["word"])
    assert manifest.root == tmp_path and manifest.label_names == ["word"]
    assert [(e.path, e.labels) for e in manifest.entries] == [
        ("clips/a.wav", {"word": "yes"}),
        ("clips/a.wav", {"word": "no"}),
    ]
    with pytest.raises(ValueError, match="column.*nope.*not found"):
        manifest_from_csv(csv_path, label_columns=["nope"])
    (tmp_path / "nopath.csv").write_text("file,x\na.wav,1\n")
    with pytest.raises(ValueError, match="no 'file_path' or 'path' column"):
        manifest_from_csv(tmp_path / "nopath.csv")


def test_validate_rejects_rows_too_short(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path, [ManifestEntry("a.wav", 100)])
    with pytest.raises(ValueError, match="shorter than 400"):
        validate_manifest(manifest)
    assert np.isclose(Manifest(tmp_path, [ManifestEntry("a.wav", 8000)]).total_seconds, 0.5)


def test_held_out_speakers_split_by_id(tmp_path):
    from robustdistiller.data.manifest import is_held_out_speaker, speaker_from_name, split_held_out

    assert speaker_from_name("a/b/1040-133433-0000.flac") == "1040"
    assert is_held_out_speaker("1040") and not is_held_out_speaker("103")
    with pytest.raises(ValueError, match="not numeric"):
        is_held_out_speaker("jackson")
    manifest = Manifest(
        tmp_path, [ManifestEntry(f"{s}-1-0.flac", 16000, {"speaker": s}) for s in ("10", "11", "25")], ["speaker"]
    )
    train, held_out = split_held_out(manifest)
    assert [e.labels["speaker"] for e in train.entries] == ["11"]
    assert [e.labels["speaker"] for e in held_out.entries] == ["10", "25"]
    with pytest.raises(KeyError, match="no 'spk' column"):
        split_held_out(manifest, "spk")
