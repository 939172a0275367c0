"""Dataset sources (built-in, folder, zip, file-name labels), seeded stratified splits and the health report."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import threading
import zipfile
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable
from urllib.parse import parse_qsl

import numpy as np

from core.config import SplitConfig
from core.errors import UserError
from core.images import IMAGE_EXTENSIONS, ImageDecodeError, ImageInfo, decode_image, resize_image, verify_image

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
_JUNK_FILES = frozenset({"thumbs.db", "desktop.ini", "license", "license.txt", "readme", "readme.md", "readme.txt"})

# Zip limits: generous for real image sets, fatal for zip bombs.
ZIP_MAX_BYTES = 8 * 1024**3
ZIP_MAX_FILES = 250_000
ZIP_MAX_RATIO = 250

RPS_BASE_URL = "https://storage.googleapis.com/learning-datasets/"
RPS_FILES = {"train": "rps.zip", "test": "rps-test-set.zip"}
KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"

_VERIFY_WORKERS = 4
_STATS_SAMPLE = 256
_HIST_BINS = 32


# ---------------------------------------------------------------- the data model


@dataclass
class Split:
    """One split: labels plus either file paths (decoded on demand) or in-memory uint8 images."""

    labels: np.ndarray
    files: list[str] | None = None
    images: np.ndarray | None = None
    info: list[ImageInfo] | None = None        # per file: header facts (size, mode, TF decodability)
    hashes: list[str] | None = None            # per file: hash of the decoded pixels (duplicates)
    channels: int | None = None                # what ``image(i)`` decodes to; None keeps the source's
    original_labels: np.ndarray | None = None  # set when label noise flipped some training labels

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, i: int) -> np.ndarray:
        """The i-th image, decoded, at its native size (uint8 H x W x C)."""
        if self.images is not None:
            img = self.images[i]
            return img[:, :, None] if img.ndim == 2 else img
        assert self.files is not None
        return decode_image(self.files[i], channels=self.channels)

    def describe(self, i: int) -> str:
        """The file name, or ``#index`` for in-memory images."""
        return Path(self.files[i]).name if self.files is not None else f"#{i}"

    def subset(self, idx: np.ndarray | list[int]) -> Split:
        """A new split holding the items at ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda seq: None if seq is None else [seq[int(i)] for i in idx]  # noqa: E731
        return Split(
            labels=self.labels[idx],
            files=pick(self.files),
            images=None if self.images is None else self.images[idx],
            info=pick(self.info),
            hashes=pick(self.hashes),
            channels=self.channels,
            original_labels=None if self.original_labels is None else self.original_labels[idx],
        )


@dataclass
class SkippedFile:
    """A file left out of the dataset and why (path relative to the dataset's folder)."""

    path: str
    reason: str


@dataclass
class Dataset:
    """A loaded source: class names, the three splits, what was skipped and the split's fingerprint."""

    name: str
    source: str
    class_names: list[str]
    channels: int
    splits: dict[str, Split]
    skipped: list[SkippedFile] = field(default_factory=list)
    split_hash: str = ""
    native_size: tuple[int, int] | None = None  # (height, width) when every image has the same size
    root: str | None = None                     # the folder files live in (names are shown relative to it)
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def total_images(self) -> int:
        return sum(len(s) for s in self.splits.values())

    def relative(self, path: str) -> str:
        """A file's name relative to the dataset folder, with forward slashes."""
        if self.root is None:
            return path
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return path


@dataclass(frozen=True)
class BuiltinInfo:
    """A built-in source for the dataset picker and ``python -m core datasets``."""

    name: str
    description: str
    classes: int
    images: int
    needs_download: bool
    params: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_BUILTINS: dict[str, BuiltinInfo] = {
    i.name: i
    for i in (
        BuiltinInfo("digits", "scikit-learn's handwritten digits, 8x8 grayscale (offline)", 10, 1797, False),
        BuiltinInfo(
            "shapes",
            "generated shapes (circle, square, star, triangle; up to 8 kinds), RGB, deterministic (offline)",
            4, 800, False, "classes=4&per_class=200&size=64&seed=0&noise=0.05&rotation=20",
        ),
        BuiltinInfo("mnist", "MNIST handwritten digits, 28x28 grayscale", 10, 70000, True),
        BuiltinInfo("fashion_mnist", "Fashion-MNIST clothing, 28x28 grayscale", 10, 70000, True),
        BuiltinInfo("cifar10", "CIFAR-10 objects and animals, 32x32 colour", 10, 60000, True),
        BuiltinInfo("cifar100", "CIFAR-100 (fine labels), 32x32 colour", 100, 60000, True),
        BuiltinInfo(
            "rock_paper_scissors", "rock-paper-scissors hands, 300x300 colour (CC BY 2.0)", 3, 2892, True
        ),
    )
}


def list_builtin() -> list[BuiltinInfo]:
    """Every built-in source, offline ones first."""
    return list(_BUILTINS.values())


# ---------------------------------------------------------------- loading


@dataclass
class _Pool:
    """A source before splitting: the splits it came with ('all' when none) and what was skipped."""

    name: str
    class_names: list[str]
    channels: int
    parts: dict[str, Split]
    skipped: list[SkippedFile] = field(default_factory=list)
    root: str | None = None
    notes: list[str] = field(default_factory=list)


def load_dataset(source: str, split: SplitConfig = SplitConfig(), *, home: Path | str | None = None) -> Dataset:
    """Load ``builtin:NAME[?k=v&...]``, a folder or a ``.zip`` and split it (stratified, seeded)."""
    source = str(source).strip()
    if not source:
        raise UserError("No dataset was given: choose a built-in dataset, a folder or a zip file.")
    if source.startswith("builtin:"):
        name, params = _parse_query(source[len("builtin:"):])
        pool = _load_builtin(name, params, _home(home))
    else:
        path, params = _path_and_query(source)
        pool = _load_path(path, params, _home(home))
    ds = _finalise(pool, source, split)
    return ds


def _home(home: Path | str | None) -> Path:
    if home is not None:
        return Path(home).expanduser()
    try:
        from core.store import default_home
    except ImportError:  # the store module is optional for the data engine
        return Path(os.environ.get("CNNLAB_HOME") or Path.home() / ".cnnlab").expanduser()
    return Path(default_home())


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


def _load_path(path: Path, params: dict[str, str], home: Path) -> _Pool:
    if not path.exists():
        raise UserError(f"'{path}' does not exist: give a folder of images, a .zip file or builtin:NAME.")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UserError(f"'{path.name}' is not a folder or a zip file: give a folder of images or a .zip.")
        root = extract_zip(path, home)
        pool = _load_folder(root, params)
        pool.name = path.stem
        return pool
    return _load_folder(path, params)


# ---------------------------------------------------------------- splitting


def _finalise(pool: _Pool, source: str, cfg: SplitConfig) -> Dataset:
    """Limit, split, subsample, add label noise and fingerprint a pool."""
    n_classes = len(pool.class_names)
    total = sum(len(p) for p in pool.parts.values())
    if total == 0:
        raise UserError(f"'{pool.name}' contains no usable images.")
    if n_classes < 2:
        only = f" (only '{pool.class_names[0]}')" if pool.class_names else ""
        raise UserError(f"'{pool.name}' has fewer than two classes{only}: a classifier needs at least two.")
    notes = list(pool.notes)
    parts = dict(pool.parts)
    if cfg.limit_per_class is not None:
        parts = _limit_per_class(parts, cfg.limit_per_class, cfg.seed)
        notes.append(f"At most {cfg.limit_per_class} images per class are used.")
    splits = _make_splits(parts, cfg, notes)
    if getattr(cfg, "drop_duplicates", False):
        splits = _drop_leaked_copies(splits, notes)
    if cfg.train_fraction < 1.0:
        keep = _per_class_sample(splits["train"].labels, cfg.train_fraction, [cfg.seed, 101])
        splits["train"] = splits["train"].subset(keep)
        notes.append(f"Training uses {cfg.train_fraction:.0%} of its images ({len(splits['train'])}).")
    if cfg.label_noise > 0:
        splits["train"] = _add_label_noise(splits["train"], cfg.label_noise, n_classes, cfg.seed)
        flipped = int((splits["train"].labels != splits["train"].original_labels).sum())
        notes.append(f"{flipped} training labels ({cfg.label_noise:.0%}) were deliberately flipped to a wrong class.")
    ds = Dataset(
        name=pool.name,
        source=source,
        class_names=list(pool.class_names),
        channels=pool.channels,
        splits=splits,
        skipped=list(pool.skipped),
        root=pool.root,
        notes=notes,
    )
    ds.native_size = _native_size(ds)
    ds.split_hash = split_hash(ds)
    return ds


def _make_splits(parts: dict[str, Split], cfg: SplitConfig, notes: list[str]) -> dict[str, Split]:
    """Train/val/test from what the source gave: split it all, or carve the missing split from train."""
    given = {k for k, v in parts.items() if len(v)}
    if "train" not in parts and "all" not in parts:
        raise UserError("The dataset has validation/test images but no training images (a 'train' folder).")
    if given <= {"all"} or given <= {"train"}:
        pool = parts.get("all") or parts["train"]
        tr, va, te = _stratified(pool.labels, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        return {"train": pool.subset(tr), "val": pool.subset(va), "test": pool.subset(te)}
    train = parts["train"]
    out = {"train": train, "val": parts.get("val"), "test": parts.get("test")}
    if out["val"] is None or not len(out["val"]):
        tr, va, _ = _stratified(train.labels, cfg.val_fraction, 0.0, cfg.seed)
        out["train"], out["val"] = train.subset(tr), train.subset(va)
        notes.append(f"The source has no validation split: {cfg.val_fraction:.0%} of its training images are used.")
    if out["test"] is None or not len(out["test"]):
        tr, te, _ = _stratified(out["train"].labels, cfg.test_fraction, 0.0, cfg.seed + 1)
        base = out["train"]
        out["train"], out["test"] = base.subset(tr), base.subset(te)
        notes.append(f"The source has no test split: {cfg.test_fraction:.0%} of its training images are used.")
    return out  # type: ignore[return-value]


def _drop_leaked_copies(splits: dict[str, Split], notes: list[str]) -> dict[str, Split]:
    """Remove from val, then test, every picture already in an earlier split (the leakage fix)."""
    seen: set[str] = set()
    out, removed = {}, 0
    for name in SPLIT_NAMES:
        part = splits.get(name)
        if part is None:
            continue
        hashes = _image_hashes(part)
        if name != "train":
            keep = [i for i, h in enumerate(hashes) if h not in seen]
            removed += len(part) - len(keep)
            part = part.subset(keep) if len(keep) < len(part) else part
        out[name] = part
        seen.update(hashes)
    if removed:
        notes.append(f"{removed} validation/test picture(s) that were copies of earlier splits' pictures were dropped.")
    return out


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


def _stratified(labels: np.ndarray, val: float, test: float, seed: int) -> tuple[np.ndarray, ...]:
    """Per-class seeded shuffles cut into train/val/test; each class keeps at least one training image."""
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = np.random.default_rng([seed, int(c)]).permutation(idx)
        n = len(idx)
        n_test, n_val = _round(n * test), _round(n * val)
        while n_test + n_val > n - 1 and (n_test or n_val):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        parts[0].append(idx[: n - n_val - n_test])
        parts[1].append(idx[n - n_val - n_test: n - n_test])
        parts[2].append(idx[n - n_test:])
    return tuple(np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts)


def _per_class_sample(labels: np.ndarray, fraction: float, seed: list[int]) -> np.ndarray:
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, _round(len(idx) * fraction))
        keep.append(np.random.default_rng([*seed, int(c)]).permutation(idx)[:n])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def _limit_per_class(parts: dict[str, Split], limit: int, seed: int) -> dict[str, Split]:
    """Cap each class at ``limit`` images overall, sharing the cap between given splits by their sizes."""
    totals: Counter[int] = Counter()
    for part in parts.values():
        totals.update(part.labels.tolist())
    out = {}
    for k, (name, part) in enumerate(sorted(parts.items())):
        keep = []
        for c in np.unique(part.labels):
            idx = np.flatnonzero(part.labels == c)
            n_c = totals[int(c)]
            n = len(idx) if n_c <= limit else max(1, _round(limit * len(idx) / n_c))
            keep.append(np.random.default_rng([seed, int(c), k, 7]).permutation(idx)[:n])
        out[name] = part.subset(np.sort(np.concatenate(keep)) if keep else [])
    return out


def _add_label_noise(train: Split, noise: float, n_classes: int, seed: int) -> Split:
    """Flip a seeded share of training labels to a different random class (validation/test untouched)."""
    rng = np.random.default_rng([seed, 202])
    labels = train.labels.copy()
    n_flip = _round(len(labels) * noise)
    idx = rng.choice(len(labels), size=n_flip, replace=False) if n_flip else np.zeros(0, np.int64)
    labels[idx] = (labels[idx] + rng.integers(1, n_classes, size=len(idx))) % n_classes
    out = replace(train, labels=labels, original_labels=train.labels.copy())
    return out


def split_hash(ds: Dataset) -> str:
    """sha256 over the sorted (split, file-or-index, label) lists: equal on any machine for equal splits."""
    digest = hashlib.sha256()
    for name in SPLIT_NAMES:
        part = ds.splits.get(name)
        if part is None:
            continue
        ids = [ds.relative(f) for f in part.files] if part.files is not None else _array_ids(part)
        for ident, label in sorted(zip(ids, part.labels.tolist())):
            digest.update(f"{name}\t{ident}\t{label}\n".encode())
    return digest.hexdigest()


def _array_ids(part: Split) -> list[str]:
    """Stable ids for in-memory images: their content hashes (indices change with subsetting)."""
    return _image_hashes(part)


def _native_size(ds: Dataset) -> tuple[int, int] | None:
    sizes: set[tuple[int, int]] = set()
    for part in ds.splits.values():
        if part.images is not None and len(part):
            sizes.add((int(part.images.shape[1]), int(part.images.shape[2])))
        for info in part.info or []:
            sizes.add((info.height, info.width))
        if len(sizes) > 1:
            return None
    return sizes.pop() if len(sizes) == 1 else None


# ---------------------------------------------------------------- folders


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


def _descend(root: Path) -> Path:
    """Skip wrapper folders (a zip's single top folder): descend while there is one folder and no images."""
    for _ in range(8):
        subs = _subdirs(root)
        if len(subs) != 1 or _direct_images(root) or subs[0].name.lower() in _SPLIT_ALIASES:
            return root
        inner = _subdirs(subs[0])
        if not inner and _direct_images(subs[0]):
            return root  # a single class folder: let the one-class check speak
        root = subs[0]
    return root


def _collect(folder: Path, rule: Callable[[str], str | None]) -> _Collected:
    """Class folders when there are any, otherwise a flat folder labelled by file names."""
    subs = [d for d in _subdirs(folder) if d.name.lower() not in _SPLIT_ALIASES]
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


def _name_rule(params: dict[str, str], known: list[str] | None = None) -> Callable[[str], str | None]:
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


def _load_folder(root: Path, params: dict[str, str]) -> _Pool:
    """Class folders, split folders (any of them flat) or one flat folder, verified image by image."""
    root = _descend(root.resolve())
    split_dirs: dict[str, Path] = {}
    for d in _subdirs(root):
        alias = _SPLIT_ALIASES.get(d.name.lower())
        if alias and alias not in split_dirs:
            split_dirs[alias] = d
    notes: list[str] = []
    if split_dirs:
        collected = _collect_splits(split_dirs, params)
        ignored = [d.name for d in _subdirs(root) if d.name.lower() not in _SPLIT_ALIASES]
        if ignored:
            notes.append(f"Folders outside train/val/test were ignored: {', '.join(ignored)}.")
    else:
        collected = {"all": _collect(root, _name_rule(params))}
    return _verify_pool(root, collected, notes)


def _collect_splits(split_dirs: dict[str, Path], params: dict[str, str]) -> dict[str, _Collected]:
    """Collect each split; flat splits take their labels from the classes the other splits define."""
    out = {name: _collect(d, _name_rule(params)) for name, d in split_dirs.items()}
    known = sorted({c for col in out.values() if not col.flat for c in col.by_class})
    if known:
        for name, col in out.items():
            if col.flat:
                out[name] = _collect(split_dirs[name], _name_rule(params, known))
    return out


def _verify_pool(root: Path, collected: dict[str, _Collected], notes: list[str]) -> _Pool:
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
    return _Pool(root.name, used, channels, parts, skipped, str(root), notes)


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


# ---------------------------------------------------------------- zip files


def extract_zip(zip_path: Path | str, home: Path | str | None = None) -> Path:
    """Safely extract a zip's images under ``<home>/datasets/<content hash>/`` (reused when already there).

    Entries that would land outside the target (``../``, absolute paths, symlinks) refuse the whole
    zip before anything is written; size, count and compression-ratio limits stop zip bombs.
    ``__MACOSX``, hidden and non-image entries are not extracted.
    """
    zip_path = Path(zip_path)
    target = _home(home) / "datasets" / _file_hash(zip_path)[:16]
    if (target / ".complete").is_file():
        return target
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _safe_members(zf, zip_path.name)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                _extract_members(zf, members, tmp)
                (tmp / ".complete").write_text(json.dumps({"zip": zip_path.name, "files": len(members)}))
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


# ---------------------------------------------------------------- built-in sources


def _load_builtin(name: str, params: dict[str, str], home: Path) -> _Pool:
    loaders: dict[str, Callable[[], _Pool]] = {
        "digits": _load_digits,
        "shapes": lambda: _load_shapes(params),
        "mnist": lambda: _load_keras("mnist"),
        "fashion_mnist": lambda: _load_keras("fashion_mnist"),
        "cifar10": lambda: _load_keras("cifar10"),
        "cifar100": lambda: _load_keras("cifar100"),
        "rock_paper_scissors": lambda: _load_rps(home),
    }
    if name not in loaders:
        raise UserError(f"There is no built-in dataset '{name}': choose one of {', '.join(loaders)}.")
    if params and name != "shapes":
        raise UserError(f"builtin:{name} takes no options (only builtin:shapes does).")
    return loaders[name]()


def _array_pool(name: str, class_names: list[str], parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> _Pool:
    splits = {}
    channels = 3
    for key, (x, y) in parts.items():
        x = np.asarray(x, dtype=np.uint8)
        if x.ndim == 3:
            x = x[:, :, :, None]
        channels = int(x.shape[-1])
        x = np.ascontiguousarray(x)
        hashes = [hashlib.sha1(img.tobytes()).hexdigest() for img in x]  # duplicates and the split hash
        splits[key] = Split(labels=np.asarray(y).reshape(-1).astype(np.int64), images=x, hashes=hashes,
                            channels=channels)
    return _Pool(name, class_names, channels, splits)


def _load_digits() -> _Pool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return _array_pool("digits", [str(i) for i in range(10)], {"all": (images, bunch.target)})


SHAPE_KINDS = ("circle", "square", "triangle", "star", "cross", "hexagon", "ring", "crescent")


def _int_param(params: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"builtin:shapes option {key}={raw!r} is not a whole number.") from None
    if not lo <= value <= hi:
        raise UserError(f"builtin:shapes option {key} must be between {lo} and {hi}, not {value}.")
    return value


def _load_shapes(params: dict[str, str]) -> _Pool:
    unknown = set(params) - {"classes", "per_class", "size", "seed", "noise", "rotation"}
    if unknown:
        raise UserError(
            f"builtin:shapes has no option {', '.join(sorted(unknown))}: "
            "use classes, per_class, size, seed, noise, rotation."
        )
    raw_classes = params.get("classes", "4")
    if raw_classes.strip().isdigit():
        kinds = list(SHAPE_KINDS[: _int_param(params, "classes", 4, 2, len(SHAPE_KINDS))])
    else:
        kinds = [k.strip().lower() for k in raw_classes.split(",") if k.strip()]
        bad = [k for k in kinds if k not in SHAPE_KINDS]
        if bad or len(set(kinds)) < 2:
            raise UserError(f"builtin:shapes classes must be a number or at least two of {', '.join(SHAPE_KINDS)}.")
    per_class = _int_param(params, "per_class", 200, 1, 20000)
    size = _int_param(params, "size", 64, 8, 512)
    seed = _int_param(params, "seed", 0, 0, 2**31 - 1)
    rotation = _int_param(params, "rotation", 20, 0, 180)  # degrees either way: the difficulty knob
    try:
        noise = float(params.get("noise", 0.05))
    except ValueError:
        raise UserError("builtin:shapes option noise must be a number between 0 and 1.") from None
    if not 0 <= noise <= 1:
        raise UserError("builtin:shapes option noise must be between 0 and 1.")
    names = sorted(set(kinds))
    images = np.empty((len(names) * per_class, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(len(names)), per_class)
    for c, kind in enumerate(names):
        code = SHAPE_KINDS.index(kind)
        for i in range(per_class):
            rng = np.random.default_rng([seed, code, i])
            images[c * per_class + i] = draw_shape(kind, size, rng, noise, rotation)
    query = f"classes={','.join(names)}&per_class={per_class}&size={size}&seed={seed}&rotation={rotation}"
    pool = _array_pool("shapes", names, {"all": (images, labels)})
    pool.notes.append(f"Generated shapes ({query}, noise={noise}).")
    return pool


def _polygon(kind: str) -> list[np.ndarray]:
    """Unit-radius outlines of a shape; the first is filled with the shape colour, later ones cut holes."""
    def ngon(n: int, start: float = 0.0, r: float = 1.0) -> np.ndarray:
        t = start + np.arange(n) * 2 * np.pi / n
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)

    if kind == "circle":
        return [ngon(96)]
    if kind == "square":
        return [ngon(4, np.pi / 4)]
    if kind == "triangle":
        return [ngon(3, -np.pi / 2) * 1.1]
    if kind == "hexagon":
        return [ngon(6)]
    if kind == "star":
        pts = ngon(10, -np.pi / 2)
        pts[1::2] *= 0.42
        return [pts * 1.1]
    if kind == "cross":
        a, b = 0.33, 1.0
        return [np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
                          (-b, a), (-b, -a), (-a, -a)])]
    if kind == "ring":
        return [ngon(96), ngon(96, r=0.55)]
    if kind == "crescent":
        return [ngon(96), ngon(96, r=0.85) + np.array([0.45, 0.0])]
    raise ValueError(kind)


