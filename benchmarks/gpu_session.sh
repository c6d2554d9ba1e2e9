#!/usr/bin/env bash
# Everything still owed to a GPU (issues 5 and 7), in ONE call of the device tool, so that a task that draws a
# GPU spends its 15 minutes of device time measuring, not setting up. Not run yet: no GPU has been lent so far.
#
# Here, on a machine with a package index (the GPU machines have none; DESIGN §8 lists what they lack):
#     pip download --no-deps -d wheels lark graphviz fla-core flash-linear-attention     # wheels/ is git-ignored
# Then the device tool, from the repository root:
#     run(command="bash benchmarks/gpu_session.sh", carry=["wheels"], timeout_s=600)
#
# Logs go under $OUT (what comes back), one file per step, plus summary.txt with each step's exit status and
# time. Every step has its own limit, so one slow step cannot eat the others' time.
set -u
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # no install step: the GPU machine cannot fetch build deps
export FLA_DISABLE_BACKEND_DISPATCH=1              # time fla's own kernels (DESIGN §8)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.txt
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    rc=$?
    echo "$name: exit $rc after $(($(date +%s) - start)) s (limit $limit s)" | tee -a "$out/summary.txt"
    tail -n 4 "$out/$name.txt"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
    >"$out/device.txt" 2>&1
cat "$out/device.txt"
if ls wheels/*.whl >/dev/null 2>&1; then
    step wheels 60 pip install --no-deps --no-index wheels/*.whl
fi

# correctness at real compilation: every kernel family fwd+bwd vs its float32 reference (Hopper miscompile check)
step test-kernels 140 python -m pytest -q -x -p no:cacheprovider tests/kernels
# streaming on CUDA: the CUDA-graph stream == the parallel forward, memory flat over 200 frames
step test-cuda-graph 45 python -m pytest -q -p no:cacheprovider tests/test_streaming.py -k cuda_graph
# kernel speed vs fla / SDPA / eager (mamba_ssm needs a ~400 s build: a session of its own)
step bench-kernels 150 python benchmarks/kernels.py --md "$out/kernels.md"
# whole model, 24-layer Jamba-like, bf16: Triton kernels vs the PyTorch reference path
for k in triton reference; do
    step "bench-jamba-$k" 40 python -m hybriddsl.cli bench benchmarks/jamba_24l.hyb --batch 8 --seq 2048 \
        --dtype bfloat16 --device cuda --kernels "$k"
done
# streaming latency: eager, AOTInductor and CUDA-graph streams, batch 1 and 64
step bench-streaming 90 python -m benchmarks.streaming --device cuda --threads 1 --compile aot --frames 2000
