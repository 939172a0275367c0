"""Where the browser tests put their screenshots: a temporary folder, so running the tests never changes the repo.

Refreshing the README's pictures is a deliberate step: ``CNNLAB_SCREENSHOTS=docs/screenshots python3 -m
pytest tests/browser -q`` (a relative path is taken from the repository's root), then commit them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def screenshot_folder() -> Path:
    """``$CNNLAB_SCREENSHOTS`` (relative to the repository) when set, else a new temporary folder."""
    wanted = os.environ.get("CNNLAB_SCREENSHOTS", "").strip()
    folder = (ROOT / wanted) if wanted else Path(tempfile.mkdtemp(prefix="cnnlab-screenshots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