def draw_shape(kind: str, size: int, rng: np.random.Generator, noise: float = 0.05,
               rotation: float = 20.0) -> np.ndarray:
    """One RGB image of ``kind``: random colours, size, position, rotation (+-degrees) and noise."""
    import cv2

    scale = 4  # draw large, then area-average down: smooth edges at any size
    big = size * scale
    # A light, tinted background and a darker, colourful shape: colour varies but the shape always
    # stands out the same way, so a tiny CNN learns it in seconds (and overfits a few images fast).
    bg = np.clip(rng.integers(185, 241) + rng.integers(-15, 16, size=3), 0, 255)
    fg = rng.integers(0, 140, size=3)
    radius = rng.uniform(0.3, 0.42) * big
    cx, cy = big / 2 + rng.uniform(-0.12, 0.12, size=2) * big  # off-centre, yet always whole
    angle = np.deg2rad(rng.uniform(-rotation, rotation))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mask = np.zeros((big, big), dtype=np.uint8)  # coverage of the shape, blended at the end
    for k, outline in enumerate(_polygon(kind)):
        pts = (outline @ rot.T) * radius + (cx, cy)
        cv2.fillPoly(mask, [np.rint(pts * 16).astype(np.int32)], 255 if k == 0 else 0,
                     lineType=cv2.LINE_AA, shift=4)
    alpha = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)[:, :, None] / 255.0
    img = bg.astype(np.float32) * (1.0 - alpha) + fg.astype(np.float32) * alpha
    if noise > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise * 255)
    return np.rint(img).clip(0, 255).astype(np.uint8)


