"""The project's error types: every user mistake is a `HybError` with a position.

A `Span` names a file, a line and a column (1-based). `str(err)` prints

    file.hyb:3:7: error: unknown layer 'mamab' - did you mean 'mamba'?
        M mamab A
          ^^^^^

so that the CLI can show it as is and exit with status 2.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A place in a source text: 1-based line and column, and the length to underline."""

    line: int = 0
    column: int = 0
    length: int = 1
    file: str = "<string>"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file

    @classmethod
    def none(cls, where: str) -> Span:
        """A place outside any source text: a file as a whole (``model.pt``) or ``<command line>``."""
        return cls(0, 0, 1, where)


class HybError(Exception):
    """Root of every error a user can cause. Carries a message, a span and the source text."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, source: str | None = None, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source
        self.hint = hint

    def with_source(self, source: str | None, file: str | None = None) -> HybError:
        """Attach the source text (and file name) once it is known higher up; returns self."""
        if self.source is None:
            self.source = source
        if file and self.span is not None and self.span.file in ("<string>", ""):
            self.span = Span(self.span.line, self.span.column, self.span.length, file)
        return self

    def __str__(self) -> str:
        where = f"{self.span}: " if self.span is not None else ""
        out = f"{where}{self.kind}: {self.message}"
        if self.span is not None and self.span.line and self.source is not None:
            lines = self.source.splitlines()
            if 0 < self.span.line <= len(lines):
                text = lines[self.span.line - 1].expandtabs(1)
                col = max(self.span.column, 1)
                out += f"\n    {text}\n    {' ' * (col - 1)}{'^' * max(1, min(self.span.length, len(text) - col + 1))}"
        if self.hint:
            out += f"\n  hint: {self.hint}"
        return out


class HybSyntaxError(HybError):
    """The text does not follow the grammar (a lark error mapped to a friendly label)."""

    kind = "syntax error"


class HybNameError(HybError):
    """An unknown layer, block or option name; the message suggests the nearest known one."""

    kind = "name error"


class HybOptionError(HybError):
    """An option value of the wrong type or out of range, or a setting that makes shapes impossible."""

    kind = "option error"


class IRError(HybError):
    """A broken invariant of the graph IR (a bug in a pass, or an impossible program)."""

    kind = "IR error"


class LoweringError(HybError):
    """The graph cannot be turned into modules (e.g. a custom factory fails or returns a wrong shape)."""

    kind = "lowering error"


class HybFileError(HybError):
    """A file that cannot be read or written."""

    kind = "file error"


class HybRuntimeError(HybError):
    """Running a compiled model failed or was misused (as opposed to a mistake in the model's text or options)."""

    kind = "runtime error"


class StreamError(HybRuntimeError):
    """A stream (:mod:`hybriddsl.streaming`) was fed or driven wrongly, or its compiled step could not be built."""

    kind = "stream error"


class TrainingError(HybRuntimeError):
    """A training run failed (e.g. the loss diverged)."""

    kind = "training error"


class ExportError(HybRuntimeError):
    """``torch.export`` or AOTInductor could not turn the model into an artifact."""

    kind = "export error"


def suggest(name: str, known: list[str] | tuple[str, ...]) -> str:
    """' - did you mean 'x'?' for the nearest known name, or '' when nothing is close."""
    import difflib

    lowered = {k.lower(): k for k in known}
    best = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" - did you mean '{lowered[best[0]]}'?" if best else ""


def first_line(e: BaseException) -> str:
    """``"Type: first line of its message"``: how a wrapped library error (export, compile) is quoted."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class UntrustedCodeError(HybError):
    """Source text names Python code to run (``custom(fn="mod:attr")``) and the caller did not opt in."""

    kind = "untrusted code"


class LimitError(HybOptionError):
    """The input asks for more than a safety limit allows (:mod:`hybriddsl.limits`); the caller may raise it."""

    kind = "limit error"
