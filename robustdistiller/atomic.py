"""Atomic file writes: a reader sees the old file or the whole new one, never a half-written one.

Every writer here follows the same four steps: write a hidden temp file in the destination folder
(same file system, so the rename is atomic), ``fsync`` it, ``os.replace`` it onto the destination,
then ``fsync`` the folder so the rename itself survives a power cut. On any failure the temp file is
removed and the previous file at the destination is left untouched.

Temp files are named ``.<name>.tmp-<pid>-<random><suffix>``; :func:`stale_temps` finds the ones a
killed process left behind so a later run can clean them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

_TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)-[^.]*(\.[^.]*)?$")


def fsync_dir(folder: str | Path) -> None:
    """``fsync`` a folder so a rename or unlink inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (tmpfs on old kernels, network mounts) refuse fsync on folders
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """Create and return an empty hidden temp file beside ``path``, keeping its suffix (writers such
    as ``soundfile`` pick the format from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def commit(tmp: str | Path, path: str | Path) -> Path:
    """Durably move a finished temp file onto ``path``: fsync it, rename it, fsync the folder."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; when the block succeeds, move it onto ``path`` durably.

    For writers that want a file name rather than a handle (``torch.onnx.export``, ``sf.write``).
    The temp name keeps ``path``'s suffix, so writers that choose a format by extension still work.
    """
    tmp = temp_path(path)
    try:
        yield tmp
        commit(tmp, path)
    except OSError as exc:
        if exc.filename is not None:
            raise
        # Writers that fail mid-file (numpy, protobuf: "N requested and M written", a bare EFBIG)
        # do not say which file: name the destination, not the temp.
        raise OSError(exc.errno or errno.EIO, exc.strerror or str(exc), str(path)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temp file's binary handle, then move the file onto ``path`` durably.

    Example: ``atomic_write(p, lambda fh: torch.save(obj, fh))``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            try:
                write(fh)
                fh.flush()
            except RuntimeError as exc:
                # torch's zip writer reports a failed write (disk full, file-size limit) as a
                # RuntimeError ("unexpected pos ..."); it is an OS failure, so say which and where.
                if not _is_write_failure(exc):
                    raise
                raise OSError(
                    errno.EIO,
                    f"could not write the file (disk full or file-size limit? {_free_space(path.parent)} free)",
                    str(path),
                ) from exc
    return path


def _is_write_failure(exc: RuntimeError) -> bool:
    text = str(exc)
    return "unexpected pos" in text or "PytorchStreamWriter failed" in text or "file write failed" in text


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown space"


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder next to ``path``; when the block succeeds, rename it to ``path``.

    ``path`` must not exist yet (a folder rename cannot replace a non-empty folder atomically); on
    failure the temp folder and everything in it is removed.
    """
    path = Path(path)
    # The rename replaces an empty folder only: anything else is refused before the block's work, not after.
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists: remove it first (a folder is written whole, never over another)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the finished folder gets the usual mode
    try:
        yield tmp
        os.rename(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stale_temps(folder: str | Path) -> list[Path]:
    """Temp files and folders written by this module in ``folder`` whose process no longer runs."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            stale.append(entry)
    return sorted(stale)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
