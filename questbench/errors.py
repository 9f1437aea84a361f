"""The one exception type for errors a user can cause."""


class QuestbenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""
