"""Real-time streaming: one frame in, one output out, every layer's state kept between frames.

A recurrent layer is a map ``(x_t, s_{t-1}) -> (y_t, s_t)``; running it position by position gives exactly the
outputs of the parallel forward (the scan / chunked form computes the same recurrence). Attention is the odd
one out: its "state" is the KV cache, bounded by the sliding window (a fixed ring buffer), or growing by one
entry per frame without one. So a model that must answer every frame of a 60 fps stream does O(1) work per
frame instead of re-running the whole window:

    s = model.eval().stream(batch=1)
    for frame in frames:            # frame: [batch, embed_dim] (or token ids [batch])
        y = s.push(frame)           # the model's output at this position: [batch, hidden] (or logits)

State lives in preallocated tensors (``Stream.state``, the nested dict of ``HybridModel.init_state``) that
every ``push`` updates in place (layers with ``inplace_step`` write into them themselves, the model's
interpreter ``copy_``'s the others' new state in; ``compile=True`` code writes them directly): no new state
tensors per frame, so their ``data_ptr``s stay put, which is also what a CUDA graph needs (``cuda_graph=True``
replays one captured ``push``). The Python work per frame is one call per plan step (one ``step`` per layer)
eager, one call in all compiled.

``reset(i)`` restarts row ``i`` of the batch (its state slices back to the initial state; per-row position
counters make attention and sinusoidal positions restart too), ``snapshot()`` / ``restore(snap)`` copy the
state out and back (rollback, checkpoints, beam search) and a snapshot is a plain dict of tensors that
``torch.save`` writes.

:func:`step_function` is the same step as a pure function of flat tensors, ``(x, *state) -> (y, *new_state)``,
for ``torch.compile`` (``compile=True``) and ``torch.export`` (:mod:`hybriddsl.export`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hybriddsl.errors import HybOptionError, StreamError, first_line

State = dict[str, Any]


# ------------------------------------------------------------------------------------------------ flat state
def state_slots(state: State) -> list[tuple[dict, str, str]]:
    """Every tensor of a (nested) model state as ``(container, key, name)``, in a fixed order.

    ``name`` is ``"pos"`` for the model's counter and ``"<node>.<key>"`` for a layer's tensor.
    """
    out: list[tuple[dict, str, str]] = []

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out.append((d, k, prefix + k))

    walk(state, "")
    return out


def state_labels(model: nn.Module, names: list[str]) -> list[str]:
    """User-facing names of state entries: ``n8.k`` -> ``layer 2 (attention) k`` (the graph's node ids are
    internal); names the model's graph does not know stay as they are."""
    graph = getattr(model, "graph", None)
    out = []
    for name in names:
        nid, _, rest = name.partition(".")
        try:
            d = graph[nid] if graph is not None else None
        except Exception:  # not a node id
            d = None
        if not d or "layer" not in d or "kind" not in d:
            out.append(name)
            continue
        tag = {"companion": "+", "shared": " shared"}.get(d.get("role"), "")
        out.append(f"layer {d['layer']}{tag} ({d['kind']}) {rest}".rstrip())
    return out


def flatten_state(state: State) -> tuple[list[str], list[torch.Tensor]]:
    """(names, tensors) of a model state, in :func:`state_slots` order."""
    slots = state_slots(state)
    return [n for _, _, n in slots], [d[k] for d, k, _ in slots]


def flatten_like(template: State, state: State) -> list[torch.Tensor]:
    """The tensors of ``state`` in ``template``'s :func:`state_slots` order, matched by key: a layer's
    ``step`` may return its new state dict with the keys in another order than ``init_state``."""
    out: list[torch.Tensor] = []

    def walk(t: dict, d: dict) -> None:
        for k, v in t.items():
            if isinstance(v, dict):
                walk(v, d[k])
            else:
                out.append(d[k])

    walk(template, state)
    return out


