"""Data checks: pixel statistics and the near-copy set-aside on the Data page, warnings with fixes before Start."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd
import streamlit as st

from core.config import SplitConfig, TrainConfig, apply_changes
from core.data.checks import (
    DataCheck,
    brightness_shortcut,
    class_pixel_stats,
    pre_training_checks,
    set_aside_notes,
)
from core.errors import UserError
from core.plots.data import channel_stats_figure, class_brightness_figure
from ui.common import explain, teacher_mode, user_errors
from ui.engine import home_dir, load_dataset_cached
from ui.library import library_cached

CHART_CONFIG = {"displaylogo": False}
FIXES_STATE = "train_fixes"
SET_ASIDE_STATE = "data_set_aside"  # source -> the leakage fix applied on the Data page


@st.cache_data(show_spinner="Checking every image…", max_entries=8)
def health_for(home: str, source: str, split_json: str) -> dict[str, Any]:
    """The health report as plain data, once per source and split (kept with a library dataset across restarts).

    The library key holds the source's layout choice too: another reading of the folders is another report.
    """
    from core.data.health import health_report

    choice = source.partition("?")[2]
    return library_cached(source, f"health-report:{choice}:{split_json}", lambda: health_report(
        load_dataset_cached(source, SplitConfig.from_json(split_json))).to_dict())


@st.cache_data(show_spinner=False, max_entries=8)
def class_stats_for(home: str, source: str, split_json: str) -> dict[str, Any]:
    """Per-class channel means and spreads over a sample of training images."""
    return class_pixel_stats(load_dataset_cached(source, SplitConfig.from_json(split_json)))


# ---------------------------------------------------------------- the Data page


def channel_table(stats: Mapping[str, Any]) -> pd.DataFrame:
    """Per channel: mean, standard deviation, and the share of nearly black / nearly white pixels."""
    hist = (stats.get("histogram") or {}).get("counts") or []
    rows = []
    for i, name in enumerate(stats.get("channel_names") or []):
        counts = hist[i] if i < len(hist) else []
        total = sum(counts) or 1
        rows.append({"channel": name, "mean": round(stats["mean"][i], 1), "std": round(stats["std"][i], 1),
                     "nearly black (< 8)": f"{counts[0] / total:.1%}" if counts else "—",
                     "nearly white (≥ 248)": f"{counts[-1] / total:.1%}" if counts else "—"})
    return pd.DataFrame(rows)


def render_checks_list(checks: list[DataCheck], where: str) -> None:
    """Each check as a warning (or note) with the fix it offers; a green line when there is nothing to fix."""
    if not checks:
        st.success("Ready to train: balanced enough, no leakage between splits, enough images in every class, "
                   "sizes that suit the model.", icon=":material/check_circle:")
        return
    for c in checks:
        (st.warning if c.severity == "warning" else st.info)(c.sentence)
        if c.fixable:
            explain(f"Fix ({where}): **{c.fix_label}** - {c.fix_sentence}")
        elif c.fix_sentence:
            explain(c.fix_sentence)


def render_data_checks(source: str, split: SplitConfig, report: Mapping[str, Any]) -> None:
    """The Data page's block: checks before training (default settings) and pixel statistics per channel and class."""
    teacher = teacher_mode()
    st.header("Checks before training")
    with user_errors():
        checks = pre_training_checks(report, TrainConfig(data=source, split=split))
        render_checks_list(checks, "offered on the Train page before you start")
        explain("Checked against the default settings (32-pixel input, no class weights); the Train page checks your "
                "own settings again before you press Start.")
    stats = report.get("pixel_stats") or {}
    if not stats.get("mean"):
        return
    st.subheader("Pixel statistics per channel")
    cols = st.columns([2, 3])
    with cols[0]:
        st.dataframe(channel_table(stats), hide_index=True, width="stretch", key="data_channel_table")
        explain(f"Over a sample of {stats.get('sample', 0)} images, 0 = black, 255 = white. Many nearly black or white "
                "pixels mean clipped, over- or under-exposed pictures.")
    with cols[1]:
        st.plotly_chart(channel_stats_figure(stats, teacher_mode=teacher), key="data_channel_hist",
                        config=CHART_CONFIG)
        explain("One histogram per channel; the dashed line is the mean and the grey band one standard deviation "
                "either side.")
    with user_errors():
        per_class = class_stats_for(str(home_dir()), source, split.to_json())
        if len(per_class.get("classes") or {}) >= 2:
            st.plotly_chart(class_brightness_figure(per_class, teacher_mode=teacher),
                            key="data_class_brightness", config=CHART_CONFIG)
            shortcut = brightness_shortcut(per_class)
            if shortcut:
                st.warning(shortcut)
            else:
                explain("No class stands out by brightness alone, so the model has to look at content, not exposure.")


