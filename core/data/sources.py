"""Where datasets come from: ``builtin:NAME[?options]``, ``library:ID``, a folder or a ``.zip``, loaded and split.

A folder's (or zip's) query string can carry a person's choice for a layout that reads two ways:
``PATH?layout=splits`` / ``PATH?layout=classes``, and ``PATH?root=SUB`` to read only a sub-folder. The
choice is part of the source, so runs that use it load the same pictures again.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from core.config import SplitConfig
from core.data.builtin import load_builtin
from core.data.dataset import Dataset, Pool
from core.data.folders import load_folder
from core.data.library import DatasetLibrary, display_stem, library_id
from core.data.splits import finalise
from core.data.zips import extract_zip, resolve_home, zips_inside
from core.errors import UserError

NEAR_COPY_CACHE = "near-copy-cache"
CHOICE_KEYS = ("layout", "root")  # query keys that record how a folder was read, not what it is


def load_dataset(source: str, split: SplitConfig = SplitConfig(), *, home: Path | str | None = None) -> Dataset:
    """Load ``builtin:NAME[?k=v&...]``, ``library:ID``, a folder or a ``.zip`` and split it (stratified, seeded).

    A library entry that was deleted raises ``UserError`` naming it ("the dataset 'hands' was deleted ...").
    """
    source = str(source).strip()
    home_dir = resolve_home(home)
    if not source:
        raise UserError("No dataset was given: choose a built-in dataset, a folder or a zip file.")
    if source.startswith("builtin:"):
        name, params = _parse_query(source[len("builtin:"):])
        pool = load_builtin(name, params, home_dir)
    elif library_id(source) is not None:
        pool = _load_library(source, home_dir)
        _add_choice_sources(pool, source)
    else:
        path, params = _path_and_query(source)
        pool = _load_path(path, params, home_dir)
        _add_choice_sources(pool, source)
    return finalise(pool, source, split, home_dir / NEAR_COPY_CACHE)


def split_choice(source: str) -> tuple[str, dict[str, str]]:
    """A source without its layout choice (what a person typed or uploaded) and that choice's parameters."""
    source = str(source).strip()
    if source.startswith("builtin:"):
        return source, {}
    path, params = _path_and_query(source)
    if not any(k in params for k in CHOICE_KEYS):
        return source, {}
    rest = {k: v for k, v in params.items() if k not in CHOICE_KEYS}
    return _with_query(str(path), rest), {k: v for k, v in params.items() if k in CHOICE_KEYS}


def with_choice(source: str, choice: dict[str, str]) -> str:
    """``source`` with the keys of ``choice`` set (an empty value removes one: read that automatically)."""
    if str(source).startswith("builtin:"):
        return source
    path, params = _path_and_query(str(source).strip())
    merged = {**params, **choice}
    return _with_query(str(path), {k: v for k, v in merged.items() if v})


def _with_query(path: str, params: dict[str, str]) -> str:
    return path + ("?" + urlencode(params) if params else "")


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
        pool = load_folder(_sub_folder(root, params, path.name), params)
        pool.name = display_stem(path.name) if not params.get("root") else pool.name
        _note_inner_zips(pool, root)
        return pool
    return load_folder(_sub_folder(path, params, path.name), params)


def _sub_folder(root: Path, params: dict[str, str], shown: str) -> Path:
    """``root``, or its sub-folder ``params['root']`` (which must stay inside it)."""
    sub = params.get("root", "").strip().strip("/")
    if not sub:
        return root
    target = (root / sub).resolve()
    if not target.is_relative_to(root.resolve()) or not target.is_dir():
        raise UserError(f"'{shown}' has no folder '{sub}' to read.")
    return target


def _add_choice_sources(pool: Pool, source: str) -> None:
    """Each layout choice gets the source that loads it, so a page or a command line can offer it."""
    question = (pool.layout or {}).get("ambiguous")
    for choice in (question or {}).get("choices", []):
        choice["source"] = with_choice(source, choice["params"])


def _load_library(source: str, home: Path) -> Pool:
    entry = DatasetLibrary(home).require(library_id(source) or "")
    _, params = _parse_query(source)
    pool = load_folder(_sub_folder(entry.folder, params, entry.name), params)
    pool.name = entry.name
    _note_inner_zips(pool, entry.folder)
    return pool


def _note_inner_zips(pool: Pool, extracted: Path) -> None:
    """An unzipped upload that also held zips says so (they are not opened)."""
    inner = zips_inside(extracted)
    if inner:
        pool.notes.append(f"The zip also holds another zip ({', '.join(inner[:3])}), which was not opened: "
                          "unzip it once to use its pictures too.")