_KERAS_SOURCES: dict[str, dict[str, Any]] = {
    "mnist": {"files": ["mnist.npz"], "folder": "datasets", "url": KERAS_BASE_URL,
              "classes": [str(i) for i in range(10)]},
    "fashion_mnist": {
        "files": ["train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz"],
        "folder": "datasets/fashion-mnist", "url": KERAS_BASE_URL,
        "classes": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                    "ankle_boot"],
    },
    "cifar10": {
        "files": ["cifar-10-batches-py-target_archive"], "folder": "datasets",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    },
    "cifar100": {
        "files": ["cifar-100-python-target_archive"], "folder": "datasets",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "classes": (
            "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
            "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile "
            "cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp "
            "lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree "
            "orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum "
            "rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider "
            "squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
            "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
        ).split(),
    },
}


def keras_home() -> Path:
    """Where Keras caches downloads (``$KERAS_HOME`` or ``~/.keras``), for the offline message."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def _load_keras(name: str) -> _Pool:
    """A keras.datasets set: downloaded once by Keras, then read from its cache."""
    import keras

    spec = _KERAS_SOURCES[name]
    loader = getattr(keras.datasets, name).load_data
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints download progress; keep --json clean
            (x_train, y_train), (x_test, y_test) = loader()
    except Exception as err:  # noqa: BLE001 - any download/cache failure becomes one sentence
        folder = keras_home() / spec["folder"]
        files = spec["files"]
        if name.startswith("cifar"):
            how = f"download {spec['url']} and save it as '{folder / files[0]}'"
        else:
            listed = ", ".join(files)
            how = f"download {listed} from {spec['url']} into the folder '{folder}'"
        raise UserError(
            f"builtin:{name} could not be downloaded ({_first_line(err)}); to use it offline, {how}."
        ) from None
    return _array_pool(name, list(spec["classes"]), {"train": (x_train, y_train), "test": (x_test, y_test)})


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _load_rps(home: Path) -> _Pool:
    """Rock-paper-scissors: the two official zips, downloaded once into ``<home>/downloads``."""
    downloads = home / "downloads"
    roots = {}
    for split_name, fname in RPS_FILES.items():
        zip_path = _download(fname, RPS_BASE_URL + fname, downloads, also=list(RPS_FILES.values()))
        roots[split_name] = _descend(extract_zip(zip_path, home))
    collected = {k: _collect(root, _name_rule({})) for k, root in roots.items()}
    # Both zips unpack under <home>/datasets/<content hash>/: names relative to it are the same anywhere.
    pool = _verify_pool((home / "datasets").resolve(), collected, [])
    pool.name = "rock_paper_scissors"
    return pool


def _download(fname: str, url: str, folder: Path, also: list[str] | None = None) -> Path:
    """Fetch ``url`` into ``folder/fname`` once (keras.utils.get_file), with a one-sentence offline error."""
    import keras

    target = folder / fname
    if target.is_file():
        if zipfile.is_zipfile(target):
            return target
        target.unlink()  # a broken earlier download: get_file would otherwise trust it
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            path = keras.utils.get_file(fname=fname, origin=url, cache_dir=str(folder), cache_subdir="")
    except Exception as err:  # noqa: BLE001
        names = " and ".join(also or [fname])
        base = url[: -len(fname)] if url.endswith(fname) else url
        raise UserError(
            f"'{fname}' could not be downloaded ({_first_line(err)}); to use it offline, download {names} "
            f"from {base} and save them in the folder '{folder}'."
        ) from None
    return Path(path)


# ---------------------------------------------------------------- health report


@dataclass
class HealthReport:
    """What a person should know about a dataset before training on it (JSON via ``to_dict``)."""

    name: str
    source: str
    class_names: list[str]
    num_classes: int
    channels: int
    total_images: int
    split_sizes: dict[str, int]
    counts: dict[str, dict[str, int]]          # split -> class -> images
    class_totals: dict[str, int]
    imbalance_ratio: float                     # largest class / smallest class (all splits)
    warnings: list[str]
    skipped: list[dict[str, str]]
    num_skipped: int
    duplicates_across_splits: list[dict[str, Any]]   # leakage: the same picture in two splits
    num_duplicates_across_splits: int
    duplicates_within_splits: int              # extra copies inside one split
    sizes: dict[str, Any]                      # min/max/median (height, width) and the commonest sizes
    channel_distribution: dict[str, int]       # "gray"/"color" counts of the source images
    mode_distribution: dict[str, int]          # Pillow modes (L, RGB, RGBA, P, ...) or "array"
    format_distribution: dict[str, int]
    pixel_stats: dict[str, Any]                # per-channel mean/std and a histogram over a sample
    split_hash: str
    native_size: list[int] | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        """A readable summary for the command line."""
        lines = [
            f"{self.name}  ({self.source})",
            f"{self.num_classes} classes, {self.total_images:,} images, {self.channels} channel(s); "
            + ", ".join(f"{k} {v:,}" for k, v in self.split_sizes.items()),
        ]
        width = max((len(c) for c in self.class_names), default=5)
        lines.append(f"  {'class':<{width}}  " + "  ".join(f"{s:>6}" for s in self.split_sizes))
        for c in self.class_names:
            lines.append(f"  {c:<{width}}  " + "  ".join(f"{self.counts[s].get(c, 0):>6}" for s in self.split_sizes))
        lines.append(f"imbalance ratio {self.imbalance_ratio:.2f}")
        size_text = ", ".join(f"{t['size']} x{t['count']}" for t in self.sizes.get("top", []))
        lines.append(f"sizes: {size_text}")
        lines.append("channels: " + ", ".join(f"{k} {v}" for k, v in self.channel_distribution.items()))
        if self.pixel_stats.get("mean"):
            names = self.pixel_stats["channel_names"]
            lines.append("pixel mean/std: " + ", ".join(
                f"{n} {m:.1f}/{s:.1f}" for n, m, s in zip(names, self.pixel_stats["mean"], self.pixel_stats["std"])
            ))
        lines.append(f"skipped files: {self.num_skipped}")
        lines += [f"  {s['path']}: {s['reason']}" for s in self.skipped[:50]]
        if self.num_skipped > 50:
            lines.append(f"  ... and {self.num_skipped - 50} more")
        lines.append(f"duplicates across splits: {self.num_duplicates_across_splits}")
        for group in self.duplicates_across_splits[:10]:
            lines.append("  " + " = ".join(f"{i['split']}:{i['file']}" for i in group["items"]))
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines.append(f"split hash {self.split_hash[:16]}")
        return "\n".join(lines)


def _image_hashes(part: Split) -> list[str]:
    if part.hashes is not None:
        return list(part.hashes)
    if part.images is None:
        return [verify_image(f)[1] for f in part.files or []]
    return [hashlib.sha1(img.tobytes()).hexdigest() for img in part.images]


def health_report(ds: Dataset) -> HealthReport:
    """Counts, balance, skipped files, leakage between splits, sizes, channels and pixel statistics."""
    names = ds.class_names
    counts = {
        s: {c: int((part.labels == i).sum()) for i, c in enumerate(names)} for s, part in ds.splits.items()
    }
    totals = {c: sum(counts[s][c] for s in counts) for c in names}
    nonzero = [v for v in totals.values() if v]
    ratio = float(max(nonzero) / min(nonzero)) if nonzero else 0.0
    across, within = _duplicates(ds)
    sizes, channel_dist, modes, formats = _size_channel_stats(ds)
    warnings = _warnings(ds, counts, totals, ratio, across)
    return HealthReport(
        name=ds.name,
        source=ds.source,
        class_names=list(names),
        num_classes=len(names),
        channels=ds.channels,
        total_images=ds.total_images,
        split_sizes={s: len(p) for s, p in ds.splits.items()},
        counts=counts,
        class_totals=totals,
        imbalance_ratio=round(ratio, 3),
        warnings=warnings,
        skipped=[asdict(s) for s in ds.skipped],
        num_skipped=len(ds.skipped),
        duplicates_across_splits=across[:100],
        num_duplicates_across_splits=len(across),
        duplicates_within_splits=within,
        sizes=sizes,
        channel_distribution=channel_dist,
        mode_distribution=modes,
        format_distribution=formats,
        pixel_stats=pixel_stats(ds),
        split_hash=ds.split_hash,
        native_size=list(ds.native_size) if ds.native_size else None,
        notes=list(ds.notes),
    )


def _duplicates(ds: Dataset) -> tuple[list[dict[str, Any]], int]:
    """Groups of identical pictures found in more than one split, and the extra copies within splits."""
    where: dict[str, list[tuple[str, int]]] = defaultdict(list)
    hashes = {s: _image_hashes(part) for s, part in ds.splits.items()}
    for s, hs in hashes.items():
        for i, h in enumerate(hs):
            where[h].append((s, i))
    across, within = [], 0
    for h, items in where.items():
        if len(items) < 2:
            continue
        per_split = Counter(s for s, _ in items)
        within += sum(n - 1 for n in per_split.values())
        if len(per_split) > 1:
            across.append({
                "hash": h,
                "items": [
                    {"split": s, "file": _display(ds, s, i), "label": ds.class_names[int(ds.splits[s].labels[i])]}
                    for s, i in items
                ],
            })
    across.sort(key=lambda g: [(i["split"], i["file"]) for i in g["items"]])
    return across, within


def _display(ds: Dataset, split_name: str, i: int) -> str:
    part = ds.splits[split_name]
    return ds.relative(part.files[i]) if part.files is not None else f"#{i}"


def _size_channel_stats(ds: Dataset) -> tuple[dict[str, Any], dict[str, int], dict[str, int], dict[str, int]]:
    size_counts: Counter[tuple[int, int]] = Counter()
    channel_dist: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    for part in ds.splits.values():
        if part.images is not None:
            n = len(part)
            if n:
                h, w = int(part.images.shape[1]), int(part.images.shape[2])
                c = 1 if part.images.ndim == 3 else int(part.images.shape[3])
                size_counts[(h, w)] += n
                channel_dist["gray" if c == 1 else "color"] += n
                modes["array"] += n
                formats["array"] += n
            continue
        for info in part.info or []:
            size_counts[(info.height, info.width)] += 1
            channel_dist["gray" if info.channels == 1 else "color"] += 1
            modes[info.mode] += 1
            formats[info.format or "?"] += 1
    if size_counts:
        heights = np.repeat([s[0] for s in size_counts], list(size_counts.values()))
        widths = np.repeat([s[1] for s in size_counts], list(size_counts.values()))
        sizes = {
            "min": [int(heights.min()), int(widths.min())],
            "max": [int(heights.max()), int(widths.max())],
            "median": [int(np.median(heights)), int(np.median(widths))],
            "distinct": len(size_counts),
            "top": [{"size": f"{w}x{h}", "count": n} for (h, w), n in size_counts.most_common(10)],
        }
    else:
        sizes = {"min": None, "max": None, "median": None, "distinct": 0, "top": []}
    return sizes, dict(channel_dist), dict(modes), dict(formats)


def pixel_stats(ds: Dataset, sample: int = _STATS_SAMPLE, seed: int = 0) -> dict[str, Any]:
    """Per-channel mean/std and a 32-bin histogram over a seeded sample of decoded images (0..255)."""
    refs = [(s, i) for s, part in ds.splits.items() for i in range(len(part))]
    names = ["gray"] if ds.channels == 1 else ["red", "green", "blue"]
    edges = np.linspace(0, 256, _HIST_BINS + 1)
    if not refs:
        return {"sample": 0, "channel_names": names, "mean": [], "std": [], "histogram": {"bin_edges": edges.tolist(), "counts": []}}
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(refs), size=min(sample, len(refs)), replace=False)
    total = np.zeros(ds.channels)
    total_sq = np.zeros(ds.channels)
    pixels = 0
    hist = np.zeros((ds.channels, _HIST_BINS), dtype=np.int64)
    used = 0
    for k in sorted(pick.tolist()):
        s, i = refs[k]
        try:
            img = _as_channels(ds.splits[s].image(i), ds.channels)
        except ImageDecodeError:
            continue
        if max(img.shape[:2]) > 256:  # statistics do not need full-size photos
            scale = 256 / max(img.shape[:2])
            img = resize_image(img, (max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))))
        flat = img.reshape(-1, ds.channels).astype(np.float64)
        total += flat.sum(axis=0)
        total_sq += (flat**2).sum(axis=0)
        pixels += flat.shape[0]
        for ch in range(ds.channels):
            hist[ch] += np.bincount(img[..., ch].reshape(-1) >> 3, minlength=_HIST_BINS)[:_HIST_BINS]
        used += 1
    mean = total / max(pixels, 1)
    std = np.sqrt(np.maximum(total_sq / max(pixels, 1) - mean**2, 0))
    return {
        "sample": used,
        "channel_names": names,
        "mean": [round(float(m), 3) for m in mean],
        "std": [round(float(s), 3) for s in std],
        "histogram": {"bin_edges": edges.tolist(), "counts": hist.tolist()},
    }


def _as_channels(img: np.ndarray, channels: int) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=2)
    return np.rint(img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)[:, :, None]


def _warnings(ds: Dataset, counts: dict[str, dict[str, int]], totals: dict[str, int], ratio: float,
              across: list[dict[str, Any]]) -> list[str]:
    out = []
    if ratio >= 1.5 and totals:
        big = max(totals, key=totals.get)  # type: ignore[arg-type]
        small = min(totals, key=totals.get)  # type: ignore[arg-type]
        out.append(
            f"The classes are imbalanced: '{big}' has {totals[big]} images and '{small}' only {totals[small]} "
            f"({ratio:.1f} to 1); accuracy can look good while '{small}' is missed - consider class weights "
            "or more images."
        )
    few = [c for c, n in totals.items() if n < 10]
    if few:
        out.append(f"Very few images (under 10) in: {', '.join(few)}; expect unreliable results for them.")
    for s in ("val", "test"):
        if s in counts and sum(counts[s].values()) == 0:
            out.append(f"The {'validation' if s == 'val' else 'test'} split is empty.")
        elif s in counts:
            absent = [c for c, n in counts[s].items() if n == 0]
            if absent:
                label = "validation" if s == "val" else "test"
                out.append(f"The {label} split has no images of: {', '.join(absent)}.")
    if across:
        out.append(
            f"{len(across)} picture(s) appear in more than one split (leakage): test scores will look better "
            "than they are; remove the copies."
        )
    if ds.skipped:
        out.append(f"{len(ds.skipped)} file(s) were skipped because they could not be used (see the list).")
    return out
