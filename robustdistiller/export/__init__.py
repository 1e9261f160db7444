"""Exporters only (the formats they read live in ``checkpoints/``): Hugging Face folder, ONNX, int8
quantisation, the s3prl upstream adapter and the ``info`` summary."""
