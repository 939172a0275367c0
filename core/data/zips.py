"""Zip files extracted safely: no path escapes, no symlinks, no zip bombs; each zip once, by content hash."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import threading
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from core.data.images import IMAGE_EXTENSIONS
from core.errors import UserError
from core.store.runs import default_home

# Zip limits: generous for real image sets, fatal for zip bombs.
ZIP_MAX_BYTES = 8 * 1024**3
ZIP_MAX_FILES = 250_000
ZIP_MAX_RATIO = 250


def extract_zip(zip_path: Path | str, home: Path | str | None = None) -> Path:
    """Safely extract a zip's images under ``<home>/datasets/<content hash>/`` (reused when already there).

    Entries that would land outside the target (``../``, absolute paths, symlinks) refuse the whole
    zip before anything is written; size, count and compression-ratio limits stop zip bombs.
    ``__MACOSX``, hidden and non-image entries are not extracted.
    """
    zip_path = Path(zip_path)
    target = resolve_home(home) / "datasets" / _file_hash(zip_path)[:16]
    if (target / ".complete").is_file():
        return target
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _safe_members(zf, zip_path.name)
            inner = _inner_zips(zf)
            if not members and inner:
                raise UserError(_inner_zip_sentence(inner))
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                _extract_members(zf, members, tmp)
                (tmp / ".complete").write_text(json.dumps({"zip": zip_path.name, "files": len(members),
                                                                 "inner_zips": inner}))
                if target.exists():  # a half-finished earlier attempt
                    shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as err:
        raise UserError(f"'{zip_path.name}' is not a readable zip file ({err}).") from None
    except (zlib.error, EOFError, NotImplementedError, RuntimeError) as err:  # damaged/encrypted/unknown-method entry
        raise UserError(f"'{zip_path.name}' is damaged or uses an unsupported compression or password "
                        f"({str(err)[:80] or type(err).__name__}); nothing was extracted.") from None
    except OSError as err:
        if (target / ".complete").is_file():  # another process finished the same extraction first
            return target
        raise UserError(f"'{zip_path.name}' could not be extracted ({err.strerror or err}).") from None
    return target


def zips_inside(target: Path | str) -> list[str]:
    """The names of the zips an extracted zip held (they are not opened), from its ``.complete`` record."""
    try:
        return list(json.loads((Path(target) / ".complete").read_text()).get("inner_zips", []))
    except (OSError, ValueError, AttributeError):
        return []


def _inner_zips(zf: zipfile.ZipFile) -> list[str]:
    """File names of the zips inside a zip (hidden and ``__MACOSX`` entries ignored)."""
    names = []
    for info in zf.infolist():
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if parts and not info.is_dir() and parts[-1].lower().endswith(".zip") \
                and not any(p.startswith(".") or p == "__MACOSX" for p in parts):
            names.append(parts[-1])
    return sorted(dict.fromkeys(names))


def _inner_zip_sentence(inner: list[str]) -> str:
    if len(inner) == 1:
        return f"This zip holds another zip ({inner[0]}): unzip it once, or upload {inner[0]}."
    shown = ", ".join(inner[:3]) + (", ..." if len(inner) > 3 else "")
    return f"This zip holds other zips ({shown}) but no pictures: unzip it once, or upload one of them."


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "points outside the zip's folder ('..')"
    return None


def _wanted(info: zipfile.ZipInfo) -> bool:
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    if info.is_dir() or not parts:
        return False
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return PurePosixPath(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS


def _safe_members(zf: zipfile.ZipFile, zip_name: str) -> list[zipfile.ZipInfo]:
    """The image entries to extract, after refusing unsafe entries and zip bombs."""
    for info in zf.infolist():
        why = _unsafe_reason(info)
        if why:
            raise UserError(
                f"'{zip_name}' was refused because its entry '{info.filename}' {why}; nothing was extracted."
            )
    members = [i for i in zf.infolist() if _wanted(i)]
    if len(members) > ZIP_MAX_FILES:
        raise UserError(f"'{zip_name}' holds {len(members):,} images, more than the limit of {ZIP_MAX_FILES:,}.")
    total = sum(i.file_size for i in members)
    if total > ZIP_MAX_BYTES:
        raise UserError(
            f"'{zip_name}' would unpack to {total / 1024**3:.1f} GB, more than the limit of "
            f"{ZIP_MAX_BYTES / 1024**3:.0f} GB."
        )
    for i in members:
        if i.file_size > 1 << 20 and i.file_size > ZIP_MAX_RATIO * max(i.compress_size, 1):
            raise UserError(
                f"'{zip_name}' was refused: '{i.filename}' expands {i.file_size / max(i.compress_size, 1):.0f} "
                "times, which only zip bombs do."
            )
    return members


def _extract_members(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], dest: Path) -> None:
    """Write each member below ``dest`` with a running byte count (declared sizes can lie)."""
    dest.mkdir(parents=True)
    base = dest.resolve()
    written = 0
    for info in members:
        out = (dest / info.filename.replace("\\", "/")).resolve()
        if base not in out.parents:  # defence in depth after _unsafe_reason
            raise UserError(f"The zip entry '{info.filename}' points outside its folder; nothing was extracted.")
        out.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(out, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                written += len(chunk)
                if written > ZIP_MAX_BYTES:
                    raise UserError("The zip unpacks to more than the size limit; extraction was stopped.")
                dst.write(chunk)



def resolve_home(home: Path | str | None) -> Path:
    """The CNN Lab home to use: ``home`` when given, else the store's default (``$CNNLAB_HOME`` or ``~/.cnnlab``)."""
    return Path(home).expanduser() if home is not None else Path(default_home())
