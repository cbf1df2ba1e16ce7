"""The discrete adjoint kernel: per checkpoint segment, recompute the forward from its checkpoint
(checked bitwise against the stored one), then sweep the segment backwards accumulating the
gradients of the coefficients, the coupling matrix and the initial state."""

from __future__ import annotations

import numpy as np
from numba import njit
from . import cache  # noqa: F401  (before any @njit(cache=True): the kernels' cache key)

from .layout import (C_AE, C_AI, C_AMP, C_BE, C_BI, C_DE, C_DI, C_E0, C_EE, C_EI, C_G, C_GE, C_GI,
                     C_I0, C_IE, C_KE, C_KI, FASTMATH, FLUSH, H_DT, H_DTB, H_GAMMA, H_IALPHA,
                     H_IRHO, H_ITAU0, H_K1, H_K2, H_K3, H_KAPPA, H_LNR, H_SCALE, LANES, N_COEF,
                     N_TAPE, N_WROWS, W_BLK, W_COEF, W_CS, W_EXT, W_F, W_GL, W_GRE, W_GRI, W_GS,
                     W_HDE, W_HDI, W_HYE, W_HYI, W_IE, W_II, W_LAM, W_LCS, W_NXT, W_P, W_PE, W_PI,
                     W_Q, W_R, W_RE, W_RI, W_SE, W_SI, W_V, W_XIE, W_XII)
from .step import _coupling_times_vector, _haemo, _load_coefficients, _load_state, _step

