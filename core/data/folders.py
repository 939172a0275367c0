"""Collecting a folder's pictures the way ``core.data.layouts`` read it, each file verified once.

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
from core.data.layouts import Part, Plan, direct_images, plan_layout, subdirs, visible
from core.errors import UserError

_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini", "license", "license.txt", "readme", "readme.md", "readme.txt"})
_VERIFY_WORKERS = 4


@dataclass
class _Collected:
    """A folder's images grouped by class name (from sub-folders or file names)."""

    by_class: dict[str, list[Path]]
    skipped: list[tuple[Path, str]]
    flat: bool


def _image_files_under(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files anywhere under ``folder`` and the non-image files there (hidden and junk ignored)."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if visible(Path(d)))
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            if not visible(p) or fname.lower() in _JUNK_FILES:
                continue
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(p)
            else:
                others.append((p, f"not an image file type ('{p.suffix or p.name}')"))
    return images, others


def collect(folder: Path, rule: Callable[[str], str | None], exclude: frozenset[str] = frozenset()) -> _Collected:
    """Class folders when there are any (``exclude`` names folders that are not classes), else a flat folder
    labelled by file names."""
    subs = [d for d in subdirs(folder) if d.name not in exclude]
    skipped: list[tuple[Path, str]] = []
    if subs:
        return _collect_classes({d.name: d for d in subs}, direct_images(folder))
    by_class: dict[str, list[Path]] = {}
    for p in direct_images(folder):
        label = rule(p.stem)
        if label is None:
            skipped.append((p, "its file name does not name a class"))
        else:
            by_class.setdefault(label, []).append(p)
    return _Collected(by_class, skipped, flat=True)


def _collect_classes(dirs: dict[str, Path], loose: list[Path] | None = None) -> _Collected:
    """Each named folder's images (anywhere under it) as one class; ``loose`` images sit outside any class."""
    by_class: dict[str, list[Path]] = {}
    skipped: list[tuple[Path, str]] = []
    for name, d in sorted(dirs.items()):
        images, others = _image_files_under(d)
        skipped += others
        if images:
            by_class[name] = images
    skipped += [(p, "not inside a class folder") for p in loose or []]
    return _Collected(by_class, skipped, flat=False)


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
    """Class folders, split folders (any of them flat) or one flat folder, verified image by image.

    ``params['layout']`` ('splits' or 'classes') is a person's choice for a layout that reads two ways.
    """
    plan = plan_layout(root.resolve(), params.get("layout", "auto") or "auto")
    collected = _collect_parts(plan, params)
    pool = verify_pool(plan.root, collected, list(plan.notes), plan.splits)
    pool.layout = plan.describe()
    return pool


def _collect_parts(plan: Plan, params: dict[str, str]) -> dict[str, _Collected]:
    """Collect each part; flat splits take their labels from the classes the other splits define."""
    def one(part: Part, known: list[str] | None = None) -> _Collected:
        if part.classes is not None:
            return _collect_classes(part.classes)
        return collect(part.folder, name_rule(params, known), part.exclude)

    out = {name: one(part) for name, part in plan.parts.items()}
    known = sorted({c for col in out.values() if not col.flat for c in col.by_class})
    if known:
        for name, col in out.items():
            if col.flat:
                out[name] = one(plan.parts[name], known)
    return out


def verify_pool(root: Path, collected: dict[str, _Collected], notes: list[str],
                folders: dict[str, str] | None = None) -> Pool:
    """Decode every candidate file once (in parallel) and build labelled splits of the good ones.

    ``folders`` names the folder each split came from, for the sentence when their classes differ.
    """
    _check_classes_agree(collected, folders or {})
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


def _check_classes_agree(collected: dict[str, _Collected], folders: dict[str, str]) -> None:
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
            label = "validation" if name == "val" else "test"
            where = folders.get(name, name)
            extra, lacking = sorted(other - ref), sorted(ref - other)
            detail = "; ".join(x for x in (
                f"only in {where}: {', '.join(extra)}" if extra else "",
                f"missing from {where}: {', '.join(lacking)}" if lacking else "",
            ) if x)
            train_at = f"the training folder ({folders['train']})" if folders.get("train") else "the training classes"
            raise UserError(f"The {label} folder ({where}) and {train_at} hold different classes ({detail}): "
                            f"{label} pictures must come from exactly the training classes, so add, rename or "
                            "remove those class folders.")


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

