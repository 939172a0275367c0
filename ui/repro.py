"""The reproducibility card on the Evaluate page: seed, split hash, versions, machine, config, "run again"."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core.training.repro import ReproCard, repro_card, rerun_config, rerun_sentence
from ui.common import explain, metric_card, set_current_run_id, user_errors
from ui.engine import get_manager, get_store


def versions_frame(card: ReproCard) -> pd.DataFrame:
    """Libraries and machine as two-column rows a person reads top to bottom."""
    names = {"python": "Python", "tensorflow": "TensorFlow", "keras": "Keras", "numpy": "NumPy"}
    rows = [{"what": names.get(k, k), "value": v} for k, v in card.versions.items()]
    m = card.machine
    rows += [
        {"what": "CPU", "value": f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores)"},
        {"what": "GPU", "value": ", ".join(m.get("gpus") or []) or "none (trained on the CPU)"},
        {"what": "memory", "value": f"{m.get('memory_gb')} GB" if m.get("memory_gb") else "?"},
        {"what": "system", "value": str(m.get("os", "?"))},
    ]
    return pd.DataFrame(rows)


def start_again(run_id: str, deterministic: bool | None) -> str:
    """Queue the same config again (optionally with deterministic ops) and return the new run's id."""
    record = get_store().get(run_id)
    if record is None:
        from core.errors import UserError

        raise UserError(f"There is no run '{run_id}' any more.")
    config = rerun_config(record.config, deterministic=deterministic)
    return get_manager().start(config, name=config.name)


def render_repro_card(run_id: str) -> None:
    """Everything needed to repeat the run, and buttons that repeat it."""
    with user_errors():
        card = repro_card(get_store(), run_id)
        cols = st.columns(3)
        with cols[0]:
            metric_card("Seed", str(card.seed), "Starts every random choice (initial weights, shuffling, augmentation): "
                        "same seed, same choices.")
        with cols[1]:
            metric_card("Deterministic ops", "on" if card.deterministic else "off",
                        "On: TensorFlow adds numbers in a fixed order, so a rerun matches exactly (a little slower).")
        with cols[2]:
            metric_card("Split hash", (card.split_hash or "—")[:12],
                        "Fingerprint of exactly which images went to training, validation and test.")
        st.dataframe(versions_frame(card), hide_index=True, width="stretch", key=f"repro_versions_{run_id}")
        if card.recorded:
            explain("Recorded by the run itself when it started training.")
        else:
            explain("This run did not record its own versions (it is older than the card): shown is this machine now.")
        with st.expander("The full configuration"):
            st.json(card.config, expanded=False)
        buttons = st.columns(3)
        again = buttons[0].button("Run again", key=f"repro_again_{run_id}", icon=":material/replay:",
                                  help="Queues a new run with exactly this configuration (seed included).")
        again_det = False
        if not card.deterministic:
            again_det = buttons[1].button("Run again, deterministic", key=f"repro_again_det_{run_id}",
                                          icon=":material/lock:",
                                          help="The same configuration with deterministic ops on: its reruns match exactly.")
        buttons[2].download_button("Download the card", json.dumps(card.to_dict(), indent=2, sort_keys=True),
                                   file_name=f"cnnlab-{run_id}-card.json", mime="application/json",
                                   key=f"repro_download_{run_id}", on_click="ignore", icon=":material/download:")
        if again or again_det:
            new_id = start_again(run_id, True if again_det else None)
            set_current_run_id(new_id)
            st.switch_page("pages/train.py", query_params={"run": new_id})
        render_reruns(card)


def render_reruns(card: ReproCard) -> None:
    """Later runs of the same recipe, and whether their histories matched."""
    if not card.reruns:
        explain("No rerun yet: 'Run again' trains this configuration once more so you can check it repeats.")
        return
    rows = [{"run": r["name"] or r["run_id"], "status": r["status"],
             "largest difference": "—" if r["difference"] is None else f"{r['difference']:.2g}",
             "open": f"./evaluate?run={r['run_id']}"} for r in card.reruns]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=f"repro_reruns_{card.run_id}",
                 column_config={"open": st.column_config.LinkColumn("evaluate", display_text="open")})
    sentence = rerun_sentence(card)
    if sentence:
        st.info(sentence, icon=":material/replay:")
    explain("Largest difference: the biggest gap between the two runs' loss or accuracy at any epoch (0 = identical).")


def repro_section(run_id: str) -> None:
    """The card folded into an expander (the Evaluate page's call)."""
    with st.expander("Reproducibility card: seed, split, versions, machine · run again", icon=":material/verified:"):
        render_repro_card(run_id)
