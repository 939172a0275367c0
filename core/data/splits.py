"""Seeded, stratified splits: train/val/test cut from what a source gave, limits, subsampling, label noise.

The same source, split settings and seed give the same split on any machine; ``split_hash`` is its
fingerprint (equal data + equal settings = equal hash), so runs can say whether they are comparable.
Splits are group-aware: the near-copies of one photo (``core.data.nearcopies``) always land in the
same split, so validation never scores the model on a variant of a picture it trained on.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from core.config import SplitConfig
from core.data.dataset import SPLIT_NAMES, Dataset, Pool, Split, image_hashes
from core.data.nearcopies import file_groups
from core.errors import UserError


def finalise(pool: Pool, source: str, cfg: SplitConfig, cache_dir: Path | None = None) -> Dataset:
    """Find near-copies, limit, split (keeping copies together), subsample, add label noise, fingerprint."""
    n_classes = len(pool.class_names)
    total = sum(len(p) for p in pool.parts.values())
    if total == 0:
        raise UserError(f"'{pool.name}' contains no usable images.")
    if n_classes < 2:
        only = f" (only '{pool.class_names[0]}')" if pool.class_names else ""
        raise UserError(f"'{pool.name}' has fewer than two classes{only}: a classifier needs at least two.")
    notes = list(pool.notes)
    parts = dict(pool.parts)
    units = _unit_keys(parts, cache_dir)  # always found and reported, even when the split ignores them
    split_units = units if cfg.group_near_copies else _unit_keys(parts, cache_dir, near=False)
    if cfg.limit_per_class is not None:
        parts = _limit_per_class(parts, cfg.limit_per_class, cfg.seed)
        notes.append(f"At most {cfg.limit_per_class} images per class are used.")
    origins: dict[str, str] = {}
    splits = _make_splits(parts, cfg, notes, split_units, origins)
    before = {name: len(part) for name, part in splits.items() if part is not None}
    if cfg.drop_duplicates:
        splits = _drop_leaked_copies(splits, units, notes)
    set_aside = sum(n - len(splits[name]) for name, n in before.items() if splits.get(name) is not None)
    copies = _copies_across(splits, units)
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
        layout=pool.layout,
        origins=origins,
        copies_set_aside=set_aside,
    )
    ds.copy_units = units
    ds.copies_across = copies
    ds.native_size = _native_size(ds)
    ds.split_hash = split_hash(ds)
    return ds


def item_keys(part: Split) -> list[str]:
    """What identifies each picture across subsets: its file path, or its pixel hash for in-memory images."""
    return list(part.files) if part.files is not None else image_hashes(part)


def _unit_keys(parts: dict[str, Split], cache_dir: Path | None, near: bool = True) -> dict[str, str]:
    """Item key -> the key of its near-copy group (``near``) or of its identical copies; others stand alone."""
    files: list[str] = []
    hashes: list[str] = []
    for part in parts.values():
        if part.files is not None:
            files += part.files
            hashes += image_hashes(part)
    if not files:
        return {}  # in-memory images: identical pixels share a key already
    if near:
        groups = file_groups(files, hashes, cache_dir)
    else:
        by_hash: dict[str, list[str]] = {}
        for f, h in zip(files, hashes):
            by_hash.setdefault(h, []).append(f)
        groups = [g for g in by_hash.values() if len(g) > 1]
    return {f: g[0] for g in groups for f in g}


def _units(part: Split, units: dict[str, str]) -> list[str]:
    return [units.get(k, k) for k in item_keys(part)]


def _make_splits(parts: dict[str, Split], cfg: SplitConfig, notes: list[str], units: dict[str, str],
                 origins: dict[str, str]) -> dict[str, Split]:
    """Train/val/test from what the source gave: split it all, or carve the missing split from train.

    ``origins`` gets where validation and test came from (the ``ORIGINS`` keys).
    """
    given = {k for k, v in parts.items() if len(v)}
    if "train" not in parts and "all" not in parts:
        raise UserError("The dataset has validation/test images but no training images (a 'train' folder).")
    if given <= {"all"} or given <= {"train"}:
        pool = parts.get("all") or parts["train"]
        tr, va, te = _stratified(pool.labels, cfg.val_fraction, cfg.test_fraction, cfg.seed, _units(pool, units))
        origins.update(val="random", test="random")
        return {"train": pool.subset(tr), "val": pool.subset(va), "test": pool.subset(te)}
    train = parts["train"]
    out = {"train": train, "val": parts.get("val"), "test": parts.get("test")}
    origins.update(val="source", test="source")
    if out["val"] is None or not len(out["val"]):
        tr, va, _ = _stratified(train.labels, cfg.val_fraction, 0.0, cfg.seed, _units(train, units))
        out["train"], out["val"] = train.subset(tr), train.subset(va)
        origins["val"] = "from_train"
        notes.append(f"The source has no validation split: {cfg.val_fraction:.0%} of its training images are used.")
    if out["test"] is None or not len(out["test"]):
        tr, te, _ = _stratified(out["train"].labels, cfg.test_fraction, 0.0, cfg.seed + 1, _units(out["train"], units))
        base = out["train"]
        out["train"], out["test"] = base.subset(tr), base.subset(te)
        origins["test"] = "from_train"
        notes.append(f"The source has no test split: {cfg.test_fraction:.0%} of its training images are used.")
    return out  # type: ignore[return-value]


def _copies_across(splits: dict[str, Split], units: dict[str, str]) -> dict[str, int]:
    """How many validation pictures copy a training one, and test pictures a training or validation one."""
    earlier: set[str] = set()
    out = {}
    for name in SPLIT_NAMES:
        if name not in splits:
            continue
        keys = _units(splits[name], units)
        if name != "train":
            out[name] = sum(k in earlier for k in keys)
        earlier.update(keys)
    return out


def _drop_leaked_copies(splits: dict[str, Split], units: dict[str, str], notes: list[str]) -> dict[str, Split]:
    """Set aside from val, then test, every picture that is a copy or near-copy of an earlier split's."""
    seen: set[str] = set()
    out = {}
    for name in SPLIT_NAMES:
        part = splits.get(name)
        if part is None:
            continue
        keys = _units(part, units)
        if name != "train":
            keep = [i for i, k in enumerate(keys) if k not in seen]
            removed = len(part) - len(keep)
            if removed:
                label = "validation" if name == "val" else "test"
                earlier = "training" if name == "val" else "training or validation"
                notes.append(f"{removed} of the {len(part)} {label} pictures were copies or near-copies of "
                             f"{earlier} pictures and were set aside: {label} scores are on the other {len(keep)}.")
                part = part.subset(keep)
        out[name] = part
        seen.update(keys)
    return out


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


