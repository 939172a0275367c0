"""Near-copies: the same photo flipped, turned, cropped, brighter or darker, blurred, noisy or re-encoded.

Labelling tools export several augmented variants of every source photo; a random split then puts
variants of one photo on both sides and validation accuracy flatters the model. Global descriptors
(perceptual hashes, pooled CNN features, small thumbnails) miss most such variants on photos that
look alike (hands on similar walls), so the check matches local features, as near-duplicate search
does:

1. SIFT keypoints of each picture and of its mirror image (RootSIFT descriptors), at most 160 px;
2. every descriptor votes for the pictures holding its nearest neighbours (one FLANN index over all):
   two or more votes make a candidate pair;
3. each candidate is verified: a RANSAC similarity transform (turn, scale, shift, optional mirror)
   must map one onto the other, and after that warp the blurred grey pictures must correlate
   (normalised cross-correlation >= ``NCC_MIN``: brightness and contrast changes do not matter).

Pictures with identical pixels are always grouped. Results are cached on disk by the files' paths,
sizes and modification times, so a page never recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.data.images import ImageDecodeError, decode_image
from core.store.files import atomic_write_json

METHOD = "sift-ransac-ncc-1"   # part of the cache key: bump when the numerics change
SIDE = 160                     # longest side the pictures are compared at
KEYPOINTS = 150
RATIO = 0.8                    # Lowe's ratio test
MIN_VOTES = 2
MIN_INLIERS = 5
NCC_MIN = 0.92
RANSAC_PX = 3.0
_WORKERS = 4
_MEMORY: dict[str, list[list[str]]] = {}
# A mirror image's SIFT descriptor is the original's with its 4x4 cell rows reversed and its 8
# orientation bins negated (checked against SIFT run on mirrored pictures), so no second SIFT pass.
_MIRROR = np.arange(128).reshape(4, 4, 8)[::-1][:, :, (-np.arange(8)) % 8].reshape(-1)
_LOCK = threading.Lock()


@dataclass
class _Features:
    gray: np.ndarray | None                       # float32, longest side SIDE
    views: list[tuple[np.ndarray, np.ndarray]]    # (points, RootSIFT descriptors) of the picture and of its mirror


def _cv2():
    import cv2  # imported late: the data model must load without OpenCV's start-up cost
    return cv2


def _prepare(image: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    gray = image[..., 0] if image.ndim == 3 else image
    h, w = gray.shape[:2]
    scale = min(SIDE / max(h, w), 4.0)  # tiny pictures carry no more detail when blown up further
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(gray), size, interpolation=interp)


def _features(load: Callable[[], np.ndarray]) -> _Features:
    cv2 = _cv2()
    try:
        gray = _prepare(load())
    except (ImageDecodeError, OSError, ValueError):
        return _Features(None, [])
    keys, desc = cv2.SIFT_create(nfeatures=KEYPOINTS).detectAndCompute(gray, None)
    if desc is None or len(keys) < 2:
        return _Features(gray.astype(np.float32), [])
    desc = np.sqrt(desc / (desc.sum(axis=1, keepdims=True) + 1e-7)).astype(np.float32)  # RootSIFT
    points = np.float32([k.pt for k in keys])
    mirrored = points.copy()
    mirrored[:, 0] = gray.shape[1] - 1 - points[:, 0]
    views = [(points, desc), (mirrored, np.ascontiguousarray(desc[:, _MIRROR]))]
    return _Features(gray.astype(np.float32), views)


def _candidates(feats: list[_Features]) -> set[tuple[int, int]]:
    """Pairs of pictures that share at least MIN_VOTES distinctive descriptor matches (either mirror)."""
    cv2 = _cv2()
    descs, owner, is_query = [], [], []
    for i, f in enumerate(feats):
        for v, (_, d) in enumerate(f.views):
            descs.append(d)
            owner.append(np.full(len(d), i))
            is_query.append(np.full(len(d), v == 0))
    if not descs:
        return set()
    all_d = np.concatenate(descs)
    own = np.concatenate(owner)
    query = np.concatenate(is_query)
    if len(all_d) < 8:
        return set()
    matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 32})
    k = min(6, len(all_d))
    matches = matcher.knnMatch(all_d[query], all_d, k=k)
    q_owner = own[query]
    votes: dict[tuple[int, int], int] = defaultdict(int)
    for a, ms in zip(q_owner.tolist(), matches):
        others = [m for m in ms if own[m.trainIdx] != a]
        if len(others) < 2:
            continue
        ref = others[-1].distance  # the farthest of the near ones stands in for "another picture"
        seen = set()
        for m in others[:-1]:
            b = int(own[m.trainIdx])
            if b not in seen and m.distance < RATIO * ref:
                seen.add(b)
                votes[(min(a, b), max(a, b))] += 1
    return {pair for pair, n in votes.items() if n >= MIN_VOTES}


def _same_photo(fa: _Features, fb: _Features) -> bool:
    """A similarity transform (maybe mirrored) maps b onto a and the warped pictures correlate."""
    cv2 = _cv2()
    if fa.gray is None or fb.gray is None or not fa.views or not fb.views:
        return False
    pa, da = fa.views[0]
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    for mirror, (pb, db) in enumerate(fb.views):
        if len(db) < 2:
            continue
        good = [m[0] for m in matcher.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
        if len(good) < 4:
            continue
        src = pb[[m.trainIdx for m in good]]
        dst = pa[[m.queryIdx for m in good]]
        transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX)
        if transform is None or int(mask.sum()) < MIN_INLIERS:
            continue
        scale = float(np.hypot(transform[0, 0], transform[0, 1]))
        if not 0.6 < scale < 1.7:
            continue
        if _warped_ncc(fa.gray, fb.gray[:, ::-1] if mirror else fb.gray, transform) >= NCC_MIN:
            return True
    return False


def _warped_ncc(a: np.ndarray, b: np.ndarray, transform: np.ndarray) -> float:
    cv2 = _cv2()
    h, w = a.shape
    warped = cv2.warpAffine(np.ascontiguousarray(b), transform, (w, h), flags=cv2.INTER_LINEAR)
    valid = cv2.warpAffine(np.ones(b.shape, np.float32), transform, (w, h), flags=cv2.INTER_NEAREST) > 0.5
    if valid.mean() < 0.4:
        return -1.0
    x = cv2.GaussianBlur(a, (0, 0), 2)[valid]
    y = cv2.GaussianBlur(warped, (0, 0), 2)[valid]
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 1e-6 else -1.0


def _union(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def find_groups(loaders: Sequence[Callable[[], np.ndarray]], hashes: Sequence[str] | None = None) -> list[list[int]]:
    """Groups (indices, each sorted, at least two) of pictures that are near-copies of one another."""
    n = len(loaders)
    pairs: list[tuple[int, int]] = []
    if hashes is not None:
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if h in first:
                pairs.append((first[h], i))
            else:
                first[h] = i
    if n >= 2:
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:  # OpenCV and Pillow release the GIL
            feats = list(pool.map(_features, loaders, chunksize=16))
        candidates = sorted(_candidates(feats))
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            verdicts = list(pool.map(lambda p: _same_photo(feats[p[0]], feats[p[1]]), candidates, chunksize=32))
        pairs += [p for p, same in zip(candidates, verdicts) if same]
    return _union(n, pairs)


def _fingerprint(files: Sequence[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(METHOD.encode())
    for f in sorted(files):
        try:
            st = os.stat(f)
            digest.update(f"{os.path.abspath(f)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{f}\tmissing\n".encode())
    return digest.hexdigest()


def file_groups(files: Sequence[str], hashes: Sequence[str] | None = None,
                cache_dir: Path | None = None) -> list[list[str]]:
    """Near-copy groups of image files (as path lists), from the disk cache when the files are unchanged."""
    key = _fingerprint(files)
    with _LOCK:
        hit = _MEMORY.get(key)
    path = cache_dir / f"{key}.json" if cache_dir is not None else None
    if hit is None and path is not None and path.is_file():
        try:
            hit = json.loads(path.read_text())["groups"]
        except (OSError, ValueError, KeyError):
            hit = None
    if hit is None:
        loaders = [lambda f=f: decode_image(f, channels=1, max_side=SIDE) for f in files]
        found = find_groups(loaders, hashes)
        hit = sorted(sorted(files[i] for i in g) for g in found)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(path, {"method": METHOD, "groups": hit})
            except OSError:
                pass  # a read-only or full disk only costs a recomputation next time
    with _LOCK:
        if len(_MEMORY) > 64:
            _MEMORY.clear()
        _MEMORY[key] = hit
    return [list(g) for g in hit]
