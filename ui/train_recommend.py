"""The Train page's "Recommended for this dataset" block: each choice with its reason, and a button that
puts them into the form below (``core.training.recommend`` picks them from the dataset's health report)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.config import AUGMENT_PRESETS, AugmentConfig, SplitConfig
from core.errors import UserError
from core.training.recommend import Recommendation, facts_from_report, recommend, with_download_note
from ui.common import explain
from ui.data_checks import health_for
from ui.engine import home_dir

KINDS = {"transfer": "Transfer learning", "scratch": "Preset"}   # ui.train_form.ARCH_KINDS entries


@st.cache_data(show_spinner="Choosing settings for this dataset…", max_entries=8)
def recommendation_for(home: str, source: str, split_json: str) -> Recommendation:
    """The recommendation for a dataset and split, once per dataset (its health report is cached too)."""
    return recommend(facts_from_report(health_for(home, source, split_json)))


def preset_of(augment: AugmentConfig) -> str:
    """The augmentation preset equal to ``augment`` ("none" when none is)."""
    return next((name for name, values in AUGMENT_PRESETS.items() if AugmentConfig(**values) == augment), "none")


def form_values(rec: Recommendation) -> dict[str, Any]:
    """The Train form's widget values (session-state keys of ``ui.train_form``) that express ``rec``."""
    c = rec.changes
    kind = KINDS[rec.kind]
    values: dict[str, Any] = {"train_arch_kind": kind}
    if rec.kind == "transfer":
        values.update(train_backbone=c["model.name"], train_alpha=c["model.alpha"], train_pretrained=True,
                      train_fine_tune=bool(c.get("model.fine_tune_epochs")))
    else:
        values["train_preset"] = c["model.name"]
    values[f"train_size_{kind}"] = int(c["image_size"])
    values[f"train_epochs_{kind}"] = int(c["epochs"])
    values.update(train_patience=int(c["early_stopping_patience"]), train_restore_best=bool(c["restore_best"]),
                  train_augment=preset_of(c["augment"]), train_class_weights=bool(c.get("class_weights", False)))
    return values


def _apply(values: dict[str, Any]) -> None:
    for key, value in values.items():
        st.session_state[key] = value


def recommended_settings(source: str, split: SplitConfig) -> None:
    """Each recommended choice with its sentence, and "Use these settings", which fills the form below."""
    try:
        rec = with_download_note(recommendation_for(str(home_dir()), source, split.to_json()))  # the file may arrive
    except UserError:  # the form above already said why the data cannot load
        return
    values = form_values(rec)
    applied = all(st.session_state.get(key) == value for key, value in values.items())
    with st.expander("Recommended for this dataset", expanded=not applied, icon=":material/auto_awesome:"):
        explain(f"Picked from the data: {rec.facts.train_images:,} training images in {rec.facts.num_classes} "
                f"classes, about {rec.facts.median_side} px, "
                + ("mostly colour." if rec.facts.colour_share >= 0.5 else "grey.")
                + " Each line says why.")
        st.markdown("\n".join(f"- **{c.label}: {c.value}.** {c.sentence}" for c in rec.choices))
        for note in rec.notes:
            st.info(note, icon=":material/download:")
        st.button("Use these settings", key="train_use_recommended", type="secondary", icon=":material/tune:",
                  on_click=_apply, args=(values,),
                  help="Fills the architecture and settings below; you can still change any of them.")
    if applied:
        st.success("The form below uses the recommended settings; change any of them before you press Start.",
                   icon=":material/check:")
