"""Verdicts on screen: the sentences of ``core.training.verdicts`` as the live panel and Evaluate show them."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.training.verdicts import Reading, Verdict, read_run, val_test_gap

ICONS = {
    "not_learning": ":material/block:",
    "unstable": ":material/ssid_chart:",
    "overfitting": ":material/trending_up:",
    "underfitting": ":material/trending_flat:",
    "val_test_gap": ":material/compare_arrows:",
    "noisy_validation": ":material/graphic_eq:",
    "too_early": ":material/hourglass_top:",
}


def snapshot_reading(snap: Any) -> Reading:
    """The chart's marks and the verdicts of a run's snapshot (live, or rebuilt from the store)."""
    result = getattr(snap, "result", None) or {}
    return read_run(snap.history, getattr(snap, "split", None) or result.get("split"), result)


def show_verdict(verdict: Verdict) -> None:
    """One verdict: a warning with what to try, or a reassuring note."""
    icon = ICONS.get(verdict.kind, ":material/check_circle:")
    if verdict.warning:
        text = verdict.sentence + (f"\n\n**What to try:** {verdict.advice}" if verdict.advice else "")
        st.warning(text, icon=icon)
    else:
        st.info(verdict.sentence, icon=icon)


def show_reading(reading: Reading) -> None:
    """Every verdict of a reading, the most important first."""
    for verdict in reading.verdicts:
        show_verdict(verdict)


def show_run_warnings(snap: Any) -> None:
    """Evaluate's verdicts about a run that ended: not learning, and validation vs test when they disagree."""
    if snap is None:
        return
    main = snapshot_reading(snap).main
    if main is not None and main.kind == "not_learning":
        show_verdict(main)
    result = snap.result or {}
    gap = val_test_gap(snap.history, getattr(snap, "split", None) or result.get("split"), result)
    if gap is not None:
        show_verdict(gap)
