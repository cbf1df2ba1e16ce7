"""Fused forward scan of the RWW + Balloon-Windkessel network: ``_rww_fwd_kernel`` -> ``rww_fwd``.

Decomposition
-------------
One program owns a tile of ``BLOCK_B`` simulations and *all* nodes of each (``BLOCK_N`` =
next power of two >= N). The six state variables stay in registers for the whole launch; a launch
runs every step of the scan (or, when the adjoint recomputes a segment, every step of that
segment), so the state leaves the chip only where the contract asks for it: BOLD and records at TR
ends, the full state at checkpoints (local steps 0, K, 2K, ...), the final state, and the first
diverged step. Nothing couples simulations, so the grid is ``cdiv(B, BLOCK_B)`` programs and
needs no inter-program synchronisation.

Per step the only cross-lane operation is the coupling ``C @ S_E`` (a mat-vec per simulation);
everything else (transfer functions, Euler-Maruyama update, Balloon, Philox + Box-Muller noise,
divergence check) is elementwise. The noise does not depend on the state, so within a step the
scheduler can overlap its ~70 integer ops with the mat-vec's reduction.

Coupling variants (compile-time flags):

- ``RESIDENT``: C (padded to BLOCK_N x BLOCK_N) is loaded into registers once per launch. The
  measured limit (``python -m rww.ops.triton.aot`` reproduces it) is about 64 regions per
  program before the tile spills; the launcher uses it only up to that size.
- streamed (``RESIDENT=False``): each step S_E is written to a per-simulation scratch row (it
  stays in L1/L2), a barrier makes it visible to the whole program, and the mat-vec runs over
  ``BLOCK_J``-column chunks of C read from L2 (all programs share one C, so it is read from DRAM
  once and then served by L2). Works for any N (tested to N = 1000); each thread accumulates its
  own rows with FMAs, so registers do not grow with BLOCK_J or N beyond the state itself.
- ``USE_DOT`` (shared C, BLOCK_B >= 16): the mat-vecs of the tile's simulations become one matrix
  product ``S_E (BLOCK_B x N) @ C^T`` on ``tl.dot`` (fp32 "ieee" precision: the FMA path, exact
  fp32 products, no TF32), so every C element fetched serves BLOCK_B simulations. At N = 100
  the FMA-dot operand fragments plus 16 x 128 elements of state spill (``python -m
  rww.ops.triton.aot``), yet on an H200 it was the fastest forward for B = 32768 (1.5x one streamed
  simulation per program; ``bench/results/gpu-tune-h200.json``): the default from
  ``rww.ops.triton.config.DOT_MIN_BATCH`` simulations sharing C, up to BLOCK_N = 128.

- ``HAS_DELAY`` (conduction delays, ``ScanSpec.max_delay > 0``; streamed only): S_E of the
  last ``D + 1`` steps in a per-simulation ring in global memory, the coupling gathered per edge
  ``sum_j C_ij S_E_j(k - lag_ij)`` with the lag columns read beside C's
  (:func:`rww.ops.triton.step.delayed_matvec`); the state, checkpoints and final state carry the
  ``D`` rows of S_E history. Without delays nothing of it is compiled.

Latency (small B): a single simulation uses one program, i.e. one SM; the step is a dependent
chain (stage S_E, barrier, mat-vec over L1-resident columns of C, expm1, division, clamp). On an
H200 it measured 2.85 us per step at N = 100 (16 columns unrolled; 3.46 with 8) and 62 us at
N = 1000 with 16 warps (``bench/results/gpu-tune-h200.json``), slower than the CPU backend for
one small simulation. B = 1 cannot use the rest of the GPU except by splitting N across
programs, which needs a grid-wide barrier (or a thread-block cluster) every step.

N of several thousand (design, not implemented): C no longer fits L2-resident streaming for
many programs (N = 4000 is 64 MB fp32), and one program per simulation leaves its state at
~6*N/threads registers (fine) but makes each step read N^2 floats through one SM. The plan is
(1) split the nodes of one simulation over a cluster of programs (Hopper thread-block clusters /
distributed shared memory, or a persistent cooperative grid with a global barrier per step), each
owning a row block of C in shared memory or registers and exchanging its slice of S_E through
DSMEM each step; (2) for batches sharing C, keep the USE_DOT product per row block so that each
C tile read serves BLOCK_B simulations; (3) sparse connectomes (typical density < 30%) as CSR
row blocks. The present kernel remains correct there (streamed variant), only slower.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .config import KernelConfig, ScanConstants, choose_config
from .philox import state_normals, step_counter
from .step import (NO_DIVERGENCE, NO_DIVERGENCE_HOST, bold_signal, coupling_matvec,
                   coupling_tile, delayed_matvec, diverged, load_coupling_resident, load_param,
                   rww_step, store_history, store_state)

# Rows of the parameter table (rww.params.PARAM_NAMES order; a contract).
(I_G, I_WEE, I_WIE, I_WEI, I_J, I_I0, I_WE, I_WI, I_SIG, I_AE, I_BE, I_DE, I_AI, I_BI, I_DI,
 I_TAUE, I_TAUI, I_GAME, I_GAMI) = (tl.constexpr(i) for i in range(19))


@triton.jit(do_not_specialize=["B", "n_steps", "k_start", "ckpt_every", "spt", "n_trs",
                               "seed_lo", "seed_hi", "t_lo", "t_hi", "sim0", "D"])
def _rww_fwd_kernel(
    p_params, s_pp, s_pb, s_pn,
    p_c, s_cb, s_ci, s_cj,
    p_state0, p_final, p_ckpt, p_bold, p_rse, p_rsi, p_rre, p_rri, p_bad, p_traj, p_vec,
    p_lag, s_lb, s_li, s_lj, p_ring,
    B, N, n_steps, k_start, ckpt_every, spt, n_trs,
    seed_lo, seed_hi, t_lo, t_hi, sim0, D,
    dt, sqrt_dt, dtb, kappa, gamma_h, inv_tau0, inv_alpha, ln_1m_rho, inv_rho,
    bold_scale, k1, k2, k3,
    GRIFFITHS: tl.constexpr, PER_SIM_C: tl.constexpr, PB: tl.constexpr, PN: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr,
    RESIDENT: tl.constexpr, USE_DOT: tl.constexpr,
    WRITE_OUT: tl.constexpr, REC: tl.constexpr, WRITE_TRAJ: tl.constexpr,
    HAS_DELAY: tl.constexpr = False,
):
    """Simulate local steps ``[k_start, k_start + n_steps)`` for the program's simulations.

    Layouts (all contiguous float32 unless said): params ``(P, Bp, Np)`` read through strides
    (0 on broadcast dims); C ``(N, N)`` or ``(B, N, N)`` through ``(s_cb, s_ci, s_cj)``;
    state0/final ``(6, B, N)``; ckpt ``(n_seg, 6, B, N)`` written at local steps multiple of
    ``ckpt_every``; bold and records ``(B, n_trs, N)``; bad ``(B,)`` int32, the first local step
    after which the state is invalid, or NO_DIVERGENCE; traj ``(n_steps, 7, B, N)``: the state
    before each step and its coupling input (for the adjoint); vec ``(B, N)`` scratch of the
    streamed mat-vec. ``(t_hi, t_lo)``: global noise step of local step ``k_start``; ``sim0``:
    noise index of simulation 0.

    ``HAS_DELAY`` (conduction delays of up to ``D`` steps; streamed only): state0, final and
    every checkpoint have ``6 + D`` rows (rows ``6 + d - 1``: S_E ``d`` steps back); lag
    ``(N, N)`` or ``(B, N, N)`` int32 read through ``(s_lb, s_li, s_lj)`` with the strides of C
    (``s_lb = 0``: shared); ring ``(B, D + 1, N)`` scratch: S_E of local step k in slot
    ``k mod (D + 1)``, filled from the history at the start, written every step behind a barrier
    (it replaces the staging row vec) and gathered per edge (:func:`step.delayed_matvec`).
    Without delays none of this is compiled.
    """
    pid = tl.program_id(0)
    o_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    o_n = tl.arange(0, BLOCK_N)
    m_b = o_b < B
    m_n = o_n < N
    m = m_b[:, None] & m_n[None, :]
    o_b64 = o_b.to(tl.int64)
    o_bn = o_b64[:, None] * N + o_n[None, :]                 # (b, n) in a (B, N) plane
    plane = B.to(tl.int64) * N

    k0 = seed_lo.to(tl.uint32)
    k1_key = seed_hi.to(tl.uint32)
    t_lo_u = t_lo.to(tl.uint32)
    t_hi_u = t_hi.to(tl.uint32)
    # Noise index of each simulation: sim0 + b in uint32 (wrapping add; sim0 + B <= 2**32).
    o_noise_sim = o_b.to(tl.uint32) + sim0.to(tl.uint32)

    g = load_param(p_params, I_G, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_ee = load_param(p_params, I_WEE, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_ie = load_param(p_params, I_WIE, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_ei = load_param(p_params, I_WEI, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    j_nmda = load_param(p_params, I_J, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    i_0 = load_param(p_params, I_I0, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_e = load_param(p_params, I_WE, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_i = load_param(p_params, I_WI, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    sigma = load_param(p_params, I_SIG, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    a_e = load_param(p_params, I_AE, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    b_e = load_param(p_params, I_BE, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    d_e = load_param(p_params, I_DE, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    a_i = load_param(p_params, I_AI, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    b_i = load_param(p_params, I_BI, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    d_i = load_param(p_params, I_DI, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    tau_e = load_param(p_params, I_TAUE, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    tau_i = load_param(p_params, I_TAUI, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    gam_e = load_param(p_params, I_GAME, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    gam_i = load_param(p_params, I_GAMI, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)

    p_cb, m_cb = coupling_tile(p_c, s_cb, o_b64, m_b, PER_SIM_C, RESIDENT, USE_DOT)
    if RESIDENT:
        b_c = load_coupling_resident(p_cb, m_cb, s_ci, s_cj, o_n, m_n, USE_DOT)
    else:
        b_c = 0.0

    rows = 6                      # rows of a checkpoint: the state, then the S_E history
    if HAS_DELAY:
        d1 = D + 1
        rows = 6 + D
        p_lb = p_lag + o_b64[:, None] * s_lb
        p_rg = p_ring + o_b64[:, None] * d1 * N + o_n[None, :]
        kmod0 = k_start % d1
        # S_E d steps before local step k_start (history row 6 + d - 1) into slot k_start - d
        for d in range(1, D + 1):
            slot = (kmod0 - d + d1) % d1
            tl.store(p_rg + slot * N, tl.load(p_state0 + (5 + d) * plane + o_bn, mask=m,
                                              other=0.0), mask=m)
        tl.debug_barrier()      # (a checkpoint at k_start reads these slots back)

    # Padded lanes start at the Balloon's rest point so that they stay finite.
    b_se = tl.load(p_state0 + o_bn, mask=m, other=0.0)
    b_si = tl.load(p_state0 + plane + o_bn, mask=m, other=0.0)
    b_x = tl.load(p_state0 + 2 * plane + o_bn, mask=m, other=0.0)
    b_f = tl.load(p_state0 + 3 * plane + o_bn, mask=m, other=0.0)
    b_v = tl.load(p_state0 + 4 * plane + o_bn, mask=m, other=0.0)
    b_q = tl.load(p_state0 + 5 * plane + o_bn, mask=m, other=0.0)

    # TR means of the rates summed in float64 (thousands of steps per TR), as the CPU backend does;
    # the division in float32 (a float64 division is a slow-path call that spilled on sm_90).
    b_sum_re = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float64)
    b_sum_ri = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float64)
    b_bad = tl.full((BLOCK_B, BLOCK_N), NO_DIVERGENCE, dtype=tl.int32)

    for jj in range(0, n_steps):
        k = k_start + jj
        j = k - k_start           # a tensor in both compiled and interpreted mode
        if WRITE_OUT:
            if k % ckpt_every == 0:
                p_ck = p_ckpt + (k // ckpt_every).to(tl.int64) * rows * plane + o_bn
                store_state(p_ck, plane, b_se, b_si, b_x, b_f, b_v, b_q, m)
                if HAS_DELAY:
                    # the history from the ring (slots written before the last step's barrier)
                    store_history(p_ck, plane, p_rg, N, k % d1, d1, D, m)

        if HAS_DELAY:
            # S_E of this step into its slot; the first barrier keeps the store from
            # overwriting S_E(k - D - 1) while other warps still gather it for step k - 1.
            kmod = k % d1
            tl.debug_barrier()
            tl.store(p_rg + kmod * N, b_se, mask=m)
            tl.debug_barrier()
            b_coup = delayed_matvec(p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_ring, o_b,
                                    o_b64, o_n, m_b, m_n, N, d1, kmod, 0, b_se, p_ring,
                                    BLOCK_B, BLOCK_N, BLOCK_J, -1, False)
        elif RESIDENT:
            b_coup = coupling_matvec(b_se, b_c, p_cb, m_cb, s_ci, s_cj, p_vec, o_b, o_b64, o_n, m_b,
                                     m_n, N,
                                     BLOCK_B, BLOCK_N, BLOCK_J, RESIDENT, USE_DOT)
        else:
            # Stage S_E for the streamed mat-vec; the first barrier keeps this store from
            # overwriting values other warps are still reading for the previous step.
            tl.debug_barrier()
            tl.store(p_vec + o_bn, b_se, mask=m)
            tl.debug_barrier()
            b_coup = coupling_matvec(b_se, b_c, p_cb, m_cb, s_ci, s_cj, p_vec, o_b, o_b64, o_n, m_b,
                                     m_n, N,
                                     BLOCK_B, BLOCK_N, BLOCK_J, RESIDENT, USE_DOT)

        if WRITE_TRAJ:
            p_tr = p_traj + j.to(tl.int64) * 7 * plane + o_bn
            store_state(p_tr, plane, b_se, b_si, b_x, b_f, b_v, b_q, m)
            tl.store(p_tr + 6 * plane, b_coup, mask=m)

        c0, c1 = step_counter(t_lo_u, t_hi_u, j)
        xi_e, xi_i = state_normals(k0, k1_key, c0, c1, o_n[None, :], o_noise_sim[:, None])

        out = rww_step(b_se, b_si, b_x, b_f, b_v, b_q, b_coup, xi_e, xi_i,
                       g, w_ee, w_ie, w_ei, j_nmda, i_0, w_e, w_i, sigma,
                       a_e, b_e, d_e, a_i, b_i, d_i, tau_e, tau_i, gam_e, gam_i,
                       dt, sqrt_dt, dtb, kappa, gamma_h, inv_tau0, inv_alpha, ln_1m_rho, inv_rho,
                       GRIFFITHS)
        b_se = out[0]
        b_si = out[1]
        b_x = out[2]
        b_f = out[3]
        b_v = out[4]
        b_q = out[5]

        if WRITE_OUT:
            bad = diverged(b_se, b_si, b_x, b_f, b_v, b_q, GRIFFITHS)
            b_bad = tl.minimum(b_bad, tl.where(bad, k, NO_DIVERGENCE))
            if REC & 12:
                b_sum_re += out[6]
                b_sum_ri += out[7]
            if (k + 1) % spt == 0:
                tr = (k + 1) // spt - 1
                o_out = (o_b64[:, None] * n_trs + tr) * N + o_n[None, :]
                tl.store(p_bold + o_out, bold_signal(b_q, b_v, bold_scale, k1, k2, k3), mask=m)
                if REC & 1:
                    tl.store(p_rse + o_out, b_se, mask=m)
                if REC & 2:
                    tl.store(p_rsi + o_out, b_si, mask=m)
                if REC & 4:
                    tl.store(p_rre + o_out, b_sum_re.to(tl.float32) / spt.to(tl.float32),
                             mask=m)
                if REC & 8:
                    tl.store(p_rri + o_out, b_sum_ri.to(tl.float32) / spt.to(tl.float32),
                             mask=m)
                if REC & 12:
                    b_sum_re = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float64)
                    b_sum_ri = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float64)

    if WRITE_OUT:
        o_fin = p_final + o_bn
        store_state(o_fin, plane, b_se, b_si, b_x, b_f, b_v, b_q, m)
        if HAS_DELAY:
            # S_E of local steps k_end - d (slots written before the last step's barrier)
            store_history(o_fin, plane, p_rg, N, (k_start + n_steps) % d1, d1, D, m)
        first = tl.min(tl.where(m, b_bad, NO_DIVERGENCE), axis=1)
        tl.store(p_bad + o_b, first, mask=m_b)


def _dummy(like):
    """A one-element tensor standing for a pointer argument the variant never touches."""
    return like.new_empty(1)


def new_output(like, *shape, dtype=None):
    """An output buffer the kernels fill. With ``RWW_POISON_OUTPUTS=1`` (the tests set it) it
    starts as NaN (-7 for integers), so an element a kernel fails to write cannot pass for a
    stale but plausible value."""
    dtype = dtype or like.dtype
    if os.environ.get("RWW_POISON_OUTPUTS") == "1":
        fill = float("nan") if dtype.is_floating_point else -7
        return torch.full(shape, fill, dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


def _coupling_strides(coupling):
    if coupling.dim() == 2:
        return 0, coupling.stride(0), coupling.stride(1)
    return coupling.stride(0), coupling.stride(1), coupling.stride(2)


def forward_coupling_operand(coupling, cfg: KernelConfig):
    """``(tensor, s_cb, s_ci, s_cj)`` with ``C[b, i, j]`` at ``tensor + b*s_cb + i*s_ci +
    j*s_cj``. The streamed and tl.dot variants read C by columns (all rows i of one column j at
    once), so they get a contiguous copy of C^T (unit stride along i: coalesced loads); the
    register-resident variant reads C once and takes it as it is."""
    if cfg.resident:
        coupling = coupling.contiguous()
        return (coupling, *_coupling_strides(coupling))
    ct = coupling.transpose(-1, -2).contiguous()
    s_cb = ct.stride(0) if ct.dim() == 3 else 0
    return ct, s_cb, ct.stride(-1), ct.stride(-2)


def forward_lag_operand(delays):
    """``(tensor, s_lb, s_li, s_lj)``: the lags laid out as :func:`forward_coupling_operand`
    lays out C for the streamed variant (``lag[b, i, j]`` at ``tensor + b*s_lb + i*s_li +
    j*s_lj``, unit stride along i; ``s_lb = 0`` for lags shared by the batch), int32."""
    lt = delays.to(torch.int32).transpose(-1, -2).contiguous()
    s_lb = lt.stride(0) if lt.dim() == 3 else 0
    return lt, s_lb, lt.stride(-1), lt.stride(-2)


def check_delay_config(cfg: KernelConfig):
    """Conduction delays are simulated by the streamed variant only."""
    if cfg.resident or cfg.use_dot:
        raise ValueError(
            f"conduction delays run in the streamed coupling variant only (resident=False, "
            f"use_dot=False); got resident={cfg.resident}, use_dot={cfg.use_dot}. Leave both "
            "unset (choose_config(..., delays=True) picks the streamed variant)")


def _param_strides(params):
    _, bp, np_ = params.shape
    return (params.stride(0), params.stride(1) if bp > 1 else 0, params.stride(2) if np_ > 1 else 0,
            bp > 1, np_ > 1)


def _check_delays(rows: int, delays):
    if (rows > 6) != (delays is not None):
        raise ValueError(f"a state of {rows} rows needs delays (6 rows: no delays, 6 + D: "
                         "delays of up to D steps)" if rows > 6 else
                         "delays given with a 6-row state (no S_E history)")


def _check_inputs(params, coupling, state):
    for name, t in (("params", params), ("coupling", coupling), ("state", state)):
        if t.dtype != torch.float32:
            raise TypeError(f"{name}: the Triton kernels compute in float32, got {t.dtype}")
    batch, n_nodes = state.shape[1], state.shape[2]
    if n_nodes * n_nodes >= 2**31:
        raise ValueError(f"n_nodes={n_nodes}: C offsets are 32-bit (N*N < 2**31)")
    return batch, n_nodes


def fwd_kernel_args(params, c_op, state, consts, cfg, n_steps, k_start, ckpt_every, n_trs,
                    outputs, write_out, rec, write_traj, lag_op=None):
    """``(grid, args, kwargs)`` of one ``_rww_fwd_kernel`` launch (also used by rww.ops.triton.aot to
    compile exactly what the launcher runs); ``c_op`` from :func:`forward_coupling_operand`;
    with conduction delays ``lag_op`` from :func:`forward_lag_operand`, ``state`` with its
    ``6 + D`` rows and ``outputs["ring"]`` a ``(B, D + 1, N)`` scratch."""
    batch, n_nodes = state.shape[1], state.shape[2]
    max_delay = state.shape[0] - 6
    if lag_op is None:
        lag_op = (_dummy(state).to(torch.int32), 0, 0, 0)
        ring = outputs.get("ring", outputs["vec"])
    else:
        check_delay_config(cfg)
        ring = outputs["ring"]
    s_pp, s_pb, s_pn, pb, pn = _param_strides(params)
    coupling, s_cb, s_ci, s_cj = c_op
    t = consts.t0 + k_start
    grid = (triton.cdiv(batch, cfg.block_b),)
    args = (
        params, s_pp, s_pb, s_pn,
        coupling, s_cb, s_ci, s_cj,
        state, outputs["final"], outputs["ckpt"], outputs["bold"], outputs["S_E"],
        outputs["S_I"], outputs["r_E"], outputs["r_I"], outputs["bad"], outputs["traj"],
        outputs["vec"], *lag_op, ring,
        batch, n_nodes, n_steps, k_start, ckpt_every, consts.steps_per_tr, n_trs,
        consts.seed & 0xFFFFFFFF, consts.seed >> 32, t & 0xFFFFFFFF, t >> 32, consts.sim_offset,
        max_delay,
        *consts.kernel_floats(), consts.bold_scale, consts.k1, consts.k2, consts.k3,
    )
    kwargs = dict(
        GRIFFITHS=consts.griffiths, PER_SIM_C=coupling.dim() == 3, PB=pb, PN=pn,
        BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_J=cfg.block_j,
        RESIDENT=cfg.resident, USE_DOT=cfg.use_dot,
        WRITE_OUT=write_out, REC=rec, WRITE_TRAJ=write_traj,
        num_warps=cfg.num_warps,
    )
    if max_delay:
        kwargs["HAS_DELAY"] = True      # (absent otherwise: the default, the no-delay kernel)
    return grid, args, kwargs


def _launch(*launch):
    grid, args, kwargs = fwd_kernel_args(*launch)
    _rww_fwd_kernel[grid](*args, **kwargs)


def rww_fwd(params, coupling, state, consts: ScanConstants, n_steps: int, checkpoint_every: int,
            record=(), cfg: KernelConfig | None = None, delays=None) -> dict:
    """Run the whole scan in one launch.

    Args:
        params: ``(P, Bp, Np)`` float32 parameter table (rows in rww.params.PARAM_NAMES order).
        coupling: ``(N, N)`` shared or ``(B, N, N)`` per-simulation float32 coupling.
        state: ``(6 + D, B, N)`` float32 initial state ``(S_E, S_I, x, f - 1, v - 1, q - 1)``,
            then with conduction delays (D > 0) S_E 1, 2, ..., D steps back.
        consts: :class:`ScanConstants` (dt in the preset's unit, Balloon step in seconds).
        n_steps: steps to simulate (a multiple of ``consts.steps_per_tr``; < 2**31).
        checkpoint_every: K; checkpoints are the states at local steps 0, K, 2K, ...
        record: names among ``("S_E", "S_I", "r_E", "r_I")`` to return at TR resolution.
        cfg: tile shapes (default :func:`choose_config`).
        delays: with D > 0, int lags ``(N, N)`` or ``(B, N, N)`` in ``[0, D]`` (row: receiving
            region); the coupling input is then ``sum_j C_ij S_E_j(t - lag_ij)``.

    Returns:
        dict with ``bold (B, n_TR, N)``, ``records`` name -> ``(B, n_TR, N)``, ``state (6 + D, B,
        N)`` final state, ``checkpoints (max(1, ceil(n_steps/K)), 6 + D, B, N)``, ``first_bad (B,)``
        int64 (global step ``t0 + k`` of the first step after which a state is non-finite or,
        deco2014, f, v or q <= 0; -1 if none). All on the inputs' device.
    """
    batch, n_nodes = _check_inputs(params, coupling, state)
    if not 0 <= n_steps < 2**31 or n_steps % consts.steps_per_tr:
        raise ValueError(f"n_steps={n_steps}: must be a multiple of steps_per_tr below 2**31")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    params, coupling, state = params.contiguous(), coupling.contiguous(), state.contiguous()
    rows = state.shape[0]
    _check_delays(rows, delays)
    cfg = cfg or choose_config(batch, n_nodes, coupling.dim() == 3, delays=delays is not None)
    n_trs = n_steps // consts.steps_per_tr
    n_seg = max(1, -(-n_steps // checkpoint_every))
    out = {
        "final": new_output(state, rows, batch, n_nodes),
        "ckpt": new_output(state, n_seg, rows, batch, n_nodes),
        "bold": new_output(state, batch, n_trs, n_nodes),
        "bad": new_output(state, batch, dtype=torch.int32),
        "traj": _dummy(state),
        "vec": (_dummy(state) if cfg.resident or delays is not None
                else new_output(state, batch, n_nodes)),
    }
    lag_op = None
    if delays is not None:
        out["ring"] = new_output(state, batch, rows - 5, n_nodes)
        lag_op = forward_lag_operand(delays)
    rec = 0
    for bit, name in enumerate(("S_E", "S_I", "r_E", "r_I")):
        if name in record:
            out[name] = new_output(state, batch, n_trs, n_nodes)
            rec |= 1 << bit
        else:
            out[name] = _dummy(state)
    if n_steps == 0:
        # Nothing to simulate: the kernel's loop would not store the step-0 checkpoint.
        out["ckpt"].copy_(state.unsqueeze(0))
        out["final"].copy_(state)
        out["bad"].fill_(NO_DIVERGENCE_HOST)
    else:
        _launch(params, forward_coupling_operand(coupling, cfg), state, consts, cfg, n_steps, 0,
                checkpoint_every, n_trs, out, True, rec, False, lag_op)
    bad = out["bad"].to(torch.int64)
    first_bad = torch.where(bad == NO_DIVERGENCE_HOST, torch.full_like(bad, -1), bad + consts.t0)
    return {"bold": out["bold"], "records": {n: out[n] for n in record}, "state": out["final"],
            "checkpoints": out["ckpt"], "first_bad": first_bad}


def rww_fwd_trajectory(params, coupling, start_state, consts: ScanConstants, k_start: int,
                       n_steps: int, cfg: KernelConfig | None = None, traj=None, c_op=None,
                       lag_op=None, ring=None):
    """Recompute local steps ``[k_start, k_start + n_steps)`` from ``start_state`` (the
    checkpoint at ``k_start``), keeping what the adjoint needs.

    Args:
        start_state: ``(6 + D, B, N)`` float32, the state at local step ``k_start`` (with
            conduction delays, its S_E history).
        traj: optional preallocated ``(>= n_steps, 7, B, N)`` buffer (reused across segments).
        c_op: optional :func:`forward_coupling_operand` of ``coupling`` for ``cfg`` (computed
            once by the backward pass instead of once per segment).
        lag_op: with delays (D > 0), :func:`forward_lag_operand` of the lags (required then).
        ring: optional ``(B, D + 1, N)`` scratch for the delayed coupling (reused).

    Returns:
        ``traj[:n_steps]``: ``(n_steps, 7, B, N)``; row ``j`` holds the state before local step
        ``k_start + j`` (6 rows) and that step's coupling input ``C @ S_E`` (row 6). Noise is
        regenerated from the counter (the same normals as the forward pass).
    """
    batch, n_nodes = _check_inputs(params, coupling, start_state)
    params, coupling = params.contiguous(), coupling.contiguous()
    start_state = start_state.contiguous()
    delayed = start_state.shape[0] > 6
    cfg = cfg or choose_config(batch, n_nodes, coupling.dim() == 3, delays=delayed)
    if traj is None:
        traj = new_output(start_state, n_steps, 7, batch, n_nodes)
    out = {name: _dummy(start_state) for name in ("final", "ckpt", "bold", "S_E", "S_I", "r_E",
                                                  "r_I")}
    out["bad"] = torch.empty(1, dtype=torch.int32, device=start_state.device)
    out["traj"] = traj
    if delayed and lag_op is None:
        raise ValueError("rww_fwd_trajectory: a state with S_E history needs lag_op")
    out["vec"] = (_dummy(start_state) if cfg.resident or delayed
                  else new_output(start_state, batch, n_nodes))
    if delayed:
        out["ring"] = (ring if ring is not None
                       else new_output(start_state, batch, start_state.shape[0] - 5, n_nodes))
    if n_steps:
        c_op = c_op or forward_coupling_operand(coupling, cfg)
        _launch(params, c_op, start_state, consts, cfg, n_steps, k_start, 1, 0, out,
                False, 0, True, lag_op if delayed else None)
    return traj[:n_steps]
