"""float32 math for the numba kernels that LLVM can vectorise (exp/expm1, log, log1p, sincos, tanh), as
``@overload``-ed functions generic over float32 and float64 (float64 calls libm), and
:func:`math_check` to test them elementwise."""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload
from . import cache  # noqa: F401  (before any @njit(cache=True): the kernels' cache key)

from .layout import FASTMATH, _OV_OPTIONS

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


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _log1p_f32(x):
    """``log(1 + x)`` of float32 ``x`` > -1, accurate to a few ulp relative for tiny ``x`` too:
    ``u = 1 + x`` rounds, but ``u - 1`` is exact, and ``log(u) * x / (u - 1)`` corrects the
    rounding to first order (Goldberg 1991, "What every computer scientist should know about
    floating-point arithmetic", theorem 4). ``u == 1`` returns ``x``."""
    u = _ONE + x
    d = u - _ONE
    y = _log_f32(u) * (x / d)
    return x if d == _ZERO else y


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


def log1p_(x):
    """``log(1 + x)`` (float32 vectorisable / float64 libm)."""
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


@overload(log1p_, jit_options=_OV_OPTIONS)
def _ov_log1p(x):
    if x == types.float32:
        return lambda x: _log1p_f32(x)
    if x == types.float64:
        return lambda x: math.log1p(x)
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
        kind: 0 exp, 1 expm1, 2 log, 3 sin(2 pi x), 4 cos(2 pi x), 5 tanh, 6 log1p.
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
        elif kind == 5:
            out[i] = tanh_(v)
        else:
            out[i] = log1p_(v)