def with_set_aside(source: str, split: SplitConfig) -> SplitConfig:
    """``split`` with the near-copy set-aside the user applied to this source on the Data page (if any)."""
    fix = st.session_state.get(SET_ASIDE_STATE, {}).get(source)
    return apply_changes(TrainConfig(data=source, split=split), fix).split if fix else split


def _set_aside(source: str, fix: dict[str, Any]) -> None:
    st.session_state.setdefault(SET_ASIDE_STATE, {})[source] = dict(fix)


def _put_back(source: str) -> None:
    st.session_state.setdefault(SET_ASIDE_STATE, {}).pop(source, None)


def set_aside_controls(source: str, split: SplitConfig, report: Mapping[str, Any]) -> None:
    """One click to set aside the validation / test pictures that copy training ones; once done, what it did."""
    if source in st.session_state.get(SET_ASIDE_STATE, {}):
        notes = set_aside_notes(report.get("notes") or [])
        cols = st.columns([5, 1], vertical_alignment="center")
        cols[0].success(" ".join(notes) or "Near-copies are set aside: none of the validation or test pictures "
                        "needed it with these settings.", icon=":material/check:")
        cols[1].button("Undo", key="data_put_back", on_click=_put_back, args=(source,),
                       help="Score the set-aside pictures again (their scores will look better than they are).")
        explain("The Train page uses this split: every run trained on it is scored only on pictures it never saw.")
        return
    leak = next((c for c in pre_training_checks(report, TrainConfig(data=source, split=split)) if c.kind == "leakage"),
                None)
    if leak is None:
        return
    st.button(leak.fix_label, key="data_set_aside_button", type="primary", icon=":material/filter_alt:",
              on_click=_set_aside, args=(source, leak.fix))
    explain(leak.fix_sentence)


def set_aside_caption(config: TrainConfig, split_name: str) -> None:
    """Under a run's scores: how many of that split's pictures were set aside as near-copies of training ones."""
    if not config.split.drop_duplicates:
        return
    try:
        notes = load_dataset_cached(config.data, config.split).notes
    except UserError:  # the data is gone: the scores stand, the count cannot be shown
        return
    label = "test" if split_name == "test" else "validation"
    for note in set_aside_notes(notes):
        if f" {label} pictures were" in note:
            explain(note)


# ---------------------------------------------------------------- the Train page, before Start


def _applied(source: str) -> dict[str, dict[str, Any]]:
    fixes = st.session_state.setdefault(FIXES_STATE, {})
    return fixes.setdefault(source, {})


def _apply_fix(source: str, kind: str, fix: dict[str, Any]) -> None:
    _applied(source)[kind] = dict(fix)


def _undo_fix(source: str, kind: str) -> None:
    _applied(source).pop(kind, None)


def pretraining_checks(config: TrainConfig) -> TrainConfig:
    """Warn before Start and offer each fix; returns ``config`` with the fixes the user applied (per dataset)."""
    applied = _applied(config.data)
    fixed = config
    for fix in applied.values():
        try:
            fixed = apply_changes(fixed, fix)
        except Exception:  # noqa: BLE001 - a fix that no longer fits this config (e.g. other model) is dropped
            continue
    try:
        report = health_for(str(home_dir()), fixed.data, fixed.split.to_json())
    except Exception:  # noqa: BLE001 - the form above already showed why the data cannot load
        return fixed
    checks = pre_training_checks(report, fixed)
    if not checks and not applied:
        return fixed
    with st.container(border=True):
        st.markdown("**Before you start**")
        for c in checks:
            (st.warning if c.severity == "warning" else st.info)(c.sentence)
            if c.fixable:
                st.button(c.fix_label, key=f"train_fix_{c.kind}", icon=":material/build:", help=c.fix_sentence,
                          on_click=_apply_fix, args=(config.data, c.kind, c.fix))
        for kind, fix in list(applied.items()):
            cols = st.columns([4, 1], vertical_alignment="center")
            cols[0].success(f"Fix applied: {_describe(fix)}", icon=":material/check:")
            cols[1].button("Undo", key=f"train_unfix_{kind}", on_click=_undo_fix, args=(config.data, kind))
        if not checks:
            explain("Nothing else to fix: the run starts with the fixes above.")
    return fixed


def _describe(fix: Mapping[str, Any]) -> str:
    words = {"class_weights": "class weights on",
             "split.drop_duplicates": "near-copies of training pictures set aside from validation and test",
             "augment": "augmentation on (small turns, zooms and shifts)", "image_size": "image size {v} px",
             "split.val_fraction": "validation {v:.0%}", "split.test_fraction": "test {v:.0%}"}
    return ", ".join(words.get(k, f"{k} = {{v}}").format(v=v) for k, v in fix.items())
