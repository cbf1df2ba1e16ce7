"""Fused adjoint (backward) scan: ``_rww_bwd_kernel`` -> ``rww_bwd``.

The discrete adjoint of the exact discrete forward step, derived by hand. With ``s_k`` the state
before local step ``k`` and ``s_{k+1} = Phi(s_k, theta, C, xi_k)`` the Euler-Maruyama step of
:func:`rww.ops.reference.rww_step`, the adjoint ``lam_k = dL/ds_k`` obeys

    lam_k = (dPhi/ds_k)^T (lam_{k+1} + injections at s_{k+1}) + (dr_k/ds_k)^T g_r_k

where the injections are dL/dBOLD (through ``dBOLD/dq``, ``dBOLD/dv``) and the S_E/S_I records at
TR-end steps, and ``g_r_k`` is the r_E/r_I record gradient of the step's TR divided by
``steps_per_tr`` (the record is the mean rate over the TR). Parameters accumulate
``(dPhi/dtheta)^T lam_{k+1}`` per (simulation, node) in registers; the launcher sums them over
broadcast dimensions. ``C @ S_E`` contributes ``C^T g_coup`` to ``lam_k`` (a transposed mat-vec
with the same register-resident/streamed/tl.dot variants as the forward: the launcher passes C's
strides swapped) and ``g_coup[b, i] S_E[b, j]`` to ``dL/dC``.

Discontinuities follow torch's conventions so that the adjoint equals autograd through the
reference: clamp passes the gradient where ``0 <= pre <= 1`` (inclusive), relu where ``x > 0``,
``|y|`` has slope ``sign(y)`` with ``sign(0) = 0``; griffiths2022's ``tanh(relu(.))`` squashes and
``0.001 + relu(w)`` gains, the noise amplitude ``sqrt(dt) (0.02 + relu(sigma))``, and the Balloon's
``v**(1/alpha)`` and ``(1 - rho)**(1/f)`` are differentiated exactly.

Segments (checkpoint intervals) are processed from last to first: the forward kernel recomputes
the segment from its checkpoint into a scratch trajectory ``(L, 7, B, N)`` (state and coupling
input before every step; noise regenerated from the Philox counter, never stored), then this kernel
sweeps the segment backwards. Inside the sweep every quantity of step k is recomputed from
``s_k`` with the same device functions as the forward (so the clamp and relu masks agree with the
forward trajectory), including ``s_{k+1}`` where outputs are injected.

The coupling gradient is not accumulated in registers: the kernel writes ``g_coup`` for every
step of the segment (it is also the staging buffer of the streamed transposed mat-vec), and the
launcher adds ``sum_{k,b} g_coup[k, b, :]^T S_E[k, b, :]`` with one fp32 GEMM per segment
(``(N, L*B) @ (L*B, N)``, or a batched one for per-simulation C). That is deterministic (no
atomics, a fixed reduction order), uses the GEMM units, and works for any N, where an N x N
register accumulator per program would not fit beyond N = 64 and per-step global
read-modify-writes of C-sized partials would cost N^2 memory traffic per step.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import triton
import triton.language as tl

from .config import KernelConfig, ScanConstants, choose_config
from .philox import state_normals, step_counter
from .forward import (_check_delays, _check_inputs, _coupling_strides, _dummy, _param_strides,
                      check_delay_config, forward_coupling_operand, forward_lag_operand,
                      new_output, rww_fwd_trajectory)
from .step import (coupling_matvec, coupling_tile, delayed_matvec, load_coupling_resident,
                   load_param, rww_step)

N_PARAMS = 19


@triton.jit(do_not_specialize=["B", "L", "k_start", "spt", "n_trs",
                               "seed_lo", "seed_hi", "t_lo", "t_hi", "sim0", "D", "T"])
def _rww_bwd_kernel(
    p_params, s_pp, s_pb, s_pn,
    p_c, s_cb, s_ci, s_cj,
    p_traj, p_gcoup, p_adj, p_gparam, p_gbold, p_gse, p_gsi, p_gre, p_gri,
    p_lag, s_lb, s_li, s_lj, p_gring, p_dc, p_hgrad, p_ck0,
    B, N, L, k_start, spt, n_trs,
    seed_lo, seed_hi, t_lo, t_hi, sim0, D, T,
    dt, sqrt_dt, dtb, kappa, gamma_h, inv_tau0, inv_alpha, ln_1m_rho, inv_rho,
    bold_scale, k1, k2, k3,
    GRIFFITHS: tl.constexpr, PER_SIM_C: tl.constexpr, PB: tl.constexpr, PN: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr,
    RESIDENT: tl.constexpr, USE_DOT: tl.constexpr, GREC: tl.constexpr,
    HAS_DELAY: tl.constexpr = False,
):
    """Adjoint sweep over local steps ``[k_start, k_start + L)``, last to first.

    traj ``(L, 7, B, N)`` from :func:`rww.ops.triton.forward.rww_fwd_trajectory`; gcoup ``(L, B, N)``
    output (dL/d(C @ S_E) per step); adj ``(6, B, N)`` in: dL/ds at the segment end, out: at its
    start; gparam ``(19, B, N)`` accumulated in place; gbold and the record gradients
    ``(B, n_trs, N)`` (``GREC`` bits 1, 2, 4, 8: S_E, S_I, r_E, r_I present). The strides of C
    are those of ``C^T``. ``(t_hi, t_lo)``: global noise step of local step ``k_start``; ``sim0``: noise
    index of simulation 0.

    ``HAS_DELAY`` (delays of up to ``D`` steps, streamed only; ``T`` the scan's steps): lag
    ``(N, N)`` or ``(B, N, N)`` int32 with the strides of ``C^T`` (``s_lb = 0``: shared). The
    coupling term sends ``C_ij g_i(t)`` to the adjoint of ``S_E_j(t - lag_ij)``; this kernel
    pulls it instead: gring ``(B, D + 1, N)`` (zeroed once, kept across segments) holds
    ``g_coup`` of the last ``D + 1`` swept steps (slot ``t mod (D + 1)``; never-written slots,
    steps >= T, are 0), and the adjoint of ``S_E_j(t)`` gains ``sum_i C_ij g_i(t + lag_ij)``, a
    gather over the same streamed columns as the forward's (one program owns its rows: no
    atomics). The same pass adds ``g_i(t + lag_ij) S_E_j(t)`` to dc ``(B, N, N)`` (float32,
    this segment's dL/dC per simulation: ``sum_t g_i(t) S_E_j(t - lag_ij)``). hgrad ``(D, B, N)``
    is dL/d(final S_E history) (row d - 1: S_E(T - d)), injected at step T - d. adj has
    ``6 + D`` rows; the segment starting at step 0 also writes rows ``6 + d - 1``: the initial
    history's adjoint ``sum_{i: lag_ij >= d} C_ij g_i(lag_ij - d)`` (and its dL/dC terms, with
    S_E(-d) read from ck0, the segment's checkpoint). gcoup is not used (no GEMM).
    """
    pid = tl.program_id(0)
    o_b = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    o_n = tl.arange(0, BLOCK_N)
    m_b = o_b < B
    m_n = o_n < N
    m = m_b[:, None] & m_n[None, :]
    o_b64 = o_b.to(tl.int64)
    o_bn = o_b64[:, None] * N + o_n[None, :]
    plane = B.to(tl.int64) * N

    k0 = seed_lo.to(tl.uint32)
    k1_key = seed_hi.to(tl.uint32)
    t_lo_u = t_lo.to(tl.uint32)
    t_hi_u = t_hi.to(tl.uint32)
    # Noise index of each simulation: sim0 + b in uint32 (wrapping add; sim0 + B <= 2**32).
    o_noise_sim = o_b.to(tl.uint32) + sim0.to(tl.uint32)

    g = load_param(p_params, 0, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_ee = load_param(p_params, 1, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_ie = load_param(p_params, 2, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_ei = load_param(p_params, 3, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    j_nmda = load_param(p_params, 4, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    i_0 = load_param(p_params, 5, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_e = load_param(p_params, 6, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    w_i = load_param(p_params, 7, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    sigma = load_param(p_params, 8, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    a_e = load_param(p_params, 9, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    b_e = load_param(p_params, 10, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    d_e = load_param(p_params, 11, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    a_i = load_param(p_params, 12, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    b_i = load_param(p_params, 13, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    d_i = load_param(p_params, 14, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    tau_e = load_param(p_params, 15, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    tau_i = load_param(p_params, 16, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    gam_e = load_param(p_params, 17, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)
    gam_i = load_param(p_params, 18, s_pp, s_pb, s_pn, o_b, o_n, m_b, m_n, PB, PN)

    # Loop-invariant factors of the adjoint (parameters are constant over time).
    if GRIFFITHS:
        m_ee = (w_ee > 0).to(tl.float32)
        m_ie = -(w_ie > 0).to(tl.float32)                    # d pre_e / d w_IE = -S_I * mask
        m_ei = (w_ei > 0).to(tl.float32)
        e_ee = 0.001 + tl.where(w_ee < 0, 0.0, w_ee)          # effective gains
        e_ie = 0.001 + tl.where(w_ie < 0, 0.0, w_ie)
        e_ei = 0.001 + tl.where(w_ei < 0, 0.0, w_ei)
        e_g = g
        d_amp = sqrt_dt * (sigma > 0).to(tl.float32)           # d amp / d sigma
    else:
        m_ee = j_nmda                                          # d I_E / d w_EE = J_NMDA * S_E
        m_ie = -1.0
        m_ei = j_nmda
        e_ee = w_ee * j_nmda
        e_ie = w_ie
        e_ei = w_ei * j_nmda
        e_g = g * j_nmda
        d_amp = sqrt_dt
    inv_spt = 1.0 / spt.to(tl.float32)

    p_cb, m_cb = coupling_tile(p_c, s_cb, o_b64, m_b, PER_SIM_C, RESIDENT, USE_DOT)
    if RESIDENT:
        b_c = load_coupling_resident(p_cb, m_cb, s_ci, s_cj, o_n, m_n, USE_DOT)
    else:
        b_c = 0.0
    if HAS_DELAY:
        d1 = D + 1
        p_lb = p_lag + o_b64[:, None] * s_lb
        p_gr = p_gring + o_b64[:, None] * d1 * N + o_n[None, :]

    a_se = tl.load(p_adj + o_bn, mask=m, other=0.0)
    a_si = tl.load(p_adj + plane + o_bn, mask=m, other=0.0)
    a_x = tl.load(p_adj + 2 * plane + o_bn, mask=m, other=0.0)
    a_f = tl.load(p_adj + 3 * plane + o_bn, mask=m, other=0.0)
    a_v = tl.load(p_adj + 4 * plane + o_bn, mask=m, other=0.0)
    a_q = tl.load(p_adj + 5 * plane + o_bn, mask=m, other=0.0)

    zero = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    acc_g = zero
    acc_wee = zero
    acc_wie = zero
    acc_wei = zero
    acc_j = zero
    acc_i0 = zero
    acc_we = zero
    acc_wi = zero
    acc_sig = zero
    acc_ae = zero
    acc_be = zero
    acc_de = zero
    acc_ai = zero
    acc_bi = zero
    acc_di = zero
    acc_taue = zero
    acc_taui = zero
    acc_game = zero
    acc_gami = zero

    for jj in range(0, L):
        j = L - 1 - jj
        k = k_start + j
        p_tr = p_traj + j.to(tl.int64) * 7 * plane + o_bn
        se = tl.load(p_tr, mask=m, other=0.0)
        si = tl.load(p_tr + plane, mask=m, other=0.0)
        x = tl.load(p_tr + 2 * plane, mask=m, other=0.0)
        f = tl.load(p_tr + 3 * plane, mask=m, other=0.0)     # f - 1, v - 1, q - 1
        v = tl.load(p_tr + 4 * plane, mask=m, other=0.0)
        q = tl.load(p_tr + 5 * plane, mask=m, other=0.0)
        coup = tl.load(p_tr + 6 * plane, mask=m, other=0.0)

        c0, c1 = step_counter(t_lo_u, t_hi_u, j)
        xi_e, xi_i = state_normals(k0, k1_key, c0, c1, o_n[None, :], o_noise_sim[:, None])
        out = rww_step(se, si, x, f, v, q, coup, xi_e, xi_i,
                       g, w_ee, w_ie, w_ei, j_nmda, i_0, w_e, w_i, sigma,
                       a_e, b_e, d_e, a_i, b_i, d_i, tau_e, tau_i, gam_e, gam_i,
                       dt, sqrt_dt, dtb, kappa, gamma_h, inv_tau0, inv_alpha, ln_1m_rho, inv_rho,
                       GRIFFITHS)
        (se1, si1, x1, f1, v1, q1, r_e, r_i, cur_e, cur_i, pre_e, pre_i,
         he_y, he_d, hi_y, hi_d, se_pre, si_pre, x_pre, f_pre, v_pre, q_pre, vpow, pf, amp) = out

        # Outputs sampled at s_{k+1} when step k ends a TR.
        if (k + 1) % spt == 0:
            o_out = (o_b64[:, None] * n_trs + ((k + 1) // spt - 1)) * N + o_n[None, :]
            gb = tl.load(p_gbold + o_out, mask=m, other=0.0) * bold_scale
            # BOLD's slopes in q and v (= in q - 1 and v - 1)
            a_q += gb * (-k1 - k2 / (1.0 + v1))
            a_v += gb * (k2 * (1.0 + q1) / ((1.0 + v1) * (1.0 + v1)) - k3)
            if GREC & 1:
                a_se += tl.load(p_gse + o_out, mask=m, other=0.0)
            if GREC & 2:
                a_si += tl.load(p_gsi + o_out, mask=m, other=0.0)
        o_tr = (o_b64[:, None] * n_trs + k // spt) * N + o_n[None, :]
        if GREC & 4:
            g_re = tl.load(p_gre + o_tr, mask=m, other=0.0) * inv_spt
        else:
            g_re = zero
        if GREC & 8:
            g_ri = tl.load(p_gri + o_tr, mask=m, other=0.0) * inv_spt
        else:
            g_ri = zero

        # Through the clamp (deco2014) or the squashes (griffiths2022).
        if GRIFFITHS:
            g_se = a_se * (1.0 - se1 * se1) * (se_pre > 0).to(tl.float32)
            g_si = a_si * (1.0 - si1 * si1) * (si_pre > 0).to(tl.float32)
            g_x = a_x * (1.0 - x1 * x1)
            g_f = a_f * (1.0 - f1 * f1)      # f1 etc. are tanh of the deviations
            g_v = a_v * (1.0 - v1 * v1)
            g_q = a_q * (1.0 - q1 * q1)
        else:
            g_se = tl.where((se_pre >= 0.0) & (se_pre <= 1.0), a_se, 0.0)
            g_si = tl.where((si_pre >= 0.0) & (si_pre <= 1.0), a_si, 0.0)
            g_x = a_x
            g_f = a_f
            g_v = a_v
            g_q = a_q

        # Euler-Maruyama update of S_E, S_I.
        acc_sig += d_amp * (g_se * xi_e + g_si * xi_i)
        acc_taue += g_se * dt * se / (tau_e * tau_e)
        acc_taui += g_si * dt * si / (tau_i * tau_i)
        acc_game += g_se * dt * (1.0 - se) * r_e
        acc_gami += g_si * dt * r_i
        g_re += g_se * dt * (1.0 - se) * gam_e
        g_ri += g_si * dt * gam_i

        # Transfer functions H(a I - b; d).
        gy_e = g_re * he_y
        gy_i = g_ri * hi_y
        acc_ae += gy_e * cur_e
        acc_ai += gy_i * cur_i
        acc_be -= gy_e
        acc_bi -= gy_i
        acc_de += g_re * he_d
        acc_di += g_ri * hi_d
        g_pe = gy_e * a_e
        g_pi = gy_i * a_i
        if GRIFFITHS:
            g_pe = g_pe * (1.0 - cur_e * cur_e) * (pre_e > 0).to(tl.float32)
            g_pi = g_pi * (1.0 - cur_i * cur_i) * (pre_i > 0).to(tl.float32)

        # Input currents.
        acc_we += g_pe * i_0
        acc_wi += g_pi * i_0
        acc_i0 += g_pe * w_e + g_pi * w_i
        acc_wee += g_pe * se * m_ee
        acc_wie += g_pe * si * m_ie
        acc_wei += g_pi * se * m_ei
        if GRIFFITHS:
            acc_g += g_pe * coup
        else:
            acc_g += g_pe * j_nmda * coup
            acc_j += g_pe * (w_ee * se + g * coup) + g_pi * w_ei * se
        g_coup = g_pe * e_g

        n_se = (g_se * (1.0 + dt * (-1.0 / tau_e - gam_e * r_e)) + g_pe * e_ee + g_pi * e_ei
                + g_x * dtb)
        n_si = g_si * (1.0 - dt / tau_i) - g_pe * e_ie - g_pi

        # Balloon-Windkessel (driven by the pre-step S_E); the Jacobian in the deviations is that
        # in f, v, q themselves.
        f_abs = 1.0 + f
        v_abs = 1.0 + v
        vpv = vpow / v_abs
        n_x = g_x * (1.0 - dtb * kappa) + g_f * dtb
        d_ef = (1.0 - pf + pf * ln_1m_rho / f_abs) * inv_rho
        n_f = -g_x * (dtb * gamma_h) + g_f + (g_v + g_q * d_ef) * (dtb * inv_tau0)
        n_v = (g_v * (1.0 - dtb * inv_tau0 * inv_alpha * vpv)
               - g_q * (dtb * inv_tau0) * (1.0 + q) * vpv * (inv_alpha - 1.0) / v_abs)
        n_q = g_q * (1.0 - dtb * inv_tau0 * vpv)

        if HAS_DELAY:
            # g_coup of step k into its slot (the first barrier: the previous step's gather may
            # still read g(k + D + 1) there), then pull sum_i C_ij g_i(k + lag_ij).
            kmod = k % d1
            tl.debug_barrier()
            tl.store(p_gr + kmod * N, g_coup, mask=m)
            tl.debug_barrier()
            n_se += delayed_matvec(p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_gring, o_b,
                                   o_b64, o_n, m_b, m_n, N, d1, kmod, 0, se, p_dc,
                                   BLOCK_B, BLOCK_N, BLOCK_J, 1, True)
            # S_E(k) is row 6 + (T - k) - 1 of the final state when T - k <= D
            back = T - k
            m_h = m & ((o_n[None, :] * 0 + back) <= D)
            n_se += tl.load(p_hgrad + (tl.minimum(back, D) - 1).to(tl.int64) * plane + o_bn,
                            mask=m_h, other=0.0)
        else:
            # C^T g_coup; g_coup is kept for the launcher's dL/dC GEMM and, streamed, staged
            # there.
            p_gc = p_gcoup + j.to(tl.int64) * plane
            tl.store(p_gc + o_bn, g_coup, mask=m)
            if not RESIDENT:
                tl.debug_barrier()
            n_se += coupling_matvec(g_coup, b_c, p_cb, m_cb, s_ci, s_cj, p_gc, o_b, o_b64, o_n,
                                    m_b, m_n, N,
                                    BLOCK_B, BLOCK_N, BLOCK_J, RESIDENT, USE_DOT)
        a_se = n_se
        a_si = n_si
        a_x = n_x
        a_f = n_f
        a_v = n_v
        a_q = n_q

    tl.store(p_adj + o_bn, a_se, mask=m)
    tl.store(p_adj + plane + o_bn, a_si, mask=m)
    tl.store(p_adj + 2 * plane + o_bn, a_x, mask=m)
    tl.store(p_adj + 3 * plane + o_bn, a_f, mask=m)
    tl.store(p_adj + 4 * plane + o_bn, a_v, mask=m)
    tl.store(p_adj + 5 * plane + o_bn, a_q, mask=m)
    if HAS_DELAY:
        if k_start == 0:
            # The initial S_E history (times -d) is read by steps lag_ij - d >= 0, whose g_coup
            # the ring now holds (times 0..D).
            tl.debug_barrier()
            for d in range(1, D + 1):
                se_h = tl.load(p_ck0 + (5 + d) * plane + o_bn, mask=m, other=0.0)
                a_h = delayed_matvec(p_cb, m_cb, s_ci, s_cj, p_lb, s_li, s_lj, p_gring, o_b,
                                     o_b64, o_n, m_b, m_n, N, d1, d1 - d, d, se_h, p_dc,
                                     BLOCK_B, BLOCK_N, BLOCK_J, 1, True)
                tl.store(p_adj + (5 + d) * plane + o_bn, a_h, mask=m)

    p_gp = p_gparam + o_bn
    tl.store(p_gp, tl.load(p_gp, mask=m) + acc_g, mask=m)
    tl.store(p_gp + plane, tl.load(p_gp + plane, mask=m) + acc_wee, mask=m)
    tl.store(p_gp + 2 * plane, tl.load(p_gp + 2 * plane, mask=m) + acc_wie, mask=m)
    tl.store(p_gp + 3 * plane, tl.load(p_gp + 3 * plane, mask=m) + acc_wei, mask=m)
    tl.store(p_gp + 4 * plane, tl.load(p_gp + 4 * plane, mask=m) + acc_j, mask=m)
    tl.store(p_gp + 5 * plane, tl.load(p_gp + 5 * plane, mask=m) + acc_i0, mask=m)
    tl.store(p_gp + 6 * plane, tl.load(p_gp + 6 * plane, mask=m) + acc_we, mask=m)
    tl.store(p_gp + 7 * plane, tl.load(p_gp + 7 * plane, mask=m) + acc_wi, mask=m)
    tl.store(p_gp + 8 * plane, tl.load(p_gp + 8 * plane, mask=m) + acc_sig, mask=m)
    tl.store(p_gp + 9 * plane, tl.load(p_gp + 9 * plane, mask=m) + acc_ae, mask=m)
    tl.store(p_gp + 10 * plane, tl.load(p_gp + 10 * plane, mask=m) + acc_be, mask=m)
    tl.store(p_gp + 11 * plane, tl.load(p_gp + 11 * plane, mask=m) + acc_de, mask=m)
    tl.store(p_gp + 12 * plane, tl.load(p_gp + 12 * plane, mask=m) + acc_ai, mask=m)
    tl.store(p_gp + 13 * plane, tl.load(p_gp + 13 * plane, mask=m) + acc_bi, mask=m)
    tl.store(p_gp + 14 * plane, tl.load(p_gp + 14 * plane, mask=m) + acc_di, mask=m)
    tl.store(p_gp + 15 * plane, tl.load(p_gp + 15 * plane, mask=m) + acc_taue, mask=m)
    tl.store(p_gp + 16 * plane, tl.load(p_gp + 16 * plane, mask=m) + acc_taui, mask=m)
    tl.store(p_gp + 17 * plane, tl.load(p_gp + 17 * plane, mask=m) + acc_game, mask=m)
    tl.store(p_gp + 18 * plane, tl.load(p_gp + 18 * plane, mask=m) + acc_gami, mask=m)


@contextlib.contextmanager
def _full_fp32_matmul():
    """fp32 GEMMs without TF32 (10-bit mantissa products would cost ~1e-3 relative accuracy in
    dL/dC); restores the caller's setting."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def bwd_kernel_args(params, coupling, traj, gcoup, adj, gparam, grad_bold, grad_records, consts,
                    cfg, k_start, n_steps, n_trs, delay=None):
    """``(grid, args, kwargs)`` of one ``_rww_bwd_kernel`` launch (also used by rww.ops.triton.aot).
    ``delay``: with conduction delays, a dict with ``lag`` (int32 lags, contiguous), ``gring``,
    ``dc``, ``hgrad``, ``ck0`` (the segment's checkpoint) and ``total`` (the scan's steps); see
    the kernel's docstring."""
    batch, n_nodes = adj.shape[1], adj.shape[2]
    max_delay = adj.shape[0] - 6
    if delay is None:
        filler = _dummy(adj)
        delay_args = (filler.to(torch.int32), 0, 0, 0, filler, filler, filler, filler)
        total = 0
    else:
        check_delay_config(cfg)
        lag = delay["lag"]
        # the sweep reads lag^T like C^T: lag'[n, c] = lag[c, n], i.e. the strides swapped
        s_lb = lag.stride(0) if lag.dim() == 3 else 0
        delay_args = (lag, s_lb, lag.stride(-1), lag.stride(-2), delay["gring"], delay["dc"],
                      delay["hgrad"], delay["ck0"])
        total = delay["total"]
    s_pp, s_pb, s_pn, pb, pn = _param_strides(params)
    # The sweep needs C^T @ g_coup: C'[i, j] = C[j, i], i.e. C's strides swapped. For a
    # contiguous C that makes s_ci == 1, the unit stride the streamed column loads want.
    s_cb, s_cj, s_ci = _coupling_strides(coupling)
    grec = 0
    rec_ptrs = []
    for bit, name in enumerate(("S_E", "S_I", "r_E", "r_I")):
        g = grad_records.get(name)
        if g is not None:
            grec |= 1 << bit
            rec_ptrs.append(g)
        else:
            rec_ptrs.append(_dummy(adj))
    t = consts.t0 + k_start
    grid = (triton.cdiv(batch, cfg.block_b),)
    args = (
        params, s_pp, s_pb, s_pn,
        coupling, s_cb, s_ci, s_cj,
        traj, gcoup, adj, gparam, grad_bold, *rec_ptrs, *delay_args,
        batch, n_nodes, n_steps, k_start, consts.steps_per_tr, n_trs,
        consts.seed & 0xFFFFFFFF, consts.seed >> 32, t & 0xFFFFFFFF, t >> 32, consts.sim_offset,
        max_delay, total,
        *consts.kernel_floats(), consts.bold_scale, consts.k1, consts.k2, consts.k3,
    )
    kwargs = dict(
        GRIFFITHS=consts.griffiths, PER_SIM_C=coupling.dim() == 3, PB=pb, PN=pn,
        BLOCK_B=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_J=cfg.block_j,
        RESIDENT=cfg.resident, USE_DOT=cfg.use_dot, GREC=grec,
        num_warps=cfg.num_warps,
    )
    if max_delay:
        kwargs["HAS_DELAY"] = True      # (absent otherwise: the default, the no-delay kernel)
    return grid, args, kwargs