def _stratified(labels: np.ndarray, val: float, test: float, seed: int,
                units: list[str] | None = None) -> tuple[np.ndarray, ...]:
    """Per-class seeded shuffles cut into train/val/test; each class keeps at least one training image.

    Items sharing a unit key (near-copies) move together: a group belongs to its commonest label's
    class and fills that class's test and validation shares whole. Without groups the cut is exactly
    the plain per-class one.
    """
    members: dict[str, list[int]] = {}
    for i, u in enumerate(units if units is not None else range(len(labels))):
        members.setdefault(str(u), []).append(i)
    home: dict[str, int] = {}
    for u, idx in members.items():
        counts = Counter(int(labels[i]) for i in idx)
        home[u] = min(counts, key=lambda c: (-counts[c], c))
    keys = units if units is not None else [str(i) for i in range(len(labels))]
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        order = np.random.default_rng([seed, int(c)]).permutation(idx)
        seen: set[str] = set()
        class_units = []
        for i in order.tolist():
            u = str(keys[i])
            if home[u] == int(c) and u not in seen:
                seen.add(u)
                class_units.append(members[u])
        n = len(idx)
        n_test, n_val = _round(n * test), _round(n * val)
        while n_test + n_val > n - 1 and (n_test or n_val):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        left = len(class_units)
        for target, bucket in ((n_test, 2), (n_val, 1)):
            taken = 0
            while taken < target and left > 1:
                left -= 1
                parts[bucket] += class_units[left]
                taken += len(class_units[left])
        for unit in class_units[:left]:
            parts[0] += unit
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


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


ORIGINS = {
    "random": "a seeded random share of all the pictures, the same share of every class",
    "source": "the dataset's own split (its own folder, or the set it comes with)",
    "from_train": "a seeded random share of the dataset's training pictures, the same share of every class",
}


def split_facts(ds: Dataset) -> dict[str, Any]:
    """The split a run used, as plain JSON: sizes, the split hash, where validation and test came from.

    ``{"sizes": {"train", "val", "test"}, "hash", "origin": {"val", "test"} (ORIGINS keys), "test_from_folder",
    "train_class_counts", "near_copies_in_val", "near_copies_in_test" (copies or near-copies of an earlier
    split's pictures left in that split), "near_copies_set_aside" (taken out of val/test by drop_duplicates)}``.
    """
    counts = np.bincount(ds.splits["train"].labels, minlength=len(ds.class_names)).tolist()
    return {
        "sizes": {name: len(ds.splits[name]) if ds.splits.get(name) is not None else 0 for name in SPLIT_NAMES},
        "hash": ds.split_hash,
        "origin": dict(ds.origins),
        "test_from_folder": ds.origins.get("test") == "source",
        "train_class_counts": [int(c) for c in counts],
        "near_copies_in_val": int(ds.copies_across.get("val", 0)),
        "near_copies_in_test": int(ds.copies_across.get("test", 0)),
        "near_copies_set_aside": int(ds.copies_set_aside),
    }


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
    return image_hashes(part)


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

