"""Where datasets come from: ``builtin:NAME[?options]``, a folder or a ``.zip``, loaded and split in one call."""

from __future__ import annotations

import zipfile
from pathlib import Path
from urllib.parse import parse_qsl

from core.config import SplitConfig
from core.data.builtin import load_builtin
from core.data.dataset import Dataset, Pool
from core.data.folders import load_folder
from core.data.splits import finalise
from core.data.zips import extract_zip, resolve_home
from core.errors import UserError

NEAR_COPY_CACHE = "near-copy-cache"


def load_dataset(source: str, split: SplitConfig = SplitConfig(), *, home: Path | str | None = None) -> Dataset:
    """Load ``builtin:NAME[?k=v&...]``, a folder or a ``.zip`` and split it (stratified, seeded)."""
    source = str(source).strip()
    home_dir = resolve_home(home)
    if not source:
        raise UserError("No dataset was given: choose a built-in dataset, a folder or a zip file.")
    if source.startswith("builtin:"):
        name, params = _parse_query(source[len("builtin:"):])
        pool = load_builtin(name, params, home_dir)
    else:
        path, params = _path_and_query(source)
        pool = _load_path(path, params, home_dir)
    return finalise(pool, source, split, home_dir / NEAR_COPY_CACHE)


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
        pool.name = path.stem
        return pool
    return load_folder(path, params)
