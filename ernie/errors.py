"""The one exception type a user sees: a message that names the field and the fix, never a traceback."""


class ErnieError(Exception):
    """A problem the user can fix (bad config, bad input, a missing tool). The CLI prints it and exits 2."""