_LAST_CHECK = (0, 0.0)
# A recomputed state further than this from its checkpoint (states are O(1)) is not rounding:
# the backward would differentiate another trajectory than the forward ran.
RECOMPUTE_WARN_DIFFERENCE = 1e-5


def last_recompute_check() -> tuple[int, float]:
    """``(mismatches, max_difference)`` of the last backward pass: how many state values at the
    ends of the recomputed segments differed (bitwise) from the forward's checkpoints, and the
    largest absolute difference. The recomputation runs the forward kernel again with the same
    arithmetic, so both are 0 under the interpreter; compiled, the kernel variant that also
    writes the trajectory could fuse multiply-adds differently (rounding only)."""
    return _LAST_CHECK


def _record_recompute_check(mismatches: int, max_difference: float):
    global _LAST_CHECK
    _LAST_CHECK = (mismatches, max_difference)
    if not max_difference <= RECOMPUTE_WARN_DIFFERENCE:     # also catches NaN
        warnings.warn(
            f"triton backend: states recomputed in the backward pass differ from the forward's "
            f"checkpoints by up to {max_difference:.3g} ({mismatches} values): gradients are "
            "evaluated on another trajectory than the forward's. Please report this with the "
            "problem size and the GPU.", RuntimeWarning, stacklevel=3)


