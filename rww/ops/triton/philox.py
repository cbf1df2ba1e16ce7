"""Philox4x32-10 and Box-Muller as Triton device functions (the noise contract of :mod:`rww.noise`).

Noise is a pure function of ``(seed, step, node, simulation)``: the forward kernel, the
recomputation inside the backward pass and every other backend draw the same normals for the same
counter, so nothing random is ever stored.

- key ``(k0, k1) = (seed & 0xFFFFFFFF, seed >> 32)``
- counter ``(c0, c1, c2, c3) = (t & 0xFFFFFFFF, t >> 32, node, simulation)``, t the global step
- ``u_k = ((x_k >> 8) + 0.5) * 2**-24``; ``xi_E = sqrt(-2 ln u0) cos(2 pi u1)``,
  ``xi_I = sqrt(-2 ln u0) sin(2 pi u1)``.

The block function is written out here (rather than calling ``tl.philox``) so that the key words
are explicit uint32 values carried by the caller; ``tl.philox`` computes the same function and the
tests check both against :mod:`rww.noise`.

Precision: the contract asks for the same normals on every backend, so log/cos/sin come from
:mod:`rww.ops.triton.mathfn` (libdevice on GPU, within 1-2 ulp like the C library torch uses on CPU;
numpy float32 under the interpreter) instead of the ``.approx`` instructions ``tl.log``/``tl.cos``
lower to, and the square root is the IEEE one (``sqrt_rn``).
"""

from __future__ import annotations

import triton
import triton.language as tl
from . import mathfn

# Globals read inside @triton.jit functions must be tl.constexpr.
PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)
# 2*pi rounded to float32, the constant torch uses when it evaluates (2 * math.pi) * u in float32.
TWO_PI_F32 = tl.constexpr(6.2831854820251465)


@triton.jit
def philox4x32_10(k0, k1, c0, c1, c2, c3):
    """Philox4x32 with 10 rounds on uint32 words; returns the four output words (uint32).

    ``k0``, ``k1``: uint32 scalars (the key); ``c0..c3``: uint32 tensors of one shape.
    """
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, PHILOX_M0)
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo0 = c0 * PHILOX_M0
        lo1 = c2 * PHILOX_M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + PHILOX_W0
        k1 = k1 + PHILOX_W1
    return c0, c1, c2, c3


@triton.jit
def unit_uniform(x):
    """``((x >> 8) + 0.5) * 2**-24`` in float32 for a uint32 word ``x``: a uniform in (0, 1]
    (1.0 only by float32 rounding of the largest word, as in :func:`rww.noise.to_unit_interval`)."""
    return ((x >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-08


@triton.jit
def box_muller(u0, u1):
    """Two standard normals ``(sqrt(-2 ln u0) cos(2 pi u1), sqrt(-2 ln u0) sin(2 pi u1))``."""
    radius = tl.sqrt_rn(-2.0 * mathfn.log(u0))
    angle = TWO_PI_F32 * u1
    return radius * mathfn.cos(angle), radius * mathfn.sin(angle)


@triton.jit
def step_counter(t_lo, t_hi, k):
    """Counter words ``(c0, c1)`` of global step ``t + k`` where ``t = t_hi * 2**32 + t_lo``.

    ``t_lo``, ``t_hi`` are uint32 scalars, ``k`` a non-negative int32 (< 2**31): the low word wraps
    and carries into the high word, so a scan continued past 2**32 steps keeps the contract.
    """
    c0 = t_lo + k.to(tl.uint32)
    c1 = t_hi + (c0 < t_lo).to(tl.uint32)
    return c0, c1


@triton.jit
def state_normals(k0, k1, c0, c1, o_node, o_sim):
    """``(xi_E, xi_I)`` float32 for step counter ``(c0, c1)`` (uint32 scalars), node indices
    ``o_node`` and simulation indices ``o_sim`` (integer tensors broadcastable to one shape)."""
    w2 = (o_node + o_sim * 0).to(tl.uint32)
    w3 = (o_sim + o_node * 0).to(tl.uint32)
    w0 = w2 * 0 + c0
    w1 = w2 * 0 + c1
    x0, x1, _, _ = philox4x32_10(k0, k1, w0, w1, w2, w3)
    return box_muller(unit_uniform(x0), unit_uniform(x1))


@triton.jit
def _philox_probe_kernel(p_words, p_normals, p_t, p_node, p_sim, k0_arg, k1_arg, n,
                         BLOCK: tl.constexpr):
    """Words and normals for arbitrary counters (a test and debugging aid).

    p_t: int64 global steps (n,); p_node, p_sim: int32 (n,); p_words: int64 (n, 4) (the uint32
    words zero-extended); p_normals: float32 (n, 2).
    """
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    t = tl.load(p_t + o, mask=m, other=0)
    c0 = (t & 0xFFFFFFFF).to(tl.uint32)
    c1 = (t >> 32).to(tl.uint32)
    c2 = tl.load(p_node + o, mask=m, other=0).to(tl.uint32)
    c3 = tl.load(p_sim + o, mask=m, other=0).to(tl.uint32)
    k0 = k0_arg.to(tl.uint32)
    k1 = k1_arg.to(tl.uint32)
    x0, x1, x2, x3 = philox4x32_10(k0, k1, c0, c1, c2, c3)
    o64 = o.to(tl.int64)
    tl.store(p_words + o64 * 4 + 0, x0.to(tl.int64) & 0xFFFFFFFF, mask=m)
    tl.store(p_words + o64 * 4 + 1, x1.to(tl.int64) & 0xFFFFFFFF, mask=m)
    tl.store(p_words + o64 * 4 + 2, x2.to(tl.int64) & 0xFFFFFFFF, mask=m)
    tl.store(p_words + o64 * 4 + 3, x3.to(tl.int64) & 0xFFFFFFFF, mask=m)
    xi_e, xi_i = box_muller(unit_uniform(x0), unit_uniform(x1))
    tl.store(p_normals + o64 * 2 + 0, xi_e, mask=m)
    tl.store(p_normals + o64 * 2 + 1, xi_i, mask=m)


def philox_probe(seed: int, steps, nodes, sims):
    """Philox words and state normals computed by the Triton device functions.

    Args:
        seed: int in [0, 2**64).
        steps: int64 tensor ``(n,)`` of global step indices (any device Triton runs on).
        nodes, sims: integer tensors ``(n,)`` (node and simulation indices, < 2**31).

    Returns:
        ``(words, normals)``: int64 ``(n, 4)`` holding the uint32 output words, and float32
        ``(n, 2)`` holding ``(xi_E, xi_I)``.
    """
    import torch

    steps = steps.to(torch.int64).contiguous()
    n = steps.numel()
    words = torch.empty(n, 4, dtype=torch.int64, device=steps.device)
    normals = torch.empty(n, 2, dtype=torch.float32, device=steps.device)
    block = 128
    _philox_probe_kernel[(triton.cdiv(max(n, 1), block),)](
        words, normals, steps, nodes.to(device=steps.device, dtype=torch.int32).contiguous(),
        sims.to(device=steps.device, dtype=torch.int32).contiguous(),
        seed & 0xFFFFFFFF, seed >> 32, n, BLOCK=block)
    return words, normals
