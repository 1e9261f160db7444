"""Checkpoint formats, below ``train/`` and ``evaluate/``: safe unpickling, the s3prl / RobustDistiller
and DPHuBERT formats, and ``load`` (format detection and the one entry point for every format)."""
