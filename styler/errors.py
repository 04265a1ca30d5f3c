"""The one exception type for mistakes a user can make; the CLI turns it into one line on stderr and exit 2."""


class StylerError(Exception):
    """A user-facing error: bad input file, bad flag value, missing model, full disk..."""
