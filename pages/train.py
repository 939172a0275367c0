"""Train: choose an architecture and hyper-parameters, start and stop a run, watch it learn live.

Top to bottom: the overfitting demo buttons; what is training now (one polling fragment: the run in the
URL, its demo partner, and experiment groups still training); the form for a new run; the experiments
(overfitting lab, grid search). The pieces live in ``ui/`` (``train_live``, ``train_panel``,
``train_form``, ``experiments``), where tests import them.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: see ui/__init__.py)
# isort: split

import streamlit as st

from ui.common import explain, teacher_mode
from ui.experiments import experiments_section
from ui.train_form import new_run_section
from ui.train_live import demo_section, live_groups, live_section, watched_runs


def main() -> None:
    """The Train page."""
    st.title("Train")
    explain("Pick an architecture, press Start and watch it learn. Training runs in the background: you can "
            "switch pages, refresh or open this link on another computer and come back to it.")
    demo_section()
    runs, groups = watched_runs(), live_groups()
    if runs or groups:
        live_section(runs, groups)
    st.divider()
    new_run_section(teacher_mode())
    st.divider()
    experiments_section({group for _, group in groups})


main()
