"""Reading sources and writing outputs atomically (a failed write never leaves a half-written file)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hybriddsl.errors import HybFileError, Span


def read_source(path: str | os.PathLike) -> str:
    """The text of a .hyb file, or HybFileError naming the file and what went wrong."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise HybFileError(f"no such file: {p}", Span(0, 0, 1, str(p))) from None
    except IsADirectoryError:
        raise HybFileError(f"{p} is a directory, not a .hyb file", Span(0, 0, 1, str(p))) from None
    except OSError as e:
        raise HybFileError(f"cannot read {p}: {e.strerror}", Span(0, 0, 1, str(p))) from None
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
            tmp.write_text(text)
    except OSError as e:
        raise HybFileError(f"cannot write {path}: {e.strerror}", Span(0, 0, 1, str(path))) from None
