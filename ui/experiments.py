"""The Train page's experiments block: the overfitting lab and the grid search as two tabs (only the open one runs)."""

from __future__ import annotations

from collections.abc import Collection

import streamlit as st

from ui.grid import render_grid_section
from ui.lab import render_lab_section


def experiments_section(shown_live: Collection[str] = ()) -> None:
    """Both tabs; a group in ``shown_live`` is drawn by the page's live panel, so its tab only points there."""
    st.subheader("Experiments")
    names = ["Overfitting lab", "Grid search"]
    default = names[1] if "grid" in st.query_params and "lab" not in st.query_params else names[0]
    lab_tab, grid_tab = st.tabs(names, default=default, key="train_experiments", on_change="rerun")
    if lab_tab.open:
        with lab_tab:
            render_lab_section(shown_live)
    if grid_tab.open:
        with grid_tab:
            render_grid_section(shown_live)
