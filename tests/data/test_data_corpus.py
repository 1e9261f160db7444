from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from robustdistiller.data.corpus import (
    SPEAKERS,
    WORDS,
    build_corpus,
    synthesize_utterance,
    utterance_rng,
)
from robustdistiller.data.manifest import Manifest, validate_manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """The default corpus. Its build time is measured by bench/corpus.py, not bounded here: a
    wall-clock bound flakes on a loaded machine."""
    return build_corpus(tmp_path_factory.mktemp("corpus") / "synthetic")


def _read_all(manifest: Manifest) -> list[np.ndarray]:
    return [sf.read(manifest.abspath(i), dtype="float32")[0] for i in range(len(manifest))]


def test_counts_split_and_durations(corpus) -> None:
    built = corpus
    assert len(built.words) >= 8 and len(built.speakers) >= 4
    train, test = Manifest.read(built.train_manifest), Manifest.read(built.test_manifest)
    validate_manifest(train)
    assert train.label_names == test.label_names == ["word", "speaker"]
    pairs = len(WORDS) * len(SPEAKERS)
    assert (len(train), len(test)) == (6 * pairs, 2 * pairs)
    for manifest, per_pair in ((train, 6), (test, 2)):
        counts = Counter((e.labels["word"], e.labels["speaker"]) for e in manifest.entries)
        assert set(counts.values()) == {per_pair} and len(counts) == pairs
    assert not {e.path for e in train.entries} & {e.path for e in test.entries}
    # Fixed split: the last two takes of every (word, speaker) are the test set.
    assert {e.path.rsplit("_", 1)[1] for e in test.entries} == {"6.wav", "7.wav"}
    assert 120 < train.total_seconds + test.total_seconds < 600  # a few minutes in all
    durations = np.array(train.lengths) / 16000
    assert 0.4 < durations.min() and durations.max() < 1.6
    wav = _read_all(test)[0]
    assert sf.info(str(test.abspath(0))).samplerate == 16000
    assert np.abs(wav).max() < 1.0 and wav.shape[0] == test.entries[0].num_samples


def test_deterministic_and_reused(corpus, tmp_path: Path) -> None:
    built = corpus
    first = built.train_manifest.stat().st_mtime_ns
    assert build_corpus(built.root) == built  # a complete build is reused, not rewritten
    assert built.train_manifest.stat().st_mtime_ns == first
    # Same bytes again: an utterance depends only on (seed, word, speaker, take), so a smaller
    # build must reproduce the takes it shares with the default one byte for byte.
    other = build_corpus(tmp_path / "again", utterances_per_word_per_speaker=3, test_takes=1)
    files = sorted((other.root / "audio").rglob("*.wav"))
    assert len(files) == 3 * len(WORDS) * len(SPEAKERS)
    for path in files:
        assert path.read_bytes() == (built.root / path.relative_to(other.root)).read_bytes()
    # Other parameters rebuild in place.
    small = build_corpus(tmp_path / "again", utterances_per_word_per_speaker=2, test_takes=1)
    assert len(Manifest.read(small.train_manifest)) == len(WORDS) * len(SPEAKERS)
    assert not (tmp_path / "again" / "audio" / "adam" / "sa_adam_2.wav").exists()


def test_refuses_foreign_folder_and_bad_args(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a corpus folder"):
        build_corpus(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").exists()
    with pytest.raises(ValueError, match=r"test_takes must be in \[1, 3\], got 4"):
        build_corpus(tmp_path / "x", utterances_per_word_per_speaker=4, test_takes=4)
    with pytest.raises(ValueError, match="unknown word"):
        synthesize_utterance("hello", "adam", np.random.default_rng(0))


def test_in_memory_synthesis_matches_files(corpus) -> None:
    built = corpus
    wav = synthesize_utterance("emo", "dora", utterance_rng(0, "emo", "dora", 2))
    on_disk, _ = sf.read(built.root / "audio/dora/emo_dora_2.wav", dtype="float32")
    np.testing.assert_allclose(wav, on_disk, atol=1.0 / 32768)
    a = synthesize_utterance("emo", "dora", utterance_rng(0, "emo", "dora", 3))
    assert a.shape != wav.shape or not np.allclose(a, wav)  # takes differ


def _features(wavs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std log energies in 40 log-spaced bands over active frames; plus length and level."""
    spectral, trivial = [], []
    edges = np.geomspace(60, 8000, 41)
    for x in wavs:
        freqs, _, z = signal.stft(x, 16000, nperseg=400, noverlap=240)
        band = np.digitize(freqs, edges)
        logb = np.log(np.stack([(np.abs(z[band == k]) ** 2).sum(0) for k in range(1, 41)]) + 1e-8)
        frame_energy = logb.max(0)
        active = frame_energy > frame_energy.max() - 14
        spectral.append(np.concatenate([logb[:, active].mean(1), logb[:, active].std(1)]))
        trivial.append([x.shape[0], np.log(np.mean(x**2)), active.sum()])
    return np.array(spectral), np.array(trivial)


def _ridge_accuracy(xtr, ytr, xte, yte) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a, b = (xtr - mu) / sd, (xte - mu) / sd
    a, b = np.c_[a, np.ones(len(a))], np.c_[b, np.ones(len(b))]
    classes = sorted(set(ytr))
    onehot = np.array([[c == y for c in classes] for y in ytr], float)
    w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ onehot)
    return float((np.array(classes)[(b @ w).argmax(1)] == np.array(yte)).mean())


def test_words_and_speakers_are_learnable_but_not_from_length_or_level(corpus) -> None:
    built = corpus
    train, test = Manifest.read(built.train_manifest), Manifest.read(built.test_manifest)
    xtr, ttr = _features(_read_all(train))
    xte, tte = _features(_read_all(test))
    for label, floor in (("word", 0.9), ("speaker", 0.9)):
        ytr = [e.labels[label] for e in train.entries]
        yte = [e.labels[label] for e in test.entries]
        assert _ridge_accuracy(xtr, ytr, xte, yte) >= floor, label
    words_tr = [e.labels["word"] for e in train.entries]
    words_te = [e.labels["word"] for e in test.entries]
    assert _ridge_accuracy(ttr, words_tr, tte, words_te) < 0.25  # chance is 0.1
