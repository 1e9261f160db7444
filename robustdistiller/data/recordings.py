"""Real recordings that ship with the package (``robustdistiller/assets/recordings``), so the demo
trains and evaluates on real speech, real noises and a measured room from a fresh clone.

What ships (all CC BY 4.0 or CC0; ``ATTRIBUTION.md`` beside the files names each source):
- ``heldout/``: the whole LibriSpeech utterance of each of the 46 held-out speakers
  (:func:`~robustdistiller.data.manifest.is_held_out_speaker`), for evaluation only;
- ``train/``: the first :data:`TRAIN_SECONDS` of the utterance of each of the other 205 speakers, for
  distillation (the same speakers the shipped teacher was pre-trained on);
- ``noise/``: :data:`NOISE_SECONDS` of each *recorded* Speech Commands background noise (dishes,
  miaowing, exercise bike, running tap), for evaluation only (training uses generated noises);
- ``rir/``: the measured hand-clap room impulse response (CC0), for evaluation only.

Speech and noise are Ogg/Vorbis at :data:`VORBIS_LEVEL` (about 33 kbit/s, a fifth of FLAC's size;
libsndfile reads it), the RIR lossless FLAC. ``index.tsv`` lists every file with its role, speaker,
sex, source, the cut (start and duration in the source) and a SHA-256, so tests can check that the
files, the index and the attribution agree. :func:`build_recordings` rebuilds the folder from
``../shared/data`` (an Ogg stream carries a random serial number, so rebuilt files differ byte-wise
from the shipped ones but decode to the same samples)::

    python -m robustdistiller.data.recordings --shared ../shared/data
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf

from robustdistiller.atomic import atomic_write
from robustdistiller.data.audio import SAMPLE_RATE, load_audio
from robustdistiller.data.manifest import is_held_out_speaker, speaker_from_name
from robustdistiller.errors import DataError

RECORDINGS_DIR = Path(__file__).resolve().parent.parent / "assets" / "recordings"
INDEX_NAME = "index.tsv"
ATTRIBUTION_NAME = "ATTRIBUTION.md"
TRAIN_SECONDS = 5.0  # per training speaker: 205 x 5 s = 17 min of distillation speech
NOISE_SECONDS = 20.0  # per recorded noise: long enough that segments drawn per utterance rarely repeat
VORBIS_LEVEL = 0.8  # libsndfile's compression level: 0 = best quality (~73 kbit/s), 1 = smallest (~27)
RECORDED_NOISES = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "running_tap")
CLAP_RIR = "rir_clap"
ROLES = ("heldout", "train", "noise", "rir")

LIBRISPEECH = (
    "LibriSpeech ASR corpus, train-clean-100 (Panayotov et al. 2015), via the librispeech_subset "
    "copy in resemble-ai/Resemblyzer",
    "CC BY 4.0",
)
SPEECH_COMMANDS = (
    "Google Speech Commands v0.02, _background_noise_ (Warden 2018), via chaeyoung-lee/wids_tutorial",
    "CC BY 4.0",
)
CLAP = ("hand-clap room impulse response, spatialaudio/selected-topics-in-audio-signal-processing-exercises", "CC0 1.0")


@dataclass(frozen=True)
class Recording:
    """One row of ``index.tsv``."""

    path: str  # relative to the recordings folder
    role: str  # one of ROLES
    speaker: str  # LibriSpeech speaker id ("" for noise / rir)
    sex: str  # "F" / "M" from SPEAKERS.TXT ("" for noise / rir)
    source: str  # source file name
    start_s: float  # cut start in the source (s)
    duration_s: float  # cut duration (s)
    licence: str
    sha256: str


def read_speaker_sex(speakers_txt: str | Path) -> dict[str, str]:
    """Speaker id -> "F" / "M" from LibriSpeech's ``SPEAKERS.TXT`` (``id | sex | subset | minutes | name``)."""
    sexes = {}
    for line in Path(speakers_txt).read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if line.startswith(";") or len(cells) < 2 or not cells[0].isdigit():
            continue
        sexes[cells[0]] = cells[1]
    if not sexes:
        raise DataError(f"{speakers_txt}: no 'id | sex | ...' rows")
    return sexes


