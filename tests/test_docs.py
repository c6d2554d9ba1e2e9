"""The documentation is executed: every ```python block and every ``$ hybdsl ...`` line of README.md and docs/*.md.

Per document, in order, in a scratch folder that has ``examples/`` (a link to the repository's):

- a ```hyb block whose first line is ``# file: NAME`` is written to NAME (for the commands that follow); any
  other ```hyb block must pass ``hybdsl check``;
- ```python blocks run in one namespace per document; the ``# ...`` comment lines right after a ``print(...)``
  line are the expected output, compared with what the block printed;
- in a block of ``$ COMMAND`` lines, each ``$ hybdsl ...`` runs (in this process, through ``hybriddsl.cli.main``)
  and ``$ cat FILE`` prints a file; the lines up to the next ``$`` are the expected output (``...`` stands for
  any number of lines). The exit status must be 0, or 2 when the expected output shows an error.

Sizes: with ``HYBDSL_DOCS_SMALL=1`` (the default here) a block may be run smaller than written, as an HTML
comment right above it says: ``<!-- docs-test: small OLD => NEW -->`` replaces text before running (e.g.
``--steps 600`` => ``--steps 2``), ``<!-- docs-test: skip-small WHY -->`` skips a block that cannot be made
small (an AOTInductor build). ``HYBDSL_DOCS_SMALL=0 pytest tests/test_docs.py`` runs everything as written
(minutes: full training runs). ``<!-- docs-test: skip WHY -->`` marks a block that is never run (it needs a
file the reader brings).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hybriddsl import api
from hybriddsl.cli import main
from hybriddsl.passes import PIPELINE, count

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SMALL = os.environ.get("HYBDSL_DOCS_SMALL", "1") != "0"

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(small|skip-small|skip)\b\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    small: list[tuple[str, str]] = field(default_factory=list)
    skip: str | None = None  # why the block is not run (now)


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file with the docs-test directives written above each."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    pending: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        d = _DIRECTIVE.match(lines[i])
        if d:
            pending.append((d.group(1), d.group(2)))
        elif m:
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            b = Block(m.group(1), "\n".join(body) + "\n", start + 1)
            for kind, arg in pending:
                if kind == "small":
                    old, sep, new = arg.partition("=>")
                    assert sep, f"{path.name}:{start}: docs-test small needs OLD => NEW"
                    b.small.append((old.strip(), new.strip()))
                elif kind == "skip" or (kind == "skip-small" and SMALL):
                    b.skip = arg or kind
            out.append(b)
            pending = []
        elif lines[i].strip():
            pending = []
        i += 1
    return out


def sized(b: Block) -> str:
    text = b.text
    if SMALL:
        for old, new in b.small:
            assert old in text, f"docs-test small: {old!r} is not in the block at line {b.line}"
            text = text.replace(old, new)
    return text


def match_output(expected: list[str], actual: str, where: str) -> None:
    """Expected lines, in order and contiguous, with ``...`` for any number of lines; trailing spaces ignored."""
    got = [ln.rstrip() for ln in actual.splitlines()]
    want = [ln.rstrip() for ln in expected]
    segments: list[list[str]] = [[]]
    for ln in want:
        if ln.strip() == "...":
            segments.append([])
        else:
            segments[-1].append(ln)
    pos = 0
    for k, seg in enumerate(segments):
        if not seg:
            continue
        starts = [pos] if k == 0 else range(pos, len(got) - len(seg) + 1)
        for s in starts:
            if got[s : s + len(seg)] == seg:
                pos = s + len(seg)
                break
        else:
            pytest.fail(f"{where}: expected\n" + "\n".join(seg) + "\n--- got ---\n" + actual)
    if segments[-1] and pos != len(got):
        pytest.fail(f"{where}: more output than the docs show:\n" + "\n".join(got[pos:]))


def run_commands(text: str, where: str) -> None:
    cmds: list[tuple[str, list[str]]] = []
    for ln in text.splitlines():
        if ln.startswith("$ "):
            cmds.append((ln[2:], []))
        elif cmds:
            cmds[-1][1].append(ln)
    for cmd, expected in cmds:
        argv = shlex.split(cmd, comments=True)
        out = io.StringIO()
        if argv[0] == "cat":
            out.write(Path(argv[1]).read_text())
            rc = 0
        else:
            assert argv[0] == "hybdsl", f"{where}: only hybdsl and cat commands run here: {cmd}"
            args = []
            for a in argv[1:]:  # the shell's glob, for examples/recall/*.hyb
                hits = sorted(glob.glob(a)) if "*" in a and a.endswith(".hyb") else []
                args += hits or [a]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    rc = main(args)
                except SystemExit as e:  # argparse
                    rc = e.code
        want_rc = 2 if re.search(r"\berror\b", expected[0] if expected else "") else 0
        assert rc == want_rc, f"{where}: `{cmd}` exited {rc}, docs imply {want_rc}:\n{out.getvalue()}"
        while expected and not expected[-1].strip():
            expected.pop()
        if expected:
            match_output(expected, out.getvalue(), f"{where}: `{cmd}`")


def expected_prints(code: str) -> list[str]:
    """The ``# ...`` lines right after each ``print(`` line, without the ``# ``."""
    out: list[str] = []
    lines = code.splitlines()
    for i, ln in enumerate(lines):
        if ln.lstrip().startswith("print("):
            j = i + 1
            while j < len(lines) and lines[j].startswith("# "):
                out.append(lines[j][2:])
                j += 1
    return out


def runnable(doc: Path) -> list[Block]:
    """The blocks of a document that the test runs: Python, ``$`` command lines and .hyb text."""
    return [b for b in blocks(doc) if b.lang == "python" or b.text.lstrip().startswith("$ ") or b.lang == "hyb"]


# docs/layers.md and the like are reference tables only: nothing to run, so not a case
@pytest.mark.parametrize("doc", [d for d in DOCS if runnable(d)], ids=lambda p: p.name)
def test_doc_runs(doc, tmp_path, monkeypatch):
    bs = runnable(doc)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "docs" / "img").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYBDSL_KERNELS", os.environ.get("HYBDSL_KERNELS", "auto"))
    ns: dict = {"__name__": "__docs__"}
    for b in bs:
        where = f"{doc.name}:{b.line}"
        if b.skip:
            continue
        text = sized(b)
        if b.lang == "hyb":
            first = text.splitlines()[0] if text.strip() else ""
            if first.startswith("# file: "):  # input of the commands below, which show what it gives
                Path(first[len("# file: ") :].strip()).write_text(text)
            else:  # any other .hyb shown in the docs is a valid program
                api.compile(text, passes=[p for p in PIPELINE if p is not count])
        elif b.lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(text, where, "exec"), ns)  # noqa: S102 (the docs' own code)
            want = expected_prints(b.text)
            if want:
                got = [ln.rstrip() for ln in out.getvalue().splitlines()]
                assert got == [w.rstrip() for w in want], f"{where}: printed\n{out.getvalue()}\ndocs say\n" + "\n".join(
                    want
                )
        else:
            run_commands(text, where)


def test_directives_are_understood():
    """A misspelt directive would silently run a block at full size: every docs-test comment must parse."""
    for doc in DOCS:
        for n, ln in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if "docs-test" in ln and ln.startswith("<!--"):
                assert _DIRECTIVE.match(ln), f"{doc.name}:{n}: unknown docs-test directive: {ln}"
