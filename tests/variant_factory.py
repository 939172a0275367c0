"""Augmented-export datasets built from real photos: 2-3 variants of each source photo, with the truth kept.

A labelling tool's export holds several augmented variants of every source photo (flipped, turned,
cropped, brighter or darker, blurred, noisy, re-encoded, resized) and usually not the original. This
builds such a folder from real photos so the near-copy check can be measured against known groups.
Seeded: equal arguments, equal files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


@dataclass
class VariantSet:
    """Where the export was written and which files came from which source photo."""

    root: Path
    groups: list[list[str]]      # per source photo: its variants' paths relative to root
    held_back: Path | None       # a class-folder set of other source photos (their variants), never in root

    def pairs(self) -> set[frozenset[str]]:
        """Every true near-copy pair (two variants of one source photo)."""
        out = set()
        for g in self.groups:
            out |= {frozenset((a, b)) for i, a in enumerate(g) for b in g[i + 1:]}
        return out


def _geometric(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    choice = rng.integers(0, 5)
    if choice == 0:
        return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if choice == 1:
        return im.transpose(Image.Transpose.ROTATE_90 if rng.random() < 0.5 else Image.Transpose.ROTATE_270)
    if choice == 2:
        return im.transpose(Image.Transpose.ROTATE_180)
    if choice == 3:
        w, h = im.size
        keep = rng.uniform(0.8, 0.95)
        cw, ch = int(w * keep), int(h * keep)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return im.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR)
    return im.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)


def _photometric(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    choice = rng.integers(0, 6)
    if choice == 0:
        return ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.65, 1.35)))
    if choice == 1:
        return ImageEnhance.Contrast(im).enhance(float(rng.uniform(0.6, 1.4)))
    if choice == 2:
        gamma = float(rng.uniform(0.6, 1.6))  # exposure
        lut = [min(255, int(255 * (i / 255) ** gamma + 0.5)) for i in range(256)] * len(im.getbands())
        return im.point(lut)
    if choice == 3:
        return im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.5))))
    if choice == 4:
        arr = np.asarray(im).astype(np.float32)
        arr += rng.normal(0, rng.uniform(6, 14), arr.shape)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    scale = float(rng.uniform(0.6, 1.5))
    w, h = im.size
    return im.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.Resampling.BILINEAR)


def make_variant(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One export variant: a geometric change and one or two photometric ones."""
    out = _geometric(im.convert("RGB"), rng)
    for _ in range(int(rng.integers(1, 3))):
        out = _photometric(out, rng)
    return out


def _save(im: Image.Image, path: Path, rng: np.random.Generator) -> None:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(45, 92)))  # re-encoded at the tool's quality
    path.write_bytes(buf.getvalue())


def _sources(src: Path, per_class: int, skip: int, rng: np.random.Generator) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
        files = [files[i] for i in np.random.default_rng([7, len(files)]).permutation(len(files))]
        picked = [f for f in files[skip:skip + per_class] if f.stat().st_size < 2_000_000]
        out[d.name] = picked
    return out


def _write(sources: dict[str, list[Path]], root: Path, rng: np.random.Generator) -> list[list[str]]:
    groups = []
    for cls, files in sources.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k, f in enumerate(files):
            im = Image.open(f)
            im.load()
            members = []
            for v in range(int(rng.integers(2, 4))):
                rel = f"{cls}/{f.stem}_{k}_v{v}.jpg"
                _save(make_variant(im, rng), root / rel, rng)
                members.append(rel)
            groups.append(members)
    return groups


def make_variant_export(src: Path, out: Path, *, per_class: int = 30, held_back_per_class: int = 0,
                        seed: int = 0, first: int = 0) -> VariantSet:
    """Variants of ``per_class`` source photos a class under ``out/export``; optionally a held-back set.

    Sources are taken from a fixed shuffle of each class, from position ``first`` on, so sets built
    with different ``first`` share no source photo.
    """
    rng = np.random.default_rng(seed)
    picked = _sources(src, per_class + held_back_per_class, first, rng)
    export = out / "export"
    groups = _write({c: f[:per_class] for c, f in picked.items()}, export, rng)
    held = None
    if held_back_per_class:
        held = out / "held_back"
        _write({c: f[per_class:] for c, f in picked.items()}, held, rng)
    return VariantSet(export, groups, held)


def scene(seed: int, size: int = 96) -> Image.Image:
    """A seeded picture with enough shapes and texture for local features (no two seeds alike)."""
    from tests.data_factory import make_scene

    return Image.fromarray(make_scene(seed, size))


def make_copied_splits(root: Path, *, classes: int = 2, train: int = 12, test: int = 6, copied: int = 3,
                      seed: int = 0) -> tuple[Path, list[tuple[str, str]]]:
    """``root/train/<class>/`` and ``root/test/<class>/`` scenes; ``copied`` test pictures a class are
    variants of training pictures. Returns the folder and the (train file, test file) copy pairs."""
    rng = np.random.default_rng([seed, 99])
    pairs = []
    for k in range(classes):
        name = f"c{k}"
        for split in ("train", "test"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(train):
            scene(seed * 100_000 + k * 1000 + i).save(root / "train" / name / f"{name}_{i}.png")
        for i in range(test):
            rel = f"test/{name}/{name}_t{i}.jpg"
            if i < copied:
                src = f"train/{name}/{name}_{i}.png"
                _save(make_variant(Image.open(root / src), rng), root / rel, rng)
                pairs.append((src, rel))
            else:
                scene(seed * 100_000 + k * 1000 + 500 + i).convert("RGB").save(root / rel, quality=90)
    return root, pairs


def split_export(variants: VariantSet, out: Path, every: int = 3) -> Path:
    """The export as ``out/train`` and ``out/test`` class folders, as a user who split it by hand would.

    Of every ``every`` photos, one has all its variants in test (a fair test picture) and one only its last
    variant (a test picture with near-copies in training); the rest are in train.
    """
    for k, group in enumerate(variants.groups):
        for j, rel in enumerate(group):
            leaked = k % every == 0 and j == len(group) - 1
            split = "test" if leaked or k % every == 1 else "train"
            target = out / split / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((variants.root / rel).read_bytes())
    return out
