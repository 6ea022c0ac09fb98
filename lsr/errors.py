"""User-facing errors: one line that names the file (and line) and what was expected."""


class LsrError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""
