"""Triton forward and backward kernels for the Mamba-1 selective scan (Gu & Dao 2023, Alg. 2).

Math (see :mod:`.reference`): dt = softplus(delta + bias); h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t;
y_t = (h_t . C_t + D u_t) * silu(z_t). Layout is channels-last: u, delta, z, y: [b, T, Dm];
B, C: [b, T, N]; A: [Dm, N]; states [b, Dm, N] float32.

Forward: one program per (batch, block of BLOCK_D channels) keeps its [BLOCK_D, N] state in
registers and walks time; the next step's inputs are loaded before the current step is computed,
so global-memory latency overlaps the dependent arithmetic. It stores the state before every
CHUNK-th step (``ckpt``: [b, n_chunks, N, Dm]) for the backward.

Backward: the same grid walks the chunks in reverse. For each chunk it recomputes h_{t-1} from the
checkpoint into a per-program scratch buffer (L2-resident: CHUNK x BLOCK_D x N floats), then walks
the chunk backwards carrying g = dL/dh_t (both walks prefetch the next step's inputs too):

    dy' = dy * silu(z)                 dz = dy * y' * silu'(z)
    g  += dy' C_t                      dC_t = sum_d dy' h_t           (partial per channel block)
    dB_t = sum_d g dt u                du = dt sum_n g B + D dy'
    ddt = u sum_n g B + sum_n g A exp(dt A) h_{t-1}                  (times sigmoid if softplus)
    dA += dt g exp(dt A) h_{t-1}       g  <- exp(dt A) g             (becomes dL/dh_{t-1})

dB/dC are summed over channel blocks, and dA/dD/dbias over the batch, in PyTorch from partial
buffers (deterministic; no atomics). Everything is wrapped as the custom ops
``hybriddsl::selective_scan_fwd`` / ``hybriddsl::selective_scan_bwd`` with a registered autograd
formula and fake implementations, so ``torch.compile(fullgraph=True)`` sees one op.
"""

import torch
import triton
import triton.language as tl

from hybriddsl.kernels.checks import contiguous

Tensor = torch.Tensor

CHUNK = 64  # steps between forward checkpoints; also the backward recompute window


@triton.jit
def _ss_fwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    h0_ptr,
    y_ptr,
    hT_ptr,
    ckpt_ptr,
    s_u_b,
    s_u_t,
    s_dl_b,
    s_dl_t,
    s_z_b,
    s_z_t,
    s_B_b,
    s_B_t,
    s_C_b,
    s_C_t,
    T,
    Dm,
    N,
    n_chunks,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < Dm
    mask_n = offs_n < N
    mask_dn = mask_n[:, None] & mask_d[None, :]
    dn = offs_n[:, None] * Dm + offs_d[None, :]  # [N, Dm] tiles: channels contiguous

    # exp(dt A) = exp2(dt A log2 e): exp2 is the native instruction.
    A2 = tl.load(A_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32) * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * Dm * N + dn, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # Batch-row base pointers. Inputs may be strided views (e.g. the x / z halves of one projection):
    # only their last dimension must be contiguous. Outputs are allocated contiguous.
    u_ptr += pid_b * s_u_b
    delta_ptr += pid_b * s_dl_b
    z_ptr += pid_b * s_z_b
    B_ptr += pid_b * s_B_b
    C_ptr += pid_b * s_C_b
    y_ptr += pid_b * T * Dm
    # Prefetched inputs of step 0 (T >= 1 is guaranteed by the launcher).
    u_n = tl.load(u_ptr + offs_d, mask=mask_d, other=0.0)
    dl_n = tl.load(delta_ptr + offs_d, mask=mask_d, other=0.0)
    B_n = tl.load(B_ptr + offs_n, mask=mask_n, other=0.0)
    C_n = tl.load(C_ptr + offs_n, mask=mask_n, other=0.0)
    if HAS_Z:
        z_n = tl.load(z_ptr + offs_d, mask=mask_d, other=0.0)
    for t in range(T):
        u = u_n.to(tl.float32)
        dt = dl_n.to(tl.float32)
        Bt = B_n.to(tl.float32)
        Ct = C_n.to(tl.float32)
        if HAS_Z:
            zt = z_n.to(tl.float32)
        if t % CHUNK == 0:
            tl.store(ckpt_ptr + (pid_b * n_chunks + t // CHUNK) * Dm * N + dn, h, mask=mask_dn)
        # Prefetch step t + 1 while step t computes (the last step re-reads itself: no time mask).
        nxt = tl.minimum(t + 1, T - 1)
        u_n = tl.load(u_ptr + nxt * s_u_t + offs_d, mask=mask_d, other=0.0)
        dl_n = tl.load(delta_ptr + nxt * s_dl_t + offs_d, mask=mask_d, other=0.0)
        B_n = tl.load(B_ptr + nxt * s_B_t + offs_n, mask=mask_n, other=0.0)
        C_n = tl.load(C_ptr + nxt * s_C_t + offs_n, mask=mask_n, other=0.0)
        if HAS_Z:
            z_n = tl.load(z_ptr + nxt * s_z_t + offs_d, mask=mask_d, other=0.0)

        if HAS_BIAS:
            dt = dt + bias
        if SOFTPLUS:
            dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(tl.minimum(dt, 20.0))))
        dA = tl.exp2(dt[None, :] * A2)
        h = dA * h + (dt * u)[None, :] * Bt[:, None]
        y = tl.sum(h * Ct[:, None], 0)
        if HAS_D:
            y = y + Dv * u
        if HAS_Z:
            y = y * zt * tl.sigmoid(zt)
        tl.store(y_ptr + t * Dm + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)
    tl.store(hT_ptr + pid_b * Dm * N + dn, h, mask=mask_dn)


