"""One step of the scan inside a numba kernel's workspace: Philox noise, the coupling mat-vec, the
transfer functions, the Euler-Maruyama update of the neural and Balloon states (see
:mod:`rww.ops.numba.layout` for the workspace rows and conventions)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from . import cache  # noqa: F401  (before any @njit(cache=True): the kernels' cache key)

from .layout import (C_AE, C_AI, C_AMP, C_BE, C_BI, C_DE, C_DI, C_E0, C_EE, C_EI, C_G, C_GE, C_GI,
                     C_I0, C_IE, C_KE, C_KI, FASTMATH, H_DT, H_DTB, H_GAMMA, H_IALPHA, H_IRHO,
                     H_ITAU0, H_KAPPA, H_LNR, H_OMR, H_OMRR, LANES, N_COEF, W_COEF, W_CS, W_F, W_HDE, W_HDI,
                     W_HYE, W_HYI, W_IE, W_II, W_P, W_PE, W_PI, W_Q, W_R, W_RE, W_RI, W_SE, W_SI,
                     W_SCR, W_U0, W_U1, W_V, W_X, W_XIE, W_XII)
from ..reference import PHI_SERIES
from .mathfn import exp_expm1, log1p_, log_, sincos_2pi, tanh_
from .symmetric import symmetric_times_vector

# ----------------------------------------------------------------------------- Philox
_M32 = np.uint64(0xFFFFFFFF)
_PM0 = np.uint64(0xD2511F53)
_PM1 = np.uint64(0xCD9E8D57)
_PW0 = np.uint64(0x9E3779B9)
_PW1 = np.uint64(0xBB67AE85)
_SH32 = np.uint64(32)
_SH8 = np.uint64(8)


@njit(forceinline=True)
def _philox_01(c0, c1, c2, c3, k0, k1):
    """Words x0, x1 of Philox4x32-10 (all arguments uint64 holding 32-bit values). The 32x32-bit
    products are uint64 multiplies of zero-extended words (vpmuludq when vectorised)."""
    for _ in range(10):
        p0 = _PM0 * c0
        p1 = _PM1 * c2
        n0 = (p1 >> _SH32) ^ c1 ^ k0
        n2 = (p0 >> _SH32) ^ c3 ^ k1
        c1 = p1 & _M32
        c3 = p0 & _M32
        c0 = n0
        c2 = n2
        k0 = (k0 + _PW0) & _M32
        k1 = (k1 + _PW1) & _M32
    return c0, c1


@njit(error_model="numpy", cache=True, fastmath=FASTMATH)
def philox_uniforms(t, sim, n_nodes, key0, key1, out):
    """The contract's uniforms ``u0, u1`` (float32/float64 ``out`` (2, n_nodes)) for global step
    ``t`` and simulation ``sim`` (for tests)."""
    T = out.dtype.type
    tt = np.uint64(t)
    for i in range(n_nodes):
        x0, x1 = _philox_01(tt & _M32, tt >> _SH32, np.uint64(i), np.uint64(sim),
                            np.uint64(key0), np.uint64(key1))
        out[0, i] = (T(np.int32(x0 >> _SH8)) + T(0.5)) * T(2.0 ** -24)
        out[1, i] = (T(np.int32(x1 >> _SH8)) + T(0.5)) * T(2.0 ** -24)


# ----------------------------------------------------------------------------- one step
@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _noise(W, t, b, key0, key1, NP, i0):
    """Standard normal noise ``W[W_XIE], W[W_XII]`` for global step ``t``, simulation ``b``; lane
    i holds node ``i0 + i`` (i0 = 0 but in the node split's blocks)."""
    T = W.dtype.type
    tt = np.uint64(t)
    c0 = tt & _M32
    c1 = tt >> _SH32
    cb = np.uint64(b)
    scale = T(2.0 ** -24)
    half = T(0.5)
    # Philox in a loop of its own: pure 64-bit integer work, which vectorises.
    for i in range(NP):
        x0, x1 = _philox_01(c0, c1, np.uint64(i0 + i), cb, key0, key1)
        # x >> 8 < 2**24 fits int32, whose conversion to float is a vector instruction.
        W[W_U0 * LANES + i] = (T(np.int32(x0 >> _SH8)) + half) * scale
        W[W_U1 * LANES + i] = (T(np.int32(x1 >> _SH8)) + half) * scale
    m2 = T(-2.0)
    for i in range(NP):
        rad = math.sqrt(m2 * log_(W[W_U0 * LANES + i]))
        sn, cs = sincos_2pi(W[W_U1 * LANES + i])
        W[W_XIE * LANES + i] = rad * cs
        W[W_XII * LANES + i] = rad * sn


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _rows_times_vector(W, m, bc, N, NP, src, dst):
    """``W[dst][i] = sum_j m[bc, j, i] * W[src][j]``: axpys over the rows of ``m``, vectorised over
    the output lanes without reassociation; the sum over j runs in order 0..N-1, four rows per
    pass so that the partial sum stays in a register across four rows. ``src``/``dst`` are
    workspace slots (constants at every call site, folded by inlining)."""
    T = W.dtype.type
    for i in range(NP):
        W[dst * LANES + i] = T(0.0)
    j = 0
    while j + 4 <= N:
        s0 = W[src * LANES + j]
        s1 = W[src * LANES + j + 1]
        s2 = W[src * LANES + j + 2]
        s3 = W[src * LANES + j + 3]
        for i in range(NP):
            acc = W[dst * LANES + i] + m[bc, j, i] * s0
            acc = acc + m[bc, j + 1, i] * s1
            acc = acc + m[bc, j + 2, i] * s2
            W[dst * LANES + i] = acc + m[bc, j + 3, i] * s3
        j += 4
    while j < N:
        s0 = W[src * LANES + j]
        for i in range(NP):
            W[dst * LANES + i] = W[dst * LANES + i] + m[bc, j, i] * s0
        j += 1


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _coupling_times_vector(W, cp, bc, N, NP, src, dst):
    """``W[dst] = M @ W[src]`` for the coupling operand ``cp`` (:func:`rww.ops.numba.symmetric.
    coupling_operand`): from the packed upper triangle when matrix ``bc`` is symmetric and large,
    else as axpys over the rows of the dense ``cp[0][bc]`` (:func:`_rows_times_vector`)."""
    if cp[4][bc]:
        symmetric_times_vector(W, cp[1], cp[2], cp[3], cp[5], bc, N, NP, src, dst, W_SCR)
    else:
        _rows_times_vector(W, cp[0], bc, N, NP, src, dst)


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _couple(W, cp, bc, N, NP):
    """``W[W_CS] = C @ S_E``; ``cp[0]`` holds C^T (the columns of C as rows)."""
    _coupling_times_vector(W, cp, bc, N, NP, W_SE, W_CS)


# phi's Taylor coefficients, highest order first (Horner), from the reference's statement.
_PHI_HORNER = tuple(reversed(PHI_SERIES))


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _phi(z, e):
    """``phi(z) = 1 - exp(-z) (1 + z)`` given ``e = exp(-z)``: >= 0, ~z^2/2 near 0. Both transfer
    functions' slopes reduce to it. Evaluated directly it cancels for small |z| (relative error
    ~eps/z^2: up to 3 digits lost in float32 near y = 0, all of them in float64 at |y| ~ 1e-12),
    so |z| < 0.5 uses the Taylor series to n = 16 (truncation < 1e-17 relative: float64
    accuracy; the Triton kernels, float32 only, stop at n = 10). Used by the adjoint's
    recomputation only: the forward kernel never evaluates the slopes (dead code there)."""
    T = type(z)
    if abs(z) < T(0.5):
        p = T(0.0)
        for c in _PHI_HORNER:
            p = p * z + T(c)
        return z * z * p
    return T(1.0) - e * (T(1.0) + z)


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _rate_deco(cur, a, b, d):
    """Deco 2014 rate ``H = y / (1 - exp(-d y))``, ``y = a I - b``, with the reference's series
    below |d y| < 0.1; returns ``(H, dH/dy, dH/dd)``."""
    T = type(cur)
    one = T(1.0)
    y = a * cur - b
    z = d * y
    small = abs(z) < T(0.1)
    zs = one if small else z
    ez, em = exp_expm1(-zs)                 # e^{-z}, e^{-z} - 1
    den = -em
    r_x = y / den
    hy_x = _phi(zs, ez) / den / den         # (E - z e^{-z}) / E^2 without cancellation
    hd_x = -r_x * r_x * ez                  # -y^2 e^{-z} / E^2
    z2 = z * z
    ser = one + T(0.5) * z + z2 * (T(1.0 / 12.0) + z2 * (T(-1.0 / 720.0) + z2 * T(1.0 / 30240.0)))
    r_s = ser / d
    hy_s = T(0.5) + z * (T(1.0 / 6.0) + z2 * (T(-1.0 / 180.0) + z2 * T(1.0 / 5040.0)))
    hd_s = (hy_s * y - r_s) / d
    if small:
        return r_s, hy_s, hd_s
    return r_x, hy_x, hd_x


@njit(forceinline=True, error_model="numpy")
def _sign(x):
    """sign with sign(0) = 0 (torch's abs backward)."""
    T = type(x)
    s = T(1.0) if x > T(0.0) else T(0.0)
    return T(-1.0) if x < T(0.0) else s


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _rate_griffiths(cur, a, b, d):
    """The paper code's ``(1e-5 + |y|) / (1e-5 d + |1 - exp(-d y)|)``; returns
    ``(H, dH/dy, dH/dd)`` with torch's convention d|u|/du = 0 at u = 0."""
    T = type(cur)
    eps = T(1e-5)
    y = a * cur - b
    ez, em = exp_expm1(-(d * y))
    w = -em                                 # 1 - e^{-z}, without cancellation
    den = eps * d + abs(w)
    r = (eps + abs(y)) / den
    sw = _sign(w) * ez
    # autograd's sign(y)/D - N sign(w) d e / D^2 equals (1e-5 d |w| + phi(z)) / D^2 for either
    # sign of y (a sum of non-negative terms; 0 at y = 0 as torch's sign(0) = 0 gives), without
    # the cancellation of the two ~1/(d y) terms near y = 0.
    hy = (eps * d * abs(w) + _phi(d * y, ez)) / den / den
    hd = -r * (eps + sw * y) / den
    return r, hy, hd


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _step(W, cp, bc, hc, griffiths, t, b, key0, key1, N, NP, keep):
    """One Euler-Maruyama step of every node of simulation ``b`` (global step ``t``), in place.

    Args:
        W: (N_WROWS, LANES) workspace: the state rows are overwritten with the state after the
            step; W_RE, W_RI receive the rates that drove it, and, when ``keep``, the other tape
            rows what the adjoint needs.
        cp: the coupling operand (:func:`rww.ops.numba.symmetric.coupling_operand`), its dense
            part ``cp[0]`` (Bc, N, NP) C^T (zero-padded columns); ``bc`` this simulation's matrix.
        hc: (12,) haemodynamic constants in the state dtype (:data:`HAEMO_FIELDS`).

    Returns:
        number of real nodes whose new state is non-finite (or, deco2014, has f, v or q <= 0,
        i.e. a deviation row <= -1).

    The node update is three loops (rates; Balloon; S_E, S_I and the divergence check) rather than
    one: one loop holds too many live values for the 16 vector registers and spent most of its
    time spilling (measured 4.3 us -> 1.7 us per step at N = 68, float32).
    """
    _noise(W, t, b, key0, key1, NP, 0)
    _couple(W, cp, bc, N, NP)
    return _step_local(W, hc, griffiths, N, NP, keep)


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _step_local(W, hc, griffiths, N, NP, keep):
    """The node-local part of :func:`_step`, after the noise (``W[W_XIE]``, ``W[W_XII]``) and the
    coupling input (``W[W_CS]``) are in place: rates, Balloon, S_E and S_I, divergence count.
    Shared by the step with conduction delays (:mod:`rww.ops.numba.delayed`), which only
    computes ``W[W_CS]`` differently."""
    T = W.dtype.type
    one = T(1.0)
    zero = T(0.0)
    for i in range(NP):
        s_e = W[W_SE * LANES + i]
        s_i = W[W_SI * LANES + i]
        pre_ie = (W[(W_COEF + C_E0) * LANES + i] + W[(W_COEF + C_EE) * LANES + i] * s_e
                  + W[(W_COEF + C_G) * LANES + i] * W[W_CS * LANES + i] - W[(W_COEF + C_IE) * LANES + i] * s_i)
        pre_ii = W[(W_COEF + C_I0) * LANES + i] + W[(W_COEF + C_EI) * LANES + i] * s_e - s_i
        if griffiths:
            i_e = tanh_(pre_ie if pre_ie > zero else zero)
            i_i = tanh_(pre_ii if pre_ii > zero else zero)
            r_e, hy_e, hd_e = _rate_griffiths(i_e, W[(W_COEF + C_AE) * LANES + i], W[(W_COEF + C_BE) * LANES + i],
                                              W[(W_COEF + C_DE) * LANES + i])
            r_i, hy_i, hd_i = _rate_griffiths(i_i, W[(W_COEF + C_AI) * LANES + i], W[(W_COEF + C_BI) * LANES + i],
                                              W[(W_COEF + C_DI) * LANES + i])
        else:
            i_e = pre_ie
            i_i = pre_ii
            r_e, hy_e, hd_e = _rate_deco(i_e, W[(W_COEF + C_AE) * LANES + i], W[(W_COEF + C_BE) * LANES + i],
                                         W[(W_COEF + C_DE) * LANES + i])
            r_i, hy_i, hd_i = _rate_deco(i_i, W[(W_COEF + C_AI) * LANES + i], W[(W_COEF + C_BI) * LANES + i],
                                         W[(W_COEF + C_DI) * LANES + i])
        W[W_RE * LANES + i] = r_e
        W[W_RI * LANES + i] = r_i
        if keep:
            W[W_HYE * LANES + i] = hy_e
            W[W_HDE * LANES + i] = hd_e
            W[W_HYI * LANES + i] = hy_i
            W[W_HDI * LANES + i] = hd_i
            W[W_IE * LANES + i] = i_e
            W[W_II * LANES + i] = i_i
    # Balloon-Windkessel, driven by the S_E before the step (fully explicit Euler). The state rows
    # hold deviations from rest (f - 1, v - 1, q - 1), so no increment is rounded away against a
    # 1; every difference from rest is formed without cancellation (see rww.ops.reference.
    # balloon_derivatives for the algebra).
    dtb = hc[H_DTB]
    kappa = hc[H_KAPPA]
    gam = hc[H_GAMMA]
    itau0 = hc[H_ITAU0]
    ialpha = hc[H_IALPHA]
    lnr = hc[H_LNR]
    omr = hc[H_OMR]
    omr_rho = hc[H_OMRR]
    for i in range(NP):
        s_e = W[W_SE * LANES + i]
        x = W[W_X * LANES + i]
        fd = W[W_F * LANES + i]
        vd = W[W_V * LANES + i]
        qd = W[W_Q * LANES + i]
        f = one + fd
        v = one + vd
        vp, vpm = exp_expm1(log1p_(vd) * ialpha)     # v ** (1/alpha) and that minus 1
        ea, eam = exp_expm1(-(lnr * fd) / f)         # (1 - rho) ** (1/f - 1) and that minus 1
        flow = fd - f * omr_rho * eam                # f (1 - (1 - rho) ** (1/f)) / rho - 1
        wash = qd + (vpm - vd) / v * (one + qd)      # v ** (1/alpha) q / v - 1
        x1 = x + dtb * (s_e - kappa * x - gam * fd)
        f1 = fd + dtb * x
        v1 = vd + dtb * ((fd - vpm) * itau0)
        q1 = qd + dtb * ((flow - wash) * itau0)
        if griffiths:
            x1 = tanh_(x1)
            f1 = tanh_(f1)
            v1 = tanh_(v1)
            q1 = tanh_(q1)
        W[W_X * LANES + i] = x1
        W[W_F * LANES + i] = f1
        W[W_V * LANES + i] = v1
        W[W_Q * LANES + i] = q1
        if keep:
            W[W_P * LANES + i] = vp
            W[W_R * LANES + i] = omr * ea
    dt = hc[H_DT]
    inf = T(np.inf)
    nbad = 0
    for i in range(NP):
        s_e = W[W_SE * LANES + i]
        s_i = W[W_SI * LANES + i]
        amp = W[(W_COEF + C_AMP) * LANES + i]
        p_e = (s_e + dt * (-(s_e * W[(W_COEF + C_KE) * LANES + i])
                           + (one - s_e) * W[(W_COEF + C_GE) * LANES + i] * W[W_RE * LANES + i])
               + amp * W[W_XIE * LANES + i])
        p_i = (s_i + dt * (-(s_i * W[(W_COEF + C_KI) * LANES + i]) + W[(W_COEF + C_GI) * LANES + i] * W[W_RI * LANES + i])
               + amp * W[W_XII * LANES + i])
        if griffiths:
            s_e1 = tanh_(T(1e-5) + (p_e if p_e > zero else zero))
            s_i1 = tanh_(T(1e-5) + (p_i if p_i > zero else zero))
        else:
            # clamp that propagates NaN (both comparisons are false for NaN)
            s_e1 = zero if p_e < zero else (one if p_e > one else p_e)
            s_i1 = zero if p_i < zero else (one if p_i > one else p_i)
        x1 = W[W_X * LANES + i]
        f1 = W[W_F * LANES + i]
        v1 = W[W_V * LANES + i]
        q1 = W[W_Q * LANES + i]
        ok = abs(s_e1 + s_i1 + x1 + f1 + v1 + q1) < inf
        if not griffiths:
            ok = ok & (f1 > -one) & (v1 > -one) & (q1 > -one)
        nbad += 1 if ((not ok) & (i < N)) else 0
        W[W_SE * LANES + i] = s_e1
        W[W_SI * LANES + i] = s_i1
        if keep:
            W[W_PE * LANES + i] = p_e
            W[W_PI * LANES + i] = p_i
    return nbad


@njit(forceinline=True)
def _load_coefficients(W, b, coef, N, NP):
    """Broadcast the coefficients of simulation ``b`` into the workspace; padding lanes copy
    node 0 (finite, in range: they only keep the vector loops uniform)."""
    bp = b if coef.shape[1] > 1 else 0
    per_node = coef.shape[2] > 1
    for k in range(N_COEF):
        for i in range(NP):
            src = i if (per_node and i < N) else 0
            W[(W_COEF + k) * LANES + i] = coef[k, bp, src]


@njit(forceinline=True)
def _load_state(W, src, b, N, NP):
    """State rows of the workspace from ``src`` (6, B, N); padding lanes copy node 0."""
    for k in range(6):
        for i in range(NP):
            W[(k) * LANES + i] = src[k, b, i if i < N else 0]


@njit(forceinline=True)
def _haemo(hc64, dtype):
    hc = np.empty(hc64.shape[0], dtype=dtype)
    T = hc.dtype.type
    for k in range(hc64.shape[0]):
        hc[k] = T(hc64[k])
    return hc


