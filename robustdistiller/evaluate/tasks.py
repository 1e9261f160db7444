"""Task packs: labelled train / validation / test utterances a probe is trained and tested on.

A :class:`TaskPack` names its utterances by a stable id (the path relative to the data root), so
conditions can seed their corruption from it and several tasks over the same audio (word and
speaker on the built-in corpus, digit and speaker on FSDD) share one feature extraction.

Builders:
- :func:`builtin_tasks`: the offline synthetic corpus (word classification, speaker identification);
- :func:`fsdd_tasks`: the Free Spoken Digit Dataset (digit recognition, 6-speaker identification;
  takes 0-4 are the held-out test split, as is conventional);
- :func:`speaker_tasks`: real read speech of speakers no model was trained on (the shipped held-out
  recordings, or LibriSpeech files): speaker identification and speaker sex over fixed-length
  segments, split by time within each speaker's recording;
- :func:`manifest_task`: any manifest with a label column (keyword, speaker, emotion, intent...) and an
  optional split column;
- :func:`ctc_task`: a manifest with transcripts, recognised with a character vocabulary.
Validation splits are carved from the training rows, stratified by label and seeded.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile as sf

from robustdistiller.atomic import atomic_write
from robustdistiller.data.audio import SAMPLE_RATE, AudioError, load_audio
from robustdistiller.data.corpus import Corpus
from robustdistiller.data.manifest import Manifest, manifest_from_folder
from robustdistiller.data.report import BadFileReport
from robustdistiller.errors import ConfigError, DataError, UsageError
from robustdistiller.evaluate.probe_tasks import BLANK, ProbeTask, probe_task

log = logging.getLogger(__name__)

TaskKind = Literal["utterance", "ctc"]  # a key of probe_tasks.PROBE_TASKS
Label = int | tuple[int, ...]
# Split-column values accepted for each split (case-insensitive).
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "eval": "test",
    "evaluation": "test",
}
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")
FSDD_TEST_TAKES = range(5)


@dataclass(frozen=True)
class TaskItem:
    uid: str  # stable id: the path relative to the data root
    path: Path
    label: Label  # class index, or CTC token ids (1..V-1; 0 is the blank)


@dataclass
class TaskPack:
    """Labelled splits of one recognition task."""

    name: str
    kind: TaskKind
    classes: list[str]  # class names, or the CTC vocabulary with classes[0] == BLANK
    train: list[TaskItem]
    val: list[TaskItem]
    test: list[TaskItem]
    description: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for split, items in self.splits().items():
            if not items:
                raise DataError(f"task {self.name!r}: the {split} split is empty")
        self.probe_task.check_classes(self.classes, self.name)

    @property
    def probe_task(self) -> ProbeTask:
        """The strategy probes of this task are trained and scored with."""
        return probe_task(self.kind)

    @property
    def metric(self) -> str:
        return self.probe_task.metric

    def splits(self) -> dict[str, list[TaskItem]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def items(self) -> list[TaskItem]:
        return [*self.train, *self.val, *self.test]

    def subset(self, max_train: int, max_val: int, max_test: int, seed: int = 0) -> TaskPack:
        """A smaller pack: at most ``max_*`` items per split (see :func:`seeded_take`)."""
        return replace(
            self,
            train=seeded_take(self.train, max_train, seed),
            val=seeded_take(self.val, max_val, seed),
            test=seeded_take(self.test, max_test, seed),
        )

    def without(self, uids: set[str]) -> TaskPack:
        """The pack minus the utterances ``uids`` (e.g. files that turned out unreadable)."""
        if not uids:
            return self
        pack = replace(
            self,
            train=[i for i in self.train if i.uid not in uids],
            val=[i for i in self.val if i.uid not in uids],
            test=[i for i in self.test if i.uid not in uids],
        )
        dropped = len(self.items()) - len(pack.items())
        pack.notes = [*self.notes, f"{dropped} unreadable utterances dropped"]
        return pack

    @property
    def chance(self) -> float | None:
        """The test split's metric for the best constant answer: for utterance tasks, the accuracy of
        always answering the most frequent class; None for CTC."""
        return self.probe_task.chance([item.label for item in self.test])  # type: ignore[arg-type]

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "chance": self.chance,
            "num_classes": len(self.classes),
            "classes": list(self.classes),
            "splits": {k: len(v) for k, v in self.splits().items()},
            "description": self.description,
            "notes": list(self.notes),
        }


def _order_key(seed: int, uid: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{uid}".encode()).digest()


def seeded_take(items: Sequence[TaskItem], limit: int, seed: int) -> list[TaskItem]:
    """At most ``limit`` items: those whose hash of (seed, uid) sorts first (input order kept).

    Depending only on the utterance ids means two tasks over the same audio (word and speaker of
    one corpus) keep the same utterances, so their features are extracted once.
    """
    if limit <= 0 or len(items) <= limit:
        return list(items)
    keep = set(sorted(range(len(items)), key=lambda i: _order_key(seed, items[i].uid))[:limit])
    return [item for i, item in enumerate(items) if i in keep]


def carve_validation(items: Sequence[TaskItem], fraction: float, seed: int) -> tuple[list[TaskItem], list[TaskItem]]:
    """Split ``items`` into (train, val): ``fraction`` of each label (at least one when it has two or more)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[Label, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.label].append(index)
    val_idx: set[int] = set()
    for _, idx in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if len(idx) < 2:
            continue
        count = max(1, int(round(fraction * len(idx))))
        val_idx.update(int(i) for i in rng.permutation(idx)[:count])
    if not val_idx:  # every label is a singleton (CTC transcripts): split the whole list instead
        count = max(1, int(round(fraction * len(items))))
        val_idx = {int(i) for i in rng.permutation(len(items))[:count]}
    train = [it for i, it in enumerate(items) if i not in val_idx]
    val = [it for i, it in enumerate(items) if i in val_idx]
    return train, val


