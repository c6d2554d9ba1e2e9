"""Reading sources and writing outputs atomically (a failed write never leaves a half-written file)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hybriddsl.errors import HybFileError, Span


class SourceText(str):
    """A string that is .hyb source text, never a path (standard input, a payload's stored source)."""

    file: str = "<string>"

    def __new__(cls, text: str, file: str = "<string>") -> SourceText:
        obj = super().__new__(cls, text)
        obj.file = file
        return obj


def is_path(src_or_path: object) -> bool:
    """The project's one rule for "is this a path or source text?".

    A path is an ``os.PathLike``, or a plain ``str`` of one line that ends in ``.hyb``. :class:`SourceText` (what
    the CLI makes of standard input) and every other string are source text."""
    if isinstance(src_or_path, SourceText):
        return False
    if isinstance(src_or_path, os.PathLike):
        return True
    return isinstance(src_or_path, str) and "\n" not in src_or_path and src_or_path.strip().endswith(".hyb")


def source_of(src_or_path: str | os.PathLike) -> tuple[str, str]:
    """(text, file name) of a path or a source text, by :func:`is_path`."""
    if is_path(src_or_path):
        path = Path(src_or_path)
        return read_source(path), str(path)
    if not isinstance(src_or_path, str):
        raise HybFileError(
            f"expected .hyb source text or a path, got {type(src_or_path).__name__}", Span(0, 0, 1, "<argument>")
        )
    return str(src_or_path), getattr(src_or_path, "file", "<string>")


def read_source(path: str | os.PathLike) -> str:
    """The text of a .hyb file, or HybFileError naming the file and what went wrong."""
    from hybriddsl import limits

    p = Path(path)
    cap = limits.current().max_source_bytes
    try:
        with open(p, "rb") as f:  # never read more than the limit allows (a path could name a huge file)
            data = f.read(cap + 1)
    except FileNotFoundError:
        raise HybFileError(f"no such file: {p}", Span(0, 0, 1, str(p))) from None
    except IsADirectoryError:
        raise HybFileError(f"{p} is a directory, not a .hyb file", Span(0, 0, 1, str(p))) from None
    except OSError as e:
        raise HybFileError(f"cannot read {p}: {e.strerror}", Span(0, 0, 1, str(p))) from None
    if len(data) > cap:
        size = p.stat().st_size
        raise limits.exceeded(
            f"{p} is too large: its size in bytes", size, "max_source_bytes", cap, Span(0, 0, 1, str(p))
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HybFileError(f"{p} is not UTF-8 text (byte {e.start})", Span(0, 0, 1, str(p))) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on failure removed."""
    dest = Path(path)
    if dest.is_dir():
        raise HybFileError(f"{dest} is a directory", Span(0, 0, 1, str(dest)))
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise HybFileError(f"cannot write {dest}: folder {parent} does not exist", Span(0, 0, 1, str(dest)))
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files; give the result the mode a plain open() would (or the old file's mode)
        mode = dest.stat().st_mode & 0o777 if dest.exists() else 0o666 & ~_umask()
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise HybFileError(f"cannot write {path}: {e.strerror}", Span(0, 0, 1, str(path))) from None
