"""Fixtures of the pruning tests (the builders live in tests/fixtures_tiny.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_tiny import teacher_dir, wave_batch, write_harmonic_manifest  # noqa: F401 - fixtures, re-exported for this folder's tests


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 harmonic 'utterances' of 0.3-0.5 s, as a manifest."""
    return write_harmonic_manifest(tmp_path_factory.mktemp("audio"), 8, (0.3, 0.5))
