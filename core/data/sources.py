"""Where datasets come from: ``builtin:NAME[?options]``, ``library:ID``, a folder or a ``.zip``, loaded and split."""

from __future__ import annotations

import zipfile
from pathlib import Path
from urllib.parse import parse_qsl

from core.config import SplitConfig
from core.data.builtin import load_builtin
from core.data.dataset import Dataset, Pool
from core.data.folders import load_folder
from core.data.library import DatasetLibrary, display_stem, library_id
from core.data.splits import finalise
from core.data.zips import extract_zip, resolve_home
from core.errors import UserError


def load_dataset(source: str, split: SplitConfig = SplitConfig(), *, home: Path | str | None = None) -> Dataset:
    """Load ``builtin:NAME[?k=v&...]``, ``library:ID``, a folder or a ``.zip`` and split it (stratified, seeded).

    A library entry that was deleted raises ``UserError`` naming it ("the dataset 'hands' was deleted ...").
    """
    source = str(source).strip()
    if not source:
        raise UserError("No dataset was given: choose a built-in dataset, a folder or a zip file.")
    if source.startswith("builtin:"):
        name, params = _parse_query(source[len("builtin:"):])
        pool = load_builtin(name, params, resolve_home(home))
    elif library_id(source) is not None:
        pool = _load_library(source, resolve_home(home))
    else:
        path, params = _path_and_query(source)
        pool = _load_path(path, params, resolve_home(home))
    return finalise(pool, source, split)


def _parse_query(text: str) -> tuple[str, dict[str, str]]:
    name, _, query = text.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    return name.strip().lower(), params


def _path_and_query(source: str) -> tuple[Path, dict[str, str]]:
    path = Path(source).expanduser()
    if not path.exists() and "?" in source:
        head, _, query = source.rpartition("?")
        return Path(head).expanduser(), dict(parse_qsl(query, keep_blank_values=True))
    return path, {}


def _load_path(path: Path, params: dict[str, str], home: Path) -> Pool:
    if not path.exists():
        raise UserError(f"'{path}' does not exist: give a folder of images, a .zip file or builtin:NAME.")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UserError(f"'{path.name}' is not a folder or a zip file: give a folder of images or a .zip.")
        root = extract_zip(path, home)
        pool = load_folder(root, params)
        pool.name = display_stem(path.name)
        return pool
    return load_folder(path, params)


def _load_library(source: str, home: Path) -> Pool:
    entry = DatasetLibrary(home).require(library_id(source) or "")
    _, params = _parse_query(source)
    pool = load_folder(entry.folder, params)
    pool.name = entry.name
    return pool
