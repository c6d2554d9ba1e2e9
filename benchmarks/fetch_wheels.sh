#!/usr/bin/env bash
# The wheels benchmarks/gpu_session.sh installs on a GPU machine that reaches no package index (DESIGN §8: it has
# torch, triton, numpy, pytest, networkx... but not lark, graphviz, fla or transformers). Run it here, where pip
# reaches an index, before lending the tree to the device tool; wheels/ is git-ignored, so carry it:
#     bash benchmarks/fetch_wheels.sh
#     run(command="bash benchmarks/gpu_session.sh", carry=["wheels"], timeout_s=600)
# Versions are pinned to the ones installed here (what CI tests), unpinned where a package is not installed.
# --no-deps: the GPU machine keeps its own torch (CUDA build) and triton. transformers' own dependencies at the
# versions it needs here (huggingface-hub, safetensors, tokenizers: abi3 wheels, so the GPU image's Python 3.12
# takes them) come along, and huggingface-hub's HTTP client httpx2 (with httpcore2, truststore), which the GPU
# image lacks (it has httpx, regex, typer, einops, tqdm and pyyaml, but not httpx2).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p wheels
mapfile -t pins < <(python - <<'PY'
import importlib.metadata as md

for name in ("lark", "graphviz", "fla-core", "flash-linear-attention", "transformers", "huggingface-hub",
             "safetensors", "tokenizers", "httpx2", "httpcore2", "truststore"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(name)
PY
)
echo "fetching: ${pins[*]}"
pip download --no-deps --only-binary=:all: -d wheels "${pins[@]}"
ls -la wheels