@triton.jit
def _ss_bwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    ckpt_ptr,
    dy_ptr,
    dhT_ptr,
    scratch_ptr,
    du_ptr,
    ddelta_ptr,
    dz_ptr,
    dA_part_ptr,
    dB_part_ptr,
    dC_part_ptr,
    dD_part_ptr,
    dbias_part_ptr,
    dh0_ptr,
    s_u_b,
    s_u_t,
    s_dl_b,
    s_dl_t,
    s_z_b,
    s_z_t,
    s_B_b,
    s_B_t,
    s_C_b,
    s_C_t,
    s_dy_b,
    s_dy_t,
    T,
    Dm,
    N,
    n_chunks,
    n_dblk,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_DHT: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < Dm
    mask_n = offs_n < N
    mask_dn = mask_n[:, None] & mask_d[None, :]
    dn = offs_n[:, None] * Dm + offs_d[None, :]  # [N, Dm] tiles: channels contiguous
    # This program's scratch: CHUNK tiles of [BLOCK_N, BLOCK_D] holding h_{t-1}.
    s_base = scratch_ptr + (pid_b * n_dblk + pid_d) * (CHUNK * BLOCK_D * BLOCK_N)
    s_tile = offs_n[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    # [b, n_dblk, T, N] partial sums of dB and dC over this channel block
    p_base = (pid_b * n_dblk + pid_d) * T * N

    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_DHT:
        g = tl.load(dhT_ptr + pid_b * Dm * N + dn, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        g = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dA_acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    # Batch-row base pointers. Inputs may be strided views (e.g. the x / z halves of one projection):
    # only their last dimension must be contiguous. Outputs are allocated contiguous.
    u_ptr += pid_b * s_u_b
    delta_ptr += pid_b * s_dl_b
    z_ptr += pid_b * s_z_b
    B_ptr += pid_b * s_B_b
    C_ptr += pid_b * s_C_b
    dy_ptr += pid_b * s_dy_b
    du_ptr += pid_b * T * Dm
    ddelta_ptr += pid_b * T * Dm
    dz_ptr += pid_b * T * Dm

    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        t0 = c * CHUNK
        clen = tl.minimum(CHUNK, T - t0)
        # 1) recompute the states of this chunk from its checkpoint: scratch[i] = h_{t0 + i - 1}
        h = tl.load(ckpt_ptr + (pid_b * n_chunks + c) * Dm * N + dn, mask=mask_dn, other=0.0)
        # Each loop below loads the inputs of its next step before computing the current one
        # (indices clamped inside the chunk), as the forward does, to hide global-memory latency.
        u_n = tl.load(u_ptr + t0 * s_u_t + offs_d, mask=mask_d, other=0.0)
        dl_n = tl.load(delta_ptr + t0 * s_dl_t + offs_d, mask=mask_d, other=0.0)
        B_n = tl.load(B_ptr + t0 * s_B_t + offs_n, mask=mask_n, other=0.0)
        for i in range(clen):
            tl.store(s_base + i * (BLOCK_D * BLOCK_N) + s_tile, h)
            u = u_n.to(tl.float32)
            dt = dl_n.to(tl.float32)
            Bt = B_n.to(tl.float32)
            tn = t0 + tl.minimum(i + 1, clen - 1)
            u_n = tl.load(u_ptr + tn * s_u_t + offs_d, mask=mask_d, other=0.0)
            dl_n = tl.load(delta_ptr + tn * s_dl_t + offs_d, mask=mask_d, other=0.0)
            B_n = tl.load(B_ptr + tn * s_B_t + offs_n, mask=mask_n, other=0.0)
            if HAS_BIAS:
                dt = dt + bias
            if SOFTPLUS:
                dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(tl.minimum(dt, 20.0))))
            h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt[:, None]
        tl.debug_barrier()  # scratch writes visible to every thread of the program
        # 2) walk the chunk backwards
        tn = t0 + clen - 1
        hp_n = tl.load(s_base + (clen - 1) * (BLOCK_D * BLOCK_N) + s_tile)
        u_n = tl.load(u_ptr + tn * s_u_t + offs_d, mask=mask_d, other=0.0)
        dl_n = tl.load(delta_ptr + tn * s_dl_t + offs_d, mask=mask_d, other=0.0)
        B_n = tl.load(B_ptr + tn * s_B_t + offs_n, mask=mask_n, other=0.0)
        C_n = tl.load(C_ptr + tn * s_C_t + offs_n, mask=mask_n, other=0.0)
        dy_n = tl.load(dy_ptr + tn * s_dy_t + offs_d, mask=mask_d, other=0.0)
        if HAS_Z:
            z_n = tl.load(z_ptr + tn * s_z_t + offs_d, mask=mask_d, other=0.0)
        for i in range(clen):
            j = clen - 1 - i
            t = t0 + j
            h_prev = hp_n
            u = u_n.to(tl.float32)
            dt_raw = dl_n.to(tl.float32)
            Bt = B_n.to(tl.float32)
            Ct = C_n.to(tl.float32)
            dy = dy_n.to(tl.float32)
            if HAS_Z:
                zt = z_n.to(tl.float32)
            jn = tl.maximum(j - 1, 0)
            tn = t0 + jn
            hp_n = tl.load(s_base + jn * (BLOCK_D * BLOCK_N) + s_tile)
            u_n = tl.load(u_ptr + tn * s_u_t + offs_d, mask=mask_d, other=0.0)
            dl_n = tl.load(delta_ptr + tn * s_dl_t + offs_d, mask=mask_d, other=0.0)
            B_n = tl.load(B_ptr + tn * s_B_t + offs_n, mask=mask_n, other=0.0)
            C_n = tl.load(C_ptr + tn * s_C_t + offs_n, mask=mask_n, other=0.0)
            dy_n = tl.load(dy_ptr + tn * s_dy_t + offs_d, mask=mask_d, other=0.0)
            if HAS_Z:
                z_n = tl.load(z_ptr + tn * s_z_t + offs_d, mask=mask_d, other=0.0)
            if HAS_BIAS:
                dt_raw = dt_raw + bias
            if SOFTPLUS:
                dt = tl.where(dt_raw > 20.0, dt_raw, tl.log(1.0 + tl.exp(tl.minimum(dt_raw, 20.0))))
            else:
                dt = dt_raw
            dA = tl.exp2(dt[None, :] * A2)
            h = dA * h_prev + (dt * u)[None, :] * Bt[:, None]
            if HAS_Z:
                sig = tl.sigmoid(zt)
                y_pre = tl.sum(h * Ct[:, None], 0)
                if HAS_D:
                    y_pre = y_pre + Dv * u
                dz = dy * y_pre * sig * (1.0 + zt * (1.0 - sig))
                tl.store(dz_ptr + t * Dm + offs_d, dz.to(dz_ptr.dtype.element_ty), mask=mask_d)
                dy = dy * zt * sig
            dC = tl.sum(dy[None, :] * h, 1)
            tl.store(dC_part_ptr + p_base + t * N + offs_n, dC, mask=mask_n)
            g = g + dy[None, :] * Ct[:, None]
            dB = tl.sum(g * (dt * u)[None, :], 1)
            tl.store(dB_part_ptr + p_base + t * N + offs_n, dB, mask=mask_n)
            gB = tl.sum(g * Bt[:, None], 0)
            du = gB * dt
            if HAS_D:
                du = du + Dv * dy
                dD_acc += dy * u
            tl.store(du_ptr + t * Dm + offs_d, du.to(du_ptr.dtype.element_ty), mask=mask_d)
            g_dA_h = g * dA * h_prev
            ddt = gB * u + tl.sum(g_dA_h * A, 0)
            dA_acc += g_dA_h * dt[None, :]
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(dt_raw)
            dbias_acc += ddt
            tl.store(ddelta_ptr + t * Dm + offs_d, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_d)
            g = g * dA  # now dL/dh_{t-1}
        tl.debug_barrier()  # every read of scratch done before the next chunk overwrites it
    tl.store(dh0_ptr + pid_b * Dm * N + dn, g, mask=mask_dn)
    tl.store(dA_part_ptr + pid_b * Dm * N + dn, dA_acc, mask=mask_dn)
    tl.store(dD_part_ptr + pid_b * Dm + offs_d, dD_acc, mask=mask_d)
    tl.store(dbias_part_ptr + pid_b * Dm + offs_d, dbias_acc, mask=mask_d)


