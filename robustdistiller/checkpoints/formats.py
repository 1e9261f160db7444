"""Format detection: what a checkpoint file, model folder or hub id holds, read from its content.

One function, :func:`detect_format`, used by ``robustdistiller.load`` and by ``evaluate``. Kinds:

- ``"s3prl"``: s3prl / RobustDistiller / our distiller checkpoint (``"Distiller"`` + ``"Config"``),
  a student;
- ``"dphubert"``: DPHuBERT / DPWavLM checkpoint (``"state_dict"`` + ``"config"``), a (pruned)
  student, whether or not its sizes were pruned;
- ``"hf"``: a Hugging Face folder whose ``config.json`` has ``model_type`` hubert, wavlm or
  wav2vec2 (what ``export_hf`` and ``save_teacher`` write), a teacher;
- ``"hf-hub"``: a hub id (``owner/name``), a teacher (only with ``hub_ids=True``);
- ``"fairseq"`` / ``"unilm"``: an official fairseq (HuBERT, wav2vec 2.0) or unilm (WavLM) ``.pt``
  file, a teacher.

A file is unpickled once, safely (allow-list plus the inert stand-ins fairseq files need); the
result rides along in :attr:`Format.raw` so the loader does not read it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustdistiller.checkpoints.dphubert import is_dphubert_checkpoint
from robustdistiller.checkpoints.s3prl import is_s3prl_checkpoint
from robustdistiller.checkpoints.safe_pickle import safe_load
from robustdistiller.checkpoints.teachers import (
    CHECKPOINT_SUFFIXES,
    fairseq_allowed,
    fairseq_flavour,
    looks_like_hub_id,
)
from robustdistiller.errors import CheckpointFormatError

HF_MODEL_TYPES = ("hubert", "wavlm", "wav2vec2")
STUDENT_KINDS = ("s3prl", "dphubert")
TEACHER_KINDS = ("hf", "hf-hub", "fairseq", "unilm")

SUPPORTED_FORMATS = (
    "s3prl/RobustDistiller distiller checkpoint (torch.save dict with 'Distiller' and 'Config')",
    f"Hugging Face model directory (config.json with model_type {', '.join(HF_MODEL_TYPES)})",
    "DPHuBERT / DPWavLM checkpoint (torch.save dict with 'state_dict' and 'config')",
)


@dataclass
class Format:
    """What :func:`detect_format` found."""

    kind: str
    """One of :data:`STUDENT_KINDS` + :data:`TEACHER_KINDS`."""
    source: str
    """The path or hub id as given."""
    raw: Any = None
    """The unpickled file (file kinds); None for folders and hub ids."""

    @property
    def is_student(self) -> bool:
        return self.kind in STUDENT_KINDS


def detect_format(source: str | Path, *, hub_ids: bool = False) -> Format:
    """The format of a checkpoint file, a model folder or (with ``hub_ids``) a hub id.

    Args:
        source: path of a file or folder, or an ``owner/name`` hub id.
        hub_ids: accept a source that is not on disk but looks like a hub id (``"hf-hub"``).
    Returns:
        The format, with the unpickled content for files.
    Raises:
        FileNotFoundError: nothing at ``source`` (and it is not an accepted hub id).
        UnsafeCheckpointError: the file asks for globals outside the allow-list.
        CheckpointFormatError: anything else that is none of the formats.
    """
    path = Path(source)
    if path.is_dir():
        return Format(_directory_kind(path), str(source))
    if path.is_file():
        raw = safe_load(path, extra_allowed=fairseq_allowed())
        return Format(_content_kind(raw, path), str(source), raw)
    if hub_ids and looks_like_hub_id(str(source)):
        return Format("hf-hub", str(source))
    what = "checkpoint file" if path.suffix in CHECKPOINT_SUFFIXES else "checkpoint file or model directory"
    raise FileNotFoundError(f"no such {what}: {source}")


def _content_kind(raw: Any, path: Path) -> str:
    if is_s3prl_checkpoint(raw):
        return "s3prl"
    if is_dphubert_checkpoint(raw):
        return "dphubert"
    flavour = fairseq_flavour(raw)
    if flavour is not None:
        return flavour
    raise CheckpointFormatError(unsupported(path, _describe_content(raw)))


def _directory_kind(path: Path) -> str:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointFormatError(unsupported(path, "a directory without config.json"))
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointFormatError(f"{config_file}: not a readable Hugging Face config ({exc})") from None
    if model_type not in HF_MODEL_TYPES:
        raise CheckpointFormatError(unsupported(path, f"a Hugging Face directory with model_type {model_type!r}"))
    return "hf"


def _describe_content(raw: Any) -> str:
    if isinstance(raw, dict):
        keys = sorted(map(str, raw))
        return f"a dict with keys {keys}"
    return f"a pickled {type(raw).__name__}"


def unsupported(path: str | Path, what: str) -> str:
    """The message for a source that is none of the formats ``robustdistiller.load`` reads."""
    return f"unsupported format: {path} is {what}; supported: " + "; ".join(SUPPORTED_FORMATS)
