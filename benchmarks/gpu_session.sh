#!/usr/bin/env bash
# Everything owed to a GPU (issues 5, 7 and 16), in ONE call of the device tool, so that a task that draws a GPU
# spends its device time measuring, not setting up. Not run yet: no GPU has been lent so far.
#
# Here, on a machine with a package index (the GPU machines have none; DESIGN §8 lists what they lack):
#     bash benchmarks/fetch_wheels.sh        # lark, graphviz, fla-core, flash-linear-attention, transformers -> wheels/
# Then the device tool, from the repository root:
#     run(command="bash benchmarks/gpu_session.sh", carry=["wheels"], timeout_s=600)
# Check the plumbing without a GPU (every step printed with its limit, its files and modules checked, every kernel
# family's GPU test and benchmark suite looked for; nothing run; exit status 1 when something is missing):
#     DRY=1 bash benchmarks/gpu_session.sh
#
# Logs go under $OUT (what comes back: at most 8 files), one file per step plus summary.txt with each step's exit
# status and time. Every step has its own limit, and the whole run stops starting steps BUDGET seconds (default
# 570) after it began, so it ends inside the device tool's 10-minute command limit; the most wanted results come
# first (correctness on the GPU, then the kernel table, then the model's tokens/s).
set -u
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # no install step: the GPU machine cannot fetch build deps
export FLA_DISABLE_BACKEND_DISPATCH=1              # time fla's own kernels (DESIGN §8)
export PYTHONUNBUFFERED=1
dry=${DRY:-0}
budget=${BUDGET:-570}
t0=$(date +%s)

step() {  # step NAME SECONDS COMMAND...: run with a time limit (cut to what the budget has left), log to $out/NAME.log
    local name=$1 limit=$2 start rc left
    shift 2
    left=$((budget - ($(date +%s) - t0)))
    if [ "$left" -lt 15 ]; then
        echo "$name: skipped (budget spent)" | tee -a "$out/summary.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$dry" = 1 ]; then  # pretend the step used its whole limit: shows what the worst case still reaches
        echo "$name (limit $limit s): $*" | tee -a "$out/summary.txt"
        t0=$((t0 - limit))
        plumb "$@"
        return
    fi
    start=$(date +%s)
    timeout "$limit" "$@" >>"$out/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc after $(($(date +%s) - start)) s (limit $limit s)" | tee -a "$out/summary.txt"
    tail -n 3 "$out/$name.log"
}

missing=0
plumb() {  # DRY: every file a step names exists, every `python -m` module resolves
    local prev= a
    for a in "$@"; do
        if [ "$prev" = -m ] && [ "$a" != pytest ]; then
            python -c "import importlib.util as u, sys; sys.exit(u.find_spec(sys.argv[1]) is None)" "$a" \
                || { echo "  MISSING module: $a"; missing=1; }
        elif [[ "$a" == tests/* || "$a" == benchmarks/* || "$a" == wheels/* ]] && [ ! -e "$a" ]; then
            echo "  MISSING path: $a"; missing=1
        fi
        prev=$a
    done
}

if [ "$dry" = 1 ]; then  # every kernel family has its GPU test and its benchmark suite
    for fam in hybriddsl/kernels/*/triton.py; do
        fam=$(basename "$(dirname "$fam")")
        for f in "tests/kernels/test_$fam.py" "benchmarks/kernel_suites/$fam.py"; do
            [ -e "$f" ] || { echo "MISSING for kernel family $fam: $f"; missing=1; }
        done
    done
fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
    >"$out/summary.txt" 2>&1
cat "$out/summary.txt"
if ls wheels/*.whl >/dev/null 2>&1; then
    # into a folder ahead of site-packages: works as a non-root user too, and our pinned transformers / hub shadow
    # the image's own versions without touching them
    step setup 40 python -m pip install -q --no-deps --no-index --no-compile --no-cache-dir --upgrade \
        --target /tmp/site wheels/*.whl
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
py() { python -m pytest -q -x -p no:cacheprovider "$@"; }

# 1. correctness at real compilation, bf16 included: every kernel family fwd+bwd vs its float32 reference (the
#    Hopper miscompile check), the kernel contract, and a whole model mixing every recurrent kind on CUDA:
#    forward, gradients, steps, stream and CUDA-graph stream (tests/kernels/test_model_triton.py)
step tests 130 py tests/kernels
step tests 90 py tests/layers
step tests 30 py tests/test_streaming.py -k "cuda_graph or cuda"
# 2. one-GPU NCCL: DDP and FSDP2 around the mixed model, gradients equal the unwrapped model's
step ddp 40 python -m benchmarks.ddp_smoke
# 3. kernel speed vs fla / SDPA / eager (mamba_ssm needs a ~400 s build: a session of its own)
step kernels 130 python benchmarks/kernels.py --md "$out/kernels.md"
# 4. whole model, 24-layer Jamba-like, bf16: tokens/s on the Triton kernels vs the PyTorch reference path
for k in triton reference; do
    step jamba 35 python -m hybriddsl.cli bench benchmarks/jamba_24l.hyb --batch 8 --seq 2048 \
        --dtype bfloat16 --device cuda --kernels "$k"
done
# 5. sliding-window attention: the fast paths vs the dense mask (T = 2048 .. 16384)
step attention 40 python -m benchmarks.attention --device cuda
echo "total: $(($(date +%s) - t0)) s of budget $budget s" | tee -a "$out/summary.txt"
if [ "$dry" = 1 ]; then
    [ "$missing" = 0 ] && echo "plumbing: every step's files and modules are there" || echo "plumbing: MISSING (above)"
    exit "$missing"
fi
