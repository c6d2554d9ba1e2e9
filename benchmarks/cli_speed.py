"""Start-up time of the command line: ``hybdsl --help`` and ``hybdsl check examples/jamba.hyb``.

    python benchmarks/cli_speed.py [--repeats 7]

Each command is a fresh ``python -m hybriddsl ...`` process (what a user's shell starts), timed wall-clock,
interleaved with ``python -c pass`` (the interpreter's own start-up) and ``python -c "import torch"`` in the
same rounds, so that a shared machine's load hits all of them alike. Prints medians and each command's excess
over ``python -c pass``. Targets (issue 12, 2-core machine): ``--help`` <= 0.5 s, ``check`` <= 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "hybdsl --help": [sys.executable, "-m", "hybriddsl", "--help"],
    "hybdsl check examples/jamba.hyb": [sys.executable, "-m", "hybriddsl", "check", "examples/jamba.hyb"],
    "hybdsl compile examples/jamba.hyb": [sys.executable, "-m", "hybriddsl", "compile", "examples/jamba.hyb"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="rounds (every command once per round)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["python -c pass"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f}, Python {sys.version.split()[0]}, median of {args.repeats}")
    print()
    print("| command | median | min | over `python -c pass` |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        over = "" if name == "python -c pass" else f"+{med - base:.2f} s"
        print(f"| `{name}` | {med:.2f} s | {min(ts):.2f} s | {over} |")


if __name__ == "__main__":
    main()
