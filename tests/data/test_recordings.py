"""The recordings shipped in robustdistiller/assets/recordings: files, index and attribution agree,
licences allow shipping, sizes stay within the budget, held-out speakers never reach training."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustdistiller.data.audio import SAMPLE_RATE, audio_info, load_audio
from robustdistiller.data.manifest import is_held_out_speaker
from robustdistiller.data.recordings import (
    ATTRIBUTION_NAME,
    INDEX_NAME,
    RECORDED_NOISES,
    RECORDINGS_DIR,
    read_index,
    read_speaker_sex,
    sha256_of,
)

SHIPPABLE = {"CC BY 4.0", "CC0 1.0"}


def test_every_file_is_indexed_hashed_and_attributed() -> None:
    rows = read_index()
    on_disk = {p.relative_to(RECORDINGS_DIR).as_posix() for p in RECORDINGS_DIR.rglob("*") if p.is_file()}
    assert on_disk == {r.path for r in rows} | {INDEX_NAME, ATTRIBUTION_NAME}
    attribution = (RECORDINGS_DIR / ATTRIBUTION_NAME).read_text()
    for r in rows:
        assert sha256_of(RECORDINGS_DIR / r.path) == r.sha256, r.path
        assert f"| {r.path} |" in attribution and r.licence in SHIPPABLE, r.path
    for licence in ("CC BY 4.0", "CC0 1.0", "Vassil Panayotov", "Speech Commands"):
        assert licence in attribution


def test_sizes_stay_within_the_budget() -> None:
    sizes = [p.stat().st_size for p in RECORDINGS_DIR.rglob("*") if p.is_file()]
    assert max(sizes) < 1_000_000 and sum(sizes) <= 10_000_000


def test_roles_speakers_and_lengths() -> None:
    rows = read_index()
    held, train = [r for r in rows if r.role == "heldout"], [r for r in rows if r.role == "train"]
    assert len(held) == 46 and len(train) == 205
    assert all(is_held_out_speaker(r.speaker) for r in held) and not any(is_held_out_speaker(r.speaker) for r in train)
    assert {r.sex for r in held + train} == {"F", "M"}
    assert sorted(Path(r.path).stem for r in rows if r.role == "noise") == sorted(RECORDED_NOISES)
    assert [r.path for r in rows if r.role == "rir"] == ["rir/rir_clap.flac"]
    for r in held[:3] + train[:3]:  # the index's durations are what the files decode to
        assert audio_info(RECORDINGS_DIR / r.path).num_samples_16k == pytest.approx(r.duration_s * SAMPLE_RATE, abs=2)
    assert 9.5 * 60 < sum(r.duration_s for r in held) < 10.5 * 60


def test_sex_matches_speakers_txt(shared_data: Path) -> None:
    sexes = read_speaker_sex(shared_data / "librispeech_subset" / "SPEAKERS.TXT")
    assert all(sexes[r.speaker] == r.sex for r in read_index() if r.speaker)


def test_the_codec_keeps_the_speech(shared_data: Path) -> None:
    """Vorbis at the shipped level keeps the waveform close to the FLAC original (a check on the codec
    choice; the benchmark compares probe results on both)."""
    import numpy as np

    row = next(r for r in read_index() if r.role == "heldout")
    shipped = load_audio(RECORDINGS_DIR / row.path)
    original = load_audio(shared_data / "librispeech_subset" / row.source)
    n = min(len(shipped), len(original))
    snr = 10 * np.log10(np.sum(original[:n] ** 2) / np.sum((original[:n] - shipped[:n]) ** 2))
    assert len(shipped) == len(original) and snr > 12


def test_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="recordings index not found"):
        read_index(tmp_path)