def _launch_adjoint(*launch):
    grid, args, kwargs = bwd_kernel_args(*launch)
    _rww_bwd_kernel[grid](*args, **kwargs)


def rww_bwd(params, coupling, checkpoints, consts: ScanConstants, n_steps: int,
            checkpoint_every: int, grad_bold, grad_records: dict, grad_state,
            cfg: KernelConfig | None = None, fwd_cfg: KernelConfig | None = None, delays=None):
    """Gradients of a scan by recomputation and the fused adjoint sweep, segment by segment.

    Args:
        params: ``(P, Bp, Np)`` float32 parameter table. coupling: ``(N, N)`` or ``(B, N, N)``.
        checkpoints: ``(n_seg, 6 + D, B, N)`` from :func:`rww.ops.triton.forward.rww_fwd` (state at
            local steps 0, K, 2K, ...; D rows of S_E history with conduction delays).
        consts, n_steps, checkpoint_every: as given to the forward.
        grad_bold: ``(B, n_TR, N)`` dL/dBOLD. grad_records: name -> ``(B, n_TR, N)`` for any of
            ``S_E, S_I, r_E, r_I`` (missing ones are zero). grad_state: ``(6 + D, B, N)``
            dL/d(final state).
        cfg, fwd_cfg: tile shapes of the adjoint and of the recomputation (default
            :func:`rww.ops.triton.config.choose_config`).
        delays: with D > 0, the int lags given to the forward.

    Returns:
        ``(grad_params (P, Bp, Np), grad_coupling (like coupling), grad_state0 (6 + D, B, N))``.
        Memory beyond the inputs: the trajectory scratch ``(K, 7, B, N)``, ``g_coup``
        ``(K, B, N)`` and per-element parameter gradients ``(19, B, N)``, i.e. O(B*N*K); with
        delays no ``g_coup`` but two ``(B, D + 1, N)`` rings and a ``(B, N, N)`` dL/dC partial.
    """
    batch, n_nodes = _check_inputs(params, coupling, grad_state)
    params, coupling = params.contiguous(), coupling.contiguous()
    per_sim = coupling.dim() == 3
    rows = checkpoints.shape[1]
    max_delay = rows - 6
    _check_delays(rows, delays)
    cfg = cfg or choose_config(batch, n_nodes, per_sim, "bwd", delays=delays is not None)
    fwd_cfg = fwd_cfg or choose_config(batch, n_nodes, per_sim, "fwd", delays=delays is not None)
    n_trs = n_steps // consts.steps_per_tr
    grad_bold = grad_bold.to(torch.float32).contiguous()
    grad_records = {k: v.to(torch.float32).contiguous() for k, v in grad_records.items()
                    if v is not None}
    grad_state = grad_state.to(torch.float32).contiguous()
    adj = grad_state.clone()   # updated in place, segment by segment
    # Sums over segments in float64 (each segment's own sum is float32, in registers): the
    # kernel adds its float32 partials to this float64 buffer; dL/dC likewise below.
    gparam = adj.new_zeros(N_PARAMS, batch, n_nodes, dtype=torch.float64)
    grad_c = torch.zeros_like(coupling, dtype=torch.float64)
    seg_len = min(checkpoint_every, max(n_steps, 1))
    # One row more than a segment: the recomputation runs one step past each segment but the
    # last, so that its end state can be checked against the next checkpoint.
    traj_buf = new_output(adj, seg_len + 1, 7, batch, n_nodes)
    n_seg = checkpoints.shape[0]
    c_op = forward_coupling_operand(coupling, fwd_cfg)
    lag_op = fwd_ring = delay = None
    if max_delay:
        # The kernel writes the initial history's adjoint (rows 6..) in the segment at step 0;
        # dL/d(final history) reaches it below where the history outlives the scan (T < D).
        adj[6:] = 0.0
        gcoup_buf = _dummy(adj)
        lag_op = forward_lag_operand(delays)
        fwd_ring = new_output(adj, batch, max_delay + 1, n_nodes)
        dc_buf = adj.new_zeros(batch, n_nodes, n_nodes)
        delay = {"lag": delays.to(torch.int32).contiguous(),
                 "gring": adj.new_zeros(batch, max_delay + 1, n_nodes), "dc": dc_buf,
                 "hgrad": grad_state[6:].contiguous(), "total": n_steps}
    else:
        gcoup_buf = new_output(adj, seg_len, batch, n_nodes)
    mismatches = torch.zeros((), dtype=torch.int64, device=adj.device)
    max_difference = torch.zeros((), dtype=torch.float32, device=adj.device)
    for seg in reversed(range(n_seg)):
        start = seg * checkpoint_every
        length = min(start + checkpoint_every, n_steps) - start
        if length <= 0:
            continue
        check = seg + 1 < n_seg
        traj = rww_fwd_trajectory(params, coupling, checkpoints[seg], consts, start,
                                  length + check, cfg=fwd_cfg, traj=traj_buf, c_op=c_op,
                                  lag_op=lag_op, ring=fwd_ring)
        if check:
            end, stored = traj[length, :6], checkpoints[seg + 1]
            if max_delay:
                # the next checkpoint's history: S_E of steps start + length - d, from the
                # recomputed trajectory and (d > length) this checkpoint's own history
                seq = torch.cat([checkpoints[seg, 6:].flip(0), traj[:length, 0]])
                end = torch.cat([end, seq[length:length + max_delay].flip(0)])
            mismatches += (end != stored).sum()
            max_difference = torch.maximum(max_difference, (end - stored).abs().max())
            traj = traj[:length]
        if max_delay:
            delay["ck0"] = checkpoints[seg]
            _launch_adjoint(params, coupling, traj, gcoup_buf, adj, gparam, grad_bold,
                            grad_records, consts, cfg, start, length, n_trs, delay)
            # dL/dC of the segment, summed over simulations for a shared C, in float64
            grad_c += dc_buf.double() if per_sim else dc_buf.double().sum(0)
            dc_buf.zero_()
            continue
        gcoup = gcoup_buf[:length]
        _launch_adjoint(params, coupling, traj, gcoup, adj, gparam, grad_bold, grad_records,
                        consts, cfg, start, length, n_trs)
        s_e = traj[:, 0]
        with _full_fp32_matmul():
            if per_sim:
                # dL/dC[b] += sum_k g_coup[k, b, :]^T S_E[k, b, :]
                grad_c += torch.bmm(gcoup.permute(1, 2, 0), s_e.permute(1, 0, 2)).double()
            else:
                grad_c += (gcoup.reshape(-1, n_nodes).T @ s_e.reshape(-1, n_nodes)).double()
    _record_recompute_check(int(mismatches), float(max_difference))
    if max_delay and n_steps < max_delay:
        # final history rows T + d are the initial history's rows d (S_E(-d)) when T + d <= D
        adj[6:rows - n_steps] += grad_state[6 + n_steps:]
    grad_c = grad_c.to(torch.float32)
    _, bp, np_ = params.shape
    grad_params = gparam
    if bp == 1:
        grad_params = grad_params.sum(1, keepdim=True)
    if np_ == 1:
        grad_params = grad_params.sum(2, keepdim=True)
    return grad_params.to(torch.float32), grad_c, adj
