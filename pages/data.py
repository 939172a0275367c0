"""Data: pick a built-in or library dataset, upload a zip or point at a folder; check its health before training.

The choice (source + split settings) is remembered for the Train page (URL ``?data=`` and the tab's
state). Everything shown comes from ``core.data.health.health_report``; every number has a caption.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: see ui/__init__.py)

# isort: split

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.config import SplitConfig
from core.data.checks import copies_of_training, set_aside_notes
from core.data.sources import split_choice, with_choice
from core.errors import UserError
from core.plots.data import category_bars, pixel_histogram_chart, size_chart, split_counts_chart
from ui.common import (
    advanced,
    current_data_source,
    explain,
    metric_card,
    set_data_source,
    set_split,
    source_name,
    teacher_mode,
    user_errors,
)
from ui.data_checks import health_for, render_data_checks, set_aside_controls, with_set_aside
from ui.engine import home_dir, load_dataset_cached
from ui.library import library_picker, upload_to_library

MODES = ("Built-in", "Your datasets", "Upload a zip", "Folder or zip on this computer")
SAMPLES_PER_CLASS = 8
MAX_CLASSES_SHOWN = 10
THUMB_PX = 72
NEAR_COPY_PX = 104       # near-copies are compared by eye: a little larger than the class samples
NEAR_COPY_GROUPS = 6     # example groups drawn; the table lists them all
NEAR_COPY_PER_GROUP = 3  # half the page's width
SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


# ---------------------------------------------------------------- choosing a source


@st.cache_data(show_spinner=False)
def _builtins() -> list[dict[str, Any]]:
    """The built-in sources as plain dicts."""
    from core.data.builtin import list_builtin

    return [b.to_dict() for b in list_builtin()]


def source_picker() -> str | None:
    """The dataset source the user picked; None until there is one (e.g. nothing uploaded yet)."""
    current = current_data_source()
    default_mode = default_source_mode(current)
    mode = st.segmented_control("Where are the images?", MODES, default=default_mode, key="data_mode",
                                persist_state="session") or default_mode
    if mode == MODES[0]:
        return builtin_picker(current)
    if mode == MODES[1]:
        return library_picker(current)
    if mode == MODES[2]:
        return upload_to_library()
    path = st.text_input("Path of a folder (one subfolder per class) or of a .zip file",
                         value="" if default_mode != MODES[3] else split_choice(current)[0], key="data_path",
                         persist_state="session", placeholder="/home/me/pictures/bears")
    explain("Class folders may sit inside training / validation / test folders (training_set, Train, val... or any "
            "names holding the same classes); files that are not images are listed below.")
    return path.strip() or None


def builtin_picker(current: str) -> str:
    """A built-in dataset; builtin:shapes gets a few generator options."""
    infos = {f"builtin:{b['name']}": b for b in _builtins()}
    base = current.split("?", 1)[0]
    options = list(infos)
    choice = st.selectbox(
        "Built-in dataset", options, index=options.index(base) if base in infos else 0, key="data_builtin",
        format_func=lambda s: f"{infos[s]['name']} - {infos[s]['description']}", persist_state="session",
    )
    info = infos[choice]
    explain(f"{info['classes']} classes, {info['images']:,} images."
            + (" Downloaded once on first use (needs internet)." if info["needs_download"] else " Works offline."))
    if info["name"] != "shapes":
        return choice
    with advanced("Shape generator options"):
        cols = st.columns(3)
        classes = cols[0].slider("Classes", 2, 8, 4, key="data_shapes_classes", persist_state="session")
        per_class = cols[1].select_slider("Images per class", [20, 50, 100, 200, 400, 1000], 200,
                                          key="data_shapes_per_class", persist_state="session")
        size = cols[2].select_slider("Size (pixels)", [32, 48, 64, 96, 128], 64, key="data_shapes_size",
                                     persist_state="session")
    params = []
    if classes != 4:
        params.append(f"classes={classes}")
    if per_class != 200:
        params.append(f"per_class={per_class}")
    if size != 64:
        params.append(f"size={size}")
    return choice + ("?" + "&".join(params) if params else "")


def default_source_mode(current: str) -> str:
    """The mode that shows the current source: built-in, the library, or a path on this computer."""
    if current.startswith("builtin:"):
        return MODES[0]
    return MODES[1] if current.startswith("library:") else MODES[3]


def split_settings() -> SplitConfig:
    """Validation/test shares, seed and an optional cap per class; raises UserError for impossible ones."""
    split = SplitConfig()  # constant defaults: the widgets keep the user's values (persist_state)
    cols = st.columns(4)
    val = cols[0].slider("Validation %", 0, 50, int(round(split.val_fraction * 100)), 5, key="data_val",
                         persist_state="session", help="Images held back each epoch to check for overfitting.")
    test = cols[1].slider("Test %", 0, 50, int(round(split.test_fraction * 100)), 5, key="data_test",
                          persist_state="session", help="Images kept aside until the end for the final score.")
    seed = cols[2].number_input("Seed", 0, 2**31 - 1, split.seed, key="data_seed", persist_state="session",
                                help="The same seed always gives the same split.")
    limit = cols[3].number_input("Limit per class (0 = all)", 0, 100000, split.limit_per_class or 0, 10,
                                 key="data_limit", persist_state="session",
                                 help="Use at most this many images of each class: faster experiments.")
    explain(f"Training gets the remaining {100 - val - test}% of the images; the split is stratified, so every "
            "class keeps the same shares.")
    return SplitConfig(val_fraction=val / 100, test_fraction=test / 100, seed=int(seed),
                       limit_per_class=int(limit) or None)


# ---------------------------------------------------------------- how the folders were read

LAYOUT_CHOICES = "data_layout_choices"
ROLE_WORDS = {"train": "training", "val": "validation", "test": "test", "all": "divided into training, validation and test",
              "class": "a class", "left out": "left out"}


def with_layout_choice(picked: str) -> str:
    """The source to load: what was picked plus the reading chosen for its folders (this tab, else the URL)."""
    chosen = st.session_state.setdefault(LAYOUT_CHOICES, {})
    if picked not in chosen:
        base, choice = split_choice(current_data_source())
        chosen[picked] = choice if base == picked else {}
    return with_choice(picked, chosen[picked]) if chosen[picked] else picked


def _pick_layout(picked: str, key: str, choices: list[dict[str, Any]]) -> None:
    st.session_state.setdefault(LAYOUT_CHOICES, {})[picked] = dict(choices[st.session_state[key]]["params"])


def layout_section(report: dict[str, Any], picked: str) -> None:
    """Which folder was taken for what and why; a choice when the folders can be read two ways."""
    layout = report.get("layout")
    if not layout:
        return
    roles = "" if layout["kind"] == "classes" else " · ".join(
        f"{name}: {ROLE_WORDS.get(role, role)}" for name, role in layout["folders"].items())
    st.markdown(f"**How the folders were read.** {layout['reason']}")
    if roles:
        explain(roles)
    question = layout.get("ambiguous")
    if not question:
        return
    st.warning(question["sentence"], icon=":material/help:")
    choices = question["choices"]
    key = "data_layout_" + hashlib.sha1(picked.encode()).hexdigest()[:10]
    st.radio("How should these folders be read?", list(range(len(choices))),
             index=next((i for i, c in enumerate(choices) if c["current"]), 0),
             format_func=lambda i: choices[i]["label"], key=key, on_change=_pick_layout,
             args=(picked, key, choices))
    explain("The choice is remembered with the dataset, so every run trained on it reads the folders the same way.")


# ---------------------------------------------------------------- the health report


@st.cache_resource(show_spinner=False, max_entries=16)
def report_figures(home: str, source: str, split_json: str, teacher: bool) -> dict[str, Any]:
    """The health report's charts, built once per dataset, split and mode (the page redraws often)."""
    report = health_for(home, source, split_json)
    figures = {
        "counts": split_counts_chart(report["counts"], teacher_mode=teacher),
        "sizes": size_chart(report["sizes"].get("top", []), teacher_mode=teacher),
        "channels": category_bars(report["channel_distribution"], "Colour or grayscale", "kind",
                                        teacher_mode=teacher),
    }
    if (report.get("pixel_stats") or {}).get("mean"):
        figures["pixels"] = pixel_histogram_chart(report["pixel_stats"], teacher_mode=teacher)
    return figures