# ----------------------------------------------------------------------------- adjoint
@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _adjoint_step(W, hc, griffiths, NP):
    """Adjoint of one step, node by node: from ``W[W_LAM]`` = dL/d(state after the step) (outputs
    of this step already injected) and the step's tape rows, overwrite ``W[W_LAM]`` with dL/d(state
    before the step) except for the coupling term (added by :func:`_adjoint_couple`), add the
    step's terms to the coefficient sums ``W[W_BLK]`` (up to the constant factors applied in the
    backend) and leave dL/d(C @ S_E) in ``W[W_LCS]``. Two loops, Balloon then neural, for the
    register-pressure reason given in :func:`_step`."""
    T = W.dtype.type
    one = T(1.0)
    zero = T(0.0)
    dtb = hc[H_DTB]
    kappa = hc[H_KAPPA]
    gam = hc[H_GAMMA]
    itau0 = hc[H_ITAU0]
    ialpha = hc[H_IALPHA]
    lnr = hc[H_LNR]
    irho = hc[H_IRHO]
    c_x = one - dtb * kappa
    c_vq = dtb * itau0
    m_ialpha = ialpha - one
    # Balloon: x' = x + dtb (S_E - kappa x - gamma (f - 1)), f' = f + dtb x,
    # v' = v + dtb (f - P)/tau0, q' = q + dtb (f (1 - R)/rho - P q / v)/tau0,
    # P = v**(1/alpha) (dP/dv = P/(alpha v)), R = (1-rho)**(1/f) (dR/df = -R ln(1-rho)/f**2).
    for i in range(NP):
        l_x1 = W[(W_LAM + 2) * LANES + i]
        l_f1 = W[(W_LAM + 3) * LANES + i]
        l_v1 = W[(W_LAM + 4) * LANES + i]
        l_q1 = W[(W_LAM + 5) * LANES + i]
        if griffiths:
            # x = tanh(.), f - 1, v - 1, q - 1 = tanh(.): d tanh(u)/du = 1 - tanh(u)**2
            x1 = W[(W_NXT + 2) * LANES + i]
            fm = W[(W_NXT + 3) * LANES + i]       # the rows hold f - 1, v - 1, q - 1
            vm = W[(W_NXT + 4) * LANES + i]
            qm = W[(W_NXT + 5) * LANES + i]
            l_x1 = l_x1 * (one - x1 * x1)
            l_f1 = l_f1 * (one - fm * fm)
            l_v1 = l_v1 * (one - vm * vm)
            l_q1 = l_q1 * (one - qm * qm)
        f = one + W[W_F * LANES + i]       # the Jacobian is that of f, v, q: d/d(f - 1) = d/df
        v = one + W[W_V * LANES + i]
        q = one + W[W_Q * LANES + i]
        vp = W[W_P * LANES + i]
        rp = W[W_R * LANES + i]
        vpv = vp / v
        W[W_EXT * LANES + i] = l_x1 * dtb                              # dL/dS_E through x'
        W[(W_LAM + 2) * LANES + i] = l_x1 * c_x + l_f1 * dtb
        W[(W_LAM + 3) * LANES + i] = (-(l_x1 * dtb * gam) + l_f1 + l_v1 * c_vq
                           + l_q1 * c_vq * ((one - rp) + rp * lnr / f) * irho)
        W[(W_LAM + 4) * LANES + i] = (l_v1 * (one - c_vq * vpv * ialpha)
                           - l_q1 * c_vq * q * vpv / v * m_ialpha)
        W[(W_LAM + 5) * LANES + i] = l_q1 * (one - c_vq * vpv)
    dt = hc[H_DT]
    for i in range(NP):
        s_e = W[W_SE * LANES + i]
        s_i = W[W_SI * LANES + i]
        l_se1 = W[W_LAM * LANES + i]
        l_si1 = W[(W_LAM + 1) * LANES + i]
        p_e = W[W_PE * LANES + i]
        p_i = W[W_PI * LANES + i]
        i_e = W[W_IE * LANES + i]
        i_i = W[W_II * LANES + i]
        if griffiths:
            se1 = W[W_NXT * LANES + i]
            si1 = W[(W_NXT + 1) * LANES + i]
            l_pe = l_se1 * (one - se1 * se1) if p_e > zero else zero    # relu(0) passes nothing
            l_pi = l_si1 * (one - si1 * si1) if p_i > zero else zero
        else:
            # torch.clamp passes the gradient where min <= x <= max
            l_pe = l_se1 if (p_e >= zero) & (p_e <= one) else zero
            l_pi = l_si1 if (p_i >= zero) & (p_i <= one) else zero
        r_e = W[W_RE * LANES + i]
        r_i = W[W_RI * LANES + i]
        ge = W[(W_COEF + C_GE) * LANES + i]
        l_re = l_pe * dt * (one - s_e) * ge + W[W_GRE * LANES + i]
        l_ri = l_pi * dt * W[(W_COEF + C_GI) * LANES + i] + W[W_GRI * LANES + i]
        W[(W_BLK + C_KE) * LANES + i] += l_pe * s_e                      # x -dt
        W[(W_BLK + C_GE) * LANES + i] += l_pe * (one - s_e) * r_e        # x dt
        W[(W_BLK + C_KI) * LANES + i] += l_pi * s_i                      # x -dt
        W[(W_BLK + C_GI) * LANES + i] += l_pi * r_i                      # x dt
        W[(W_BLK + C_AMP) * LANES + i] += l_pe * W[W_XIE * LANES + i] + l_pi * W[W_XII * LANES + i]
        l_se = l_pe * (one - dt * W[(W_COEF + C_KE) * LANES + i] - dt * ge * r_e)
        l_si = l_pi * (one - dt * W[(W_COEF + C_KI) * LANES + i])
        l_ye = l_re * W[W_HYE * LANES + i]
        l_yi = l_ri * W[W_HYI * LANES + i]
        W[(W_BLK + C_AE) * LANES + i] += l_ye * i_e
        W[(W_BLK + C_BE) * LANES + i] += l_ye                            # x -1
        W[(W_BLK + C_DE) * LANES + i] += l_re * W[W_HDE * LANES + i]
        W[(W_BLK + C_AI) * LANES + i] += l_yi * i_i
        W[(W_BLK + C_BI) * LANES + i] += l_yi                            # x -1
        W[(W_BLK + C_DI) * LANES + i] += l_ri * W[W_HDI * LANES + i]
        l_ie = l_ye * W[(W_COEF + C_AE) * LANES + i]
        l_ii = l_yi * W[(W_COEF + C_AI) * LANES + i]
        if griffiths:
            # tanh(relu(u)): relu passes where its output is > 0, i.e. where I > 0
            l_ie = l_ie * (one - i_e * i_e) if i_e > zero else zero
            l_ii = l_ii * (one - i_i * i_i) if i_i > zero else zero
        W[(W_BLK + C_E0) * LANES + i] += l_ie
        W[(W_BLK + C_EE) * LANES + i] += l_ie * s_e
        W[(W_BLK + C_G) * LANES + i] += l_ie * W[W_CS * LANES + i]
        W[(W_BLK + C_IE) * LANES + i] += l_ie * s_i                      # x -1
        W[(W_BLK + C_I0) * LANES + i] += l_ii
        W[(W_BLK + C_EI) * LANES + i] += l_ii * s_e
        W[W_LAM * LANES + i] = (l_se + l_ie * W[(W_COEF + C_EE) * LANES + i] + l_ii * W[(W_COEF + C_EI) * LANES + i]
                       + W[W_EXT * LANES + i])
        W[(W_LAM + 1) * LANES + i] = l_si - l_ie * W[(W_COEF + C_IE) * LANES + i] - l_ii
        W[W_LCS * LANES + i] = l_ie * W[(W_COEF + C_G) * LANES + i]


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _adjoint_couple(W, cpm, bc, N, NP):
    """``W[W_LAM] += C^T W[W_LCS]`` (``cpm[0]`` holds C: its rows as axpys, summed in row order;
    or C's packed upper triangle when C is symmetric and large)."""
    _coupling_times_vector(W, cpm, bc, N, NP, W_LCS, W_EXT)
    for i in range(NP):
        W[W_LAM * LANES + i] = W[W_LAM * LANES + i] + W[W_EXT * LANES + i]


