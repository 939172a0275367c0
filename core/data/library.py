"""The dataset library: every uploaded zip or recorded dataset stored once under the home, by friendly name.

Layout under ``<home>/library/``: ``library.json`` (the manifest, written atomically under a file lock)
and one folder per entry, ``<id>/images/`` (class folders, what ``load_folder`` reads) and
``<id>/cache/`` (JSON blobs such as health reports, dropped whenever the images change). A run refers to
an entry as ``library:<id>``; the id is made from the first name and never changes, so renaming keeps
old runs working. A deleted entry leaves a tombstone (its name, its content hash), so runs that used it
say plainly which dataset is gone, and uploading the same zip again brings the same entry back.
The manifest is JSON rather than a table in the runs database because it lives beside the data it
describes (deleting ``library/`` removes both), stays readable by a person, and is small.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from core.data.folders import load_folder
from core.data.layouts import direct_images, subdirs
from core.data.zips import file_hash, resolve_home, unpack_zip
from core.errors import UserError
from core.store.files import atomic_write_bytes, atomic_write_json

LIBRARY_PREFIX = "library:"
MANIFEST = "library.json"
FORMAT = 1
MAX_NAME = 80
_HASH_PREFIX = re.compile(r"^[0-9a-f]{12}-")  # what the Data page used to prefix uploads with
_ALL_HASH = re.compile(r"[0-9a-f]{16,64}")  # the folder a zip is unpacked into
_local_lock = threading.Lock()
_PARSED_LOCK = threading.Lock()
_PARSED: dict[tuple, dict[str, LibraryEntry]] = {}  # manifest stamp -> its entries (frozen dataclasses)


def library_source(entry_id: str) -> str:
    """The ``data.source`` a run stores for a library entry."""
    return f"{LIBRARY_PREFIX}{entry_id}"


def library_id(source: str) -> str | None:
    """The entry id of a ``library:<id>[?options]`` source, None for any other source."""
    source = str(source).strip()
    if not source.startswith(LIBRARY_PREFIX):
        return None
    return source[len(LIBRARY_PREFIX):].split("?", 1)[0].strip() or None


def display_stem(file_name: str) -> str:
    """A file's or folder's name as a person gave it: no folder, no ``.zip``, no ``<hash>-`` prefix CNN Lab added."""
    name = Path(str(file_name).rstrip("/\\")).name
    if name.lower().endswith(".zip"):
        name = name[:-4]
    if _ALL_HASH.fullmatch(name):
        return "an unpacked zip"
    return _HASH_PREFIX.sub("", name) or name


@dataclass(frozen=True)
class LibraryEntry:
    """One dataset of the library (``folder`` is where its class folders live)."""

    id: str
    name: str
    kind: str                       # "zip" (uploaded) or "recorded" (written image by image)
    added: float
    updated: float
    class_names: list[str] = field(default_factory=list)
    images: int = 0
    original: str = ""              # the uploaded file's name
    content: str = ""               # sha256 of the uploaded zip: equal content, same entry (never shown)
    deleted: float | None = None
    folder: Path = Path()

    @property
    def source(self) -> str:
        return library_source(self.id)

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record (the folder is derived from the home, not stored)."""
        data = asdict(self)
        data.pop("folder")
        return data