def overview(report: dict[str, Any]) -> None:
    """The headline numbers, each with its meaning."""
    sizes = report["split_sizes"]
    cols = st.columns(5)
    with cols[0]:
        metric_card("Classes", report["num_classes"], "Different labels the model will learn to tell apart.")
    with cols[1]:
        metric_card("Images", f"{report['total_images']:,}",
                    f"Usable images: {sizes.get('train', 0):,} training, {sizes.get('val', 0):,} validation, "
                    f"{sizes.get('test', 0):,} test.")
    with cols[2]:
        metric_card("Imbalance", f"{report['imbalance_ratio']:.2f} : 1",
                    "Largest class divided by the smallest; 1 : 1 is perfectly balanced, above 1.5 deserves care.")
    with cols[3]:
        metric_card("Skipped files", report["num_skipped"], "Files left out because they are not usable images.")
    with cols[4]:
        metric_card("Copies across splits", sum(copies_of_training(report).values()),
                    "Validation and test pictures that copy a training picture, even flipped or cropped: "
                    "scores on them look too good.")


def problems(report: dict[str, Any]) -> None:
    """Warnings, notes, skipped files with reasons (near-copies have their own section)."""
    near_sentence = (report.get("near_copies") or {}).get("sentence")
    warnings = [w for w in report["warnings"] if w != near_sentence]
    for warning in warnings:
        st.warning(warning)
    if not warnings and not sum(copies_of_training(report).values()):
        st.success("No problems found: the classes are balanced enough, no leakage, nothing skipped.",
                   icon=":material/check_circle:")
    for note in report["notes"]:
        st.caption(note)
    if report["skipped"]:
        with st.expander(f"Skipped files ({report['num_skipped']})", expanded=report["num_skipped"] <= 10):
            st.dataframe(pd.DataFrame(report["skipped"]), hide_index=True, width="stretch", key="data_skipped")
            explain("These files were left out; the reason says what is wrong with each.")
    if report["duplicates_within_splits"]:
        explain(f"{report['duplicates_within_splits']} extra copies of the same picture inside a split "
                "(harmless, but they count twice).")


