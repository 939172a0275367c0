"""The health report: what a person should know about a dataset before training on it.

Counts per class and split, balance, skipped files, copies of one picture in two splits (leakage),
near-copy groups (the same photo flipped, cropped, re-exposed...), sizes, colour modes and pixel
statistics; ``to_text`` for the command line, ``to_dict`` for pages.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.data.dataset import SPLIT_NAMES, Dataset, image_hashes
from core.data.images import ImageDecodeError, resize_image
from core.data.layouts import layout_lines
from core.data.pixels import to_channels
from core.data.splits import item_keys

_STATS_SAMPLE = 256
_HIST_BINS = 32


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
    near_copies: dict[str, Any]                # every near-copy group, and how many cross into val/test
    sizes: dict[str, Any]                      # min/max/median (height, width) and the commonest sizes
    channel_distribution: dict[str, int]       # "gray"/"color" counts of the source images
    mode_distribution: dict[str, int]          # Pillow modes (L, RGB, RGBA, P, ...) or "array"
    format_distribution: dict[str, int]
    pixel_stats: dict[str, Any]                # per-channel mean/std and a histogram over a sample
    split_hash: str
    native_size: list[int] | None
    notes: list[str]
    layout: dict[str, Any] | None = None       # folders: which folder was taken for which split, why, choices

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
        lines += layout_lines(self.layout)
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
        nc = self.near_copies
        lines.append(f"near-copy groups: {nc['num_groups']} ({nc['num_pictures']} pictures); "
                     f"validation pictures copying training ones: {nc['val_in_train']}, test: {nc['test_in_train']}")
        for group in nc["groups"][:10]:
            lines.append("  " + " ~ ".join(f"{i['split']}:{i['file']}" for i in group["items"]))
        if nc["num_groups"] > 10:
            lines.append(f"  ... and {nc['num_groups'] - 10} more (all of them in --json)")
        lines.append(f"duplicates across splits: {self.num_duplicates_across_splits}")
        for group in self.duplicates_across_splits[:10]:
            lines.append("  " + " = ".join(f"{i['split']}:{i['file']}" for i in group["items"]))
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines.append(f"split hash {self.split_hash[:16]}")
        return "\n".join(lines)



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
    copies = near_copy_groups(ds)
    sizes, channel_dist, modes, formats = _size_channel_stats(ds)
    warnings = _warnings(ds, counts, totals, ratio, across, copies)
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
        near_copies=copies,
        sizes=sizes,
        channel_distribution=channel_dist,
        mode_distribution=modes,
        format_distribution=formats,
        pixel_stats=pixel_stats(ds),
        split_hash=ds.split_hash,
        native_size=list(ds.native_size) if ds.native_size else None,
        notes=list(ds.notes),
        layout=ds.layout,
    )


def _duplicates(ds: Dataset) -> tuple[list[dict[str, Any]], int]:
    """Groups of identical pictures found in more than one split, and the extra copies within splits."""
    where: dict[str, list[tuple[str, int]]] = defaultdict(list)
    hashes = {s: image_hashes(part) for s, part in ds.splits.items()}
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


def near_copy_groups(ds: Dataset) -> dict[str, Any]:
    """Every group of near-copies in the final splits, and how many val/test pictures copy a training one."""
    members: dict[str, list[tuple[str, int]]] = defaultdict(list)
    checked = False
    for s in SPLIT_NAMES:
        part = ds.splits.get(s)
        if part is None:
            continue
        checked = checked or part.files is not None
        for i, key in enumerate(item_keys(part)):
            members[ds.copy_units.get(key, key)].append((s, i))
    groups = []
    for items in members.values():
        if len(items) < 2:
            continue
        groups.append({
            "splits": sorted({s for s, _ in items}, key=SPLIT_NAMES.index),
            "items": [{"split": s, "file": _display(ds, s, i), "label": ds.class_names[int(ds.splits[s].labels[i])]}
                      for s, i in items],
        })
    groups.sort(key=lambda g: (-len(g["splits"]), [(i["split"], i["file"]) for i in g["items"]]))
    val_in, test_in = ds.copies_across.get("val", 0), ds.copies_across.get("test", 0)
    n_pictures = sum(len(g["items"]) for g in groups)
    return {
        "checked": checked,
        "method": "matched local features, verified by alignment" if checked else "identical pixels only",
        "num_groups": len(groups),
        "num_pictures": n_pictures,
        "val_in_train": val_in,
        "test_in_train": test_in,
        "groups": groups,
        "sentence": _near_copy_sentence(len(groups), n_pictures, val_in, test_in, ds.splits),
    }


def _near_copy_sentence(n_groups: int, n_pictures: int, val_in: int, test_in: int, splits: dict[str, Any]) -> str:
    if not n_groups:
        return "No near-copies: no picture is a flipped, cropped, re-exposed or re-encoded copy of another."
    head = (f"{n_groups} group(s) of near-copies ({n_pictures} pictures): the same photo flipped, turned, cropped, "
            "re-exposed or re-encoded.")
    leaks = [f"{n} of the {len(splits[s])} {label} pictures" for s, n, label in
             (("val", val_in, "validation"), ("test", test_in, "test")) if n and s in splits]
    if leaks:
        return (f"{head} {' and '.join(leaks)} are copies or near-copies of pictures the model "
                "trains or is tuned on (leakage), so those scores will look better than they are: set them aside.")
    return f"{head} Each group is kept inside one split, so validation and test are not flattered by them."


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
            img = to_channels(ds.splits[s].image(i), ds.channels)
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


def _warnings(ds: Dataset, counts: dict[str, dict[str, int]], totals: dict[str, int], ratio: float,
              across: list[dict[str, Any]], copies: dict[str, Any]) -> list[str]:
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
    if copies["val_in_train"] or copies["test_in_train"]:
        out.append(copies["sentence"])  # exact copies are near-copies too: one warning, not two
    elif across:
        out.append(
            f"{len(across)} picture(s) appear in more than one split (leakage): test scores will look better "
            "than they are; remove the copies."
        )
    if ds.skipped:
        out.append(f"{len(ds.skipped)} file(s) were skipped because they could not be used (see the list).")
    return out
