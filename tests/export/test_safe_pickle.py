"""safe_load: released-style pickles load, anything executable is refused before it runs."""

from __future__ import annotations

import argparse
import builtins
import io
import os
import sys
from pathlib import Path

import pytest
import torch

from robustdistiller.checkpoints.safe_pickle import (
    PickledStandIn,
    UnsafeCheckpointError,
    safe_load,
    stand_in,
)


class _FakeSchedule:
    """Pickles as ``optimizers.WarmupLinearSchedule``, like a checkpoint written inside s3prl/s3prl."""

    def __init__(self) -> None:
        self.warmup = 0.07
        self.t_total = 200000.0
        self.warned_for_t_total_at_progress = -1


@pytest.mark.parametrize("zip_format", [True, False])
def test_namespace_and_schedule_load_as_inert_objects(tmp_path, fake_global, zip_format):
    fake_global("optimizers", _FakeSchedule, "WarmupLinearSchedule")
    obj = {
        "Args": argparse.Namespace(config="x.yaml", seed=1337, multi_gpu=False),
        "Optimizer": {"param_groups": [{"lr": 2e-4, "schedule": _FakeSchedule()}], "state": {}},
        "w": torch.arange(4.0),
    }
    path = tmp_path / "released.ckpt"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    sys.modules.pop("optimizers")  # the reader must not need (or import) the real class

    loaded = safe_load(path)

    assert loaded["Args"] == argparse.Namespace(config="x.yaml", seed=1337, multi_gpu=False)
    schedule = loaded["Optimizer"]["param_groups"][0]["schedule"]
    assert isinstance(schedule, PickledStandIn) and not isinstance(schedule, _FakeSchedule)
    assert schedule.qualified_name == "optimizers.WarmupLinearSchedule"
    assert (schedule.warmup, schedule.t_total) == (0.07, 200000.0)
    assert torch.equal(loaded["w"], torch.arange(4.0))


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize(
    ("payload", "global_name"),
    [(_SystemPayload, f"{os.system.__module__}.system"), (_EvalPayload, "builtins.eval")],
)
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, zip_format, payload, global_name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"Distiller": {}, "x": payload(marker)}, path, _use_new_zipfile_serialization=zip_format)

    with pytest.raises(UnsafeCheckpointError, match=global_name.replace(".", r"\.")) as info:
        safe_load(path)

    assert info.value.offending == [global_name]
    assert isinstance(info.value, ValueError)
    assert not marker.exists()


def test_extra_allowed_maps_a_global_to_a_stand_in(fake_global):
    class Container:
        def __init__(self) -> None:
            self.content = {"a": 1}

    fake_global("omegaconf_like", Container, "Container")
    buf = io.BytesIO()
    torch.save({"cfg": Container()}, buf)
    sys.modules.pop("omegaconf_like")

    buf.seek(0)
    with pytest.raises(UnsafeCheckpointError, match="omegaconf_like.Container"):
        safe_load(buf)
    buf.seek(0)
    cfg = safe_load(buf, extra_allowed={"omegaconf_like.Container": stand_in("omegaconf_like.Container")})["cfg"]
    assert cfg.content == {"a": 1}


def test_missing_and_damaged_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        safe_load(tmp_path / "nope.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "junk.ckpt").write_bytes(b"\x80\x02junk" * 50)
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.zeros(1000)}, good)
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:300])
    for name in ("empty.ckpt", "junk.ckpt", "cut.ckpt"):
        with pytest.raises(ValueError, match="not a readable torch checkpoint"):
            safe_load(tmp_path / name)


def test_the_static_scan_names_every_offending_global_before_loading(tmp_path, monkeypatch):
    # torch's weights-only unpickler stops at the first global it refuses; the static scan of the
    # zip's pickle lists them all, and nothing is unpickled at all (torch.load is never reached).
    marker = tmp_path / "pwned"
    path = tmp_path / "two.ckpt"
    torch.save({"a": _SystemPayload(marker), "b": _EvalPayload(marker)}, path)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))

    with pytest.raises(UnsafeCheckpointError, match="builtins.eval") as info:
        safe_load(path)

    assert info.value.offending == sorted(["builtins.eval", f"{os.system.__module__}.system"])
    assert calls == [] and not marker.exists()
