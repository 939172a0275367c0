"""Generated shapes (circle, square, star...): an offline dataset a tiny CNN learns in seconds."""

from __future__ import annotations

import numpy as np

from core.data.dataset import Pool, array_pool
from core.errors import UserError

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


def load_shapes(params: dict[str, str]) -> Pool:
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
    pool = array_pool("shapes", names, {"all": (images, labels)})
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
