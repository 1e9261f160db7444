"""robustdistiller: robust distillation of self-supervised speech models."""

__version__ = "0.1.0"
