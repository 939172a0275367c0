"""The one exception type for problems a user can cause or fix, and how an exception is quoted in a sentence."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class UserError(Exception):
    """A problem the user caused or can fix; ``str(err)`` is one plain sentence.

    Pages show it with ``st.error``; the CLI prints it and exits with status 2.
    Anything else that escapes the engine is a bug.
    """


def short_error(err: BaseException, limit: int = 200) -> str:
    """An exception quoted inside a sentence: its first line, colour codes removed, at most ``limit`` characters."""
    text = str(err).strip()
    text = _ANSI.sub("", text.splitlines()[0]).strip() if text else ""
    text = text.rstrip(".") or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
