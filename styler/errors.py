"""The one exception type for mistakes a user can make; the CLI turns it into one line on stderr and exit 2."""


class StylerError(Exception):
    """A user-facing error: bad input file, bad flag value, missing model, full disk..."""


def under_option(option: str, value: object, error: StylerError) -> StylerError:
    """`error` about the file an option named, as "--init FILE: ...": FILE said once, also when the error already
    starts with it (a loader's own "FILE: not a readable model file")."""
    text = str(error)
    return StylerError(f"{option} {text}" if text.startswith(f"{value}: ") else f"{option} {value}: {text}")
