"""Device functions shared by the forward and the adjoint kernels: parameter loads, the coupling
mat-vec (register-resident or streamed in tiles), the transfer functions with their derivatives,
and one Euler-Maruyama step of the coupled RWW + Balloon system.

Every formula here is the one in :func:`rww.ops.reference.rww_step` (the ground truth), written
once so that the forward kernel and the recomputation inside the adjoint kernel evaluate the same
float32 expressions (the clamp masks and the relu masks of the adjoint then agree with the forward
trajectory). Tiles are ``(BLOCK_B, BLOCK_N)``: simulations x nodes.

Role prefixes: ``b_`` values in registers, ``p_`` pointers, ``o_`` offsets, ``m_``
masks.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import mathfn

# Local step stored for "never diverged" (int32 max): min() over steps and nodes keeps the first.
# (Globals read inside @triton.jit functions must be tl.constexpr; NO_DIVERGENCE_HOST for Python.)
NO_DIVERGENCE_HOST = 2147483647
NO_DIVERGENCE = tl.constexpr(NO_DIVERGENCE_HOST)


@triton.jit
def load_param(p_params, idx, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n,
               PB: tl.constexpr, PN: tl.constexpr):
    """Row ``idx`` of the parameter table ``(P, Bp, Np)`` as a ``(BLOCK_B|1, BLOCK_N|1)`` tile.

    ``PB``/``PN`` say whether the table varies over simulations/nodes; a broadcast dimension is
    loaded once (size 1) and broadcast in registers instead of re-read with stride 0, which keeps
    the 19 parameters cheap in registers. Padded lanes read 1.0: finite, so padded lanes never
    produce NaN that a zero-masked coupling product (0 * NaN) could leak into real lanes.
    """
    p = p_params + idx * s_pp
    if PB:
        if PN:
            v = tl.load(p + o_b[:, None] * s_pb + o_n[None, :] * s_pn,
                        mask=m_b[:, None] & m_n[None, :], other=1.0)
        else:
            v = tl.load(p + o_b[:, None] * s_pb, mask=m_b[:, None], other=1.0)
    else:
        if PN:
            v = tl.load(p + o_n[None, :] * s_pn, mask=m_n[None, :], other=1.0)
        else:
            v = tl.load(p)
    return v


@triton.jit
def coupling_tile(p_c, s_cb, o_b64, m_b, PER_SIM_C: tl.constexpr, RESIDENT: tl.constexpr,
                  USE_DOT: tl.constexpr):
    """Pointer tile to C and its mask for a tile of simulations: one matrix per simulation
    (padded simulations masked off: they lie beyond the tensor) or the shared one broadcast over
    the tile; ``(BLOCK_B|1, 1, 1)`` for the register-resident product, ``(BLOCK_B|1, 1)`` for the
    streamed columns, the bare pointer for ``tl.dot`` operand tiles."""
    if USE_DOT:
        p_cb = p_c
        m_cb = True
    elif RESIDENT:
        if PER_SIM_C:
            p_cb = p_c + o_b64[:, None, None] * s_cb
            m_cb = m_b[:, None, None]
        else:
            p_cb = p_c + tl.zeros((1, 1, 1), dtype=tl.int64)
            m_cb = tl.full((1, 1, 1), 1, tl.int1)
    else:
        if PER_SIM_C:
            p_cb = p_c + o_b64[:, None] * s_cb
            m_cb = m_b[:, None]
        else:
            p_cb = p_c + tl.zeros((1, 1), dtype=tl.int64)
            m_cb = tl.full((1, 1), 1, tl.int1)
    return p_cb, m_cb


@triton.jit
def load_coupling_resident(p_cb, m_cb, s_ci, s_cj, o_n, m_n, USE_DOT: tl.constexpr):
    """The whole ``C`` (padded to ``BLOCK_N``) in registers, loaded once per launch.

    ``USE_DOT``: ``C^T`` as a ``(BLOCK_N_j, BLOCK_N_i)`` operand of ``tl.dot`` (shared C).
    Otherwise ``(BLOCK_B|1, BLOCK_N_i, BLOCK_N_j)``: ``p_cb`` is a ``(BLOCK_B|1, 1, 1)`` pointer
    tile (one matrix per simulation, or the shared one) and ``m_cb`` its mask (padded
    simulations of a per-simulation C must not be read: they lie beyond the tensor). Padded
    rows/columns are 0.
    """
    if USE_DOT:
        b_c = tl.load(p_cb + o_n[:, None] * s_cj + o_n[None, :] * s_ci,
                      mask=m_n[:, None] & m_n[None, :], other=0.0)
    else:
        b_c = tl.load(p_cb + o_n[None, :, None] * s_ci + o_n[None, None, :] * s_cj,
                      mask=m_cb & m_n[None, :, None] & m_n[None, None, :], other=0.0)
    return b_c


@triton.jit
def _column_fma(b_y, p_cb, m_cb, s_ci, s_cj, p_vrow, o_b, m_b, o_n, m_n, j, N):
    """``b_y += C[:, :, j] * v[:, j]``: one column of C (a ``(BLOCK_B|1, BLOCK_N)`` load, unit
    stride along nodes) times one broadcast element of v per simulation."""
    # The "column exists" test is built on index vectors rather than as a scalar (j < N): the
    # interpreter mis-types scalar-int1 & tensor masks (int32 data), and the compiler folds
    # the zero products away.
    m_vj = m_b[:, None] & ((o_b[:, None] * 0 + j) < N)
    m_cj = m_cb & m_n[None, :] & ((o_n[None, :] * 0 + j) < N)
    b_vj = tl.load(p_vrow + j, mask=m_vj, other=0.0)
    b_cj = tl.load(p_cb + o_n[None, :] * s_ci + j * s_cj, mask=m_cj, other=0.0)
    return b_y + b_cj * b_vj


@triton.jit
def coupling_matvec(b_v, b_c, p_cb, m_cb, s_ci, s_cj, p_vec, o_b, o_b64, o_n, m_b, m_n, N,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr,
                    RESIDENT: tl.constexpr, USE_DOT: tl.constexpr):
    """``y[b, i] = sum_j C[b, i, j] v[b, j]`` for the tile; ``(BLOCK_B, BLOCK_N)`` float32.

    C is addressed as ``p_cb + i*s_ci + j*s_cj``; the launchers pass strides such that
    ``s_ci == 1`` in the streamed variant (C^T contiguous for the forward; C itself for the
    adjoint, which needs ``C^T v``), so every column load is coalesced.

    RESIDENT: ``b_c`` holds C (:func:`load_coupling_resident`); ``v`` comes from registers with
    its padded columns zeroed (0 * garbage must not reach real lanes). The product is a
    broadcast-and-reduce over a ``(BLOCK_B, BLOCK_N, BLOCK_N)`` register tile, or ``tl.dot``.

    Streamed (any N): the caller has stored ``v`` at ``p_vec`` (``p_vec + b*N + j``) behind a
    barrier. Without tl.dot, the mat-vec is a sum of columns: each thread owns its nodes' rows,
    loads column j of C (L1/L2 resident, unit stride) and the broadcast ``v[b, j]``, and
    accumulates with FMAs: no cross-thread reduction and no large temporary, so registers stay
    flat at any N (a (BLOCK_N x BLOCK_J) chunk tile reduced across lanes spilled heavily at
    BLOCK_N = 128; ``python -m rww.ops.triton.aot`` shows the present numbers). ``BLOCK_J`` columns are
    unrolled per iteration into 4 independent accumulators (shorter FMA dependency chains),
    summed in a fixed order: deterministic. With tl.dot, ``BLOCK_J``-column chunks of v and C
    feed ``tl.dot`` (fp32 "ieee").
    """
    if RESIDENT:
        b_v = tl.where(m_n[None, :], b_v, 0.0)
        if USE_DOT:
            b_y = tl.dot(b_v, b_c, input_precision="ieee")
        else:
            b_y = tl.sum(b_c * b_v[:, None, :], axis=2)
    elif USE_DOT:
        b_y = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for j0 in range(0, N, BLOCK_J):
            o_j = j0 + tl.arange(0, BLOCK_J)
            m_j = o_j < N
            b_vj = tl.load(p_vec + o_b64[:, None] * N + o_j[None, :],
                           mask=m_b[:, None] & m_j[None, :], other=0.0)
            b_cj = tl.load(p_cb + o_j[:, None] * s_cj + o_n[None, :] * s_ci,
                           mask=m_j[:, None] & m_n[None, :], other=0.0)
            b_y += tl.dot(b_vj, b_cj, input_precision="ieee")
    else:
        p_vrow = p_vec + o_b64[:, None] * N
        b_y0 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        b_y1 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        b_y2 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        b_y3 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for j0 in range(0, N, BLOCK_J):
            for u in tl.static_range(BLOCK_J):
                if u % 4 == 0:
                    b_y0 = _column_fma(b_y0, p_cb, m_cb, s_ci, s_cj, p_vrow, o_b, m_b, o_n, m_n,
                                       j0 + u, N)
                elif u % 4 == 1:
                    b_y1 = _column_fma(b_y1, p_cb, m_cb, s_ci, s_cj, p_vrow, o_b, m_b, o_n, m_n,
                                       j0 + u, N)
                elif u % 4 == 2:
                    b_y2 = _column_fma(b_y2, p_cb, m_cb, s_ci, s_cj, p_vrow, o_b, m_b, o_n, m_n,
                                       j0 + u, N)
                else:
                    b_y3 = _column_fma(b_y3, p_cb, m_cb, s_ci, s_cj, p_vrow, o_b, m_b, o_n, m_n,
                                       j0 + u, N)
        b_y = (b_y0 + b_y1) + (b_y2 + b_y3)
    return b_y


@triton.jit
def _delayed_column(b_y, p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_ring, o_ring, m_b, o_b,
                    o_n, m_n, j, N, D1, kmod, lag_min, b_w, p_dc, o_dc,
                    SIGN: tl.constexpr, DC: tl.constexpr):
    """``b_y += C[:, :, j] * ring[b, slot(lag[:, :, j]), j]`` (one column of the delayed
    product, :func:`delayed_matvec`); with ``DC`` also ``dc[b, j, n] += ring[...] * b_w[b, n]``
    (a read-modify-write each program owns: one thread per ``(b, n)``)."""
    m_j = (o_n[None, :] * 0 + j) < N
    m_cj = m_cb & m_n[None, :] & m_j
    m_bj = m_b[:, None] & m_n[None, :] & m_j
    b_cj = tl.load(p_cb + o_n[None, :] * s_ci + j * s_cj, mask=m_cj, other=0.0)
    b_lag = tl.load(p_lb + o_n[None, :] * s_li + j * s_lj, mask=m_bj, other=0)
    slot = kmod + SIGN * b_lag
    if SIGN > 0:
        slot = tl.where(slot >= D1, slot - D1, slot)
    else:
        slot = tl.where(slot < 0, slot + D1, slot)
    m_g = m_bj & (b_lag >= lag_min)
    b_val = tl.load(p_ring + o_ring + slot * N + j, mask=m_g, other=0.0)
    if DC:
        p_d = p_dc + o_dc + j * N
        tl.store(p_d, tl.load(p_d, mask=m_g, other=0.0) + b_val * b_w, mask=m_g)
    return b_y + b_cj * b_val


@triton.jit
def delayed_matvec(p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_ring, o_b, o_b64, o_n, m_b, m_n,
                   N, D1, kmod, lag_min, b_w, p_dc,
                   BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr,
                   SIGN: tl.constexpr, DC: tl.constexpr):
    """Delayed coupling ``y[b, n] = sum_j C[b, n, j] ring[b, (kmod + SIGN lag[b, n, j]) mod D1, j]``
    (streamed variant only; ``(BLOCK_B, BLOCK_N)`` float32).

    ``ring`` is a per-simulation ``(B, D1, N)`` buffer (``D1 = D + 1`` slots indexed by the
    local step modulo ``D1``) written behind a barrier by the caller. The forward
    (``SIGN = -1``) reads S_E ``lag`` steps back: ``sum_j C_ij S_E_j(k - lag_ij)``. The adjoint
    (``SIGN = +1``, C and the lags with their strides swapped) pulls the coupling gradients
    ``lag`` steps ahead: ``sum_i C_ij g_i(t + lag_ij)``, the adjoint of ``S_E_j(t)`` through every
    later step that reads it; lags below ``lag_min`` are skipped (the initial history, times
    ``t < 0``, is read only by steps ``t + lag >= 0``). With ``DC`` the same pass adds the
    per-edge product ``g_i(t + lag_ij) S_E_j(t)`` (``b_w`` = S_E(t)) to the per-simulation
    ``(B, N, N)`` float32 ``dL/dC`` partial at ``p_dc`` (row i, column j): summed over t that is
    ``sum_t g_i(t) S_E_j(t - lag_ij)``.

    Same loop shape as the streamed :func:`coupling_matvec`: each thread owns its rows, columns
    of C (unit stride ``s_ci``) and of the lags are read with them, ``BLOCK_J`` per iteration
    into 4 accumulators summed in a fixed order (deterministic; no atomics).
    """
    o_ring = o_b64[:, None] * D1 * N
    o_dc = o_b64[:, None] * N * N + o_n[None, :]
    b_y0 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    b_y1 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    b_y2 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    b_y3 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for j0 in range(0, N, BLOCK_J):
        for u in tl.static_range(BLOCK_J):
            if u % 4 == 0:
                b_y0 = _delayed_column(b_y0, p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_ring,
                                       o_ring, m_b, o_b, o_n, m_n, j0 + u, N, D1, kmod, lag_min,
                                       b_w, p_dc, o_dc, SIGN, DC)
            elif u % 4 == 1:
                b_y1 = _delayed_column(b_y1, p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_ring,
                                       o_ring, m_b, o_b, o_n, m_n, j0 + u, N, D1, kmod, lag_min,
                                       b_w, p_dc, o_dc, SIGN, DC)
            elif u % 4 == 2:
                b_y2 = _delayed_column(b_y2, p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_ring,
                                       o_ring, m_b, o_b, o_n, m_n, j0 + u, N, D1, kmod, lag_min,
                                       b_w, p_dc, o_dc, SIGN, DC)
            else:
                b_y3 = _delayed_column(b_y3, p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_ring,
                                       o_ring, m_b, o_b, o_n, m_n, j0 + u, N, D1, kmod, lag_min,
                                       b_w, p_dc, o_dc, SIGN, DC)
    return (b_y0 + b_y1) + (b_y2 + b_y3)


@triton.jit
def phi(z, e):
    """``phi(z) = 1 - exp(-z) (1 + z)`` given ``e = exp(-z)``; >= 0, ~z^2/2 near 0.

    Both transfer functions' slopes reduce to it (see below). Evaluated directly it cancels
    catastrophically for small |z| (relative error ~eps/z^2), which is what makes float32 autograd
    through the reference formulas lose up to 3 digits (griffiths2022 near y = 0, where its two
    terms ~1/(d y) cancel); the Taylor series sum_{n>=2} (-1)^n (n-1)/n! z^n is used for
    |z| < 0.5 (truncation < 2e-9 relative), the direct form beyond (error < 1e-6 relative).
    """
    small = tl.abs(z) < 0.5
    zs = tl.where(small, z, 0.0)
    series = zs * zs * (0.5 + zs * (-1.0 / 3.0 + zs * (1.0 / 8.0 + zs * (
        -1.0 / 30.0 + zs * (1.0 / 144.0 + zs * (-1.0 / 840.0 + zs * (
            1.0 / 5760.0 + zs * (-1.0 / 45360.0 + zs * (1.0 / 403200.0)))))))))
    return tl.where(small, series, 1.0 - e * (1.0 + z))


@triton.jit
def transfer_deco(cur, a, b, d):
    """``H(I) = y / (1 - exp(-d y))``, ``y = a I - b``, with the reference's guard: the series
    ``(1 + z/2 + z^2/12 - z^4/720 + z^6/30240) / d`` for ``|z| = |d y| < 0.1``.

    Returns ``(H, dH/dy, dH/dd)``. Exact branch, with ``E = exp(-z)``, ``den = 1 - E``:
    ``dH/dy = (den - z E) / den^2 = phi(z) / den^2`` (no cancellation, see :func:`phi`) and
    ``dH/dd = -y^2 E / den^2``, both divided by ``den`` twice rather than by ``den**2`` (which
    overflows float32 for z < -44). Series branch: ``dH/dy = P'(z)``,
    ``dH/dd = (z P'(z) - P(z)) / d^2``. The forward kernel never uses the slopes (dead code).
    """
    y = a * cur - b
    z = d * y
    small = tl.abs(z) < 0.1
    z_safe = tl.where(small, 1.0, z)          # keeps the unused branch finite
    em1 = mathfn.expm1(-z_safe)
    den = -em1
    h_exact = y / den
    z2 = z * z
    poly = 1.0 + 0.5 * z + z2 * (1.0 / 12.0 + z2 * (-1.0 / 720.0 + z2 * (1.0 / 30240.0)))
    h = tl.where(small, poly / d, h_exact)
    big_e = 1.0 + em1                         # exp(-z) where the exact branch is used
    dpoly = 0.5 + z * (1.0 / 6.0 + z2 * (-1.0 / 180.0 + z2 * (1.0 / 5040.0)))
    h_y = tl.where(small, dpoly, phi(z_safe, big_e) / den / den)
    h_d = tl.where(small, (z * dpoly - poly) / (d * d), -(y * y) * (big_e / den) / den)
    return h, h_y, h_d


@triton.jit
def transfer_griffiths(cur, a, b, d):
    """The paper code's ``(1e-5 + |y|) / (1e-5 d + |1 - exp(-d y)|)``, ``y = a I - b``.

    Returns ``(H, dH/dy, dH/dd)``. With ``z = d y``, ``e = exp(-z)``, ``w = 1 - e``,
    ``N = 1e-5 + |y|``, ``D = 1e-5 d + |w|``, autograd's ``sign(y)/D - N sign(w) d e / D^2``
    equals ``(1e-5 d |w| + phi(z)) / D^2`` for either sign of y (a sum of non-negative terms),
    and 0 at y = 0 exactly (torch's ``sign(0) = 0``), as this form gives too. ``w`` comes from
    expm1, accurate where ``1 - exp(-z)`` would cancel.
    """
    y = a * cur - b
    z = d * y
    em1 = mathfn.expm1(-z)
    e = 1.0 + em1
    w = -em1
    num = 1e-5 + tl.abs(y)
    den = 1e-5 * d + tl.abs(w)
    h = num / den
    sw = tl.where(w > 0, 1.0, tl.where(w < 0, -1.0, 0.0))
    h_y = (1e-5 * d * tl.abs(w) + phi(z, e)) / den / den
    h_d = -(h / den) * (1e-5 + sw * y * e)
    return h, h_y, h_d


@triton.jit
def rww_step(b_se, b_si, b_x, b_f, b_v, b_q, b_coup, xi_e, xi_i,
             g, w_ee, w_ie, w_ei, j_nmda, i_0, w_e, w_i, sigma,
             a_e, b_e, d_e, a_i, b_i, d_i, tau_e, tau_i, gam_e, gam_i,
             dt, sqrt_dt, dtb, kappa, gamma_h, inv_tau0, inv_alpha, ln_1m_rho, inv_rho,
             GRIFFITHS: tl.constexpr):
    """One Euler-Maruyama step (:func:`rww.ops.reference.rww_step`); ``b_coup = C @ S_E``.

    The Balloon state ``b_f, b_v, b_q`` is ``f - 1, v - 1, q - 1`` (deviations from rest).

    Returns a tuple: the new state ``(se, si, x, f - 1, v - 1, q - 1)``; the rates ``(r_e, r_i)`` [Hz]; and the
    intermediates the adjoint needs: ``cur_e, cur_i`` (currents entering H), ``pre_e, pre_i``
    (the pre-squash current sums; equal to the currents for deco2014), the H derivatives
    ``(he_y, he_d, hi_y, hi_d)``, the pre-clamp/squash states ``(se_pre, si_pre, x_pre, f_pre,
    v_pre, q_pre)``, ``vpow = v**(1/alpha)``, ``pf = (1 - rho)**(1/f)`` and the noise amplitude.
    """
    if GRIFFITHS:
        g_ee = 0.001 + tl.where(w_ee < 0, 0.0, w_ee)
        g_ie = 0.001 + tl.where(w_ie < 0, 0.0, w_ie)
        g_ei = 0.001 + tl.where(w_ei < 0, 0.0, w_ei)
        pre_e = w_e * i_0 + g_ee * b_se + g * b_coup - g_ie * b_si
        pre_i = w_i * i_0 + g_ei * b_se - b_si
        # relu that propagates NaN like torch.relu (a select on x < 0 keeps NaN)
        cur_e = mathfn.tanh(tl.where(pre_e < 0, 0.0, pre_e))
        cur_i = mathfn.tanh(tl.where(pre_i < 0, 0.0, pre_i))
        r_e, he_y, he_d = transfer_griffiths(cur_e, a_e, b_e, d_e)
        r_i, hi_y, hi_d = transfer_griffiths(cur_i, a_i, b_i, d_i)
        amp = sqrt_dt * (0.02 + tl.where(sigma < 0, 0.0, sigma))
    else:
        pre_e = w_e * i_0 + w_ee * j_nmda * b_se + g * j_nmda * b_coup - w_ie * b_si
        pre_i = w_i * i_0 + w_ei * j_nmda * b_se - b_si
        cur_e = pre_e
        cur_i = pre_i
        r_e, he_y, he_d = transfer_deco(cur_e, a_e, b_e, d_e)
        r_i, hi_y, hi_d = transfer_deco(cur_i, a_i, b_i, d_i)
        amp = sqrt_dt * sigma
    se_pre = b_se + dt * (-b_se / tau_e + (1.0 - b_se) * gam_e * r_e) + amp * xi_e
    si_pre = b_si + dt * (-b_si / tau_i + gam_i * r_i) + amp * xi_i

    # The Balloon state is held as deviations from rest (b_f = f - 1 etc.); the right-hand sides
    # in that form are derived in rww.ops.reference.balloon_derivatives.
    f = 1.0 + b_f
    v = 1.0 + b_v
    vpm = mathfn.expm1(mathfn.log1p(b_v) * inv_alpha)      # v**(1/alpha) - 1
    eam = mathfn.expm1(-(ln_1m_rho * b_f) / f)             # (1 - rho)**(1/f - 1) - 1
    flow = b_f - f * (inv_rho - 1.0) * eam                 # f (1 - (1 - rho)**(1/f)) / rho - 1
    wash = b_q + (vpm - b_v) / v * (1.0 + b_q)             # v**(1/alpha) q / v - 1
    vpow = 1.0 + vpm                                       # for the adjoint only
    pf = mathfn.exp(ln_1m_rho / f)                         # (1 - rho)**(1/f), adjoint only
    x_pre = b_x + dtb * (b_se - kappa * b_x - gamma_h * b_f)
    f_pre = b_f + dtb * b_x
    v_pre = b_v + dtb * ((b_f - vpm) * inv_tau0)
    q_pre = b_q + dtb * ((flow - wash) * inv_tau0)

    if GRIFFITHS:
        se_new = mathfn.tanh(1e-5 + tl.where(se_pre < 0, 0.0, se_pre))
        si_new = mathfn.tanh(1e-5 + tl.where(si_pre < 0, 0.0, si_pre))
        x_new = mathfn.tanh(x_pre)
        f_new = mathfn.tanh(f_pre)       # the paper's 1 + tanh(f - 1) on the deviation
        v_new = mathfn.tanh(v_pre)
        q_new = mathfn.tanh(q_pre)
    else:
        # clamp(., 0, 1) written as selects so that NaN propagates (as torch.clamp does)
        se_new = tl.where(se_pre < 0.0, 0.0, tl.where(se_pre > 1.0, 1.0, se_pre))
        si_new = tl.where(si_pre < 0.0, 0.0, tl.where(si_pre > 1.0, 1.0, si_pre))
        x_new = x_pre
        f_new = f_pre
        v_new = v_pre
        q_new = q_pre
    return (se_new, si_new, x_new, f_new, v_new, q_new, r_e, r_i,
            cur_e, cur_i, pre_e, pre_i, he_y, he_d, hi_y, hi_d,
            se_pre, si_pre, x_pre, f_pre, v_pre, q_pre, vpow, pf, amp)


@triton.jit
def store_state(p, plane, b_se, b_si, b_x, b_f, b_v, b_q, m):
    """The six state rows (S_E, S_I, x, f - 1, v - 1, q - 1) at ``p``, ``plane`` apart."""
    tl.store(p, b_se, mask=m)
    tl.store(p + plane, b_si, mask=m)
    tl.store(p + 2 * plane, b_x, mask=m)
    tl.store(p + 3 * plane, b_f, mask=m)
    tl.store(p + 4 * plane, b_v, mask=m)
    tl.store(p + 5 * plane, b_q, mask=m)


@triton.jit
def store_history(p, plane, p_rg, N, kmod, d1, D, m):
    """History rows ``6 + d - 1`` (S_E d steps before the step whose ring slot is ``kmod``,
    d = 1..D) at ``p`` from the S_E ring ``p_rg`` of ``d1 = D + 1`` slots."""
    for d in range(1, D + 1):
        slot = (kmod - d + d1) % d1
        tl.store(p + (5 + d) * plane, tl.load(p_rg + slot * N, mask=m, other=0.0), mask=m)


@triton.jit
def bold_signal(b_q, b_v, scale, k1, k2, k3):
    """``scale * (k1 (1 - q) + k2 (1 - q/v) + k3 (1 - v))`` from the deviations ``b_q = q - 1``,
    ``b_v = v - 1``, without cancellation: ``-k1 b_q + k2 (b_v - b_q) / v - k3 b_v``."""
    return scale * (-(k1 * b_q) + k2 * ((b_v - b_q) / (1.0 + b_v)) - k3 * b_v)


@triton.jit
def diverged(b_se, b_si, b_x, b_f, b_v, b_q, GRIFFITHS: tl.constexpr):
    """Per element: the new state is non-finite or (deco2014) f, v or q <= 0, i.e. a deviation
    ``b_f, b_v, b_q`` <= -1 (the reference's
    ``_bad_mask`` before its reduction over nodes)."""
    tot = b_se + b_si + b_x + b_f + b_v + b_q
    bad = ~(tl.abs(tot) < float("inf"))
    if not GRIFFITHS:
        bad = bad | ~(tl.minimum(tl.minimum(b_f, b_v), b_q) > -1.0)   # f, v, q > 0
    return bad