def read_index(folder: str | Path = RECORDINGS_DIR) -> list[Recording]:
    """The rows of ``folder/index.tsv``; raises when the index or a file it lists is missing."""
    folder = Path(folder)
    path = folder / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"recordings index not found: {path} (rebuild it: python -m "
            "robustdistiller.data.recordings --shared ../shared/data)"
        )
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = [_recording(r) for r in rows]
    missing = [r.path for r in out if not (folder / r.path).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} recordings listed in {path} are missing, e.g. {folder / missing[0]}")
    return out


def _recording(row: dict[str, str]) -> Recording:
    """One ``index.tsv`` row as a :class:`Recording` (the two times are its only numeric columns)."""
    values: dict[str, Any] = {**row, "start_s": float(row["start_s"]), "duration_s": float(row["duration_s"])}
    return Recording(**values)


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def encode(wav: np.ndarray, fmt: str, sample_rate: int = SAMPLE_RATE) -> bytes:
    """``wav`` as Ogg/Vorbis (``fmt="OGG"``, at :data:`VORBIS_LEVEL`) or 16-bit FLAC, in memory."""
    buf = io.BytesIO()
    if fmt == "OGG":
        sf.write(buf, wav, sample_rate, format="OGG", subtype="VORBIS", compression_level=VORBIS_LEVEL)
    else:
        sf.write(buf, wav, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _write(out_dir: Path, rel: str, data: bytes) -> str:
    atomic_write(out_dir / rel, lambda fh: fh.write(data))
    return hashlib.sha256(data).hexdigest()


def _speech_rows(librispeech: Path, out_dir: Path) -> list[Recording]:
    sexes = read_speaker_sex(librispeech / "SPEAKERS.TXT")
    rows = []
    for src in sorted(librispeech.glob("*.flac")):
        speaker = speaker_from_name(src)
        held_out = is_held_out_speaker(speaker)
        wav = load_audio(src)
        if not held_out:
            wav = wav[: int(TRAIN_SECONDS * SAMPLE_RATE)]
        rel = f"{'heldout' if held_out else 'train'}/{src.stem}.ogg"
        digest = _write(out_dir, rel, encode(wav, "OGG"))
        rows.append(
            Recording(
                rel,
                "heldout" if held_out else "train",
                speaker,
                sexes.get(speaker, ""),
                src.name,
                0.0,
                round(len(wav) / SAMPLE_RATE, 3),
                LIBRISPEECH[1],
                digest,
            )
        )
    return rows


def _noise_rows(noise_dir: Path, out_dir: Path) -> list[Recording]:
    rows = []
    for name in RECORDED_NOISES:
        src = noise_dir / f"{name}.wav"
        wav = load_audio(src)
        # From 5 s in: the clips' first seconds hold the recorder being started on some of them.
        start = min(int(5 * SAMPLE_RATE), max(0, len(wav) - int(NOISE_SECONDS * SAMPLE_RATE)))
        cut = wav[start : start + int(NOISE_SECONDS * SAMPLE_RATE)]
        rel = f"noise/{name}.ogg"
        rows.append(
            Recording(
                rel,
                "noise",
                "",
                "",
                src.name,
                start / SAMPLE_RATE,
                round(len(cut) / SAMPLE_RATE, 3),
                SPEECH_COMMANDS[1],
                _write(out_dir, rel, encode(cut, "OGG")),
            )
        )
    return rows


def _rir_rows(rir_dir: Path, out_dir: Path) -> list[Recording]:
    src = rir_dir / f"{CLAP_RIR}.wav"
    wav, rate = sf.read(src, dtype="float32")  # kept at its own rate and lossless: the tail is the measurement
    rel = f"rir/{CLAP_RIR}.flac"
    return [
        Recording(
            rel,
            "rir",
            "",
            "",
            src.name,
            0.0,
            round(len(wav) / rate, 3),
            CLAP[1],
            _write(out_dir, rel, encode(wav, "FLAC", rate)),
        )
    ]


def attribution_text(rows: Sequence[Recording]) -> str:
    """``ATTRIBUTION.md``: sources, licences, what was cut, the codec; one line per file."""
    by_role = {role: [r for r in rows if r.role == role] for role in ROLES}
    seconds = {role: sum(r.duration_s for r in rs) for role, rs in by_role.items()}
    lines = [
        "# Recordings shipped with robustdistiller",
        "",
        "Rebuilt by `python -m robustdistiller.data.recordings --shared ../shared/data`; `index.tsv` lists every "
        "file with its SHA-256.",
        "",
        "## Sources and licences",
        "",
        f"- `heldout/` ({len(by_role['heldout'])} files, {seconds['heldout'] / 60:.1f} min) and `train/` "
        f"({len(by_role['train'])} files, {seconds['train'] / 60:.1f} min): {LIBRISPEECH[0]}. Licence: "
        f"{LIBRISPEECH[1]} (https://creativecommons.org/licenses/by/4.0/), LibriSpeech (c) 2014 by Vassil Panayotov; "
        "the audio comes from LibriVox public-domain recordings. Changes: `heldout/` holds the whole first "
        "utterance of each speaker whose id is a multiple of 5 (never used for training); `train/` holds the "
        f"first {TRAIN_SECONDS:g} s of the first utterance of every other speaker; re-encoded as Ogg/Vorbis.",
        f"- `noise/` ({len(by_role['noise'])} files, {seconds['noise']:.0f} s): {SPEECH_COMMANDS[0]}. Licence: "
        f"{SPEECH_COMMANDS[1]}. Changes: {NOISE_SECONDS:g} s cut from each recorded clip (the generated white and "
        "pink clips are left out); re-encoded as Ogg/Vorbis. Used for evaluation only.",
        f"- `rir/`: {CLAP[0]}. Licence: {CLAP[1]}. Unchanged samples, stored as 16-bit FLAC at the original rate. "
        "Used for evaluation only.",
        "",
        f"Codec: Ogg/Vorbis, libsndfile compression level {VORBIS_LEVEL} (about 33 kbit/s at 16 kHz mono), "
        "chosen to ship the whole held-out set within the size budget; `bench/miniature.py --eval-audio shipped` runs "
        "the benchmark's evaluation on these files instead of the original FLAC ones, to show what the codec changes.",
        "",
        "## Files",
        "",
        "| file | speaker | sex | source | start (s) | duration (s) | licence |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.path} | {r.speaker or '-'} | {r.sex or '-'} | {r.source} | {r.start_s:g} | {r.duration_s:g} "
        f"| {r.licence} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def build_recordings(shared: str | Path, out_dir: str | Path = RECORDINGS_DIR) -> list[Recording]:
    """Cut and encode the shipped recordings from ``shared`` (the ``../shared/data`` layout) into
    ``out_dir``, then write ``index.tsv`` and ``ATTRIBUTION.md``; returns the index rows."""
    shared, out_dir = Path(shared), Path(out_dir)
    rows = [
        *_speech_rows(shared / "librispeech_subset", out_dir),
        *_noise_rows(shared / "noise", out_dir),
        *_rir_rows(shared / "rir", out_dir),
    ]
    names = [f.name for f in fields(Recording)]

    def write_index(fh: BinaryIO) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, names, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
        fh.write(text.getvalue().encode())

    atomic_write(out_dir / INDEX_NAME, write_index)
    atomic_write(out_dir / ATTRIBUTION_NAME, lambda fh: fh.write(attribution_text(rows).encode()))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild robustdistiller/assets/recordings from ../shared/data")
    parser.add_argument("--shared", required=True, help="folder holding librispeech_subset/, noise/ and rir/")
    parser.add_argument("--out", default=str(RECORDINGS_DIR))
    args = parser.parse_args(argv)
    rows = build_recordings(args.shared, args.out)
    total = sum((Path(args.out) / r.path).stat().st_size for r in rows)
    print(f"{len(rows)} files, {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
