"""Folder layouts people make: class folders, split folders (any of them flat), file-name labels.

Every candidate file is decoded once (in parallel, cached by size and mtime) so that unreadable files
are skipped with a reason instead of failing a run later.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core.data.dataset import Pool, SkippedFile, Split
from core.data.images import IMAGE_EXTENSIONS, ImageDecodeError, ImageInfo, verify_image
from core.errors import UserError

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini", "license", "license.txt", "readme", "readme.md", "readme.txt"})
_VERIFY_WORKERS = 4


@dataclass
class _Collected:
    """A folder's images grouped by class name (from sub-folders or file names)."""

    by_class: dict[str, list[Path]]
    skipped: list[tuple[Path, str]]
    flat: bool


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name != "__MACOSX"


def _image_files_under(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files anywhere under ``folder`` and the non-image files there (hidden and junk ignored)."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if _visible(Path(d)))
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            if not _visible(p) or fname.lower() in _JUNK_FILES:
                continue
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(p)
            else:
                others.append((p, f"not an image file type ('{p.suffix or p.name}')"))
    return images, others


def _direct_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def descend(root: Path) -> Path:
    """Skip wrapper folders (a zip's single top folder): descend while there is one folder and no images."""
    for _ in range(8):
        subs = _subdirs(root)
        if len(subs) != 1 or _direct_images(root) or subs[0].name.lower() in SPLIT_ALIASES:
            return root
        inner = _subdirs(subs[0])
        if not inner and _direct_images(subs[0]):
            return root  # a single class folder: let the one-class check speak
        root = subs[0]
    return root


def collect(folder: Path, rule: Callable[[str], str | None]) -> _Collected:
    """Class folders when there are any, otherwise a flat folder labelled by file names."""
    subs = [d for d in _subdirs(folder) if d.name.lower() not in SPLIT_ALIASES]
    by_class: dict[str, list[Path]] = {}
    skipped: list[tuple[Path, str]] = []
    if subs:
        for d in subs:
            images, others = _image_files_under(d)
            skipped += others
            if images:
                by_class[d.name] = images
        for p in _direct_images(folder):
            skipped.append((p, "not inside a class folder"))
        return _Collected(by_class, skipped, flat=False)
    for p in _direct_images(folder):
        label = rule(p.stem)
        if label is None:
            skipped.append((p, "its file name does not name a class"))
        else:
            by_class.setdefault(label, []).append(p)
    return _Collected(by_class, skipped, flat=True)


def name_rule(params: dict[str, str], known: list[str] | None = None) -> Callable[[str], str | None]:
    """How a flat folder's file names give the class: known class names, a separator, or leading letters."""
    classes = [c.strip() for c in params.get("classes", "").split(",") if c.strip()] or (known or [])
    sep = params.get("sep") or params.get("separator")
    if classes:
        ordered = sorted(classes, key=len, reverse=True)  # 'cat' must not steal 'catfish'

        def by_known(stem: str) -> str | None:
            low = stem.lower()
            return next((c for c in ordered if low.startswith(c.lower())), None)

        return by_known
    if sep:
        return lambda stem: (stem.split(sep, 1)[0].strip() or None) if sep in stem else None
    pattern = re.compile(r"^([A-Za-z]+(?:[ _-][A-Za-z]+)*)")

    def by_letters(stem: str) -> str | None:
        m = pattern.match(stem)
        return m.group(1).lower() if m else None

    return by_letters


def load_folder(root: Path, params: dict[str, str]) -> Pool:
    """Class folders, split folders (any of them flat) or one flat folder, verified image by image."""
    root = descend(root.resolve())
    split_dirs: dict[str, Path] = {}
    for d in _subdirs(root):
        alias = SPLIT_ALIASES.get(d.name.lower())
        if alias and alias not in split_dirs:
            split_dirs[alias] = d
    notes: list[str] = []
    if split_dirs:
        collected = _collect_splits(split_dirs, params)
        ignored = [d.name for d in _subdirs(root) if d.name.lower() not in SPLIT_ALIASES]
        if ignored:
            notes.append(f"Folders outside train/val/test were ignored: {', '.join(ignored)}.")
    else:
        collected = {"all": collect(root, name_rule(params))}
    return verify_pool(root, collected, notes)


def _collect_splits(split_dirs: dict[str, Path], params: dict[str, str]) -> dict[str, _Collected]:
    """Collect each split; flat splits take their labels from the classes the other splits define."""
    out = {name: collect(d, name_rule(params)) for name, d in split_dirs.items()}
    known = sorted({c for col in out.values() if not col.flat for c in col.by_class})
    if known:
        for name, col in out.items():
            if col.flat:
                out[name] = collect(split_dirs[name], name_rule(params, known))
    return out


def verify_pool(root: Path, collected: dict[str, _Collected], notes: list[str]) -> Pool:
    """Decode every candidate file once (in parallel) and build labelled splits of the good ones."""
    _check_classes_agree(collected)
    class_names = sorted({c for col in collected.values() for c in col.by_class})
    index = {c: i for i, c in enumerate(class_names)}
    jobs = [(name, c, p) for name, col in collected.items() for c in sorted(col.by_class) for p in col.by_class[c]]
    results = _verify_many([p for _, _, p in jobs])
    skipped = [SkippedFile(_rel(p, root), reason) for col in collected.values() for p, reason in col.skipped]
    grouped: dict[str, dict[str, list]] = {n: {"labels": [], "files": [], "info": [], "hashes": []} for n in collected}
    for (name, c, p), res in zip(jobs, results):
        if isinstance(res, str):
            skipped.append(SkippedFile(_rel(p, root), res))
            continue
        g = grouped[name]
        g["labels"].append(index[c])
        g["files"].append(str(p))
        g["info"].append(res[0])
        g["hashes"].append(res[1])
    kept = {c for g in grouped.values() for c in (class_names[i] for i in g["labels"])}
    missing = [c for c in class_names if c not in kept]
    if missing:
        notes.append(f"Classes without a readable image were left out: {', '.join(missing)}.")
    used = [c for c in class_names if c in kept]
    remap = {index[c]: i for i, c in enumerate(used)}
    infos = [i for g in grouped.values() for i in g["info"]]
    channels = 1 if infos and all(i.channels == 1 for i in infos) else 3
    parts = {
        name: Split(
            labels=np.array([remap[x] for x in g["labels"]], dtype=np.int64),
            files=g["files"], info=g["info"], hashes=g["hashes"], channels=channels,
        )
        for name, g in grouped.items()
    }
    skipped.sort(key=lambda s: s.path)
    return Pool(root.name, used, channels, parts, skipped, str(root), notes)


def _check_classes_agree(collected: dict[str, _Collected]) -> None:
    """Validation and test must use exactly the training classes, or the scores mean nothing."""
    train = collected.get("train")
    if train is None:
        return
    ref = set(train.by_class)
    for name in ("val", "test"):
        col = collected.get(name)
        if col is None or not col.by_class:
            continue
        other = set(col.by_class)
        if other != ref:
            extra, lacking = sorted(other - ref), sorted(ref - other)
            detail = "; ".join(
                x for x in (
                    f"only in {name}: {', '.join(extra)}" if extra else "",
                    f"missing from {name}: {', '.join(lacking)}" if lacking else "",
                ) if x
            )
            label = "validation" if name == "val" else "test"
            raise UserError(f"The {label} folder's classes differ from the training folder's ({detail}).")


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


_VERIFY_CACHE: dict[tuple[str, int, int], tuple[ImageInfo, str] | str] = {}
_VERIFY_LOCK = threading.Lock()


def _verify_one(path: Path) -> tuple[ImageInfo, str] | str:
    """(info, pixel hash) for a good file, the reason text for a bad one; cached by size and mtime."""
    try:
        st = path.stat()
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _VERIFY_LOCK:
        hit = _VERIFY_CACHE.get(key)
    if hit is not None:
        return hit
    try:
        result: tuple[ImageInfo, str] | str = verify_image(path)
    except ImageDecodeError as err:
        result = err.reason
    with _VERIFY_LOCK:
        if len(_VERIFY_CACHE) > 500_000:
            _VERIFY_CACHE.clear()
        _VERIFY_CACHE[key] = result
    return result


def _verify_many(paths: list[Path]) -> list[tuple[ImageInfo, str] | str]:
    if len(paths) < 16:
        return [_verify_one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=_VERIFY_WORKERS) as pool:  # Pillow decodes without the GIL
        return list(pool.map(_verify_one, paths, chunksize=32))

