"""Task packs: built-in corpus, FSDD, generic manifests (with / without a split column) and CTC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistiller.data.corpus import build_corpus
from robustdistiller.data.manifest import Manifest, ManifestEntry
from robustdistiller.data.report import BadFileReport
from robustdistiller.evaluate.tasks import (
    BLANK,
    SpeakerRecording,
    builtin_tasks,
    ctc_task,
    fsdd_tasks,
    load_waveforms,
    manifest_task,
    speaker_tasks,
    tasks_from_spec,
)

SR = 16000


def _write_manifest(root: Path, rows: list[tuple[str, dict[str, str]]], names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    for rel, labels in rows:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, 0.1 * rng.standard_normal(SR // 2).astype(np.float32), SR)
        entries.append(ManifestEntry(rel, SR // 2, labels))
    return Manifest(root, entries, names).write(root / "m.tsv")


def test_builtin_tasks_split_the_corpus_without_overlap(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "corpus", utterances_per_word_per_speaker=3, test_takes=1)
    word, speaker = builtin_tasks(corpus, seed=0)
    assert (word.name, speaker.name) == ("builtin-word", "builtin-speaker")
    assert word.classes == corpus.words and speaker.classes == corpus.speakers
    for pack in (word, speaker):
        ids = {k: {i.uid for i in v} for k, v in pack.splits().items()}
        assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
        assert len(pack.items()) == 10 * 4 * 3 and len(pack.test) == 10 * 4
        assert {i.label for i in pack.val} == set(range(len(pack.classes)))  # validation covers every class
    # Tasks over the same audio keep the same utterances when subsetted (one feature extraction).
    assert [i.uid for i in word.subset(0, 0, 9, seed=1).test] == [i.uid for i in speaker.subset(0, 0, 9, seed=1).test]
    assert len(word.subset(5, 3, 9).train) == 5


def test_fsdd_tasks_hold_out_takes_0_to_4(shared_data: Path, tmp_path: Path) -> None:
    # A small copy keeps the test fast: 2 digits x 6 speakers x takes 0-7.
    src = shared_data / "fsdd"
    for f in sorted(src.glob("[01]_*_[0-7].wav")):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "notes_about_files.wav").write_bytes((src / "0_george_0.wav").read_bytes())
    report = BadFileReport()
    digit, speaker = fsdd_tasks(tmp_path, seed=0, report=report)
    assert digit.classes == ["0", "1"] and len(speaker.classes) == 6
    assert len(digit.test) == 2 * 6 * 5 and all(int(Path(i.uid).stem.split("_")[2]) < 5 for i in digit.test)
    assert len(digit.train) + len(digit.val) == 2 * 6 * 3
    assert [b.reason for b in report] == ["unlabelled"]
    wavs = load_waveforms(digit.test[:2], report)
    assert all(w.dtype == np.float32 and w.ndim == 1 for w in wavs.values())
    first = digit.test[0]
    assert wavs[first.uid].shape[0] == 2 * sf.info(first.path).frames  # 8 kHz resampled to 16 kHz


def test_manifest_task_with_and_without_split_column(tmp_path: Path) -> None:
    rows = [
        (f"a/{i}.wav", {"emotion": ["happy", "sad", "angry"][i % 3], "split": ["train", "dev", "test"][i % 5 % 3]})
        for i in range(30)
    ]
    path = _write_manifest(tmp_path, rows, ["emotion", "split"])
    split = manifest_task(path, "emotion", split_column="split", name="emo")
    assert split.name == "emo" and split.classes == ["angry", "happy", "sad"]
    assert {i.uid for i in split.test} == {r for r, lab in rows if lab["split"] == "test"}
    carved = manifest_task(path, "emotion", seed=3, test_fraction=0.2, val_fraction=0.2)
    assert len(carved.items()) == 30 and len(carved.test) == 6
    with pytest.raises(ValueError, match="column"):
        manifest_task(path, "intent")


def test_ctc_task_builds_a_character_vocabulary(tmp_path: Path) -> None:
    rows = [(f"{i}.wav", {"transcript": t}) for i, t in enumerate(["Yes", "no", "maybe so"] * 4)]
    pack = ctc_task(_write_manifest(tmp_path, rows, ["transcript"]), seed=0)
    assert pack.kind == "ctc" and pack.metric == "error_rate" and pack.classes[0] == BLANK
    vocab = pack.classes
    item = next(i for i in pack.items() if i.uid == "0.wav")
    assert "".join(vocab[t] for t in item.label) == "yes"
    assert all(0 not in i.label for i in pack.items())


def test_task_specs(tmp_path: Path) -> None:
    rows = [(f"{i}.wav", {"kw": "up" if i % 2 else "down"}) for i in range(10)]
    path = _write_manifest(tmp_path, rows, ["kw"])
    (pack,) = tasks_from_spec(f"manifest:{path}:kw", work_dir=tmp_path)
    assert pack.classes == ["down", "up"]
    with pytest.raises(ValueError, match="unknown task"):
        tasks_from_spec("librispeech", work_dir=tmp_path)


def _recording(folder: Path, name: str, seconds: float, seed: int) -> Path:
    wav = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR)).astype(np.float32)
    sf.write(folder / name, wav, SR)
    return folder / name


def test_speaker_tasks_split_each_speaker_by_time(tmp_path: Path) -> None:
    recs = [
        SpeakerRecording(_recording(tmp_path, "10-1-0000.wav", 8.5, 0), "10", "F"),
        SpeakerRecording(_recording(tmp_path, "20-1-0000.wav", 4.2, 1), "20", "M"),
        SpeakerRecording(_recording(tmp_path, "30-1-0000.wav", 1.5, 2), "30", "M"),
    ]  # one segment: left out
    speaker, sex = speaker_tasks(recs, tmp_path / "work", segment_seconds=1.0, test_fraction=0.25)
    assert (speaker.name, sex.name) == ("heldout-speaker", "heldout-sex")
    assert speaker.classes == ["10", "20"] and sex.classes == ["F", "M"]
    assert any("1 speakers with fewer than two segments" in n for n in speaker.notes)
    # 8 and 4 whole segments (the tails are dropped); the last 2 and 1 of them are the test split.
    assert sorted(i.uid for i in speaker.test) == ["10-1-0000_006.wav", "10-1-0000_007.wav", "20-1-0000_003.wav"]
    assert len(speaker.items()) == 12 and not {i.uid for i in speaker.test} & {
        i.uid for i in [*speaker.train, *speaker.val]
    }
    assert {i.uid: i.label for i in sex.test} == {
        "10-1-0000_006.wav": 0,
        "10-1-0000_007.wav": 0,
        "20-1-0000_003.wav": 1,
    }
    assert speaker.chance == pytest.approx(2 / 3) and sex.summary()["chance"] == pytest.approx(2 / 3)
    # Each segment holds exactly its second of the recording.
    original, _ = sf.read(tmp_path / "10-1-0000.wav", dtype="float32")
    segment, _ = sf.read(speaker.test[0].path, dtype="float32")
    np.testing.assert_allclose(segment, original[6 * SR : 7 * SR], atol=1e-4)


def test_speaker_tasks_refuse_bad_input(tmp_path: Path) -> None:
    rec = SpeakerRecording(_recording(tmp_path, "10-1-0000.wav", 3.0, 0), "10", "F")
    with pytest.raises(ValueError, match="sex must be 'F' or 'M'"):
        speaker_tasks([SpeakerRecording(rec.path, "10", "")], tmp_path / "work")
    with pytest.raises(ValueError, match="2 speakers|1 speakers"):
        speaker_tasks([rec], tmp_path / "work")
    (tmp_path / "20-1-0000.wav").write_bytes(b"not audio")
    report = BadFileReport()
    with pytest.raises(ValueError, match="speakers have two or more"):
        speaker_tasks([rec, SpeakerRecording(tmp_path / "20-1-0000.wav", "20", "M")], tmp_path / "work", report=report)
    assert len(report) == 1  # the unreadable file is reported, not fatal by itself


def test_librispeech_speaker_tasks_use_held_out_speakers_only(shared_data: Path, tmp_path: Path) -> None:
    from robustdistiller.data.manifest import is_held_out_speaker
    from robustdistiller.evaluate.tasks import librispeech_speaker_tasks

    speaker, sex = librispeech_speaker_tasks(shared_data / "librispeech_subset", tmp_path)
    assert len(speaker.classes) == 46 and all(is_held_out_speaker(s) for s in speaker.classes)
    assert 0.4 < sex.chance < 0.65
