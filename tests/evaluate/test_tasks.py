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
    builtin_tasks,
    ctc_task,
    fsdd_tasks,
    load_waveforms,
    manifest_task,
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
    rows = [(f"a/{i}.wav", {"emotion": ["happy", "sad", "angry"][i % 3], "split": ["train", "dev", "test"][i % 5 % 3]})
            for i in range(30)]
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
