"""The one exception type for problems a user can cause or fix."""


class UserError(Exception):
    """A problem the user caused or can fix; ``str(err)`` is one plain sentence.

    Pages show it with ``st.error``; the CLI prints it and exits with status 2.
    Anything else that escapes the engine is a bug.
    """
