"""The one error type users see as a single line on stderr."""


class TeleworldError(Exception):
    """A user-facing error: bad input, missing file, mismatched data. The CLI prints it as one line."""
