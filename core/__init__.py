"""CNN Lab engine: datasets, pipelines, models, training runs and evaluation (no Streamlit here)."""

from core.errors import UserError

__all__ = ["UserError"]
