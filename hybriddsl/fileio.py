"""Reading sources and writing outputs atomically (a failed write never leaves a half-written file)."""

from __future__ import annotations

import contextlib
import glob
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
        raise HybFileError(f"no such file: {p}", Span.none(str(p))) from None
    except IsADirectoryError:
        raise HybFileError(f"{p} is a directory, not a .hyb file", Span.none(str(p))) from None
    except OSError as e:
        raise HybFileError(f"cannot read {p}: {e.strerror}", Span.none(str(p))) from None
    if len(data) > cap:
        size = p.stat().st_size
        raise limits.exceeded(f"{p} is too large: its size in bytes", size, "max_source_bytes", cap, Span.none(str(p)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HybFileError(f"{p} is not UTF-8 text (byte {e.start})", Span.none(str(p))) from None


STALE_SECONDS = 24 * 3600  # a temp file this old beside a target is left from a killed write


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on failure removed.

    The temp file is removed on an exception, on Ctrl-C and on SIGTERM (in the main thread); file and folder are
    fsynced before and after the rename, so a crash leaves the old file or the new one, never a torn one. Temp
    files of this target older than a day (from a ``kill -9``) are swept first."""
    dest = Path(path)
    if dest.is_dir():
        raise HybFileError(f"{dest} is a directory", Span.none(str(dest)))
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise HybFileError(f"cannot write {dest}: folder {parent} does not exist", Span.none(str(dest)))
    sweep_stale(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _remove_on_sigterm(tmp_path):
            yield tmp_path
            # mkstemp makes 0600 files; give the result the mode a plain open() would (or the old file's mode)
            mode = dest.stat().st_mode & 0o777 if dest.exists() else 0o666 & ~_umask()
            os.chmod(tmp_path, mode)
            _fsync(tmp_path)
            os.replace(tmp_path, dest)
        _fsync(parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def sweep_stale(dest: Path, age: float = STALE_SECONDS) -> int:
    """Remove temp files of ``dest`` (``.<name>.*.tmp`` beside it) older than ``age`` seconds; returns how many."""
    import time

    parent = dest.parent if str(dest.parent) else Path(".")
    now, removed = time.time(), 0
    try:
        candidates = list(parent.glob(f".{glob.escape(dest.name)}.*.tmp"))
    except OSError:
        return 0
    for p in candidates:
        with contextlib.suppress(OSError):
            if p.is_file() and now - p.stat().st_mtime > age:
                p.unlink()
                removed += 1
    return removed


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's: the rename) data to disk; a no-op where the OS cannot do it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _remove_on_sigterm(tmp: Path) -> Iterator[None]:
    """While writing, SIGTERM removes the temp file and then exits as SIGTERM would (143)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    prev = signal.getsignal(signal.SIGTERM)
    if prev == signal.SIG_IGN:
        yield
        return

    def on_term(signum, frame):  # noqa: ANN001  (signal handler signature)
        with contextlib.suppress(OSError):
            tmp.unlink()
        signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)


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
        raise HybFileError(f"cannot write {path}: {e.strerror}", Span.none(str(path))) from None
