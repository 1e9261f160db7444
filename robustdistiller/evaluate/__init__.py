"""Evaluation building blocks: signal/recognition metrics, SUPERB-style probes, representation
distortion and efficiency measures. Everything works on plain tensors and the upstream protocol
(``extract(wavs, lengths) -> list[Tensor[B, T, D]]``)."""

from robustdistiller.evaluate.distortion import DistortionMeter, layer_distortion
from robustdistiller.evaluate.efficiency import count_macs, count_parameters, peak_memory_mb, real_time_factor
from robustdistiller.evaluate.heads import CTCProbe, UtteranceClassifier, WeightedLayerSum
from robustdistiller.evaluate.metrics import (
    accuracy,
    edit_distance,
    error_rate,
    pesq_wb,
    si_snr,
    si_snr_improvement,
    snr_db,
    stoi,
)
from robustdistiller.evaluate.probe_tasks import CTCTask, ProbeTask, UtteranceTask, probe_task
from robustdistiller.evaluate.probes import (
    FeatureCache,
    ProbeConfig,
    TrainedProbe,
    evaluate_probe,
    extract_features,
    train_probe,
    upstream_frame_lengths,
)

__all__ = [
    "CTCProbe",
    "CTCTask",
    "DistortionMeter",
    "FeatureCache",
    "ProbeConfig",
    "ProbeTask",
    "TrainedProbe",
    "UtteranceClassifier",
    "UtteranceTask",
    "WeightedLayerSum",
    "accuracy",
    "count_macs",
    "count_parameters",
    "edit_distance",
    "error_rate",
    "evaluate_probe",
    "extract_features",
    "layer_distortion",
    "peak_memory_mb",
    "pesq_wb",
    "probe_task",
    "real_time_factor",
    "si_snr",
    "si_snr_improvement",
    "snr_db",
    "stoi",
    "train_probe",
    "upstream_frame_lengths",
]