def _class_index(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


# ------------------------------------------------------------------------------------- builders


def builtin_tasks(corpus: Corpus, *, seed: int = 0, val_fraction: float = 0.2) -> list[TaskPack]:
    """Word classification and speaker identification on the built-in corpus (its own test split)."""
    train_m, test_m = Manifest.read(corpus.train_manifest), Manifest.read(corpus.test_manifest)
    packs = []
    for column, classes, what in (
        ("word", corpus.words, "word classification"),
        ("speaker", corpus.speakers, "speaker identification"),
    ):
        index = {c: i for i, c in enumerate(classes)}
        train, test = (
            [TaskItem(e.path, m.root / e.path, index[e.labels[column]]) for e in m.entries] for m in (train_m, test_m)
        )
        train, val = carve_validation(train, val_fraction, seed)
        packs.append(
            TaskPack(
                f"builtin-{column}",
                "utterance",
                list(classes),
                train,
                val,
                test,
                description=f"built-in synthetic corpus, {what} ({len(classes)} classes)",
            )
        )
    return packs


def fsdd_tasks(
    root: str | Path, *, seed: int = 0, val_fraction: float = 0.1, report: BadFileReport | None = None
) -> list[TaskPack]:
    """Digit recognition and speaker identification on FSDD (``{digit}_{speaker}_{take}.wav``, 8 kHz).

    Takes 0-4 of every (digit, speaker) are the test split; validation is carved from the rest.
    Files whose name does not follow the pattern are reported and skipped. Audio is resampled to
    16 kHz when it is read (``data.audio.load_audio``).
    """
    root = Path(root).resolve()
    report = report if report is not None else BadFileReport()

    def labels(rel: Path) -> dict[str, str]:
        match = FSDD_NAME.match(rel.stem)
        if match is None:
            return {}
        return {"digit": match.group(1), "speaker": match.group(2), "take": match.group(3)}

    manifest, bad = manifest_from_folder(root, (".wav",), label_fn=labels, label_names=["digit", "speaker", "take"])
    report.extend(bad)
    entries = []
    for e in manifest.entries:
        if not e.labels.get("digit"):
            report.add(manifest.root / e.path, "unlabelled", "name is not {digit}_{speaker}_{take}.wav")
        else:
            entries.append(e)
    if not entries:
        raise DataError(f"no FSDD files named {{digit}}_{{speaker}}_{{take}}.wav under {root}")
    packs = []
    for column, what in (("digit", "spoken digit recognition"), ("speaker", "speaker identification")):
        classes = _class_index(e.labels[column] for e in entries)
        index = {c: i for i, c in enumerate(classes)}
        train: list[TaskItem] = []
        test: list[TaskItem] = []
        for e in entries:
            item = TaskItem(e.path, manifest.root / e.path, index[e.labels[column]])
            (test if int(e.labels["take"]) in FSDD_TEST_TAKES else train).append(item)
        train, val = carve_validation(train, val_fraction, seed)
        packs.append(
            TaskPack(
                f"fsdd-{column}",
                "utterance",
                classes,
                train,
                val,
                test,
                description=f"FSDD {what} ({len(classes)} classes; takes 0-4 held out)",
            )
        )
    return packs


@dataclass(frozen=True)
class SpeakerRecording:
    """One recording of one speaker, for :func:`speaker_tasks`."""

    path: Path
    speaker: str
    sex: str  # "F" / "M"


def _float_wav_writer(wav: np.ndarray) -> Callable[[BinaryIO], object]:
    """A writer for :func:`atomic_write` that stores ``wav`` as a 16 kHz float WAV."""
    return lambda fh: sf.write(fh, wav, SAMPLE_RATE, subtype="FLOAT", format="WAV")


def _write_segments(rec: SpeakerRecording, out_dir: Path, seconds: float, report: BadFileReport) -> list[str]:
    """Cut ``rec`` into consecutive ``seconds``-long segments (a shorter tail is dropped), written as
    16 kHz float WAVs ``out_dir/<stem>_<k>.wav``; returns their names in time order."""
    try:
        wav = load_audio(rec.path)
    except AudioError as exc:
        report.add(exc.path, exc.reason, exc.detail)
        return []
    size = int(seconds * SAMPLE_RATE)
    names = []
    for k in range(len(wav) // size):
        name = f"{rec.path.stem}_{k:03d}.wav"
        cut = wav[k * size : (k + 1) * size]
        atomic_write(out_dir / name, _float_wav_writer(cut))
        names.append(name)
    return names


def speaker_tasks(
    recordings: Sequence[SpeakerRecording],
    work_dir: str | Path,
    *,
    seed: int = 0,
    segment_seconds: float = 1.0,
    test_fraction: float = 0.25,
    val_fraction: float = 0.15,
    prefix: str = "heldout",
    report: BadFileReport | None = None,
) -> list[TaskPack]:
    """Speaker identification and speaker sex on real speech cut into ``segment_seconds`` segments.

    Within each speaker's recordings the last ``test_fraction`` of the segments (at least one) are
    the test split, so a probe is tested on later speech than it was trained on; validation is carved
    (stratified, seeded) from the rest. Speakers with fewer than two segments are left out and noted.

    Args:
        recordings: the recordings, any number per speaker (segments follow the given order).
        work_dir: the segments are written to ``work_dir/<prefix>-segments``.
        prefix: task names are ``<prefix>-speaker`` and ``<prefix>-sex``.

    Returns:
        ``[speaker identification pack, speaker sex pack]`` over the same segments.
    """
    if not recordings:
        raise DataError("speaker_tasks: no recordings given")
    bad_sex = sorted({r.sex for r in recordings} - {"F", "M"})
    if bad_sex:
        raise DataError(f"speaker_tasks: sex must be 'F' or 'M', got {bad_sex} (read from SPEAKERS.TXT?)")
    report = report if report is not None else BadFileReport()
    seg_dir = Path(work_dir).resolve() / f"{prefix}-segments"
    by_speaker: dict[str, list[str]] = defaultdict(list)
    sex = {}
    for rec in recordings:
        by_speaker[rec.speaker] += _write_segments(rec, seg_dir, segment_seconds, report)
        sex[rec.speaker] = rec.sex
    dropped = sorted(s for s, names in by_speaker.items() if len(names) < 2)
    speakers = sorted(s for s in by_speaker if s not in dropped)
    if len(speakers) < 2:
        raise DataError(
            f"speaker_tasks: {len(speakers)} speakers have two or more {segment_seconds:g} s segments; "
            "give longer recordings or a shorter segment_seconds"
        )
    packs = []
    for column, classes, label_of in (("speaker", speakers, lambda s: s), ("sex", ["F", "M"], lambda s: sex[s])):
        index = {c: i for i, c in enumerate(classes)}
        train: list[TaskItem] = []
        test: list[TaskItem] = []
        for s in speakers:
            names = by_speaker[s]
            n_test = max(1, int(round(test_fraction * len(names))))
            items = [TaskItem(n, seg_dir / n, index[label_of(s)]) for n in names]
            train += items[:-n_test]
            test += items[-n_test:]
        train, val = carve_validation(train, val_fraction, seed)
        what = f"{len(speakers)}-speaker identification" if column == "speaker" else "speaker sex (F / M)"
        pack = TaskPack(
            f"{prefix}-{column}",
            "utterance",
            list(classes),
            train,
            val,
            test,
            description=f"real read speech of {len(speakers)} speakers unseen in training, {what}, "
            f"{segment_seconds:g} s segments; the last {test_fraction:.0%} of each "
            "speaker's speech is the test split",
        )
        if dropped:
            pack.notes.append(f"{len(dropped)} speakers with fewer than two segments left out")
        packs.append(pack)
    return packs


def shipped_speaker_tasks(
    work_dir: str | Path, *, seed: int = 0, folder: str | Path | None = None, **kwargs: object
) -> list[TaskPack]:
    """:func:`speaker_tasks` on the held-out recordings that ship with the package
    (:mod:`robustdistiller.data.recordings`); raises when they are missing, never falls back."""
    from robustdistiller.data.recordings import RECORDINGS_DIR, read_index

    rows = [r for r in read_index(folder or RECORDINGS_DIR) if r.role == "heldout"]
    base = Path(folder or RECORDINGS_DIR)
    recs = [SpeakerRecording(base / r.path, r.speaker, r.sex) for r in rows]
    return speaker_tasks(recs, work_dir, seed=seed, **kwargs)  # type: ignore[arg-type]


def librispeech_speaker_tasks(
    folder: str | Path, work_dir: str | Path, *, seed: int = 0, **kwargs: object
) -> list[TaskPack]:
    """:func:`speaker_tasks` on the held-out speakers (:func:`~robustdistiller.data.manifest.is_held_out_speaker`)
    of a flat LibriSpeech folder (``<speaker>-<chapter>-<utt>.flac`` files beside ``SPEAKERS.TXT``)."""
    from robustdistiller.data.manifest import is_held_out_speaker, speaker_from_name
    from robustdistiller.data.recordings import read_speaker_sex

    folder = Path(folder)
    sexes = read_speaker_sex(folder / "SPEAKERS.TXT")
    recs = [
        SpeakerRecording(p, speaker_from_name(p), sexes.get(speaker_from_name(p), ""))
        for p in sorted(folder.rglob("*.flac"))
        if is_held_out_speaker(speaker_from_name(p))
    ]
    if not recs:
        raise DataError(f"no held-out speakers' .flac files under {folder}")
    return speaker_tasks(recs, work_dir, seed=seed, prefix="librispeech", **kwargs)  # type: ignore[arg-type]


def _manifest_splits(
    manifest: Manifest,
    make: Callable[[str, Path, dict[str, str]], TaskItem | None],
    split_column: str | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> tuple[list[TaskItem], list[TaskItem], list[TaskItem]]:
    buckets: dict[str, list[TaskItem]] = {"train": [], "val": [], "test": []}
    for e in manifest.entries:
        item = make(e.path, manifest.root / e.path, e.labels)
        if item is None:
            continue
        if split_column is None:
            buckets["train"].append(item)
            continue
        raw = e.labels.get(split_column, "").strip().lower()
        if raw not in SPLIT_NAMES:
            raise DataError(f"row {e.path}: split {raw!r} is not one of {sorted(set(SPLIT_NAMES))}")
        buckets[SPLIT_NAMES[raw]].append(item)
    train, val, test = buckets["train"], buckets["val"], buckets["test"]
    if not test:
        train, test = carve_validation(train, test_fraction, seed + 1)
    if not val:
        train, val = carve_validation(train, val_fraction, seed)
    return train, val, test


def _read_manifest(path: str | Path, needed: Sequence[str]) -> Manifest:
    manifest = Manifest.read(path)
    missing = [c for c in needed if c not in manifest.label_names]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found; label columns: {manifest.label_names}")
    if not manifest.entries:
        raise DataError(f"{path}: the manifest has no rows")
    return manifest


def manifest_task(
    path: str | Path,
    label_column: str = "label",
    *,
    split_column: str | None = None,
    name: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> TaskPack:
    """Utterance classification (keyword, speaker, emotion, intent...) from a manifest's label column.

    With ``split_column`` rows are assigned by its value (train / val|valid|dev / test); missing
    splits are carved (stratified, seeded) from the training rows. Rows with an empty label are skipped.
    """
    needed = [label_column] + ([split_column] if split_column else [])
    manifest = _read_manifest(path, needed)
    classes = _class_index(e.labels[label_column] for e in manifest.entries if e.labels[label_column])
    index = {c: i for i, c in enumerate(classes)}
    skipped = sum(not e.labels[label_column] for e in manifest.entries)
    if skipped:
        log.warning("%s: %d rows without a %r label skipped", path, skipped, label_column)

    def make(uid: str, full: Path, labels: dict[str, str]) -> TaskItem | None:
        return TaskItem(uid, full, index[labels[label_column]]) if labels[label_column] else None

    train, val, test = _manifest_splits(manifest, make, split_column, seed, val_fraction, test_fraction)
    pack = TaskPack(
        name or f"{Path(path).stem}-{label_column}",
        "utterance",
        classes,
        train,
        val,
        test,
        description=f"{path}: classification of column {label_column!r} ({len(classes)} classes)",
    )
    if skipped:
        pack.notes.append(f"{skipped} rows without a label skipped")
    return pack


def ctc_task(
    path: str | Path,
    transcript_column: str = "transcript",
    *,
    split_column: str | None = None,
    name: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    lowercase: bool = True,
) -> TaskPack:
    """Character recognition (CTC) from a manifest's transcript column; metric: character error rate."""
    needed = [transcript_column] + ([split_column] if split_column else [])
    manifest = _read_manifest(path, needed)

    def text(labels: dict[str, str]) -> str:
        raw = labels[transcript_column].strip()
        return raw.lower() if lowercase else raw

    chars = sorted({c for e in manifest.entries for c in text(e.labels)})
    if not chars:
        raise DataError(f"{path}: every {transcript_column!r} cell is empty")
    vocab = [BLANK, *chars]
    token = {c: i for i, c in enumerate(vocab)}

    def make(uid: str, full: Path, labels: dict[str, str]) -> TaskItem | None:
        t = text(labels)
        return TaskItem(uid, full, tuple(token[c] for c in t)) if t else None

    train, val, test = _manifest_splits(manifest, make, split_column, seed, val_fraction, test_fraction)
    return TaskPack(
        name or f"{Path(path).stem}-ctc",
        "ctc",
        vocab,
        train,
        val,
        test,
        description=f"{path}: character recognition of column {transcript_column!r} ({len(chars)} characters)",
    )


# ------------------------------------------------------------------------------------------ audio


def load_waveforms(items: Iterable[TaskItem], report: BadFileReport) -> dict[str, np.ndarray]:
    """Decode each distinct utterance once (16 kHz mono float32). Unreadable, empty, too short,
    non-finite or silent files are recorded in ``report`` and left out of the result."""
    out: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for item in items:
        if item.uid in seen:
            continue
        seen.add(item.uid)
        try:
            out[item.uid] = load_audio(item.path)
        except AudioError as exc:
            report.add(exc.path, exc.reason, exc.detail)
    return out


def tasks_from_spec(
    spec: str, *, work_dir: str | Path, seed: int = 0, report: BadFileReport | None = None
) -> list[TaskPack]:
    """Task packs named on the command line.

    ``builtin`` (corpus generated under ``work_dir/corpus``), ``heldout`` (the shipped real
    recordings of held-out speakers), ``librispeech:PATH`` (held-out speakers of a LibriSpeech folder
    with ``SPEAKERS.TXT``), ``fsdd:PATH``,
    ``manifest:PATH[:LABEL_COLUMN[:SPLIT_COLUMN]]`` (label column default ``label``) or
    ``ctc:PATH[:TRANSCRIPT_COLUMN[:SPLIT_COLUMN]]`` (default ``transcript``).
    """
    from robustdistiller.data.corpus import build_corpus  # generation code only needed for builtin

    kind, _, rest = spec.partition(":")
    if spec == "builtin":
        return builtin_tasks(build_corpus(Path(work_dir) / "corpus", seed=seed), seed=seed)
    if spec == "heldout":
        return shipped_speaker_tasks(work_dir, seed=seed, report=report)
    if kind == "librispeech" and rest:
        return librispeech_speaker_tasks(rest, work_dir, seed=seed, report=report)
    if kind == "fsdd" and rest:
        return fsdd_tasks(rest, seed=seed, report=report)
    if kind in ("manifest", "ctc") and rest:
        path, *cols = rest.split(":")
        if len(cols) > 2:
            raise UsageError(f"task {spec!r}: expected {kind}:PATH[:COLUMN[:SPLIT_COLUMN]]")
        column = cols[0] if cols and cols[0] else ("label" if kind == "manifest" else "transcript")
        split = cols[1] if len(cols) > 1 and cols[1] else None
        build = manifest_task if kind == "manifest" else ctc_task
        return [build(path, column, split_column=split, seed=seed)]
    raise UsageError(
        f"unknown task {spec!r}; use builtin, heldout, librispeech:PATH, fsdd:PATH, "
        "manifest:PATH[:LABEL[:SPLIT]] or ctc:PATH[:TEXT[:SPLIT]]"
    )
