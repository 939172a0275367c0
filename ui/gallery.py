"""Images on the Evaluate, Compare and Classify pages: display sizes, thumbnails, grids, Grad-CAM overlays.

Shared by those three pages (pages/ must not import each other). Grad-CAM is ``core.explain.gradcam``'s:
one engine per model, shared with the live webcam (``gradcam_for``).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from core.data.pixels import to_channels
from core.errors import UserError

DISPLAY_SIDE = 160  # tiny dataset images (8-32 px) are enlarged to this with crisp pixels


def for_display(img: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """An image sized for the screen: small ones enlarged with visible pixels, big ones shrunk smoothly."""
    rgb = to_channels(img, 3)
    h, w = rgb.shape[:2]
    longest = max(h, w)
    if longest == side or longest == 0:
        return rgb
    scale = side / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.NEAREST if longest < side else Image.BOX
    return np.asarray(Image.fromarray(rgb).resize(size, resample))


def data_url(img: np.ndarray, side: int = 64) -> str:
    """A PNG data URL of the image at ``side`` pixels (for ``st.column_config.ImageColumn``)."""
    buf = io.BytesIO()
    Image.fromarray(for_display(img, side)).save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass(frozen=True)
class Tile:
    """One picture in a grid: the image (None when it cannot be shown) and its caption."""

    image: np.ndarray | None
    caption: str


def image_grid(tiles: Sequence[Tile], columns: int = 6) -> None:
    """Tiles in rows of ``columns``; a missing image shows its caption only."""
    for start in range(0, len(tiles), columns):
        cols = st.columns(columns)
        for col, tile in zip(cols, tiles[start : start + columns]):
            with col:
                if tile.image is None:
                    st.caption(f"(image unavailable) {tile.caption}")
                else:
                    st.image(for_display(tile.image), caption=tile.caption, width="stretch")


# ---------------------------------------------------------------- dataset images behind predictions


@st.cache_resource(show_spinner=False, max_entries=8)
def _file_rows(source: str, split_json: str, split_name: str, files: tuple[str, ...], _split: Any) -> list[int | None]:
    """Row of each prediction's image in the dataset split (cached per dataset, split and file list)."""
    from core.explain.comparison import file_index

    paths = getattr(_split, "files", None)
    names = paths if paths is not None else [_split.describe(i) for i in range(len(_split))]
    return file_index(files, [str(n) for n in names])


class SplitImages:
    """The images behind a run's predictions on one split; ``image(i)`` is None when the data is gone.

    The dataset is loaded on first use, so tabs that show no pictures never pay for it.
    """

    def __init__(self, config: Any, split_name: str, files: Sequence[str]) -> None:
        self._config, self._split_name, self._files = config, split_name, list(files)
        self._loaded = False
        self._error: str | None = None
        self._split: Any = None
        self._rows: list[int | None] = [None] * len(self._files)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from ui.engine import load_dataset_cached

        config, name = self._config, self._split_name
        try:
            dataset = load_dataset_cached(config.data, config.split)
            self._split = dataset.splits[name]
            self._rows = _file_rows(config.data, config.split.to_json(), name, tuple(self._files), self._split)
        except UserError as err:
            self._error = f"The images cannot be shown: {err}"
        except KeyError:
            self._error = f"The dataset has no '{name}' split any more, so the images cannot be shown."
        if self._error is None and self._rows and all(r is None for r in self._rows):
            self._error = "The dataset's images no longer match this run's saved predictions, so they cannot be shown."

    @property
    def error(self) -> str | None:
        self._load()
        return self._error

    @property
    def available(self) -> bool:
        self._load()
        return self._split is not None and self._error is None

    def image(self, i: int) -> np.ndarray | None:
        """The decoded image of prediction row ``i`` (None when unavailable)."""
        self._load()
        row = self._rows[i] if 0 <= i < len(self._rows) else None
        if row is None or self._split is None:
            return None
        try:
            return self._split.image(row)
        except (UserError, OSError):
            return None


# ---------------------------------------------------------------- Grad-CAM


def gradcam_controls(key: str, default_on: bool = False) -> tuple[bool, float]:
    """The 'Grad-CAM' toggle and its opacity slider."""
    cols = st.columns([1, 2])
    on = cols[0].toggle(
        "Grad-CAM heat map", value=default_on, key=f"{key}_gradcam",
        help="Colours the regions of the image that pushed the model towards its answer (red = most).",
    )
    alpha = cols[1].slider("Heat-map opacity", 0.0, 1.0, 0.45, 0.05, key=f"{key}_alpha", disabled=not on)
    return on, float(alpha)


def gradcam_image(predictor: Any, image: np.ndarray, class_index: int | None, alpha: float,
                  side: int = DISPLAY_SIDE, seen: np.ndarray | None = None) -> np.ndarray:
    """The image with the Grad-CAM map of ``class_index`` (predicted class if None) blended on top.

    ``seen``: the model input the answer came from, when the shown ``image`` is a display copy.
    Raises ``UserError`` when the model cannot be explained (no convolutional layer).
    """
    from core.explain.gradcam import gradcam_for, overlay

    heat = gradcam_for(predictor.model).heatmap(image if seen is None else seen, class_index)
    return overlay(for_display(image, side), heat, alpha)


def gradcam_tiles(predictor: Any, tiles: Sequence[Tile], classes: Sequence[int | None], alpha: float) -> list[Tile]:
    """The same tiles with Grad-CAM blended in (one batched gradient pass); tiles without images stay."""
    from core.explain.gradcam import gradcam_for, overlay

    engine = gradcam_for(predictor.model)
    todo = [i for i, t in enumerate(tiles) if t.image is not None]
    if not todo:
        return list(tiles)
    heats = engine.heatmaps([tiles[i].image for i in todo], [classes[i] for i in todo])
    out = list(tiles)
    for i, heat in zip(todo, heats):
        out[i] = Tile(overlay(for_display(tiles[i].image), heat, alpha), tiles[i].caption)
    return out