def _blocks(Dm: int, N: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, num_warps). Tiles are [BLOCK_N, BLOCK_D] with channels along the fast
    axis: one warp spans 32 channels, so each thread owns a channel's whole state column and the
    per-step sum over N (y = h . C) needs no shuffles; u/delta/z/y loads are coalesced. 32 channels
    per program gives 512 programs (one warp each) at B=8, Dm=2048, all resident at once."""
    block_n = triton.next_power_of_2(N)
    block_d = min(32, triton.next_power_of_2(Dm))
    num_warps = 1 if block_n <= 32 else 2
    return block_d, block_n, num_warps


def _rows(t: Tensor | None) -> Tensor | None:
    """[b, T, X] with a contiguous last dimension (any batch / time strides): no copy for views."""
    if t is None or t.stride(-1) == 1:
        return t
    return t.contiguous()


def _empty(t: Tensor) -> Tensor:
    # contiguous whatever t's strides (empty_like would keep a permuted layout)
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)


@torch.library.custom_op("hybriddsl::selective_scan_fwd", mutates_args=())
def selective_scan_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    initial_state: Tensor | None,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward launcher. Returns (y [b, T, Dm] in u's dtype, final state [b, Dm, N] float32,
    checkpoints [b, ceil(T / CHUNK), N, Dm] float32 for the backward). Requires T >= 1.
    Inside the kernels every [Dm, N] array is handled transposed ([N, Dm], channels contiguous)."""
    batch, T, Dm = u.shape
    N = A.shape[1]
    n_chunks = triton.cdiv(T, CHUNK)
    u, delta, B, C = (_rows(t) for t in (u, delta, B, C))
    A_t = A.t().contiguous()
    D, delta_bias = contiguous(D, delta_bias)
    z = _rows(z)
    h0 = None if initial_state is None else initial_state.float().transpose(1, 2).contiguous()
    y = _empty(u)
    hT = u.new_empty(batch, N, Dm, dtype=torch.float32)
    ckpt = u.new_empty(batch, n_chunks, N, Dm, dtype=torch.float32)
    block_d, block_n, num_warps = _blocks(Dm, N)
    grid = (batch, triton.cdiv(Dm, block_d))
    _ss_fwd_kernel[grid](
        u,
        delta,
        A_t,
        B,
        C,
        D if D is not None else u,  # unused pointer when the flag is off
        z if z is not None else u,
        delta_bias if delta_bias is not None else u,
        h0 if h0 is not None else hT,
        y,
        hT,
        ckpt,
        u.stride(0),
        u.stride(1),
        delta.stride(0),
        delta.stride(1),
        z.stride(0) if z is not None else 0,
        z.stride(1) if z is not None else 0,
        B.stride(0),
        B.stride(1),
        C.stride(0),
        C.stride(1),
        T,
        Dm,
        N,
        n_chunks,
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        HAS_H0=h0 is not None,
        SOFTPLUS=delta_softplus,
        CHUNK=CHUNK,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
        num_warps=num_warps,
    )
    return y, hT.transpose(1, 2).contiguous(), ckpt


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
    batch, T, Dm = u.shape
    N = A.shape[1]
    return (
        _empty(u),
        u.new_empty(batch, Dm, N, dtype=torch.float32),
        u.new_empty(batch, (T + CHUNK - 1) // CHUNK, N, Dm, dtype=torch.float32),
    )


@torch.library.custom_op("hybriddsl::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(
    dy: Tensor,
    d_final_state: Tensor | None,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    ckpt: Tensor,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Backward launcher. Returns (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, d_initial_state),
    each shaped and typed like its input; dD, dz, ddelta_bias are empty [0] tensors when that input
    is None. d_initial_state is [b, Dm, N] float32."""
    batch, T, Dm = u.shape
    N = A.shape[1]
    n_chunks = ckpt.shape[1]
    u, delta, B, C, dy = (_rows(t) for t in (u, delta, B, C, dy))
    A_t = A.t().contiguous()
    D, delta_bias = contiguous(D, delta_bias)
    z = _rows(z)
    dhT = None if d_final_state is None else d_final_state.float().transpose(1, 2).contiguous()
    block_d, block_n, num_warps = _blocks(Dm, N)
    n_dblk = triton.cdiv(Dm, block_d)
    f32 = dict(dtype=torch.float32, device=u.device)
    du = _empty(u)
    ddelta = _empty(delta)
    dz = _empty(z) if z is not None else u.new_empty(0)
    dA_part = torch.empty(batch, N, Dm, **f32)
    dB_part = torch.empty(batch, n_dblk, T, N, **f32)
    dC_part = torch.empty(batch, n_dblk, T, N, **f32)
    dD_part = torch.empty(batch, Dm, **f32)
    dbias_part = torch.empty(batch, Dm, **f32)
    dh0 = torch.empty(batch, N, Dm, **f32)
    scratch = torch.empty(batch * n_dblk * CHUNK * block_d * block_n, **f32)
    _ss_bwd_kernel[(batch, n_dblk)](
        u,
        delta,
        A_t,
        B,
        C,
        D if D is not None else u,
        z if z is not None else u,
        delta_bias if delta_bias is not None else u,
        ckpt,
        dy,
        dhT if dhT is not None else dh0,
        scratch,
        du,
        ddelta,
        dz if z is not None else du,
        dA_part,
        dB_part,
        dC_part,
        dD_part,
        dbias_part,
        dh0,
        u.stride(0),
        u.stride(1),
        delta.stride(0),
        delta.stride(1),
        z.stride(0) if z is not None else 0,
        z.stride(1) if z is not None else 0,
        B.stride(0),
        B.stride(1),
        C.stride(0),
        C.stride(1),
        dy.stride(0),
        dy.stride(1),
        T,
        Dm,
        N,
        n_chunks,
        n_dblk,
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        HAS_DHT=dhT is not None,
        SOFTPLUS=delta_softplus,
        CHUNK=CHUNK,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
        num_warps=num_warps,
    )
    dA = dA_part.sum(0).t().contiguous().to(A.dtype)
    dB = dB_part.sum(1).to(B.dtype)
    dC = dC_part.sum(1).to(C.dtype)
    dD = dD_part.sum(0).to(D.dtype) if D is not None else u.new_empty(0)
    dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else u.new_empty(0)
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0.transpose(1, 2).contiguous()


@selective_scan_bwd.register_fake
def _(dy, d_final_state, u, delta, A, B, C, D, z, delta_bias, ckpt, delta_softplus):
    batch, T, Dm = u.shape
    N = A.shape[1]
    return (
        _empty(u),
        _empty(delta),
        _empty(A),
        _empty(B),
        _empty(C),
        _empty(D) if D is not None else u.new_empty(0),
        _empty(z) if z is not None else u.new_empty(0),
        _empty(delta_bias) if delta_bias is not None else u.new_empty(0),
        u.new_empty(batch, Dm, N, dtype=torch.float32),
    )


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus = inputs
    ckpt = output[2]
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
    ctx.delta_softplus = delta_softplus
    ctx.h0_meta = None if initial_state is None else initial_state.dtype


def _backward(ctx, dy, d_final_state, _d_ckpt):
    u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = torch.ops.hybriddsl.selective_scan_bwd(
        dy, d_final_state, u, delta, A, B, C, D, z, delta_bias, ckpt, ctx.delta_softplus
    )
    return (
        du,
        ddelta,
        dA,
        dB,
        dC,
        dD if D is not None else None,
        dz if z is not None else None,
        dbias if delta_bias is not None else None,
        dh0.to(ctx.h0_meta) if ctx.h0_meta is not None else None,
        None,
    )


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Triton selective scan; arguments and shapes as :func:`hybriddsl.kernels.selective_scan.
    selective_scan` (which checks them)."""
    if u.shape[1] == 0:  # nothing to launch; the reference handles the empty sequence
        from hybriddsl.kernels.selective_scan.reference import selective_scan_torch

        return selective_scan_torch(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, output_final_state
        )
    y, h_final, _ = torch.ops.hybriddsl.selective_scan_fwd(
        u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus
    )
    return y, (h_final if output_final_state else None)
