"""Crash-safe files: every write goes to a temp file, is fsynced, then replaces the old one atomically.

A full disk (``ENOSPC``, ``EDQUOT``, ``EFBIG``) becomes ``DiskFullError``: one sentence, the temp
file removed, the old file untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from core.errors import UserError

# ---------------------------------------------------------------- atomic files

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFullError(UserError):
    """A file could not be written because the disk, the quota or the file-size limit is full.

    Raised by the atomic writers below: the half-written temp file is already removed and the
    previous version of the file (if any) is untouched.
    """

    def __init__(self, sentence: str, path: Path) -> None:
        super().__init__(sentence)
        self.path = path


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC / EDQUOT / EFBIG, also when a library wrapped it (h5py, zipfile) or only says so in words."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        text = str(err).lower()
        if any(words in text for words in ("no space left", "file too large", "disk quota")):
            return True
        err = err.__cause__ or err.__context__
    return False


def free_megabytes(folder: Path | str) -> float | None:
    """Free space where ``folder`` lives, in MB (None when it cannot be asked)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free / 1024**2
    except OSError:
        return None


def disk_full_sentence(path: Path | str, err: BaseException | None = None) -> str:
    """The sentence a user reads when ``path`` could not be written for lack of space."""
    path = Path(path)
    free = free_megabytes(path.parent)
    if free is None:
        free_text = "free space unknown"
    else:
        free_text = f"{free:.1f} MB free" if free < 10 else f"{free:.0f} MB free" if free < 1024 else f"{free / 1024:.1f} GB free"
    if _errno_of(err) == errno.EFBIG:
        return (f"The file system refused a file this large: CNN Lab could not save {path.name} (the size limit for "
                f"one file was reached; {free_text}). Free some space or choose another home folder.")
    return f"The disk is full: CNN Lab could not save {path.name} ({free_text}). Free some space or choose another home folder."


def _errno_of(err: BaseException | None) -> int | None:
    while err is not None:
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return err.errno
        if "file too large" in str(err).lower():
            return errno.EFBIG
        err = err.__cause__ or err.__context__
    return None


def _raise_if_disk_full(err: BaseException, path: Path) -> None:
    """Turn a full-disk OSError (or a library's wrapper of one) into ``DiskFullError``; other errors pass."""
    if not isinstance(err, DiskFullError) and is_disk_full(err):
        raise DiskFullError(disk_full_sentence(path, err), path) from err


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _raise_if_disk_full(err, path)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves either the old file or the new one, never half.

    A full disk raises ``DiskFullError`` with a sentence; the temp file is removed, the old file stays.
    """
    path = Path(path)
    _make_parent(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _raise_if_disk_full(err, path)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default).encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (same suffix) for a library to write; then fsync + replace.

    For writers that want a file name rather than bytes (``model.save``, ``np.savez``). A full disk
    (while the library writes, or at fsync) raises ``DiskFullError``; the temp file never stays behind.
    """
    path = Path(path)
    _make_parent(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        _raise_if_disk_full(err, path)
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename on POSIX file systems (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


