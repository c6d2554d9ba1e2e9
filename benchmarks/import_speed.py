"""Import speed and peak memory of ``hybriddsl.from_pretrained`` vs transformers' own ``from_pretrained``.

    python -m benchmarks.import_speed                     # ~1.1 B-parameter Llama-style bf16 checkpoint
    python -m benchmarks.import_speed --layers 4 --md     # smaller; --md prints the Markdown table

Makes a random checkpoint locally (a Llama config of the given size: transformers builds the model on the meta
device for the names and shapes, the tensors are random, written with safetensors; nothing is downloaded), then
loads it several times in fresh subprocesses, alternating hybriddsl and transformers, and reports per load the
wall seconds and the peak resident memory (``VmHWM``) above the process's resident memory after imports. The
checkpoint's size is the reference for the memory bound (issue 14: peak <= 1.3x the checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOADER = r"""
import json, sys, time
import torch


def status(key):  # kB; VmHWM is this process's peak resident memory since exec (ru_maxrss would include the
    for line in open("/proc/self/status"):  # parent's at fork time)
        if line.startswith(key + ":"):
            return int(line.split()[1])

which, path = sys.argv[1], sys.argv[2]
if which == "hybriddsl":  # import (and warm) the library before the clock starts: we time the load
    import hybriddsl
    import hybriddsl.interop.pretrained
    hybriddsl.compile("hidden = 8; norm = rmsnorm; A(ffn=false, rope=true) F")
else:
    import transformers
    transformers.LlamaForCausalLM, transformers.AutoConfig
base = status("VmRSS")
t0 = time.perf_counter()
if which == "hybriddsl":
    model = hybriddsl.from_pretrained(path)
else:
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
secs = time.perf_counter() - t0
peak = status("VmHWM")
ids = torch.arange(8)[None] % 100
with torch.no_grad():
    out = model(ids)
    logits = out if isinstance(out, torch.Tensor) else out.logits
first = time.perf_counter() - t0
peak_fwd = status("VmHWM")
n = sum(p.numel() for p in model.parameters())
print(json.dumps({"secs": secs, "peak_kb": peak, "base_kb": base, "params": n, "first": first, "peak_fwd_kb": peak_fwd,
                  "logits": logits[0, -1, :16].float().tolist()}))
"""


def make_checkpoint(folder: Path | str, hidden: int, layers: int, inner: int, vocab: int, heads: int) -> int:
    """A random Llama-style bf16 checkpoint in ``folder``; returns its size in bytes."""
    import torch
    import transformers
    from safetensors.torch import save_file

    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inner,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 4,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, p in model.state_dict().items():
        t = torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.02
        if name.endswith("norm.weight"):
            t = t + 1.0
        tensors[name] = t.to(torch.bfloat16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(folder)
    return (folder / "model.safetensors").stat().st_size


def load_once(which: str, folder: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", LOADER, which, str(folder)],
        capture_output=True,
        text=True,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--inner", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3, help="loads per library, alternating")
    ap.add_argument("--dir", help="keep the checkpoint here (default: a temporary folder)")
    ap.add_argument("--md", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory() if args.dir is None else None
    folder = Path(args.dir or tmp.name) / "ckpt"
    t0 = time.perf_counter()
    if (folder / "model.safetensors").is_file():  # --dir: reuse the checkpoint made by an earlier run
        size = (folder / "model.safetensors").stat().st_size
    else:  # in a child process, so that this one stays small while the loads run
        code = "import sys; from benchmarks.import_speed import make_checkpoint as m; m(sys.argv[1], *map(int, sys.argv[2:]))"  # noqa: E501
        argv = [str(folder), str(args.hidden), str(args.layers), str(args.inner), str(args.vocab), str(args.heads)]
        subprocess.run([sys.executable, "-c", code, *argv], check=True)
        size = (folder / "model.safetensors").stat().st_size
    print(f"checkpoint: {size / 2**30:.2f} GiB bf16 in {time.perf_counter() - t0:.0f} s ({folder})", file=sys.stderr)
    res: dict[str, list[dict]] = {"hybriddsl": [], "transformers": []}
    for i in range(args.runs):
        for which in ("hybriddsl", "transformers") if i % 2 == 0 else ("transformers", "hybriddsl"):
            r = load_once(which, folder)
            res[which].append(r)
            print(
                f"{which:12s} load {r['secs']:6.2f} s, peak {(r['peak_kb'] - r['base_kb']) / 2**20:.2f} GiB above "
                f"after-import RSS {r['base_kb'] / 2**20:.2f} GiB; first logits at {r['first']:.2f} s, peak "
                f"{(r['peak_fwd_kb'] - r['base_kb']) / 2**20:.2f} GiB",
                file=sys.stderr,
            )
    a, b = res["hybriddsl"], res["transformers"]
    same = max(abs(x - y) for x, y in zip(a[0]["logits"], b[0]["logits"]))
    med = {k: statistics.median(r["secs"] for r in v) for k, v in res.items()}
    mem = {k: max(1, max(r["peak_kb"] - r["base_kb"] for r in v)) * 1024 for k, v in res.items()}
    fmem = {k: max(1, max(r["peak_fwd_kb"] - r["base_kb"] for r in v)) * 1024 for k, v in res.items()}
    first = {k: statistics.median(r["first"] for r in v) for k, v in res.items()}
    rows = [
        ("params", f"{a[0]['params']:,}", f"{b[0]['params']:,}", ""),
        (
            "median load, s",
            f"{med['hybriddsl']:.2f}",
            f"{med['transformers']:.2f}",
            f"{med['hybriddsl'] / med['transformers']:.2f}",
        ),
        (
            "load: peak RSS above after-import RSS, GiB",
            f"{mem['hybriddsl'] / 2**30:.2f}",
            f"{mem['transformers'] / 2**30:.2f}",
            f"{mem['hybriddsl'] / mem['transformers']:.2f}",
        ),
        ("load: peak / checkpoint size", f"{mem['hybriddsl'] / size:.2f}", f"{mem['transformers'] / size:.2f}", ""),
        (
            "median load + first forward (8 tokens), s",
            f"{first['hybriddsl']:.2f}",
            f"{first['transformers']:.2f}",
            f"{first['hybriddsl'] / first['transformers']:.2f}",
        ),
        (
            "peak after the forward / checkpoint size",
            f"{fmem['hybriddsl'] / size:.2f}",
            f"{fmem['transformers'] / size:.2f}",
            f"{fmem['hybriddsl'] / fmem['transformers']:.2f}",
        ),
    ]
    if args.md:
        print("| | hybriddsl | transformers | ratio |\n|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        for r in rows:
            print(f"{r[0]:32s} {r[1]:>16s} {r[2]:>16s} {r[3]:>6s}")
    print(f"checkpoint {size / 2**30:.2f} GiB; last-position logits (first 16) max |diff| {same:.2e}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
