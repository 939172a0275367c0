"""The data model every other part of CNN Lab reads: a dataset's splits, its classes and what was skipped."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.data.images import ImageInfo, decode_image, verify_image

SPLIT_NAMES = ("train", "val", "test")

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
    copy_units: dict[str, str] = field(default_factory=dict)   # item key -> its near-copy group's key
    copies_across: dict[str, int] = field(default_factory=dict)  # val/test pictures that copy a training one
    layout: dict[str, Any] | None = None        # how a folder's sub-folders were read (core.data.layouts)
    origins: dict[str, str] = field(default_factory=dict)      # "val"/"test": a core.data.splits.ORIGINS key
    copies_set_aside: int = 0                   # val/test copies of earlier pictures set aside (drop_duplicates)

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



@dataclass
class Pool:
    """A source before splitting: the splits it came with ('all' when none) and what was skipped."""

    name: str
    class_names: list[str]
    channels: int
    parts: dict[str, Split]
    skipped: list[SkippedFile] = field(default_factory=list)
    root: str | None = None
    notes: list[str] = field(default_factory=list)
    layout: dict[str, Any] | None = None  # folders and zips: which folder was taken for what, and why



def image_hashes(part: Split) -> list[str]:
    if part.hashes is not None:
        return list(part.hashes)
    if part.images is None:
        return [verify_image(f)[1] for f in part.files or []]
    return [hashlib.sha1(img.tobytes()).hexdigest() for img in part.images]


def array_pool(name: str, class_names: list[str], parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> Pool:
    """A pool of in-memory images (built-in sources), with the content hashes duplicates and split hashes use."""
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
    return Pool(name, class_names, channels, splits)
