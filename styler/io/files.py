"""Files written whole or not at all, and facts about files: the one home of styler's file handling.

Every output (images, models, checkpoints, converted weights) goes through `write_atomically`; the loaders use
`foreign_file_kind` and `load_failure` to say in one line why a file is not what it should be.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from pathlib import Path

from styler.errors import StylerError


class OutputExists(StylerError):
    """The final name was taken by another file while the output was being written (and replacing was not asked)."""


# A temporary file's name: ".<final name>.<random>.tmp", the final name cut so the whole stays within NAME_MAX (255
# bytes on common file systems) even when the final name itself is close to it.
TEMPORARY_NAME_BYTES = 80
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}


def temporary_name(path: Path) -> Path:
    stem = os.fsencode(path.name)[:TEMPORARY_NAME_BYTES].decode(errors="ignore")
    return path.parent / f".{stem}.{secrets.token_hex(4)}.tmp"


def open_new(path: Path) -> int:
    """A descriptor of a new file (O_EXCL: never someone else's) with the mode open() gives: 0o666 less the umask."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def one_line(error: object, limit: int = 200) -> str:
    """An error's message as one line of at most `limit` characters (its type's name when it has no message): the
    form every StylerError quotes a library's error in."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


def os_error_text(error: OSError) -> str:
    """`[Errno 28] No space left on device`: the reason without the file name, which may be a temporary file's."""
    if error.errno and error.strerror:
        return f"[Errno {error.errno}] {error.strerror}"
    return one_line(error)


def write_atomically(path: Path, write, overwrite: bool = True) -> None:
    """Call write(binary file) on a temporary file beside `path`, then put it at `path` in one step.

    overwrite=False publishes with link() instead of rename(): it fails if `path` exists, so a file that appeared
    while this one was being written (another run writing the same output) is never replaced. Where the file system
    has no hard links, an exclusive create of `path` claims the name first and the rename then replaces only that.

    The temporary file's name is known before it is created, so an interrupt (Ctrl-C, or SIGTERM turned into an
    exception by the CLI) at any moment, even inside the creating call, still removes it. Only SIGKILL or a power
    cut can leave one behind: a hidden `.NAME.xxxxxxxx.tmp` beside the output, safe to delete.
    """
    temporary = None
    claimed = False
    try:
        temporary = temporary_name(path)
        with os.fdopen(open_new(temporary), "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise OutputExists(f"{path}: exists (pass --overwrite to replace it)") from None
            except OSError as error:
                if error.errno not in NO_HARD_LINKS:
                    raise
                # No hard links here (FAT, some network file systems): claim the name exclusively, then fill it.
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                except FileExistsError:
                    raise OutputExists(f"{path}: exists (pass --overwrite to replace it)") from None
                claimed = True
                os.replace(temporary, path)
                claimed = False
            else:
                os.unlink(temporary)
    except BaseException:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if claimed:  # our own empty placeholder, never another file
            path.unlink(missing_ok=True)
        raise


def load_failure(error: Exception, path: Path | None = None) -> str:
    """torch.load's error as a short reason. Its weights-only refusals are paragraphs of advice (with terminal escape
    codes) ending in the one fact that matters: the Python object the file wanted to create or call. Its other errors
    are a first sentence of fact followed by advice ("This is an internal miniz error. If you are seeing..."): only
    the fact is kept, without the file's name, which the caller's message already starts with."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(error).split()))
    if path is not None:
        text = text.replace(f"'{path}'", "the file").replace(str(path), "the file")
    if text.startswith("Weights only load failed"):
        name = re.search(r"GLOBAL (\S+) was not an allowed global", text)
        if name:
            return f"it refers to {name.group(1)}; styler loads only tensors and plain data, never code"
        detail = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        found = detail.group(1).strip().rstrip(".") if detail else "refused by weights-only loading"
        return f"not tensors and plain data: {found}"
    fact = re.split(r"(?<=[.!?]) (?=[A-Z])", text)[0].rstrip(".").removeprefix("PytorchStreamReader ")
    return _within(fact, 160) or type(error).__name__


def _within(text: str, limit: int) -> str:
    """`text`, or its first words within `limit` characters and "...": never a word cut in two."""
    return text if len(text) <= limit else text[: text.rfind(" ", 0, limit - 3)].rstrip(" ,;:") + "..."


def unloadable_reason(path: Path, error: Exception, expected: str) -> str:
    """Why torch.load could not read `path`, in words for "PATH: not a readable X (REASON)": what the file is instead
    and what was `expected`, or for a torch file (a zip) the damage torch found."""
    kind = foreign_file_kind(path)
    if kind == "the file is empty":
        return kind
    if kind is not None:
        return f"{kind}; expected {expected}"
    reason = load_failure(error, path)
    try:
        with open(path, "rb") as file:
            zipped = file.read(4) == b"PK\x03\x04"  # torch's zip format
    except OSError:
        zipped = False
    if not zipped or reason.startswith("it refers to"):
        return reason
    # Inside torch's own zip format, bytes that are no pickle instruction are damage, not a foreign pickle.
    unsupported = re.fullmatch(r"not tensors and plain data: Unsupported (operand \S+)", reason)
    if unsupported:
        return f"damaged data: unsupported {unsupported.group(1)}"
    return reason if reason.startswith("not tensors") else f"a damaged or truncated torch file: {reason}"


IMAGE_SIGNATURES = (
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def foreign_file_kind(path: Path) -> str | None:
    """What a file that torch cannot load is, in words ("a text file"), judged from its first bytes; None when it
    looks like a torch file (a zip, or a pickle), whose own loading error says more."""
    try:
        with open(path, "rb") as file:
            start = file.read(4096)
    except OSError:
        return None
    if not start:
        return "the file is empty"
    if start.startswith(b"PK\x03\x04") or start[:1] == b"\x80":  # torch's zip format; a legacy torch pickle
        return None
    for signature, name in IMAGE_SIGNATURES:
        if start.startswith(signature):
            return f"it is a {name} image"
    if start[:4] == b"RIFF" and start[8:12] == b"WEBP":
        return "it is a WebP image"
    if b"\0" not in start:
        try:
            start.decode("utf-8")
            return "it is a text file"
        except UnicodeDecodeError as error:
            if error.start >= len(start) - 3:  # a character cut by the 4096-byte read
                return "it is a text file"
    return "it holds binary data that is not a torch file"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode): equal for the same file under any name (symlinks, hard links, case-insensitive systems)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def shown_name(name: str) -> str:
    """A file name for a line of plain output: as it is when printable, else in bash's $'...' quoting with its control
    characters and undecodable bytes escaped, so that each name stays on one line and `eval` gives it back (--json
    gives names exactly)."""
    if name.isprintable():
        return name
    escaped = []
    for character in name:
        code = ord(character)
        if character in "\\'":
            escaped.append("\\" + character)
        elif character.isprintable():
            escaped.append(character)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode keeps it
            escaped.append(f"\\x{code - 0xDC00:02x}")
        else:
            escaped.append(
                f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
    return "$'" + "".join(escaped) + "'"
