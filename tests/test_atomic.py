"""One atomic-write helper: the destination holds the old file or the whole new one, never a part."""

import os
from pathlib import Path

import pytest

from robustdistiller import atomic


def test_atomic_write_replaces_and_fsyncs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync_dir = atomic.fsync_dir
    monkeypatch.setattr(atomic, "fsync_dir", lambda folder: (synced.append(str(folder)), real_fsync_dir(folder)))
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    atomic.atomic_write(target, lambda fh: fh.write(b"new"))
    assert target.read_bytes() == b"new"
    assert synced == [str(tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def half_then_fail(fh) -> None:
        fh.write(b"ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_atomic_path_keeps_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    with atomic.atomic_path(tmp_path / "x.wav") as tmp:
        assert tmp.suffix == ".wav" and tmp.name.startswith(".x.wav.tmp-")
        tmp.write_bytes(b"RIFF")
    assert (tmp_path / "x.wav").read_bytes() == b"RIFF"


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "config.json").write_text("{}")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["config.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's private 0700


def test_atomic_dir_refuses_an_existing_folder_before_the_work_and_replaces_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.json").write_text("{}")
    (tmp_path / "file").write_text("x")
    for taken in (tmp_path / "out", tmp_path / "file"):
        with pytest.raises(FileExistsError, match=f"{taken} already exists: remove it first"):
            with atomic.atomic_dir(taken):
                raise AssertionError("the block must not run")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]  # no temp folder left
    (tmp_path / "empty").mkdir()
    with atomic.atomic_dir(tmp_path / "empty") as tmp:
        (tmp / "config.json").write_text("{}")
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["config.json"]


def test_stale_temps_lists_only_dead_writers(tmp_path: Path) -> None:
    live = atomic.temp_path(tmp_path / "live.ckpt")
    dead = tmp_path / ".states-10.ckpt.tmp-999999999-abc.ckpt"
    dead.write_bytes(b"")
    (tmp_path / "states-10.ckpt").write_bytes(b"")
    assert atomic.stale_temps(tmp_path) == [dead]
    assert live.exists() and str(os.getpid()) in live.name


def test_anonymous_write_failures_name_the_destination(tmp_path: Path) -> None:
    """numpy / protobuf report a full disk without a file name; the error must say which file."""
    dest = tmp_path / "feats.npy"
    with pytest.raises(OSError) as err:
        with atomic.atomic_path(dest):
            raise OSError("479680 requested and 49968 written")
    assert err.value.filename == str(dest) and "requested" in err.value.strerror
    assert list(tmp_path.iterdir()) == []


def test_torch_write_failures_become_os_errors(tmp_path: Path) -> None:
    def failing(_fh) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 305856 vs 305744")

    with pytest.raises(OSError, match="could not write the file") as err:
        atomic.atomic_write(tmp_path / "states-2.ckpt", failing)
    assert err.value.filename == str(tmp_path / "states-2.ckpt")
    assert list(tmp_path.iterdir()) == []
