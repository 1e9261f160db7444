"""The built-in offline corpus: deterministic, speech-like words from a source-filter synthesiser.

It is the default data of the demo and the tests, so it must need nothing but numpy/scipy and
build in seconds. Each word is a sequence of 2-3 phone-like segments (vowels with formant targets,
nasals, fricative noise bands) joined by smooth formant transitions; a glottal pulse train (or
noise, for fricatives) drives a cascade of time-varying resonators. Speakers differ in F0,
vocal-tract length (all formants scaled), speaking rate, spectral tilt and breathiness. Every
utterance jitters its timing, pitch contour, formant targets, level and leading/trailing silence.

Word identity lives in the spectral content, speaker identity in F0 and formant scaling. Total
duration and loudness are drawn independently of the word, so neither gives the word away.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from robustdistiller.atomic import atomic_dir, stale_temps
from robustdistiller.data.audio import SAMPLE_RATE
from robustdistiller.data.manifest import Manifest, ManifestEntry
from robustdistiller.errors import ConfigError, DataError

# Bump when the synthesiser changes, so cached builds are rebuilt.
GENERATOR_VERSION = 1
_FRAME = 80  # resonator coefficients are updated every 5 ms


@dataclass(frozen=True)
class Phone:
    kind: str  # "vowel" | "nasal" | "fricative"
    formants: tuple[float, float, float] = (500.0, 1500.0, 2500.0)  # Hz, for a scale-1 speaker
    band: tuple[float, float] = (0.0, 0.0)  # fricative noise band, Hz
    weight: float = 1.0  # relative duration inside the word


PHONES: dict[str, Phone] = {
    "a": Phone("vowel", (730, 1090, 2440)),
    "i": Phone("vowel", (270, 2290, 3010)),
    "u": Phone("vowel", (300, 870, 2240)),
    "e": Phone("vowel", (530, 1840, 2480)),
    "o": Phone("vowel", (570, 840, 2410)),
    "ae": Phone("vowel", (660, 1720, 2410)),
    "m": Phone("nasal", (250, 1000, 2200), weight=0.6),
    "n": Phone("nasal", (250, 1700, 2600), weight=0.6),
    "s": Phone("fricative", band=(4500.0, 7500.0), weight=0.8),
    "sh": Phone("fricative", band=(2000.0, 4200.0), weight=0.8),
    "f": Phone("fricative", band=(1200.0, 7000.0), weight=0.7),
}

WORDS: dict[str, tuple[str, ...]] = {
    "sa": ("s", "a"),
    "shi": ("sh", "i"),
    "mu": ("m", "u"),
    "nae": ("n", "ae"),
    "ise": ("i", "s", "e"),
    "ofu": ("o", "f", "u"),
    "emo": ("e", "m", "o"),
    "ashae": ("a", "sh", "ae"),
    "uni": ("u", "n", "i"),
    "fo": ("f", "o"),
}


@dataclass(frozen=True)
class Speaker:
    f0: float  # Hz
    formant_scale: float  # shorter vocal tract -> higher formants
    rate: float  # > 1 speaks faster
    tilt: float  # one-pole low-pass coefficient on the glottal source (more = darker voice)
    breath: float  # aspiration noise relative to voicing


SPEAKERS: dict[str, Speaker] = {
    "adam": Speaker(f0=105.0, formant_scale=0.92, rate=0.90, tilt=0.92, breath=0.02),
    "bert": Speaker(f0=140.0, formant_scale=1.00, rate=1.10, tilt=0.85, breath=0.05),
    "cara": Speaker(f0=205.0, formant_scale=1.14, rate=1.00, tilt=0.80, breath=0.10),
    "dora": Speaker(f0=250.0, formant_scale=1.22, rate=1.20, tilt=0.88, breath=0.06),
}


@dataclass(frozen=True)
class Corpus:
    root: Path
    train_manifest: Path
    test_manifest: Path
    words: list[str]
    speakers: list[str]


def _resonator_sos(freqs: np.ndarray, bws: np.ndarray, sr: int) -> np.ndarray:
    """Second-order sections of a cascade of unity-DC-gain resonators (Klatt-style)."""
    r = np.exp(-np.pi * bws / sr)
    c = 2 * r * np.cos(2 * np.pi * freqs / sr)
    sos = np.zeros((len(freqs), 6))
    sos[:, 0] = 1 - c + r * r
    sos[:, 3] = 1.0
    sos[:, 4] = -c
    sos[:, 5] = r * r
    return sos


def _glottal_source(f0: np.ndarray, tilt: float, sr: int) -> np.ndarray:
    """Pulse train following the per-sample F0 track, darkened by a one-pole low-pass."""
    phase = np.cumsum(f0 / sr)
    pulses = np.zeros_like(f0)
    pulses[1:][np.diff(np.floor(phase)) > 0] = 1.0
    source = signal.lfilter([1 - tilt], [1, -tilt], pulses)
    return source - source.mean()


def synthesize_utterance(
    word: str, speaker: str, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """One jittered utterance of ``word`` by ``speaker`` as float32 in [-1, 1]."""
    if word not in WORDS:
        raise ValueError(f"unknown word {word!r}; words: {', '.join(WORDS)}")
    if speaker not in SPEAKERS:
        raise ValueError(f"unknown speaker {speaker!r}; speakers: {', '.join(SPEAKERS)}")
    spk = SPEAKERS[speaker]
    sr = sample_rate
    phones = [PHONES[p] for p in WORDS[word]]

    # Timing: the word's duration does not depend on how many phones it has.
    word_dur = rng.uniform(0.45, 0.75) / spk.rate
    weights = np.array([p.weight for p in phones]) * rng.uniform(0.8, 1.2, len(phones))
    seg_len = np.maximum((weights / weights.sum() * word_dur * sr).astype(int), 4 * _FRAME)
    bounds = np.concatenate([[0], np.cumsum(seg_len)])
    n = int(bounds[-1])
    t = np.arange(n)

    # Formant tracks: per-segment targets, linearly interpolated between segment centres.
    centres = (bounds[:-1] + bounds[1:]) / 2
    targets = np.array([p.formants for p in phones]) * spk.formant_scale
    targets *= rng.normal(1.0, 0.03, targets.shape)
    tracks = np.stack([np.interp(t, centres, targets[:, k]) for k in range(3)])
    bandwidths = np.array([80.0, 110.0, 160.0]) * rng.uniform(0.9, 1.1, 3)

    # Excitation envelopes per segment, smoothed so transitions are not clicks.
    voiced = np.zeros(n)
    noise_env = np.zeros(n)
    frication = np.zeros(n)
    noise = rng.standard_normal(n)
    for p, lo, hi in zip(phones, bounds[:-1], bounds[1:]):
        if p.kind == "fricative":
            low, high = (np.array(p.band) * spk.formant_scale).clip(50, sr / 2 - 200)
            band = signal.sosfilt(signal.butter(4, [low, high], "bandpass", fs=sr, output="sos"), noise[lo:hi])
            taper = signal.windows.tukey(hi - lo, alpha=min(1.0, 2 * _FRAME / (hi - lo)))
            frication[lo:hi] = band * taper * rng.uniform(0.5, 0.8)
        else:
            voiced[lo:hi] = 0.35 if p.kind == "nasal" else 1.0
            noise_env[lo:hi] = spk.breath
    ramp = np.hanning(2 * _FRAME + 1)
    ramp /= ramp.sum()
    voiced = np.convolve(voiced, ramp, "same")
    noise_env = np.convolve(noise_env, ramp, "same")

    # Pitch: speaker F0, per-utterance offset, declination and a slow random wobble.
    f0 = spk.f0 * rng.uniform(0.92, 1.08)
    declination = np.linspace(1.0 + rng.uniform(0.0, 0.08), 1.0 - rng.uniform(0.05, 0.15), n)
    wobble = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(2, 5) * t / sr + rng.uniform(0, 2 * np.pi))
    source = _glottal_source(f0 * declination * wobble, spk.tilt, sr) * voiced * 8.0
    source += noise * noise_env * 0.5

    # Time-varying resonator cascade, frame by frame, carrying the filter state across frames.
    out = np.empty(n)
    state = np.zeros((3, 2))
    for start in range(0, n, _FRAME):
        stop = min(start + _FRAME, n)
        sos = _resonator_sos(tracks[:, start], bandwidths, sr)
        out[start:stop], state = signal.sosfilt(sos, source[start:stop], zi=state)
    out += frication

    # Level, edges and a faint noise floor, all independent of the word.
    fade = np.minimum(1.0, np.minimum(t, n - 1 - t) / (0.01 * sr))
    out *= fade
    out *= 10 ** (rng.uniform(-28, -16) / 20) / (np.sqrt(np.mean(out**2)) + 1e-12)
    lead, tail = (rng.uniform(0.05, 0.25, 2) * sr).astype(int)
    wav = np.concatenate([np.zeros(lead), out, np.zeros(tail)])
    wav += rng.standard_normal(wav.shape[0]) * 10 ** (-65 / 20)
    return np.clip(wav, -1.0, 1.0).astype(np.float32)


def utterance_rng(seed: int, word: str, speaker: str, take: int) -> np.random.Generator:
    """The generator of one corpus utterance: independent of build order."""
    return np.random.default_rng([seed, list(WORDS).index(word), list(SPEAKERS).index(speaker), take])


@dataclass(frozen=True)
class _BuildKey:
    version: int
    seed: int
    utterances_per_word_per_speaker: int
    test_takes: int
    sample_rate: int


def build_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    utterances_per_word_per_speaker: int = 8,
    test_takes: int = 2,
) -> Corpus:
    """Write the corpus (16 kHz PCM-16 wavs + ``train.tsv`` / ``test.tsv`` with ``word`` and
    ``speaker`` columns) into ``out_dir``, or reuse it when a complete build with the same
    generator version and parameters is already there. Takes ``>= n - test_takes`` of every
    (word, speaker) pair form the fixed test split.

    The folder is built beside ``out_dir`` and renamed into place, so an interrupted build never
    looks complete.
    """
    if utterances_per_word_per_speaker < 2:
        raise ConfigError("utterances_per_word_per_speaker must be >= 2 (train and test takes)")
    if not 1 <= test_takes < utterances_per_word_per_speaker:
        raise ConfigError(f"test_takes must be in [1, {utterances_per_word_per_speaker - 1}], got {test_takes}")
    out_dir = Path(out_dir).resolve()
    key = asdict(_BuildKey(GENERATOR_VERSION, seed, utterances_per_word_per_speaker, test_takes, SAMPLE_RATE))
    corpus = Corpus(out_dir, out_dir / "train.tsv", out_dir / "test.tsv", list(WORDS), list(SPEAKERS))
    if _is_build(out_dir, key):
        return corpus
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "corpus.json").is_file():
        raise DataError(f"{out_dir} exists and is not a corpus folder; choose an empty or new folder")

    _remove_stale_builds(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # empty, or an older build of ours (checked above)
    try:
        with atomic_dir(out_dir) as tmp:  # a failed or killed build leaves nothing that looks complete
            _write_corpus(tmp, key, seed, utterances_per_word_per_speaker, test_takes)
    except OSError:
        if not _is_build(out_dir, key):  # else another process finished the same build first
            raise
    return corpus


def _write_corpus(folder: Path, key: dict, seed: int, takes: int, test_takes: int) -> None:
    """Synthesize every utterance into ``folder`` with its manifests and build key."""
    train: list[ManifestEntry] = []
    test: list[ManifestEntry] = []
    for word in WORDS:
        for speaker in SPEAKERS:
            for take in range(takes):
                wav = synthesize_utterance(word, speaker, utterance_rng(seed, word, speaker, take))
                rel = f"audio/{speaker}/{word}_{speaker}_{take}.wav"
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(folder / rel, wav, SAMPLE_RATE, subtype="PCM_16")
                rows = test if take >= takes - test_takes else train
                rows.append(ManifestEntry(rel, wav.shape[0], {"word": word, "speaker": speaker}))
    for rows, name in ((train, "train.tsv"), (test, "test.tsv")):
        Manifest(folder, rows, ["word", "speaker"]).write(folder / name, relative_root=True)
    (folder / "corpus.json").write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")


def _remove_stale_builds(out_dir: Path) -> None:
    """Delete build folders of ``out_dir`` that killed processes left beside it."""
    for stale in stale_temps(out_dir.parent):
        if stale.name.startswith(f".{out_dir.name}.tmp-") and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _is_build(out_dir: Path, key: dict) -> bool:
    meta = out_dir / "corpus.json"
    if not meta.is_file():
        return False
    try:
        if json.loads(meta.read_text()) != key:
            return False
    except json.JSONDecodeError:
        return False
    return (out_dir / "train.tsv").is_file() and (out_dir / "test.tsv").is_file()