@njit(forceinline=True)
def _flush(W, acc, NP):
    """Add the state-dtype partial sums into the float64 totals and reset them."""
    T = W.dtype.type
    for k in range(N_COEF):
        for i in range(NP):
            acc[k, i] += W[(W_BLK + k) * LANES + i]
            W[(W_BLK + k) * LANES + i] = T(0.0)


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _flush_coupling(W, gacc, used, N, NP):
    """``gacc[r, i] += sum_j W[W_GL + j][r] * W[W_GS + j][i]`` over the FLUSH rows of the block
    (rows ``used..FLUSH-1`` are zeroed first, so a partial block adds nothing for them). The sum
    over j has a constant trip count, so LLVM unrolls it and vectorises over i, the partial sum
    staying in a register; it runs in the state dtype, then goes into the float64 total."""
    T = W.dtype.type
    for j in range(used, FLUSH):
        for i in range(NP):
            W[(W_GL + j) * LANES + i] = T(0.0)
            W[(W_GS + j) * LANES + i] = T(0.0)
    # LLVM runs this loop 32 lanes per iteration (two AVX-512 vectors) and the rest one lane at a
    # time, 16 scalar FMAs each: with NP = 72 the 8-lane tail took 3/4 of the time. So the loop
    # runs over NP rounded up to 32 (lanes beyond NP of the GS rows are zero, never written).
    NPV = ((NP + 31) // 32) * 32
    for r in range(N):
        # The FLUSH coefficients are read before the loop over i (LLVM cannot hoist them past the
        # store, not knowing i < LANES) and the block sum goes to a workspace row first: with
        # every access in W at a constant row distance the loop vectorises without run-time alias
        # checks.
        l0, l1, l2, l3 = (W[W_GL * LANES + r], W[(W_GL + 1) * LANES + r],
                          W[(W_GL + 2) * LANES + r], W[(W_GL + 3) * LANES + r])
        l4, l5, l6, l7 = (W[(W_GL + 4) * LANES + r], W[(W_GL + 5) * LANES + r],
                          W[(W_GL + 6) * LANES + r], W[(W_GL + 7) * LANES + r])
        l8, l9, l10, l11 = (W[(W_GL + 8) * LANES + r], W[(W_GL + 9) * LANES + r],
                            W[(W_GL + 10) * LANES + r], W[(W_GL + 11) * LANES + r])
        l12, l13, l14, l15 = (W[(W_GL + 12) * LANES + r], W[(W_GL + 13) * LANES + r],
                              W[(W_GL + 14) * LANES + r], W[(W_GL + 15) * LANES + r])
        for i in range(NPV):
            # four chains of four FMAs, not one of sixteen: the FMA latency bounded the loop
            a = l0 * W[W_GS * LANES + i] + l1 * W[(W_GS + 1) * LANES + i]
            b = l4 * W[(W_GS + 4) * LANES + i] + l5 * W[(W_GS + 5) * LANES + i]
            c = l8 * W[(W_GS + 8) * LANES + i] + l9 * W[(W_GS + 9) * LANES + i]
            d = l12 * W[(W_GS + 12) * LANES + i] + l13 * W[(W_GS + 13) * LANES + i]
            a = a + l2 * W[(W_GS + 2) * LANES + i] + l3 * W[(W_GS + 3) * LANES + i]
            b = b + l6 * W[(W_GS + 6) * LANES + i] + l7 * W[(W_GS + 7) * LANES + i]
            c = c + l10 * W[(W_GS + 10) * LANES + i] + l11 * W[(W_GS + 11) * LANES + i]
            d = d + l14 * W[(W_GS + 14) * LANES + i] + l15 * W[(W_GS + 15) * LANES + i]
            W[W_EXT * LANES + i] = (a + b) + (c + d)
        for i in range(NP):
            gacc[r, i] += W[W_EXT * LANES + i]


@njit(forceinline=True)
def _bwd_begin(W, b, coef, grad_state, acc, gacc, N, NP):
    """Start the adjoint of simulation ``b``: coefficients, dL/d(final state), zero sums."""
    T = W.dtype.type
    _load_coefficients(W, b, coef, N, NP)
    for kk in range(6):
        for i in range(NP):
            W[(W_LAM + kk) * LANES + i] = grad_state[kk, b, i] if i < N else T(0.0)
    for k in range(N_COEF):
        for i in range(NP):
            acc[k, i] = 0.0
            W[(W_BLK + k) * LANES + i] = T(0.0)
    for r in range(gacc.shape[0]):
        for i in range(NP):
            gacc[r, i] = 0.0


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _recompute_segment(W, tape, b, seg, ckpt, cp, bc, hc, griffiths, n_steps, k_every, t0, key0,
                       key1, sim0, N, NP):
    """Recompute segment ``seg`` of simulation ``b`` from its checkpoint into ``tape``
    (K + 1, N_TAPE, NP), step-major (one stream for the prefetcher, not 21): the state before
    every step and the step's intermediates, and at step ``length`` the state at the end.
    Returns how many end-state values differ from the next checkpoint (0 unless the
    recomputation is inexact)."""
    n_seg = ckpt.shape[0]
    start = seg * k_every
    length = min(start + k_every, n_steps) - start
    _load_state(W, ckpt[seg], b, N, NP)
    for j in range(length):
        for fld in range(6):
            for i in range(NP):
                tape[j, fld, i] = W[(fld) * LANES + i]
        _step(W, cp, bc, hc, griffiths, t0 + start + j, sim0 + b, key0, key1, N, NP, True)
        for fld in range(6, N_TAPE):
            for i in range(NP):
                tape[j, fld, i] = W[(fld) * LANES + i]
    for fld in range(6):
        for i in range(NP):
            tape[length, fld, i] = W[(fld) * LANES + i]
    n_mismatch = 0
    if seg + 1 < n_seg:
        for fld in range(6):
            for i in range(N):
                n_mismatch += 1 if W[(fld) * LANES + i] != ckpt[seg + 1, fld, b, i] else 0
    return n_mismatch


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _step_tape_and_outputs(W, tape, j, k, b, steps_per_tr, grad_bold, grad_rec, grec_slot, hc,
                           inv_spt, N, NP):
    """Before the adjoint of local step ``k`` (tape row ``j``): the state after the step moves to
    ``W[W_NXT]``, the step's tape rows are loaded, the upstream gradients of the outputs sampled
    after it (BOLD, S_E, S_I at a TR's end) are added to ``W[W_LAM]``, and the TR-mean rate
    records' gradients (weight 1/spt on every step of their TR) go to ``W[W_GRE]``, ``W[W_GRI]``."""
    T = W.dtype.type
    zero = T(0.0)
    one = T(1.0)
    scale = hc[H_SCALE]
    k1 = hc[H_K1]
    k2 = hc[H_K2]
    k3 = hc[H_K3]
    tr = k // steps_per_tr
    # the state after this step is in the state rows (loaded for step j + 1, or the end
    # state): copied within W, which stays in L1, rather than read again from the tape
    for fld in range(6):
        for i in range(NP):
            W[(W_NXT + fld) * LANES + i] = W[(fld) * LANES + i]
    for fld in range(N_TAPE):
        for i in range(NP):
            W[(fld) * LANES + i] = tape[j, fld, i]
    if (k + 1) % steps_per_tr == 0:
        # outputs sampled from the state after this step
        for i in range(N):
            v1 = one + W[(W_NXT + 4) * LANES + i]
            q1 = one + W[(W_NXT + 5) * LANES + i]
            g = grad_bold[b, tr, i] * scale
            W[(W_LAM + 5) * LANES + i] += g * (-k1 - k2 / v1)
            W[(W_LAM + 4) * LANES + i] += g * (k2 * q1 / (v1 * v1) - k3)
        if grec_slot[0] >= 0:
            for i in range(N):
                W[W_LAM * LANES + i] += grad_rec[grec_slot[0], b, tr, i]
        if grec_slot[1] >= 0:
            for i in range(N):
                W[(W_LAM + 1) * LANES + i] += grad_rec[grec_slot[1], b, tr, i]
    for i in range(NP):
        W[W_GRE * LANES + i] = zero
        W[W_GRI * LANES + i] = zero
    if grec_slot[2] >= 0:
        for i in range(N):
            W[W_GRE * LANES + i] = grad_rec[grec_slot[2], b, tr, i] * inv_spt
    if grec_slot[3] >= 0:
        for i in range(N):
            W[W_GRI * LANES + i] = grad_rec[grec_slot[3], b, tr, i] * inv_spt


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _sweep_segment(W, tape, b, seg, cpm, bc, hc, griffiths, steps_per_tr, n_steps, k_every,
                   grad_bold, grad_rec, grec_slot, want_gc, acc, gacc, N, NP):
    """Sweep the adjoint of simulation ``b`` back through segment ``seg`` from its tape: on entry
    ``W[W_LAM]`` is dL/d(state at the segment's end), on exit dL/d(state at its start); the
    coefficient and coupling sums are added into ``acc`` and ``gacc`` (float64)."""
    T = W.dtype.type
    inv_spt = T(1.0 / steps_per_tr)
    start = seg * k_every
    length = min(start + k_every, n_steps) - start
    for fld in range(6):
        for i in range(NP):
            W[(fld) * LANES + i] = tape[length, fld, i]
    since_flush = 0
    for j in range(length - 1, -1, -1):
        k = start + j
        _step_tape_and_outputs(W, tape, j, k, b, steps_per_tr, grad_bold, grad_rec, grec_slot,
                               hc, inv_spt, N, NP)
        _adjoint_step(W, hc, griffiths, NP)
        if want_gc:
            for i in range(NP):
                W[(W_GL + since_flush) * LANES + i] = W[W_LCS * LANES + i]
                W[(W_GS + since_flush) * LANES + i] = W[W_SE * LANES + i]
        _adjoint_couple(W, cpm, bc, N, NP)
        since_flush += 1
        if since_flush == FLUSH:
            _flush(W, acc, NP)
            if want_gc:
                _flush_coupling(W, gacc, FLUSH, N, NP)
            since_flush = 0
    _flush(W, acc, NP)
    if want_gc and since_flush > 0:
        _flush_coupling(W, gacc, since_flush, N, NP)


@njit(forceinline=True)
def _bwd_end(W, b, acc, gacc, want_gc, gc_slot, g_coef, g_c, g_state0, N):
    """Write simulation ``b``'s gradients: initial state, coefficient sums, coupling partial."""
    for kk in range(6):
        for i in range(N):
            g_state0[kk, b, i] = W[(W_LAM + kk) * LANES + i]
    for k in range(N_COEF):
        for i in range(N):
            g_coef[k, b, i] = acc[k, i]
    if want_gc:
        slot = gc_slot[b]
        for r in range(N):
            for i in range(N):
                g_c[slot, r, i] += gacc[r, i]


@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_bwd_kernel(sims, coef, cp, cpm, ckpt, hc64, griffiths, steps_per_tr, n_steps, k_every, t0,
                   key0, key1, sim0, grad_bold, grad_rec, grec_slot, grad_state, want_gc, gc_slot,
                   g_coef, g_c, g_state0, mismatch):
    """Discrete adjoint of the forward scan for the simulations in ``sims``.

    For each segment, last to first: recompute it from its checkpoint keeping a tape (the state
    before every step and the step's intermediates, (K + 1, N_TAPE, NP) per call), then sweep the
    adjoint back through it.

    Args (beyond those of :func:`rww_fwd_kernel`):
        cp: the forward's coupling operand (``cp[0]`` holds C^T).
        cpm: the adjoint's coupling operand, for ``lambda_S_E += C^T g``: ``cpm[0]`` (Bc, N, NP)
            the coupling C itself (zero-padded columns), the packed triangles shared with ``cp``.
        ckpt: (n_seg, 6, B, N) checkpoints from the forward.
        grad_bold: (B, n_TR, N) dL/dBOLD. grad_rec: (n_g, B, n_TR, N) dL/drecord, with
            grec_slot (4,) the row for S_E, S_I, r_E, r_I or -1 when absent.
        grad_state: (6, B, N) dL/d(final state).
        want_gc: accumulate the coupling gradient; gc_slot: int64 (B,) row of ``g_c`` that
            simulation b adds into (b itself for per-simulation coupling; a fixed group for a
            shared matrix, summed afterwards in a fixed order). The simulations of one row must
            all be in the same call.

    Outputs:
        g_coef: float64 (N_COEF, B, N) raw adjoint sums per coefficient, simulation and node
            (the backend multiplies them by the constant factors marked in :func:`_adjoint_step`).
        g_c: float64 (n_slots, N, N) coupling gradient partials.
        g_state0: (6, B, N) dL/d(initial state).
        mismatch: int64 (B,) number of state values at the end of a recomputed segment that differ
            (bitwise) from the next checkpoint; 0 unless the recomputation is not exact.
    """
    N = ckpt.shape[3]
    ct = cp[0]
    NP = ct.shape[2]                        # lanes, chosen by the caller (padded_nodes)
    n_seg = ckpt.shape[0]
    dtype = ckpt.dtype
    hc = _haemo(hc64, dtype)
    W = np.zeros(N_WROWS * LANES, dtype=dtype)
    tape = np.empty((k_every + 1, N_TAPE, NP), dtype=dtype)
    acc = np.zeros((N_COEF, NP), dtype=np.float64)
    gacc = np.zeros((N if want_gc else 0, NP), dtype=np.float64)
    for b in sims:
        bc = b if ct.shape[0] > 1 else 0
        _bwd_begin(W, b, coef, grad_state, acc, gacc, N, NP)
        n_mismatch = 0
        for seg in range(n_seg - 1, -1, -1):
            n_mismatch += _recompute_segment(W, tape, b, seg, ckpt, cp, bc, hc, griffiths,
                                             n_steps, k_every, t0, key0, key1, sim0, N, NP)
            _sweep_segment(W, tape, b, seg, cpm, bc, hc, griffiths, steps_per_tr, n_steps,
                           k_every, grad_bold, grad_rec, grec_slot, want_gc, acc, gacc, N, NP)
        mismatch[b] = n_mismatch
        _bwd_end(W, b, acc, gacc, want_gc, gc_slot, g_coef, g_c, g_state0, N)


# Pipelined adjoint of one simulation on two threads: segment s is swept (rww_bwd_sweep, workspace
# Ws) while segment s - 1 is recomputed (rww_bwd_recompute, workspace Wr, the other tape). Same
# functions, same order of every sum as rww_bwd_kernel: the results are identical.
@njit(nogil=True, cache=True)
def rww_bwd_begin(b, coef, grad_state, Ws, Wr, acc, gacc):
    """Prepare the two workspaces and the float64 sums of simulation ``b``."""
    N = grad_state.shape[2]
    NP = acc.shape[1]
    _bwd_begin(Ws, b, coef, grad_state, acc, gacc, N, NP)
    _load_coefficients(Wr, b, coef, N, NP)


@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_bwd_recompute(b, seg, cp, ckpt, hc64, griffiths, n_steps, k_every, t0, key0, key1, sim0,
                      Wr, tape):
    """:func:`_recompute_segment` as a kernel; returns the mismatch count."""
    hc = _haemo(hc64, ckpt.dtype)
    bc = b if cp[0].shape[0] > 1 else 0
    return _recompute_segment(Wr, tape, b, seg, ckpt, cp, bc, hc, griffiths, n_steps, k_every,
                              t0, key0, key1, sim0, ckpt.shape[3], cp[0].shape[2])


@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_bwd_sweep(b, seg, cpm, hc64, griffiths, steps_per_tr, n_steps, k_every, grad_bold,
                  grad_rec, grec_slot, want_gc, Ws, tape, acc, gacc):
    """:func:`_sweep_segment` as a kernel."""
    hc = _haemo(hc64, Ws.dtype)
    bc = b if cpm[0].shape[0] > 1 else 0
    _sweep_segment(Ws, tape, b, seg, cpm, bc, hc, griffiths, steps_per_tr, n_steps, k_every,
                   grad_bold, grad_rec, grec_slot, want_gc, acc, gacc, grad_bold.shape[2],
                   cpm[0].shape[2])


@njit(nogil=True, cache=True)
def rww_bwd_end(b, Ws, acc, gacc, want_gc, gc_slot, g_coef, g_c, g_state0):
    """Write simulation ``b``'s gradients (see :func:`rww_bwd_kernel`)."""
    _bwd_end(Ws, b, acc, gacc, want_gc, gc_slot, g_coef, g_c, g_state0, g_state0.shape[2])

