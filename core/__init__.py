"""CNN Lab engine: datasets, pipelines, models, training runs and evaluation (no Streamlit here)."""

from core.errors import UserError

__version__ = "0.1.0"  # written into exports' preprocessing.json

__all__ = ["UserError", "__version__"]
