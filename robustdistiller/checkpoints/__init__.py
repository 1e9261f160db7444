"""Model files, below ``train/`` and ``evaluate/``: safe unpickling (``safe_pickle``), the s3prl /
RobustDistiller (``s3prl``) and DPHuBERT (``dphubert``) formats, teacher sources (``teachers``: HF
folders, hub ids, fairseq / unilm ``.pt``), format detection (``formats.detect_format``), the
enhancement head stored one way in every format (``heads``) and ``load``, the one entry point."""
