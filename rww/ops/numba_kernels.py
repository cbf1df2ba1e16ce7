"""Fused CPU kernels of the scan, compiled with numba: forward K-step scan and discrete adjoint.

Only jit functions and the constants they read live here; :mod:`rww.ops.numba_backend` prepares
the arrays, runs the kernels on a thread pool and wraps them as a :class:`ScanBackend`.

Layout and conventions (shared by both kernels)
------------------------------------------------
- One call simulates a list of simulations ``sims`` one after the other, each in a workspace
  ``W`` of shape (N_WROWS, LANES) whose rows hold the state, the coefficients and every per-node
  intermediate of a step. LANES is a compile-time constant (see its comment): that is what lets
  LLVM vectorise loops touching many rows. The node loops run over ``NP`` lanes, N rounded up by
  the caller (``numba_backend.padded_nodes``; the kernels read NP from the padded coupling's
  width). On AVX-512 hosts LLVM runs most loops 16 or 32 lanes per iteration and the rest as a
  scalar remainder; padding further costs more than that remainder, except in
  :func:`_flush_coupling`, which pads its own loop. Lanes ``N..NP-1`` are
  padding: they compute harmless values (a copy of node 0, uncoupled), never feed real lanes (the
  padded columns of the coupling matrices are zero and the coupling loops run over real rows
  only) and are masked out of the divergence check.
- Each step is a few separate loops over nodes (Philox words; Box-Muller; coupling; rates;
  Balloon; S_E, S_I) because that is what LLVM vectorises without spilling: a loop that mixes
  the 64-bit Philox arithmetic with float work, or calls a libm function, stays scalar, and one
  loop holding the whole step needs more than 16 vector registers.
- Kernels are generic over float32 and float64 (``T = W.dtype.type``; every literal goes through
  ``T(...)``, since a bare Python float would promote float32 arithmetic to float64). float32
  uses the vectorisable exp/expm1/log/sincos/tanh written below (max errors measured in the
  tests); float64 calls libm at scalar speed (float64 is the accuracy mode).
- Fast-math is limited to FMA contraction (see :data:`FASTMATH`): NaN and inf propagate into the
  divergence check, a continued run equals one long run exactly, and a segment recomputed in the
  backward pass reproduces the forward trajectory bit for bit (clamp masks and squash derivatives
  are evaluated on exactly the states the forward produced; checked at every checkpoint).
  ``error_model='numpy'`` removes numba's division-by-zero checks, which keep loops scalar.

Parameters reach the kernels as 17 *coefficients* per node (:data:`COEF_NAMES`), computed from the
parameter table by differentiable torch code in the backend (products such as ``G*J_NMDA``,
reciprocals of the time constants, the griffiths2022 ``0.001 + relu(.)`` gains and noise
amplitude). The adjoint kernel returns gradients with respect to these coefficients and autograd
maps them back to the 19 parameters, so relu/abs conventions there are torch's own.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# ----------------------------------------------------------------------------- coefficients
# Rows of the coefficient table (per simulation and node). Currents:
#   I_E = c_E0 + c_EE*S_E + c_G*(C @ S_E) - c_IE*S_I      (griffiths2022: tanh(relu(.)) of it)
#   I_I = c_I0 + c_EI*S_E - S_I
# rates r = H(a*I - b; d); S_E += dt*(-k_E*S_E + (1 - S_E)*gamma_E*r_E) + amp*xi_E, and S_I alike.
COEF_NAMES = ("c_E0", "c_EE", "c_G", "c_IE", "c_I0", "c_EI", "a_E", "b_E", "d_E", "a_I", "b_I",
              "d_I", "k_E", "k_I", "gamma_E", "gamma_I", "amp")
N_COEF = len(COEF_NAMES)
(C_E0, C_EE, C_G, C_IE, C_I0, C_EI, C_AE, C_BE, C_DE, C_AI, C_BI, C_DI, C_KE, C_KI, C_GE, C_GI,
 C_AMP) = range(N_COEF)

# Haemodynamic constants, as a float64 vector (cast to the state dtype inside the kernels).
HAEMO_FIELDS = ("dt", "dtb", "kappa", "gamma_h", "inv_tau0", "inv_alpha", "ln_1mrho", "inv_rho",
                "bold_scale", "k1", "k2", "k3")
(H_DT, H_DTB, H_KAPPA, H_GAMMA, H_ITAU0, H_IALPHA, H_LNR, H_IRHO, H_SCALE, H_K1, H_K2,
 H_K3) = range(len(HAEMO_FIELDS))

# Workspace of one simulation: a local (N_WROWS, LANES) array. LANES is a compile-time constant,
# so the distance between any two rows is known to LLVM and the node loops, which read and write
# many rows, vectorise without run-time alias checks (with rows of run-time length LLVM gives up:
# "too many memory checks needed"; measured 4.6x slower). Only the first NP lanes are used, so
# the rows are padded to 2048 + 72 floats: rows then start 4.5 cache lines apart modulo the L1
# set period, and N = 68 uses 21 KB of the workspace per step.
MAX_NODES = 2048
LANES = MAX_NODES + 72
# Rows 0..N_TAPE-1 are also the fields of the backward pass's tape (the state before every step
# and what the adjoint needs from it, so that the sweep evaluates no transcendental function and
# regenerates no noise): copying them is one loop per row.
(W_SE, W_SI, W_X, W_F, W_V, W_Q,                         # state
 W_CS,                                                   # C @ S_E
 W_RE, W_HYE, W_HDE, W_RI, W_HYI, W_HDI,                 # rates, dr/dy, dr/dd
 W_IE, W_II,                                             # currents (griffiths: squashed)
 W_XIE, W_XII,                                           # noise
 W_P, W_R,                                               # v**(1/alpha), (1-rho)**(1/f)
 W_PE, W_PI) = range(21)                                 # S_E, S_I before clamp / squash
N_TAPE = 21
W_U0, W_U1 = 21, 22                                      # uniforms
W_COEF = 23                                              # N_COEF rows of coefficients
W_NXT = W_COEF + N_COEF                                  # adjoint: state after the step (6)
W_LAM = W_NXT + 6                                        # adjoint of the state (6)
W_BLK = W_LAM + 6                                        # gradient partial sums (N_COEF)
W_LCS = W_BLK + N_COEF                                   # adjoint of C @ S_E
W_EXT = W_LCS + 1                                        # C^T (adjoint of C @ S_E)
W_GRE, W_GRI = W_EXT + 1, W_EXT + 2                      # record gradients of r_E, r_I / spt
# Parameter-gradient sums are accumulated in the state dtype over at most FLUSH steps, then added
# to float64 totals: float32 partial sums of <= 16 terms lose at most ~16 ulp relative to the sum
# of magnitudes, and the float64 totals keep long runs (10^5-10^6 steps) exact enough.
# (_flush_coupling is written out for FLUSH = 16.)
FLUSH = 16
# The coupling gradient sum_t g_t S_t^T (g = dL/d(C @ S_E)) as one rank-FLUSH product per FLUSH
# steps instead of a rank-1 update per step: the adjoint sweep parks g_t and S_t in these rows,
# and _flush_coupling adds G^T S (FLUSH x N by FLUSH x NP) into the float64 totals, its FLUSH-term
# dot products held in registers (a rank-1 update loads and stores the whole N x NP block every
# step; measured 0.8 -> 0.1 us per step at N = 68).
W_GL = W_GRI + 1                                         # g_t of the block (FLUSH rows)
W_GS = W_GL + FLUSH                                      # S_E,t of the block (FLUSH rows)
N_WROWS = W_GS + FLUSH

# Only FMA contraction of the fast-math flags: it changes results by rounding alone, and it is
# decided per multiply (a product is fused into its single add), which the forward kernel and the
# backward pass's recomputation share instruction for instruction (the tape stores only sums,
# quotients and function values, never a product that also feeds an add), so the recomputed
# trajectory stays bitwise equal to the forward one; the backward kernel verifies this at every
# checkpoint. No nnan/ninf: the divergence check needs NaN and inf. Measured: 1.7 -> 1.1 us per
# step at N = 68, float32.
FASTMATH = {"contract"}
_OV_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy", "forceinline": True}

# ----------------------------------------------------------------------------- float32 math
_I32 = ir.IntType(32)
_F32 = ir.FloatType()


@intrinsic
def _pow2_from_magic(typingctx, t):
    """``t = y + 1.5*2**23`` (float32) holds ``n = round(y)`` in its low mantissa bits; returns
    ``2**(n - 1)`` by building the exponent field (valid for -125 <= n <= 128)."""
    if t == types.float32:
        def codegen(context, builder, signature, args):
            bits = builder.bitcast(args[0], _I32)
            # (0x4B400000 + n + 126) << 23 keeps only the low 9 bits: (n + 126) << 23.
            e = builder.shl(builder.add(bits, ir.Constant(_I32, 126)), ir.Constant(_I32, 23))
            return builder.bitcast(e, _F32)
        return types.float32(types.float32), codegen
    return None


@intrinsic
def _mantissa(typingctx, x):
    """The significand of a positive normal float32 as a float in [1, 2)."""
    if x == types.float32:
        def codegen(context, builder, signature, args):
            bits = builder.bitcast(args[0], _I32)
            m = builder.or_(builder.and_(bits, ir.Constant(_I32, 0x7FFFFF)),
                            ir.Constant(_I32, 0x3F800000))
            return builder.bitcast(m, _F32)
        return types.float32(types.float32), codegen
    return None


@intrinsic
def _exponent(typingctx, x):
    """The unbiased binary exponent of a positive normal float32, as a float32."""
    if x == types.float32:
        def codegen(context, builder, signature, args):
            bits = builder.bitcast(args[0], _I32)
            e = builder.sub(builder.lshr(bits, ir.Constant(_I32, 23)), ir.Constant(_I32, 127))
            return builder.sitofp(e, _F32)
        return types.float32(types.float32), codegen
    return None


_f = np.float32
_ZERO, _HALF, _ONE, _TWO = _f(0.0), _f(0.5), _f(1.0), _f(2.0)
_INF, _NAN = _f(np.inf), _f(np.nan)
_LOG2E = _f(1.0 / math.log(2.0))
_MAGIC = _f(12582912.0)                      # 1.5 * 2**23: adding it rounds to an integer
# Cody-Waite split of ln 2: the high part has 9 significant bits, so n*_LN2_HI is exact.
_LN2_HI = _f(0.693359375)
_LN2_LO = _f(math.log(2.0) - 0.693359375)
# exp(x) overflows float32 above ln(FLT_MAX); below -86.5, 2**(n-1) would be subnormal and the
# result (< 3e-38) is flushed to 0 (expm1 to -1), far below any tolerance.
_EXP_HI = _f(88.72283935546875)
_EXP_LO = _f(-86.5)
# Taylor coefficients of expm1 on |r| <= ln2/2: truncation r**8/8! < 2e-9 relative.
_E2, _E3, _E4, _E5, _E6, _E7 = (_f(1 / 2), _f(1 / 6), _f(1 / 24), _f(1 / 120), _f(1 / 720),
                                _f(1 / 5040))


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _exp_expm1_f32(x):
    """``(exp(x), expm1(x))`` for float32 ``x``: one range reduction ``x = n ln2 + r``,
    ``expm1(r)`` by its Taylor polynomial, both results from it. NaN in, NaN out."""
    t = x * _LOG2E + _MAGIC
    nf = t - _MAGIC
    r = (x - nf * _LN2_HI) - nf * _LN2_LO
    q = r * (_ONE + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    # 2**n as 2 * 2**(n-1): n = 128 (x in (88.38, 88.72]) has a finite result but no 2**n.
    h = _pow2_from_magic(t)
    e = (h * q + h) * _TWO
    em1 = (h * q + (h - _HALF)) * _TWO      # 2**(n-1) - 1/2 is exact for |n| <= 24: expm1 stays
                                            # accurate near 0; beyond, 1 is below the rounding
    e = _INF if x > _EXP_HI else e
    em1 = _INF if x > _EXP_HI else em1
    e = _ZERO if x < _EXP_LO else e
    em1 = -_ONE if x < _EXP_LO else em1
    return e, em1


_SQRT2 = _f(math.sqrt(2.0))
_L3, _L5, _L7, _L9 = _f(1 / 3), _f(1 / 5), _f(1 / 7), _f(1 / 9)
_FLT_MIN = _f(1.1754943508222875e-38)
_TWO23, _F23 = _f(2.0 ** 23), _f(23.0)


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _log_f32(x):
    """Natural log of float32 ``x``: ``x = 2**e m`` with m in [sqrt(1/2), sqrt(2)), then
    ``log m = 2 atanh(s)``, ``s = (m-1)/(m+1)``, by its odd series (|s| <= 0.172, truncation
    < 1e-9). Subnormals are rescaled; 0 -> -inf, negative -> NaN, inf -> inf, NaN -> NaN."""
    sub = x < _FLT_MIN
    xs = x * _TWO23 if sub else x
    m = _mantissa(xs)
    e = _exponent(xs)
    e = e - _F23 if sub else e
    big = m > _SQRT2
    m = m * _HALF if big else m
    e = e + _ONE if big else e
    f = m - _ONE                            # exact (Sterbenz)
    s = f / (_TWO + f)
    s2 = s * s
    y = e * _LN2_HI + (_TWO * s * (_ONE + s2 * (_L3 + s2 * (_L5 + s2 * (_L7 + s2 * _L9))))
                       + e * _LN2_LO)
    y = -_INF if x == _ZERO else y
    y = _NAN if x < _ZERO else y
    y = _INF if x == _INF else y
    y = x if x != x else y
    return y


_TWO_PI = _f(2.0 * math.pi)
_FOUR, _QUARTER = _f(4.0), _f(0.25)
# Taylor coefficients of sin and cos on |theta| <= pi/4 (truncation < 2e-9).
_S3, _S5, _S7, _S9 = _f(-1 / 6), _f(1 / 120), _f(-1 / 5040), _f(1 / 362880)
_C2, _C4, _C6, _C8, _C10 = (_f(-1 / 2), _f(1 / 24), _f(-1 / 720), _f(1 / 40320),
                            _f(-1 / 3628800))


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _sincos_2pi_f32(u):
    """``(sin(2 pi u), cos(2 pi u))`` for float32 ``u`` in [0, 1]: reduced in turns (exact:
    ``u - j/4`` with j = round(4u)), so no multiple of pi is subtracted in floating point."""
    j = (u * _FOUR + _MAGIC) - _MAGIC       # round to nearest: 0..4
    th = _TWO_PI * (u - j * _QUARTER)       # |th| <= pi/4
    t2 = th * th
    sn = th + th * t2 * (_S3 + t2 * (_S5 + t2 * (_S7 + t2 * _S9)))
    cs = _ONE + t2 * (_C2 + t2 * (_C4 + t2 * (_C6 + t2 * (_C8 + t2 * _C10))))
    quad = j - _FOUR * math.floor(j * _QUARTER)    # j mod 4, as a float
    # rotate (sin, cos) by quad * pi/2
    s_out = sn
    c_out = cs
    s_out = cs if quad == _ONE else s_out
    c_out = -sn if quad == _ONE else c_out
    s_out = -sn if quad == _TWO else s_out
    c_out = -cs if quad == _TWO else c_out
    s_out = -cs if quad == _f(3.0) else s_out
    c_out = sn if quad == _f(3.0) else c_out
    return s_out, c_out


_TANH_CLIP = _f(20.0)


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _tanh_f32(x):
    """tanh of float32 ``x`` as ``expm1(2|x|) / (expm1(2|x|) + 2)`` with the sign restored:
    accurate near 0 (no cancellation) and exactly +-1 beyond |x| = 20. NaN in, NaN out."""
    ax = abs(x)
    ax = _TANH_CLIP if ax > _TANH_CLIP else ax
    _, em = _exp_expm1_f32(_TWO * ax)
    t = em / (em + _TWO)
    return -t if x < _ZERO else t


# ---------------------------------------------------------------------- dtype dispatch
def exp_expm1(x):
    """``(exp(x), expm1(x))`` (float32: the vectorisable version above; float64: libm)."""
    raise NotImplementedError("numba-only")


def log_(x):
    """Natural logarithm (float32 vectorisable / float64 libm)."""
    raise NotImplementedError("numba-only")


def sincos_2pi(u):
    """``(sin(2 pi u), cos(2 pi u))`` (float32 vectorisable / float64 libm)."""
    raise NotImplementedError("numba-only")


def tanh_(x):
    """tanh (float32 vectorisable / float64 libm)."""
    raise NotImplementedError("numba-only")


@overload(exp_expm1, jit_options=_OV_OPTIONS)
def _ov_exp_expm1(x):
    if x == types.float32:
        return lambda x: _exp_expm1_f32(x)
    if x == types.float64:
        return lambda x: (math.exp(x), math.expm1(x))
    return None


@overload(log_, jit_options=_OV_OPTIONS)
def _ov_log(x):
    if x == types.float32:
        return lambda x: _log_f32(x)
    if x == types.float64:
        # math.log raises on x <= 0 in Python but is plain libm log in numba: -inf / NaN.
        return lambda x: math.log(x)
    return None


@overload(sincos_2pi, jit_options=_OV_OPTIONS)
def _ov_sincos(u):
    if u == types.float32:
        return lambda u: _sincos_2pi_f32(u)
    if u == types.float64:
        def impl(u):
            angle = (2.0 * math.pi) * u      # the reference's expression, in float64
            return math.sin(angle), math.cos(angle)
        return impl
    return None


@overload(tanh_, jit_options=_OV_OPTIONS)
def _ov_tanh(x):
    if x == types.float32:
        return lambda x: _tanh_f32(x)
    if x == types.float64:
        return lambda x: math.tanh(x)
    return None


@njit(error_model="numpy", cache=True, fastmath=FASTMATH)
def math_check(kind, x, out):
    """Apply one of the kernels' math functions elementwise (for tests).

    Args:
        kind: 0 exp, 1 expm1, 2 log, 3 sin(2 pi x), 4 cos(2 pi x), 5 tanh.
        x, out: 1-d arrays of the same dtype (float32 or float64).
    """
    for i in range(x.shape[0]):
        v = x[i]
        if kind == 0:
            out[i] = exp_expm1(v)[0]
        elif kind == 1:
            out[i] = exp_expm1(v)[1]
        elif kind == 2:
            out[i] = log_(v)
        elif kind == 3:
            out[i] = sincos_2pi(v)[0]
        elif kind == 4:
            out[i] = sincos_2pi(v)[1]
        else:
            out[i] = tanh_(v)


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
def _noise(W, t, b, key0, key1, NP):
    """Standard normal noise ``W[W_XIE], W[W_XII]`` for global step ``t``, simulation ``b``."""
    T = W.dtype.type
    tt = np.uint64(t)
    c0 = tt & _M32
    c1 = tt >> _SH32
    cb = np.uint64(b)
    scale = T(2.0 ** -24)
    half = T(0.5)
    # Philox in a loop of its own: pure 64-bit integer work, which vectorises.
    for i in range(NP):
        x0, x1 = _philox_01(c0, c1, np.uint64(i), cb, key0, key1)
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
def _couple(W, ct, bc, N, NP):
    """``W[W_CS] = C @ S_E`` (``ct = C^T``: the columns of C as rows)."""
    _rows_times_vector(W, ct, bc, N, NP, W_SE, W_CS)


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
    hy_x = (one - d * r_x * ez) / den       # 1/E - d y e^{-z} / E^2
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
    hy = (_sign(y) - r * sw * d) / den
    hd = -r * (eps + sw * y) / den
    return r, hy, hd


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _step(W, ct, bc, hc, griffiths, t, b, key0, key1, N, NP, keep):
    """One Euler-Maruyama step of every node of simulation ``b`` (global step ``t``), in place.

    Args:
        W: (N_WROWS, LANES) workspace: the state rows are overwritten with the state after the
            step; W_RE, W_RI receive the rates that drove it, and, when ``keep``, the other tape
            rows what the adjoint needs.
        ct: (Bc, N, NP) C^T (zero-padded columns); ``bc`` the matrix of this simulation.
        hc: (12,) haemodynamic constants in the state dtype (:data:`HAEMO_FIELDS`).

    Returns:
        number of real nodes whose new state is non-finite (or, deco2014, has f, v or q <= 0).

    The node update is three loops (rates; Balloon; S_E, S_I and the divergence check) rather than
    one: one loop holds too many live values for the 16 vector registers and spent most of its
    time spilling (measured 4.3 us -> 1.7 us per step at N = 68, float32).
    """
    T = W.dtype.type
    _noise(W, t, b, key0, key1, NP)
    _couple(W, ct, bc, N, NP)
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
    # Balloon-Windkessel, driven by the S_E before the step (fully explicit Euler).
    dtb = hc[H_DTB]
    kappa = hc[H_KAPPA]
    gam = hc[H_GAMMA]
    itau0 = hc[H_ITAU0]
    ialpha = hc[H_IALPHA]
    lnr = hc[H_LNR]
    irho = hc[H_IRHO]
    for i in range(NP):
        s_e = W[W_SE * LANES + i]
        x = W[W_X * LANES + i]
        f = W[W_F * LANES + i]
        v = W[W_V * LANES + i]
        q = W[W_Q * LANES + i]
        vp = exp_expm1(log_(v) * ialpha)[0]          # v ** (1/alpha)
        rp = exp_expm1(lnr / f)[0]                   # (1 - rho) ** (1/f)
        x1 = x + dtb * (s_e - kappa * x - gam * (f - one))
        f1 = f + dtb * x
        v1 = v + dtb * ((f - vp) * itau0)
        q1 = q + dtb * ((f * (one - rp) * irho - vp * q / v) * itau0)
        if griffiths:
            x1 = tanh_(x1)
            f1 = one + tanh_(f1 - one)
            v1 = one + tanh_(v1 - one)
            q1 = one + tanh_(q1 - one)
        W[W_X * LANES + i] = x1
        W[W_F * LANES + i] = f1
        W[W_V * LANES + i] = v1
        W[W_Q * LANES + i] = q1
        if keep:
            W[W_P * LANES + i] = vp
            W[W_R * LANES + i] = rp
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
            ok = ok & (f1 > zero) & (v1 > zero) & (q1 > zero)
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


# ----------------------------------------------------------------------------- forward
@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_fwd_kernel(sims, coef, ct, state0, hc64, griffiths, steps_per_tr, n_steps, k_every, t0,
                   key0, key1, rec_slot, bold, rec, ckpt, final, first_bad):
    """Forward scan of the simulations listed in ``sims``.

    Args:
        sims: int64 (S,) simulation indices handled by this call.
        coef: (N_COEF, Bp, Np) coefficients, Bp in {1, B}, Np in {1, N}.
        ct: (Bc, N, NP) transposed coupling, columns N..NP-1 zero; Bc = 1 (shared) or B.
        state0: (6, B, N) initial state.
        hc64: float64 (12,) haemodynamic constants (:data:`HAEMO_FIELDS`).
        griffiths: 1 for the griffiths2022 equations, 0 for deco2014.
        steps_per_tr, n_steps, k_every: steps per TR, steps, checkpoint interval K.
        t0: global index of the first step; key0, key1: Philox key words (uint64).
        rec_slot: int64 (4,) row of ``rec`` for S_E, S_I, r_E, r_I, or -1 when not recorded.

    Outputs (written for the simulations in ``sims`` only):
        bold (B, n_TR, N); rec (n_rec, B, n_TR, N); ckpt (n_seg, 6, B, N) the state at local
        steps 0, K, 2K, ...; final (6, B, N); first_bad (B,) int64 global step of the first step
        after which a state is invalid, else -1. From that step on the simulation is stopped and
        its remaining outputs are NaN.
    """
    T = state0.dtype.type
    N = state0.shape[2]
    NP = ct.shape[2]                        # lanes, chosen by the caller (padded_nodes)
    n_seg = ckpt.shape[0]
    hc = _haemo(hc64, state0.dtype)
    W = np.zeros(N_WROWS * LANES, dtype=state0.dtype)
    rsum = np.zeros((2, NP), dtype=np.float64)     # rate sums over the current TR (float64)
    scale = hc[H_SCALE]
    k1 = hc[H_K1]
    k2 = hc[H_K2]
    k3 = hc[H_K3]
    one = T(1.0)
    inv_spt = 1.0 / steps_per_tr
    nan = T(np.nan)
    want_rates = (rec_slot[2] >= 0) | (rec_slot[3] >= 0)
    for b in sims:
        _load_coefficients(W, b, coef, N, NP)
        _load_state(W, state0, b, N, NP)
        bc = b if ct.shape[0] > 1 else 0
        for i in range(NP):
            rsum[0, i] = 0.0
            rsum[1, i] = 0.0
        bad_step = -1
        for seg in range(n_seg):
            for kk in range(6):
                for i in range(N):
                    ckpt[seg, kk, b, i] = W[(kk) * LANES + i]
            start = seg * k_every
            stop = min(start + k_every, n_steps)
            for k in range(start, stop):
                nbad = _step(W, ct, bc, hc, griffiths, t0 + k, b, key0, key1, N, NP, False)
                if want_rates:
                    for i in range(NP):
                        rsum[0, i] += W[W_RE * LANES + i]
                        rsum[1, i] += W[W_RI * LANES + i]
                if nbad > 0:
                    bad_step = k
                    break
                if (k + 1) % steps_per_tr == 0:
                    tr = k // steps_per_tr
                    for i in range(N):
                        v = W[W_V * LANES + i]
                        q = W[W_Q * LANES + i]
                        bold[b, tr, i] = scale * (k1 * (one - q) + k2 * (one - q / v)
                                                  + k3 * (one - v))
                    if rec_slot[0] >= 0:
                        for i in range(N):
                            rec[rec_slot[0], b, tr, i] = W[W_SE * LANES + i]
                    if rec_slot[1] >= 0:
                        for i in range(N):
                            rec[rec_slot[1], b, tr, i] = W[W_SI * LANES + i]
                    if rec_slot[2] >= 0:
                        for i in range(N):
                            rec[rec_slot[2], b, tr, i] = T(rsum[0, i] * inv_spt)
                    if rec_slot[3] >= 0:
                        for i in range(N):
                            rec[rec_slot[3], b, tr, i] = T(rsum[1, i] * inv_spt)
                    for i in range(NP):
                        rsum[0, i] = 0.0
                        rsum[1, i] = 0.0
            if bad_step >= 0:
                first_bad[b] = t0 + bad_step
                # Outputs from the diverged step on are NaN: the simulation is not continued.
                for tr in range(bad_step // steps_per_tr, bold.shape[1]):
                    for i in range(N):
                        bold[b, tr, i] = nan
                        for r in range(rec.shape[0]):
                            rec[r, b, tr, i] = nan
                for s2 in range(seg + 1, n_seg):
                    for kk in range(6):
                        for i in range(N):
                            ckpt[s2, kk, b, i] = nan
                for kk in range(6):
                    for i in range(N):
                        W[(kk) * LANES + i] = nan
                break
        if bad_step < 0:
            first_bad[b] = -1
        for kk in range(6):
            for i in range(N):
                final[kk, b, i] = W[(kk) * LANES + i]


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
            # x = tanh(.), f, v, q = 1 + tanh(. - 1): d tanh(u)/du = 1 - tanh(u)**2
            x1 = W[(W_NXT + 2) * LANES + i]
            fm = W[(W_NXT + 3) * LANES + i] - one
            vm = W[(W_NXT + 4) * LANES + i] - one
            qm = W[(W_NXT + 5) * LANES + i] - one
            l_x1 = l_x1 * (one - x1 * x1)
            l_f1 = l_f1 * (one - fm * fm)
            l_v1 = l_v1 * (one - vm * vm)
            l_q1 = l_q1 * (one - qm * qm)
        f = W[W_F * LANES + i]
        v = W[W_V * LANES + i]
        q = W[W_Q * LANES + i]
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
def _adjoint_couple(W, cm, bc, N, NP):
    """``W[W_LAM] += C^T W[W_LCS]`` (the rows of C as axpys, summed in row order)."""
    _rows_times_vector(W, cm, bc, N, NP, W_LCS, W_EXT)
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
def _recompute_segment(W, tape, b, seg, ckpt, ct, bc, hc, griffiths, n_steps, k_every, t0, key0,
                       key1, N, NP):
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
        _step(W, ct, bc, hc, griffiths, t0 + start + j, b, key0, key1, N, NP, True)
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
def _sweep_segment(W, tape, b, seg, cm, bc, hc, griffiths, steps_per_tr, n_steps, k_every,
                   grad_bold, grad_rec, grec_slot, want_gc, acc, gacc, N, NP):
    """Sweep the adjoint of simulation ``b`` back through segment ``seg`` from its tape: on entry
    ``W[W_LAM]`` is dL/d(state at the segment's end), on exit dL/d(state at its start); the
    coefficient and coupling sums are added into ``acc`` and ``gacc`` (float64)."""
    T = W.dtype.type
    zero = T(0.0)
    scale = hc[H_SCALE]
    k1 = hc[H_K1]
    k2 = hc[H_K2]
    k3 = hc[H_K3]
    inv_spt = T(1.0 / steps_per_tr)
    start = seg * k_every
    length = min(start + k_every, n_steps) - start
    for fld in range(6):
        for i in range(NP):
            W[(fld) * LANES + i] = tape[length, fld, i]
    since_flush = 0
    for j in range(length - 1, -1, -1):
        k = start + j
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
                v1 = W[(W_NXT + 4) * LANES + i]
                q1 = W[(W_NXT + 5) * LANES + i]
                g = grad_bold[b, tr, i] * scale
                W[(W_LAM + 5) * LANES + i] += g * (-k1 - k2 / v1)
                W[(W_LAM + 4) * LANES + i] += g * (k2 * q1 / (v1 * v1) - k3)
            if grec_slot[0] >= 0:
                for i in range(N):
                    W[W_LAM * LANES + i] += grad_rec[grec_slot[0], b, tr, i]
            if grec_slot[1] >= 0:
                for i in range(N):
                    W[(W_LAM + 1) * LANES + i] += grad_rec[grec_slot[1], b, tr, i]
        # the TR-mean rate records see every step of their TR with weight 1/spt
        for i in range(NP):
            W[W_GRE * LANES + i] = zero
            W[W_GRI * LANES + i] = zero
        if grec_slot[2] >= 0:
            for i in range(N):
                W[W_GRE * LANES + i] = grad_rec[grec_slot[2], b, tr, i] * inv_spt
        if grec_slot[3] >= 0:
            for i in range(N):
                W[W_GRI * LANES + i] = grad_rec[grec_slot[3], b, tr, i] * inv_spt
        _adjoint_step(W, hc, griffiths, NP)
        if want_gc:
            for i in range(NP):
                W[(W_GL + since_flush) * LANES + i] = W[W_LCS * LANES + i]
                W[(W_GS + since_flush) * LANES + i] = W[W_SE * LANES + i]
        _adjoint_couple(W, cm, bc, N, NP)
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
def rww_bwd_kernel(sims, coef, ct, cm, ckpt, hc64, griffiths, steps_per_tr, n_steps, k_every, t0,
                   key0, key1, grad_bold, grad_rec, grec_slot, grad_state, want_gc, gc_slot,
                   g_coef, g_c, g_state0, mismatch):
    """Discrete adjoint of the forward scan for the simulations in ``sims``.

    For each segment, last to first: recompute it from its checkpoint keeping a tape (the state
    before every step and the step's intermediates, (K + 1, N_TAPE, NP) per call), then sweep the
    adjoint back through it.

    Args (beyond those of :func:`rww_fwd_kernel`):
        cm: (Bc, N, NP) the coupling C itself (zero-padded columns), for ``lambda_S_E += C^T g``.
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
            n_mismatch += _recompute_segment(W, tape, b, seg, ckpt, ct, bc, hc, griffiths,
                                             n_steps, k_every, t0, key0, key1, N, NP)
            _sweep_segment(W, tape, b, seg, cm, bc, hc, griffiths, steps_per_tr, n_steps,
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
def rww_bwd_recompute(b, seg, ct, ckpt, hc64, griffiths, n_steps, k_every, t0, key0, key1, Wr,
                      tape):
    """:func:`_recompute_segment` as a kernel; returns the mismatch count."""
    hc = _haemo(hc64, ckpt.dtype)
    bc = b if ct.shape[0] > 1 else 0
    return _recompute_segment(Wr, tape, b, seg, ckpt, ct, bc, hc, griffiths, n_steps, k_every,
                              t0, key0, key1, ckpt.shape[3], ct.shape[2])


@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_bwd_sweep(b, seg, cm, hc64, griffiths, steps_per_tr, n_steps, k_every, grad_bold,
                  grad_rec, grec_slot, want_gc, Ws, tape, acc, gacc):
    """:func:`_sweep_segment` as a kernel."""
    hc = _haemo(hc64, Ws.dtype)
    bc = b if cm.shape[0] > 1 else 0
    _sweep_segment(Ws, tape, b, seg, cm, bc, hc, griffiths, steps_per_tr, n_steps, k_every,
                   grad_bold, grad_rec, grec_slot, want_gc, acc, gacc, grad_bold.shape[2],
                   cm.shape[2])


@njit(nogil=True, cache=True)
def rww_bwd_end(b, Ws, acc, gacc, want_gc, gc_slot, g_coef, g_c, g_state0):
    """Write simulation ``b``'s gradients (see :func:`rww_bwd_kernel`)."""
    _bwd_end(Ws, b, acc, gacc, want_gc, gc_slot, g_coef, g_c, g_state0, g_state0.shape[2])
