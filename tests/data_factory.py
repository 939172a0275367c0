"""Tiny generated image datasets for tests: class folders, split folders, flat folders, zips, bad files.

Every image of class k is a noisy patch around a class colour (distinct images, no duplicates), so
even a tiny model can tell the classes apart. Everything is seeded: equal arguments, equal bytes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

PALETTE = [
    (220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 200, 40),
    (160, 50, 200), (40, 200, 210), (240, 130, 30), (120, 120, 120),
]


def class_color(k: int) -> tuple[int, int, int]:
    """The base colour of class number ``k``."""
    return PALETTE[k % len(PALETTE)]


def make_array(k: int, size: int = 16, rng: np.random.Generator | None = None, noise: int = 20) -> np.ndarray:
    """A uint8 RGB image of class ``k``: its colour plus seeded noise."""
    rng = rng or np.random.default_rng(k)
    base = np.array(class_color(k), dtype=np.int16)
    img = base + rng.integers(-noise, noise + 1, size=(size, size, 3))
    return img.clip(0, 255).astype(np.uint8)


def make_scene(seed: int, size: int = 64, shapes: int = 16) -> np.ndarray:
    """A uint8 RGB picture of seeded coloured boxes and ellipses: enough structure for the near-copy check.

    Noise patches have no distinctive spots to match, so near-copy tests flip or crop these instead.
    """
    from PIL import ImageDraw

    rng = np.random.default_rng([seed, 31])
    im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(shapes):
        x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
        w, h = (int(v) for v in rng.integers(6, size // 2, 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=fill)
    return np.asarray(im)


def make_scene_splits(root: Path | str, per_split: dict[str, int], classes: Iterable[str] = ("a", "b"),
                      size: int = 64) -> Path:
    """``root/<split>/<class>/<class>_<i>.png`` of distinct scenes (no two are near-copies of each other)."""
    root = Path(root)
    seed = 0
    for split, n in per_split.items():
        for name in classes:
            for i in range(n):
                save_image(make_scene(seed, size), root / split / name / f"{name}_{i:03d}.png")
                seed += 1
    return root


def save_image(arr: np.ndarray, path: Path | str, **save_kwargs) -> Path:
    """Write ``arr`` with the format given by the file extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if arr.ndim == 2 or arr.shape[-1] == 1 else None
    im = Image.fromarray(arr.squeeze() if mode else arr, mode=mode) if mode else Image.fromarray(arr)
    im.save(path, **save_kwargs)
    return path


def make_class_folder(
    root: Path | str,
    classes: Iterable[str] = ("a", "b"),
    per_class: int | dict[str, int] = 6,
    size: int = 16,
    seed: int = 0,
    ext: str = ".png",
) -> Path:
    """``root/<class>/<class>_<i>.<ext>``; ``per_class`` may give a count for each class."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        n = per_class[name] if isinstance(per_class, dict) else per_class
        for i in range(n):
            save_image(make_array(k, size, rng), root / name / f"{name}_{i:03d}{ext}")
    return root


def make_split_folders(
    root: Path | str,
    classes: Iterable[str] = ("a", "b"),
    per_split: dict[str, int] | None = None,
    size: int = 16,
    seed: int = 0,
    flat_splits: Iterable[str] = (),
    ext: str = ".png",
) -> Path:
    """``root/<split>/<class>/*``; splits named in ``flat_splits`` hold ``<class>.<i>.<ext>`` files instead."""
    root = Path(root)
    classes = list(classes)
    per_split = per_split or {"train": 6, "val": 2, "test": 2}
    flat = set(flat_splits)
    for s_index, (split, n) in enumerate(per_split.items()):
        rng = np.random.default_rng([seed, s_index])
        for k, name in enumerate(classes):
            for i in range(n):
                target = root / split / (f"{name}.{i:03d}{ext}" if split in flat else f"{name}/{name}_{i:03d}{ext}")
                save_image(make_array(k, size, rng), target)
    return root


def make_flat_folder(
    root: Path | str,
    classes: Iterable[str] = ("rock", "paper"),
    per_class: int = 4,
    size: int = 16,
    seed: int = 0,
    pattern: str = "{cls}{i:02d}-000{ext}",
    ext: str = ".png",
) -> Path:
    """One folder whose file names carry the class, e.g. ``rock01-000.png``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        for i in range(per_class):
            save_image(make_array(k, size, rng), root / pattern.format(cls=name, i=i, ext=ext))
    return root


def make_zip(folder: Path | str, zip_path: Path | str, prefix: str = "") -> Path:
    """Zip every file under ``folder`` (names relative to it, under ``prefix`` if given)."""
    folder, zip_path = Path(folder), Path(zip_path)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
    return zip_path


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG-encoded bytes of ``arr``."""
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def plant_bad_files(folder: Path | str, size: int = 16) -> dict[str, str]:
    """Write one bad file of each kind into ``folder``; returns file name -> a word its skip reason contains."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = make_array(0, size, np.random.default_rng(99))
    jpeg = folder / "_tmp_good.jpg"
    save_image(good, jpeg, quality=90)
    jpeg_bytes = jpeg.read_bytes()
    jpeg.unlink()
    png = png_bytes(good)
    planted = {
        "zero_bytes.png": (b"", "empty"),
        "truncated.jpg": (jpeg_bytes[: len(jpeg_bytes) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "corrupt.png": (_corrupt_png(png), "damaged"),
        "text_named.png": (b"this is not an image at all\n" * 4, "not an image"),
        "notes.txt": (b"some notes", "not an image file type"),
    }
    for name, (data, _) in planted.items():
        (folder / name).write_bytes(data)
    return {name: word for name, (_, word) in planted.items()}


def _corrupt_png(png: bytes) -> bytes:
    """A PNG whose compressed pixel data is scrambled (its checksum no longer matches)."""
    start = png.index(b"IDAT") + 4
    scrambled = bytes(b ^ 0x5A for b in png[start + 2: start + 40])
    return png[: start + 2] + scrambled + png[start + 40:]