class DatasetLibrary:
    """The datasets stored under ``<home>/library``; every call checks the manifest, so objects never go stale."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = resolve_home(home)
        self.root = self.home / "library"

    # ------------------------------------------------------------ reading

    def list(self) -> list[LibraryEntry]:
        """The datasets in the library, newest first (deleted ones left out)."""
        live = [e for e in self._read().values() if e.deleted is None]
        return sorted(live, key=lambda e: (-e.added, e.id))

    def get(self, entry_id: str) -> LibraryEntry | None:
        """The entry with this id, None when there is none or it was deleted."""
        entry = self._read().get(entry_id)
        return entry if entry is not None and entry.deleted is None else None

    def name_of(self, entry_id: str) -> str | None:
        """The name an entry has (or had when it was deleted); None for an id never used here."""
        entry = self._read().get(entry_id)
        return entry.name if entry is not None else None

    def require(self, entry_id: str) -> LibraryEntry:
        """The entry, or a ``UserError`` that says plainly that it was deleted or never existed."""
        entry = self._read().get(entry_id)
        if entry is None:
            raise UserError(f"There is no dataset '{entry_id}' in the dataset library: choose one on the Data page.")
        if entry.deleted is not None:
            raise UserError(f"The dataset '{entry.name}' was deleted from the library: upload the same zip again "
                            "on the Data page to bring it back.")
        return entry

    # ------------------------------------------------------------ adding

    def add_zip(self, zip_file: Path | str | bytes, name: str | None = None, file_name: str = "") -> LibraryEntry:
        """Store a zip's images once (the same content again returns its entry) under a friendly name.

        ``zip_file`` is a path or the zip's bytes; the name defaults to the zip's name (``file_name``, else
        the path's). Unsafe zips and zips without one readable picture raise ``UserError`` and leave nothing.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if not file_name:
            file_name = "upload.zip" if isinstance(zip_file, bytes) else Path(zip_file).name
        with self._incoming(zip_file) as path:
            content = file_hash(path)
            found = self._by_content(content)
            if found is not None and found.deleted is None:
                return found
            staging = self.root / f".staging-{content[:16]}-{secrets.token_hex(4)}"
            try:
                unpack_zip(path, staging)
                if not any(p.is_file() and not p.name.startswith(".") for p in staging.rglob("*")):
                    raise UserError(f"'{display_stem(file_name)}' holds no pictures, so it was not added to the "
                                    "library: put one folder of pictures per class in the zip.")
                with self._locked() as entries:
                    found = next((e for e in entries.values() if e.content == content), None)
                    if found is not None and found.deleted is None:
                        return found
                    now = time.time()
                    entry_id = found.id if found is not None else _new_id(name or display_stem(file_name), entries)
                    wanted = _clean_name(name if name and name.strip() else display_stem(file_name))
                    entry = LibraryEntry(id=entry_id, name=_free_name(wanted, entries, entry_id), kind="zip",
                                         added=now, updated=now, original=file_name, content=content,
                                         folder=self._folder(entry_id))
                    shutil.rmtree(self.root / entry_id, ignore_errors=True)
                    entry.folder.parent.mkdir(parents=True)
                    os.replace(staging, entry.folder)
                    entries[entry_id] = entry
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return self._counted(entry, found)

    def _counted(self, entry: LibraryEntry, previous: LibraryEntry | None) -> LibraryEntry:
        """Verify a new entry's pictures once (the health report reuses the work) and store its counts.

        A zip whose pictures are all unreadable, or whose folders cannot form a dataset, is taken out again.
        """
        try:
            pool = load_folder(entry.folder, {})
            total = sum(len(p) for p in pool.parts.values())
            if total == 0:
                raise UserError(f"None of the pictures in '{entry.original}' can be read, so it was not added "
                                "to the library.")
        except BaseException:
            with self._locked() as entries:
                if previous is not None:
                    entries[entry.id] = previous
                else:
                    entries.pop(entry.id, None)
            shutil.rmtree(self.root / entry.id, ignore_errors=True)
            raise
        with self._locked() as entries:
            current = entries.get(entry.id, entry)
            entries[entry.id] = entry = replace(current, class_names=list(pool.class_names), images=total)
        return entry

    def create(self, name: str) -> LibraryEntry:
        """A new, empty dataset to be filled class by class with ``add_images`` (the webcam recorder's)."""
        with self._locked() as entries:
            now = time.time()
            cleaned = _clean_name(name)
            entry_id = _new_id(cleaned, entries)
            entry = LibraryEntry(id=entry_id, name=_free_name(cleaned, entries, entry_id), kind="recorded",
                                 added=now, updated=now, folder=self._folder(entry_id))
            entry.folder.mkdir(parents=True, exist_ok=True)
            entries[entry_id] = entry
        return entry

    def add_images(self, entry_id: str, class_name: str, images: list[bytes], suffix: str = ".jpg") -> list[Path]:
        """Save encoded pictures (JPEG bytes) into a class of an entry; returns their files.

        The entry's counts are updated and its cached blobs dropped (they described the old images).
        """
        label = _clean_class(class_name)
        with self._locked() as entries:
            entry = entries.get(entry_id)
            if entry is None or entry.deleted is not None:
                self.require(entry_id)  # raises the plain sentence
            assert entry is not None
            folder = entry.folder / label
            folder.mkdir(parents=True, exist_ok=True)
            start = 1 + max((int(p.stem) for p in folder.iterdir() if p.stem.isdigit()), default=0)
            written = []
            for n, data in enumerate(images, start):
                path = folder / f"{n:05d}{suffix}"
                atomic_write_bytes(path, data)
                written.append(path)
            names, count = _count_images(entry.folder)
            entries[entry_id] = replace(entry, class_names=names, images=count, updated=time.time())
            shutil.rmtree(self._cache_dir(entry_id), ignore_errors=True)
        return written

    # ------------------------------------------------------------ changing

    def rename(self, entry_id: str, name: str) -> LibraryEntry:
        """Give an entry a new name (its id, and so every run that used it, stays the same)."""
        cleaned = _clean_name(name)
        with self._locked() as entries:
            entry = entries.get(entry_id)
            if entry is None or entry.deleted is not None:
                self.require(entry_id)
            assert entry is not None
            clash = next((e for e in entries.values() if e.deleted is None and e.id != entry_id
                          and e.name.casefold() == cleaned.casefold()), None)
            if clash is not None:
                raise UserError(f"There is already a dataset called '{clash.name}': choose another name.")
            entries[entry_id] = entry = replace(entry, name=cleaned)
        return entry

    def delete(self, entry_id: str) -> None:
        """Remove an entry's images and caches; a tombstone keeps its name for the runs that used it."""
        with self._locked() as entries:
            entry = entries.get(entry_id)
            if entry is None or entry.deleted is not None:
                return
            entries[entry_id] = replace(entry, deleted=time.time(), class_names=[], images=0)
            trash = self.root / f".trash-{entry_id}-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.root / entry_id, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------ cached blobs

    def cache_put(self, entry_id: str, key: str, obj: Any) -> None:
        """Keep a JSON-serialisable blob for an entry under ``key`` (e.g. a health report per split)."""
        if self.get(entry_id) is None:
            return
        atomic_write_json(self._cache_file(entry_id, key), {"key": key, "value": obj})

    def cache_get(self, entry_id: str, key: str) -> Any | None:
        """The blob kept under ``key``, None when there is none (or the images changed since)."""
        try:
            data = json.loads(self._cache_file(entry_id, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data.get("value") if isinstance(data, dict) and data.get("key") == key else None

    def cached(self, entry_id: str, key: str, compute: Callable[[], Any]) -> Any:
        """``cache_get``, else ``compute()`` stored with ``cache_put``."""
        hit = self.cache_get(entry_id, key)
        if hit is not None:
            return hit
        value = compute()
        self.cache_put(entry_id, key, value)
        return value

    # ------------------------------------------------------------ the manifest

    def _folder(self, entry_id: str) -> Path:
        return self.root / entry_id / "images"

    def _cache_dir(self, entry_id: str) -> Path:
        return self.root / entry_id / "cache"

    def _cache_file(self, entry_id: str, key: str) -> Path:
        return self._cache_dir(entry_id) / f"{hashlib.sha1(key.encode('utf-8')).hexdigest()[:20]}.json"

    def _by_content(self, content: str) -> LibraryEntry | None:
        return next((e for e in self._read().values() if e.content == content), None)

    def _read(self) -> dict[str, LibraryEntry]:
        """The entries (a fresh dict each call); the manifest is parsed again only when the file changed."""
        path = self.root / MANIFEST
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        except OSError:
            st = None
        stamp = (str(path), st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None
        with _PARSED_LOCK:
            hit = _PARSED.get(stamp) if stamp is not None else None
        if hit is not None:
            return dict(hit)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise UserError(f"The dataset library's list {path} cannot be read ({err}): move it away and CNN Lab "
                            "starts an empty library.") from None
        entries = {}
        for record in data.get("entries", []):
            try:
                entry = LibraryEntry(**record, folder=self._folder(record["id"]))
            except (TypeError, KeyError):
                continue  # a record from a newer format: leave it out rather than fail the whole list
            entries[entry.id] = entry
        if stamp is not None:
            with _PARSED_LOCK:
                _PARSED.clear()  # one manifest per home is read at a time in practice: keep only the newest
                _PARSED[stamp] = entries
        return dict(entries)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, LibraryEntry]]:
        """The entries, for changing under a lock (threads and processes); written back atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _local_lock, open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            atomic_write_json(self.root / MANIFEST,
                              {"format": FORMAT, "entries": [e.to_dict() for e in entries.values()]})

    @contextlib.contextmanager
    def _incoming(self, zip_file: Path | str | bytes) -> Iterator[Path]:
        """A path for the zip: its own when given a path, else a temp file (removed afterwards)."""
        if not isinstance(zip_file, bytes):
            yield Path(zip_file)
            return
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=".zip", dir=self.root)
        os.close(fd)
        try:
            atomic_write_bytes(tmp, zip_file)
            yield Path(tmp)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# ---------------------------------------------------------------- names and ids


def _clean_name(name: str) -> str:
    cleaned = " ".join(str(name).split())[:MAX_NAME]
    if not cleaned:
        raise UserError("A dataset needs a name: type at least one letter or digit.")
    return cleaned


def _free_name(name: str, entries: dict[str, LibraryEntry], own_id: str) -> str:
    """``name``, or ``name (2)``, ``name (3)``... when another live dataset already has it."""
    taken = {e.name.casefold() for e in entries.values() if e.deleted is None and e.id != own_id}
    candidate, n = name, 2
    while candidate.casefold() in taken:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def _new_id(name: str, entries: dict[str, LibraryEntry]) -> str:
    """A readable id from the name, never one used before (a deleted entry's id stays its own)."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "dataset"
    candidate, n = base, 2
    while candidate in entries:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _clean_class(name: str) -> str:
    cleaned = re.sub(r"[\\/\x00-\x1f]+", " ", str(name)).strip().lstrip(".").strip()[:MAX_NAME]
    if not cleaned:
        raise UserError("A class needs a name: type at least one letter or digit.")
    return cleaned


def _count_images(folder: Path) -> tuple[list[str], int]:
    """The class folders that hold pictures and how many pictures there are (files, not decoded)."""
    counts = {sub.name: len(direct_images(sub)) for sub in subdirs(folder)}
    return [name for name, n in counts.items() if n], sum(counts.values())