def unflatten_state(template: State, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> State:
    """A state with ``template``'s structure holding ``tensors`` (in :func:`state_slots` order)."""
    it = iter(tensors)

    def build(d: dict) -> dict:
        return {k: build(v) if isinstance(v, dict) else next(it) for k, v in d.items()}

    return build(template)


class StepFunction(nn.Module):
    """``forward(x, *state) -> (y, *new_state)``: one position of ``model`` on flat state tensors.

    x: [batch, embed_dim] (or [batch] ids); state: the tensors of ``model.init_state(batch)`` in
    :func:`flatten_state` order. A pure function (no mutation), as a portable ``torch.export`` wants it.
    ``inplace=True``: ``forward(x, *state) -> y`` runs the eager stream's in-place step
    (``model._run(x, state, inplace=True)``), writing the new state into the given tensors instead (what
    :class:`Stream` compiles: the compiled code then updates the stream's own state with no copies; every
    tensor must keep its shape, as a compiled stream's fixed-shape state does).
    ``weights`` (a :class:`hybriddsl.stream_weights.StreamWeights`): the step runs under
    :class:`~hybriddsl.stream_weights.BatchOneStep`, its linear layers as fused matvecs on those weights.
    """

    def __init__(self, model: nn.Module, template: State, inplace: bool = False, weights: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.template = {k: v for k, v in template.items()}  # structure only; tensors are never read
        self.names = flatten_state(template)[0]
        self.inplace = inplace
        self.weights = weights

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...] | torch.Tensor:
        mode = contextlib.nullcontext()
        if self.weights is not None:
            from hybriddsl.stream_weights import BatchOneStep

            mode = BatchOneStep(self.weights.table())
        with mode:
            if self.inplace:
                # the eager stream's own in-place step: a KV ring gains one slot (index_copy_) instead of a
                # rewritten copy of the whole cache, a Mamba state is updated by mul_/addcmul_ (~3% of a compiled
                # Edifice step); every state tensor has a fixed shape here, so none is replaced
                return self.model._run(x, unflatten_state(self.template, state), inplace=True)[0]
            y, new = self.model.step(x, unflatten_state(self.template, state))
        # contiguous: compiled runners read a state fed back by the strides it was traced with
        return (y, *(t.contiguous() for t in flatten_like(self.template, new)))


def step_function(model: nn.Module, batch: int = 1) -> tuple[StepFunction, list[torch.Tensor]]:
    """The model's step as a pure flat-tensor module, and the initial state tensors for ``batch`` rows."""
    state = model.init_state(batch)
    return StepFunction(model, state), flatten_state(state)[1]


def growing_state(model: nn.Module, batch: int = 1) -> list[str]:
    """Names of state tensors whose shape changes from one position to the next (a KV cache without a
    window, a custom layer that recomputes on its prefix). Empty when the state has a fixed shape."""
    state = model.init_state(batch)
    p = next(model.parameters())
    x = torch.zeros(batch, dtype=torch.long, device=p.device) if model.vocab else p.new_zeros(batch, model.embed_dim)
    with torch.no_grad():
        _, new = model.step(x, state)
    names, before = flatten_state(state)
    after = flatten_like(state, new)
    return [n for n, a, b in zip(names, before, after) if a.shape != b.shape]


# ------------------------------------------------------------------------------------------------ Stream
def _compile_options(device: torch.device) -> dict[str, Any]:
    """torch.compile options for a per-frame step, where fixed per-call costs dominate (~2 ms a frame).

    - ``guard_filter_fn``: no guards on the model's modules. Dynamo otherwise checks every submodule and
      parameter before each call (~0.2 ms per frame for Edifice's Hybrid); the parameters are still graph
      inputs, so trained or reloaded weights are used, but swapping a submodule after the stream is made is
      not seen (make a new stream).
    - ``cpp_wrapper`` on CPU: the compiled graph is driven by C++ instead of Python (~100 kernel and matmul
      calls per frame), at the price of a longer first call (~15 s more compile time).
    """
    opts: dict[str, Any] = {"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}
    if device.type == "cpu":
        opts["cpp_wrapper"] = True
    return opts


TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_kind(compile: bool | str | None) -> str | None:
    """The stream's compile setting as one of None (eager), ``"aot"``, ``"dynamo"`` or a torch.compile mode."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return "aot"
    if isinstance(compile, str) and compile in ("aot", "dynamo", *TORCH_COMPILE_MODES):
        return compile
    raise HybOptionError(
        f"compile takes True/'aot' (AOTInductor), 'dynamo' (torch.compile) or a torch.compile mode "
        f"({', '.join(TORCH_COMPILE_MODES)}), got {compile!r}"
    )


class _IntoBuffer(nn.Module):
    """``forward(x, out, *state) -> out``: a step whose output is written into a buffer the caller owns. The
    compiled code may keep its intermediates on the C++ stack (:func:`_stack_buffers`); an output tensor of
    its own would point there, a written-into input does not."""

    def __init__(self, step: nn.Module):
        super().__init__()
        self.step = step

    def forward(self, x: torch.Tensor, out: torch.Tensor, *state: torch.Tensor) -> torch.Tensor:
        out.copy_(self.step(x, *state))
        return out


STACK_BYTES = 1 << 20  # most intermediates a compiled step keeps on the calling thread's stack (8 MB by default)


@contextlib.contextmanager
def _stack_buffers():
    """While compiling: AOTInductor's intermediates as stack arrays instead of one heap tensor each per call.

    A compiled Edifice step otherwise allocates and frees ~100 tensors a frame (~15% of its time); inductor's
    ``aot_inductor.allow_stack_allocation`` needs its array-ref C++ wrapper, which the CPU backend registers
    only when the flag is set at the process's first compile, and caps the buffers at 100 KB in all (a step
    over :data:`STACK_BYTES` keeps heap tensors). Both are torch internals: where they are missing, nothing
    changes."""
    try:
        from torch._inductor.codegen import common
        from torch._inductor.codegen import cpp_wrapper_cpu_array_ref as arr

        common.init_backend_registration()
        old, old_max = common.device_codegens["cpu"], arr.MAX_STACK_ALLOCATION_SIZE
        new = dataclasses.replace(old, cpp_wrapper_codegen=arr.CppWrapperCpuArrayRef)
    except (ImportError, AttributeError, KeyError, TypeError):
        yield {}
        return
    common.device_codegens["cpu"], arr.MAX_STACK_ALLOCATION_SIZE = new, STACK_BYTES
    try:
        yield {"aot_inductor.allow_stack_allocation": True}
    finally:
        common.device_codegens["cpu"], arr.MAX_STACK_ALLOCATION_SIZE = old, old_max


def aot_step(
    model: nn.Module, state: State, x: torch.Tensor, weights: nn.Module | None = None
) -> tuple[Callable[[list[torch.Tensor]], list[torch.Tensor]], dict[str, torch.Tensor]]:
    """The step compiled ahead of time by AOTInductor, updating ``state``'s tensors in place.

    Returns ``(run, weights)``: ``run([x, *state_tensors]) -> [y]`` (state in :func:`flatten_state` order,
    every tensor contiguous, shapes as given) calls the compiled C++ directly, with no Python, guards or
    dispatch per op in between; ``weights`` are the model's own parameter and buffer tensors the compiled
    code reads (by pointer: the caller keeps them alive, and in-place updates such as ``load_state_dict`` or
    an optimizer step are seen; a tensor replaced by a new one is not). Compiling takes from ~15 s on a quiet
    2-core machine to minutes on a loaded one (inductor caches the result on disk for the same model and shapes).
    """
    import shutil
    import tempfile

    step = StepFunction(model, state, inplace=True, weights=weights)
    fn = _IntoBuffer(step)
    bufs = flatten_state(state)[1]
    saved = [b.clone() for b in bufs]  # export runs on fake tensors, but keep the state safe regardless
    with torch.no_grad():  # the output's shape and dtype, from one eager step on copies of the state
        out = torch.empty_like(step(x, *[b.clone() for b in bufs])).contiguous()
    tmp = tempfile.mkdtemp(prefix="hybdsl-aot-")
    try:
        with warnings.catch_warnings(), torch.no_grad(), _stack_buffers() as stack:
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations, not the user's
            ep = torch.export.export(fn, (x, out, *bufs), strict=False)
            path = torch._inductor.aoti_compile_and_package(
                ep,
                package_path=os.path.join(tmp, "step.pt2"),
                # weights stay the model's own tensors, read by pointer (no copy in the .so; updates are seen)
                # and none is baked in: not as literals (inductor inlines 1-d tensors of <= 8 values) nor
                # folded by its value (a norm weight of ones is "uniform" when compiled)
                inductor_configs={
                    **stack,
                    "aot_inductor.package_constants_in_so": False,
                    "always_keep_tensor_constants": True,
                    "joint_graph_constant_folding": False,
                    # compute a matvec's input once: inductor otherwise inlines its producer (a norm, a gate)
                    # into the reduction loop and recomputes it for every output row
                    "realize_opcount_threshold": 1,
                },
            )
            runner = torch._inductor.aoti_load_package(path)
    except Exception as e:  # export/compile failures: say which path failed and what else to use
        raise StreamError(
            f"compile='aot' could not compile the step ({first_line(e)}); "
            "try compile='dynamo' or the eager stream (compile=False)"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with torch.no_grad():
            for b, v in zip(bufs, saved):
                b.copy_(v)
    have = {**dict(fn.named_parameters(remove_duplicate=False)), **dict(fn.named_buffers(remove_duplicate=False))}
    have.update(ep.constants)
    need = runner.get_constant_fqns()
    missing = [n for n in need if n not in have]
    if missing:
        raise StreamError(f"compile='aot': the compiled step wants tensors the model lacks: {', '.join(missing)}")
    tensors = {n: have[n] for n in need}
    runner.load_constants(tensors, check_full_update=True, user_managed=True)
    loader = getattr(runner, "loader", None)
    call = loader.run if loader is not None and hasattr(loader, "run") else (lambda args: list(runner(*args)))

    def run(args: list[torch.Tensor]) -> list[torch.Tensor]:
        call([args[0], out, *args[1:]])
        return [out.clone()]  # the caller's own tensor: the buffer is rewritten by the next frame

    return run, tensors


class Stream:
    """A batch of ``batch`` live streams through ``model`` (see the module docstring).

    ``push(frame)``: frame [batch, embed_dim] (or [batch] ids) -> the output at this position, [batch, hidden]
    (or [batch, vocab] logits). ``compile=True`` (= ``"aot"``) compiles the step ahead of time with
    AOTInductor (:func:`aot_step`: the fastest per frame); ``compile="dynamo"`` (or a ``torch.compile`` mode
    string) runs it through ``torch.compile``; ``cuda_graph=True`` (CUDA only) captures one eager ``push``
    into a CUDA graph and replays it. All of them need a fixed-shape state (every attention layer with a
    window).
    """

    def __init__(
        self,
        model: nn.Module,
        batch: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        compile: bool | str = False,
        cuda_graph: bool = False,
        weights: str | None = None,
    ):
        from hybriddsl.stream_weights import StreamWeights, weight_format

        if not isinstance(batch, int) or batch < 1:
            raise HybOptionError(f"stream batch must be a positive integer, got {batch!r}")
        if model.training:
            raise StreamError("call model.eval() before streaming (dropout would differ from frame to frame)")
        self.model, self.batch = model, batch
        p = next(model.parameters())
        self.device = torch.device(device) if device is not None else p.device
        self.dtype = dtype or p.dtype
        self._frame_dtype = p.dtype  # frames are fed in the parameters' dtype
        with torch.no_grad():
            self.state: State = model.init_state(batch, device=self.device, dtype=self.dtype)
            self._fresh = flatten_state(model.init_state(1, device=self.device, dtype=self.dtype))[1]
        self._slots = state_slots(self.state)
        self.names = [n for _, _, n in self._slots]
        self.frames = 0  # frames pushed since the last full reset
        self._compiled = None
        self._aot: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None
        self._graph: Any = None
        self.compile = kind = compile_kind(compile)
        self.weights = fmt = weight_format(weights)
        if fmt != "float32" and kind not in (None, "aot"):
            raise HybOptionError(
                f"weights={weights!r} streams run eager or with compile='aot', not compile={compile!r}"
            )
        # the matvec form pays off compiled (fused loops); eager, only smaller weights need it
        self._weights = StreamWeights(model, fmt) if fmt != "float32" or kind == "aot" else None
        if kind or cuda_graph:
            grow = growing_state(model, 1)
            if grow:
                raise StreamError(
                    "compile/cuda_graph streaming needs a fixed-shape state, but these grow every frame: "
                    + ", ".join(state_labels(model, grow))
                    + " (give attention a window, or use the eager stream)"
                )
        if kind == "aot":
            # minutes of silence otherwise: say what is happening (stderr, so piped output stays clean)
            print(
                "hybriddsl: compiling the streaming step with AOTInductor (once per model and batch; ~0.5-3 min "
                "on 2 CPU cores) ...",
                file=sys.stderr,
                flush=True,
            )
            t0 = time.perf_counter()
            run, self._aot_weights = aot_step(model, self.state, self._example_frame(), self._weights)
            print(f"hybriddsl: compiled in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            self._aot_args = [self._example_frame(), *(d[k] for d, k, _ in self._slots)]
            self._aot = run
        elif kind == "dynamo":  # the in-place step on flat state, as aot_step exports it
            step = StepFunction(model, self.state, inplace=True)
            self._compiled = torch.compile(step, dynamic=False, options=_compile_options(self.device))
        elif kind:  # a torch.compile mode: torch.compile takes a mode or options, not both
            self._compiled = torch.compile(StepFunction(model, self.state, inplace=True), mode=kind, dynamic=False)
        if cuda_graph:
            if not torch.cuda.is_available() or self.device.type != "cuda":
                raise HybOptionError("cuda_graph=True needs the model on a CUDA device")
            self._capture()

    # ---- the per-frame step -----------------------------------------------------------------------------
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """One position, eager: the model's own plan interpreter, writing the new state into ours."""
        if self._weights is None:
            return self.model._run(x, self.state, inplace=True)[0]
        from hybriddsl.stream_weights import BatchOneStep

        with BatchOneStep(self._weights.table()):
            return self.model._run(x, self.state, inplace=True)[0]

    def _capture(self) -> None:
        """Capture one push into a CUDA graph over static input and state buffers (state restored after)."""
        snap = self.snapshot()
        self._static_x = self._example_frame()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():  # warm-up: lazy inits, autotuning, allocator
            for _ in range(3):
                self._run(self._static_x)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            self._static_y = self._run(self._static_x)
        self._graph = graph
        self.restore(snap)

    def _example_frame(self) -> torch.Tensor:
        if self.model.vocab:
            return torch.zeros(self.batch, dtype=torch.long, device=self.device)
        p = next(self.model.parameters())
        return torch.zeros(self.batch, self.model.embed_dim, device=self.device, dtype=p.dtype)

    # ---- public API ------------------------------------------------------------------------------------
    def _check(self, frame: torch.Tensor) -> torch.Tensor:
        if not isinstance(frame, torch.Tensor):
            raise StreamError(f"push takes a tensor, got {type(frame).__name__}")
        if self.model.vocab:
            want = (self.batch,)
            if tuple(frame.shape) != want or frame.is_floating_point():
                raise StreamError(f"push takes token ids of shape {list(want)}, got {list(frame.shape)}")
            return frame.to(self.device)
        want = (self.batch, self.model.embed_dim)
        if frame.shape != want:
            raise StreamError(f"push takes a frame of shape [batch, embed_dim] = {list(want)}, got {list(frame.shape)}")
        if frame.dtype is self._frame_dtype and frame.device == self.device:  # no .to() call: ~2 us a frame
            return frame
        return frame.to(self.device, self._frame_dtype)

    def push(self, frame: torch.Tensor) -> torch.Tensor:
        """Feed one position; returns the model's output there ([batch, hidden], or [batch, vocab] logits)."""
        x = self._check(frame)
        with torch.no_grad():
            if self._aot is not None:  # compiled code reads x by its traced (contiguous) strides
                args = self._aot_args
                args[0] = x.contiguous()
                y = self._aot(args)[0]
            elif self._graph is not None:
                self._static_x.copy_(x)
                self._graph.replay()
                y = self._static_y.clone()  # the static output buffer is overwritten by the next replay
            elif self._compiled is not None:
                y = self._compiled(x, *[d[k] for d, k, _ in self._slots])
            else:
                y = self._run(x)
        self.frames += 1
        return y

    def reset(self, i: int | None = None) -> None:
        """Restart every stream (``i=None``) or only row ``i``: its state slices go back to the initial state
        while the other rows continue. Shared counters (attention's ring slot) keep going."""
        with torch.no_grad():
            if i is None:
                fresh = flatten_state(self.model.init_state(self.batch, device=self.device, dtype=self.dtype))[1]
                for (d, k, _), f in zip(self._slots, fresh):
                    if d[k].shape == f.shape:
                        d[k].copy_(f)
                    else:
                        d[k] = f
                self.frames = 0
                return
            if not isinstance(i, int) or not 0 <= i < self.batch:
                raise StreamError(f"reset row must be in 0..{self.batch - 1}, got {i!r}")
            if any(getattr(m, "_own_step", True) is False for m in self.model.modules()):
                raise StreamError(
                    "a custom layer without its own step recomputes on a prefix shared by the batch: "
                    "reset() all rows, or give the layer init_state/step"
                )
            for (d, k, _), f in zip(self._slots, self._fresh):
                t = d[k]
                if t.dim() == 0:  # a counter shared by the batch
                    continue
                if t.shape[1:] == f.shape[1:]:
                    t[i].copy_(f[0])
                else:  # a grown cache: zero the row; per-row positions mask its old entries
                    t[i].zero_()

    def snapshot(self) -> State:
        """A copy of the state (nested dict of tensors, plus ``frames``); ``torch.save`` writes it."""
        names, tensors = flatten_state(self.state)
        return {"frames": self.frames, "state": {n: t.clone() for n, t in zip(names, tensors)}}

    def restore(self, snap: State) -> None:
        """Put a :meth:`snapshot` back (in place: the state tensors keep their storage where shapes allow).

        Every tensor is checked against this stream before anything is replaced: same names, tensors of the
        stream's dtype and rank, the stream's batch and state sizes (only a dimension that starts empty, a KV
        cache's or a prefix's length, may differ). A snapshot of another model, batch or dtype raises
        StreamError and leaves the stream as it was."""
        saved = snap.get("state") if isinstance(snap, dict) else None
        if not isinstance(saved, dict) or set(saved) != set(self.names):
            raise StreamError("restore takes a snapshot() of a stream of the same model")
        frames = snap.get("frames", 0)
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
            raise StreamError(f"snapshot 'frames' must be a non-negative integer, got {frames!r}")
        fixed = self._graph is not None or self._compiled is not None or self._aot is not None
        with torch.no_grad():
            fresh = dict(zip(*flatten_state(self.model.init_state(self.batch, device="meta", dtype=self.dtype))))
        for d, k, n in self._slots:
            src, want = saved[n], d[k]
            if not isinstance(src, torch.Tensor):
                raise StreamError(f"snapshot state '{n}' is a {type(src).__name__}, not a tensor")
            if src.dtype != want.dtype:
                raise StreamError(f"snapshot state '{n}' has dtype {src.dtype}, this stream {want.dtype}")
            start = fresh[n].shape
            grows = [i for i, size in enumerate(start) if size == 0] if not fixed else []
            if src.dim() != len(start) or any(
                a != b for i, (a, b) in enumerate(zip(src.shape, start)) if i not in grows
            ):
                what = f"batch {self.batch}, " if len(start) else ""
                raise StreamError(
                    f"snapshot state '{n}' has shape {list(src.shape)}; this stream ({what}dtype {self.dtype}) "
                    f"needs {list(want.shape) if not grows else list(start)}"
                    + (" (an empty dimension may have any length)" if grows else "")
                )
        with torch.no_grad():
            for d, k, n in self._slots:
                src = saved[n]
                if d[k].shape == src.shape:
                    d[k].copy_(src)
                else:
                    d[k] = src.clone().to(d[k].device)
        self.frames = frames

    def data_ptrs(self) -> list[int]:
        """Storage addresses of the state tensors (constant across frames for a fixed-shape state)."""
        return [d[k].data_ptr() for d, k, _ in self._slots]
