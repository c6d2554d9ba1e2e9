"""Property test: thousands of random and mutated inputs; every failure is a HybError with a position.

Inputs go through parse and all passes with ``debug=True`` (the IR is linted after each pass; no weights are
built). No input may produce any other exception, and every error points at a line of the text.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybriddsl import HybError, compile

EXAMPLES_DIR = os.path.join(os.path.dirname(__file__), "..", "examples")
SEEDS = [open(os.path.join(EXAMPLES_DIR, f)).read() for f in sorted(os.listdir(EXAMPLES_DIR)) if f.endswith(".hyb")]
SEEDS += ["M M A M GLA FFN; shared attn@2,4,6", "(M A)*2 [M | A](mix=gate)", "M-M*-", "tie A@1,3", "x = 1"]

TOKENS = [
    "M",
    "A",
    "GLA",
    "FFN",
    "mamba",
    "attn",
    "R",
    "D",
    "GD",
    "L",
    "GRU",
    "K",
    "E",
    "M2",
    "*",
    "-",
    "(",
    ")",
    "[",
    "]",
    "|",
    "=",
    ",",
    ";",
    "\n",
    "@",
    "*2",
    "*0",
    " ",
    "hidden",
    "heads",
    "window",
    "shared",
    "tie",
    "block",
    "8",
    "0",
    "-1",
    "2.5",
    "true",
    "none",
    '"a:b"',
    "x",
    "mamab",
    "#c",
    ".",
    "(heads=2)",
    "(window=3)",
    "custom",
    '(fn="os:path")',
    "mix",
    "gate",
    "output",
    "logits",
    "vocab",
    "pre_norm",
]

# Small hidden sizes keep the meta-device parameter count fast; settings are the user's to break.
FAST = {"hidden": 16}


def _check(text: str) -> None:
    try:
        compile(text, debug=True, **FAST)  # the IR is linted after every pass
    except HybError as e:
        assert e.span is not None, f"no position for: {e.message!r} from {text!r}"
        # a real position: a line of the text, or the keyword argument the error is about
        assert e.span.line > 0 or e.span.file.startswith("<keyword"), f"placeholder span {e.span} for {e.message!r}"
        assert e.message
        str(e)  # formatting the message must not fail either


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join))
def test_random_token_soup(text):
    _check(text)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.integers(0, 2),
            st.sampled_from(TOKENS + list("()[]|=,;@*-#.\"' 0123456789xyzM")),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_examples(seed, edits):
    text = seed
    for pos, how, tok in edits:
        i = pos % (len(text) + 1)
        if how == 0:
            text = text[:i] + tok + text[i:]  # insert
        elif how == 1:
            text = text[:i] + text[i + 1 :]  # delete one character
        else:
            text = text[:i] + tok + text[i + len(tok) :]  # overwrite
    _check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=60))
def test_arbitrary_unicode(text):
    _check(text)
