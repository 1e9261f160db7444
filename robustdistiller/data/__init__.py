"""Data: audio reading, manifests, bad-file report, dataset/collate, batching, built-in corpus."""

from robustdistiller.data.audio import (
    MIN_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    AudioInfo,
    audio_info,
    load_audio,
    load_audio_channels,
    load_audio_segment,
)
from robustdistiller.data.batching import BucketBatchSampler
from robustdistiller.data.corpus import Corpus, build_corpus, synthesize_utterance
from robustdistiller.data.dataset import AudioDataset, Batch, Skipped, Utterance, collate
from robustdistiller.data.manifest import (
    Manifest,
    ManifestEntry,
    is_held_out_speaker,
    manifest_from_csv,
    manifest_from_folder,
    manifest_from_librispeech,
    speaker_from_name,
    split_held_out,
    validate_manifest,
)
from robustdistiller.data.report import BadFileReport

__all__ = [
    "MIN_SAMPLES",
    "SAMPLE_RATE",
    "AudioError",
    "AudioInfo",
    "audio_info",
    "load_audio",
    "load_audio_channels",
    "load_audio_segment",
    "BucketBatchSampler",
    "Corpus",
    "build_corpus",
    "synthesize_utterance",
    "AudioDataset",
    "Batch",
    "Skipped",
    "Utterance",
    "collate",
    "Manifest",
    "ManifestEntry",
    "manifest_from_csv",
    "manifest_from_folder",
    "manifest_from_librispeech",
    "validate_manifest",
    "is_held_out_speaker",
    "speaker_from_name",
    "split_held_out",
    "BadFileReport",
]
