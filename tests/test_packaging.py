"""The wheel carries the grammar, so a non-editable install works from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_grammar_and_console_script(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hybriddsl-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "hybriddsl/grammar/hyb.lark" in names
        assert z.read("hybriddsl/grammar/hyb.lark").decode() == (ROOT / "grammar" / "hyb.lark").read_text()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "hybdsl = hybriddsl.cli:main" in z.read(entry).decode()