def counts_section(report: dict[str, Any], figures: dict[str, Any]) -> None:
    """Images per class and split: a stacked bar chart and the table behind it."""
    st.plotly_chart(figures["counts"], key="data_counts", config={"displaylogo": False})
    explain("Each bar is one class; colours show how its images are shared between training, validation and test.",
            teacher="One bar per class: the taller, the more pictures. Similar heights mean a fair dataset.")
    with st.expander("Counts table"):
        table = pd.DataFrame(report["counts"]).reindex(report["class_names"]).fillna(0).astype(int)
        table["total"] = table.sum(axis=1)
        st.dataframe(table, width="stretch", key="data_counts_table")


def thumbnail(img: np.ndarray, side: int = THUMB_PX) -> bytes:
    """A PNG thumbnail: tiny images (digits are 8×8) upscaled with sharp pixels so they can be seen.

    Encoded once (the rows are cached) so a rerun does not re-encode dozens of arrays for st.image.
    """
    import io

    from PIL import Image

    arr = img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
    h, w = arr.shape[:2]
    scale = side / max(h, w)
    pil = Image.fromarray(arr)
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    buf = io.BytesIO()
    pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample).save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=8)
def sample_rows(home: str, source: str, split_json: str, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """For each class: its training-image count and a few decoded thumbnails with their names."""
    split = SplitConfig.from_json(split_json)
    dataset = load_dataset_cached(source, split)
    part = dataset.splits["train"] if len(dataset.splits["train"]) else next(iter(dataset.splits.values()))
    rng = np.random.default_rng(split.seed)
    rows = []
    for name in classes:
        label = dataset.class_names.index(name)
        idx = np.flatnonzero(part.labels == label)
        pick = np.sort(rng.choice(idx, size=min(SAMPLES_PER_CLASS, len(idx)), replace=False)) if len(idx) else []
        images, captions = [], []
        for i in pick:
            try:
                images.append(thumbnail(part.image(int(i))))
            except UserError:
                continue
            captions.append(dataset.relative(part.files[int(i)]) if part.files else f"#{int(i)}")
        rows.append({"name": name, "count": int(len(idx)), "images": images, "captions": captions})
    return rows


def samples_section(source: str, split: SplitConfig, class_names: list[str]) -> None:
    """A few training images of each class (pick which classes when there are many)."""
    shown = class_names
    if len(class_names) > MAX_CLASSES_SHOWN:
        shown = st.multiselect("Classes to show", class_names, default=class_names[:MAX_CLASSES_SHOWN],
                               key="data_sample_classes")
    for row in sample_rows(str(home_dir()), source, split.to_json(), tuple(shown)):
        if not row["images"]:
            continue
        cols = st.columns([1, 6], vertical_alignment="center")
        cols[0].markdown(f"**{row['name']}**  \n{row['count']} training images")
        cols[1].image(row["images"], caption=[c[-18:] for c in row["captions"]], width=THUMB_PX)
    explain("Random training images of each class (same seed, same picks). Look for wrong labels and odd ones out.")


def _crossing_first(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups holding a training picture and a validation or test one first (stable otherwise)."""
    return sorted(groups, key=lambda g: not ("train" in g["splits"] and len(g["splits"]) > 1))


@st.cache_data(show_spinner=False, max_entries=8)
def near_copy_rows(home: str, source: str, split_json: str) -> list[dict[str, Any]]:
    """The first few near-copy groups as decoded thumbnails, with split + file name captions."""
    dataset = load_dataset_cached(source, SplitConfig.from_json(split_json))
    groups = _crossing_first(health_for(home, source, split_json)["near_copies"]["groups"])[:NEAR_COPY_GROUPS]
    where = {name: {dataset.relative(f): i for i, f in enumerate(part.files)} if part.files is not None else None
             for name, part in dataset.splits.items()}
    rows = []
    for group in groups:
        images, captions = [], []
        for item in group["items"][:NEAR_COPY_PER_GROUP]:
            index = where[item["split"]]
            i = index.get(item["file"]) if index is not None else int(item["file"].lstrip("#"))
            if i is None:
                continue
            try:
                images.append(thumbnail(dataset.splits[item["split"]].image(i), NEAR_COPY_PX))
            except UserError:
                continue
            name = Path(item["file"]).name
            captions.append(f"{SPLIT_WORDS.get(item['split'], item['split'])}: "
                            + (name if len(name) <= 14 else "…" + name[-13:]))
        rows.append({"splits": group["splits"], "labels": sorted({i["label"] for i in group["items"]}),
                     "size": len(group["items"]), "images": images, "captions": captions})
    return rows


def near_copy_summary(near: dict[str, Any], crossing: int, set_aside: bool) -> None:
    """What was found and why it matters, in one box."""
    if crossing:
        st.warning(near["sentence"], icon=":material/content_copy:")
    elif set_aside:  # the report's own sentence still counts the pictures that were set aside
        left = near["num_groups"]
        st.info(f"{left} group(s) of near-copies ({near['num_pictures']} pictures) are left, each inside one split, "
                "so validation and test are not flattered by them." if left else
                "No near-copies are left: no picture is a flipped, cropped or re-exposed copy of another.",
                icon=":material/check_circle:")
    else:
        icon = ":material/content_copy:" if near["num_groups"] else ":material/check_circle:"
        st.info(near["sentence"], icon=icon)
    if not near["checked"]:
        explain("These pictures are held in memory, not as files: only identical pictures were compared, so flipped, "
                "cropped or re-exposed copies would not be found.")
    else:
        explain("How they are found: distinctive spots of every picture are matched with the other pictures', and a "
                "match counts only when one picture, turned, scaled or mirrored, lines up with the other. A photo "
                "and its near-copy in two splits let validation accuracy look better than it is.")


def near_copy_section(source: str, split: SplitConfig, report: dict[str, Any]) -> None:
    """Near-copies: the count and why it matters, the one-click set-aside, example groups and the full table."""
    near = report.get("near_copies")
    if not near:
        return
    st.subheader("Near-copies")
    crossing = sum(copies_of_training(report).values())
    near_copy_summary(near, crossing, bool(set_aside_notes(report["notes"])))
    set_aside_controls(source, split, report)
    if not near["groups"]:
        return
    rows = near_copy_rows(str(home_dir()), source, split.to_json())
    for first in range(0, len(rows), 2):  # two groups a row: six fit on a projected screen
        for n, (col, row) in enumerate(zip(st.columns(2), rows[first:first + 2]), first + 1):
            splits = " + ".join(SPLIT_WORDS.get(s, s) for s in row["splits"])
            classes = ("class " if len(row["labels"]) == 1 else "classes ") + ", ".join(row["labels"])
            shown = len(row["images"])
            partial = f" · {shown} of its {row['size']} pictures" if row["size"] > shown else ""
            col.markdown(f"**Group {n}** · {splits} · {classes}{partial}")
            if row["images"]:
                col.image(row["images"], caption=row["captions"], width=NEAR_COPY_PX)
    more = near["num_groups"] > NEAR_COPY_GROUPS
    explain("Each row is one photo in its different versions" + (
        f"; these {NEAR_COPY_GROUPS} of the {near['num_groups']} groups are those that cross splits first, and the "
        "table below lists every one." if more else "."))
    rows = [{"group": n, "split": SPLIT_WORDS.get(i["split"], i["split"]), "file": i["file"], "label": i["label"]}
            for n, group in enumerate(_crossing_first(near["groups"]), 1) for i in group["items"]]
    with st.expander(f"All near-copy groups ({near['num_groups']} groups, {near['num_pictures']} pictures)"):
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="data_near_copies")
        explain("One line per picture; pictures with the same group number are versions of one photo.")


def shape_section(report: dict[str, Any], figures: dict[str, Any]) -> None:
    """Image sizes, colour channels and pixel brightness."""
    sizes = report["sizes"]
    cols = st.columns(2)
    with cols[0]:
        st.plotly_chart(figures["sizes"], key="data_sizes", config={"displaylogo": False})
        if sizes.get("median"):
            explain(f"{sizes['distinct']} different sizes; median {sizes['median'][1]}×{sizes['median'][0]} px, "
                    f"smallest {sizes['min'][1]}×{sizes['min'][0]}, largest {sizes['max'][1]}×{sizes['max'][0]}. "
                    "Every image is resized to the model's input size before training.")
    with cols[1]:
        st.plotly_chart(figures["channels"], key="data_channels", config={"displaylogo": False})
        explain(f"The model gets {report['channels']} channel(s): "
                + ("grayscale images are used as they are." if report["channels"] == 1
                   else "grayscale images are copied into three colour channels."))
    stats = report.get("pixel_stats") or {}
    if "pixels" in figures:
        st.plotly_chart(figures["pixels"], key="data_pixels", config={"displaylogo": False})
        explain("Mean / standard deviation of pixel values over a sample of "
                f"{stats['sample']} images: " + ", ".join(
                    f"{n} {m:.0f} / {s:.0f}" for n, m, s in zip(stats["channel_names"], stats["mean"], stats["std"]))
                + " (0 = black, 255 = white). Very dark or washed-out datasets show up here.")
    with advanced("File formats and image modes"):
        cols = st.columns(2)
        cols[0].dataframe(pd.Series(report["format_distribution"], name="images"), key="data_formats")
        cols[1].dataframe(pd.Series(report["mode_distribution"], name="images"), key="data_modes")
        explain("Formats and colour modes as stored on disk; all are converted the same way when loaded.")


# ---------------------------------------------------------------- the page


def main() -> None:
    """The Data page."""
    st.title("Data")
    explain("Choose the images to learn from and check them before training: a model can only be as good as its data.")
    teacher = teacher_mode()
    with user_errors():
        picked = source_picker()
        split = split_settings()
        if not picked:
            st.info("Upload a zip or type a path to see its health report.")
            return
        source = with_layout_choice(picked)
        split = with_set_aside(source, split)
        report = health_for(str(home_dir()), source, split.to_json())
        figures = report_figures(str(home_dir()), source, split.to_json(), teacher)
        set_data_source(source)
        set_split(split)
        st.success(f"Using **{source_name(source)}** for training: the Train page starts from it.",
                   icon=":material/dataset:")
        st.page_link("pages/train.py", label="Train a model on it", icon=":material/model_training:",
                     query_params={"data": source, **({"teacher": "1"} if teacher else {})})
        st.header("Health report")
        layout_section(report, picked)
        overview(report)
        problems(report)
        near_copy_section(source, split, report)
        counts_section(report, figures)
        st.header("Sample images")
        samples_section(source, split, report["class_names"])
        st.header("Sizes, channels, brightness")
        shape_section(report, figures)
        render_data_checks(source, split, report)


if __name__ == "__main__":
    main()
