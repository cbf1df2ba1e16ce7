"""Conduction delays in the numba kernels: the S_E history as a ring buffer, the delayed coupling
input, one step with it, and the forward kernel with delays (the adjoint is in
:mod:`rww.ops.numba.delayed_adjoint`). Without delays the kernels of :mod:`.forward` and
:mod:`.adjoint` run, unchanged.

The history of a simulation is held as a ring of ``RS = D + 1`` slots per node (S_E at local
step k in slot ``k mod RS``; the ring needs S_E from k - D to k), stored twice: node j's slots are
``H[j*2RS + s]`` and ``H[j*2RS + s + RS]`` (both written at every step, N scalar stores each).
The delayed read of S_E_j lag steps before step k is then ``H[j*2RS + RS - lag + (k mod RS)]``,
an offset fixed per edge plus a base fixed per step: no wrap-around test in the gather (a
wrap-around select made the gather loop branch on random lags; measured 20 -> 6 us per step at
N = 100). Node-major: one node's history is one contiguous block, so the reads of an edge in
consecutive steps fall in one cache line. The gather is scalar (LLVM does not vectorise it: the
indices are unknown, so it cannot rule out that the loads alias the workspace row it accumulates
into); measured 6 us per step at N = 100 in isolation, independent of D from 235 to 470 (neither
a gather into a scratch row followed by a vector FMA nor 4 or 8 rows' sums held in registers was
faster). The whole forward step: 10 us at N = 100, float32, against 2 us without delays.

The public state's history rows (``6 + d - 1`` = S_E d steps back) are converted to and from the
ring on entry, at the checkpoints and at the end (:func:`_load_history`, :func:`_store_history`).
Summation order of the coupling input: over j = 0..N-1 (one FMA per edge), as in the kernels
without delays.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from . import cache  # noqa: F401  (before any @njit(cache=True): the kernels' cache key)

from .forward import _nan_from, _sample_tr
from .layout import FASTMATH, LANES, N_WROWS, W_CS, W_RE, W_RI, W_SE
from .step import _haemo, _load_coefficients, _load_state, _noise, _step_local


# ----------------------------------------------------------------------------- ring buffer
@njit(forceinline=True)
def _load_history(H, src, b, k, RS, N):
    """Ring of simulation ``b`` from the history rows of ``src`` ``(6 + D, B, N)`` taken at local
    step ``k``: row ``6 + d - 1`` (S_E at step k - d) into slot ``(k - d) mod RS``."""
    for d in range(1, RS):
        slot = (k - d) % RS
        for j in range(N):
            v = src[6 + d - 1, b, j]
            H[j * 2 * RS + slot] = v
            H[j * 2 * RS + slot + RS] = v


@njit(forceinline=True)
def _store_history(H, dst, b, k, RS, N):
    """History rows of ``dst`` ``(6 + D, B, N)`` at local step ``k`` from the ring."""
    for d in range(1, RS):
        slot = (k - d) % RS
        for j in range(N):
            dst[6 + d - 1, b, j] = H[j * 2 * RS + slot]


@njit(forceinline=True)
def _history_mismatches(H, ref, b, k, RS, N):
    """How many history values of the ring at step ``k`` differ (bitwise) from ``ref``'s."""
    n = 0
    for d in range(1, RS):
        slot = (k - d) % RS
        for j in range(N):
            n += 1 if H[j * 2 * RS + slot] != ref[6 + d - 1, b, j] else 0
    return n


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _couple_delayed(W, ct, off, bc, bd, H, base, N, NP):
    """``W[W_CS][i] = sum_j C_ij S_E_j(k - lag_ij)``, j in order 0..N-1 (``ct = C^T``, ``off`` the
    edges' ring offsets ``j*2RS + RS - lag_ij`` as ``(Bd, N, NP)`` rows j, lanes i; ``base`` =
    k mod RS; the ring already holds S_E at step k)."""
    T = W.dtype.type
    for i in range(NP):
        W[W_CS * LANES + i] = T(0.0)
    for j in range(N):
        for i in range(NP):
            W[W_CS * LANES + i] = W[W_CS * LANES + i] + ct[bc, j, i] * H[off[bd, j, i] + base]


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _step_delayed(W, ct, off, bc, bd, H, RS, hc, griffiths, k, t, b, key0, key1, N, NP, keep):
    """:func:`rww.ops.numba.step._step` with the delayed coupling input: local step ``k``
    (ring slot ``k mod RS``), global step ``t``. Pushes S_E at step k into the ring first."""
    _noise(W, t, b, key0, key1, NP, 0)
    base = k % RS
    for j in range(N):
        v = W[W_SE * LANES + j]
        H[j * 2 * RS + base] = v
        H[j * 2 * RS + base + RS] = v
    _couple_delayed(W, ct, off, bc, bd, H, base, N, NP)
    return _step_local(W, hc, griffiths, N, NP, keep)


# ----------------------------------------------------------------------------- forward
@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_fwd_delayed_kernel(sims, coef, ct, off, state0, hc64, griffiths, steps_per_tr, n_steps,
                           k_every, t0, key0, key1, sim0, rec_slot, bold, rec, ckpt, final,
                           first_bad):
    """:func:`rww.ops.numba.forward.rww_fwd_kernel` with conduction delays.

    Args beyond those of ``rww_fwd_kernel``:
        off: int32 ``(Bd, N, NP)`` ring offsets ``j*2RS + RS - lag_ij`` (row j = sending region,
            lane i = receiving one; padding lanes lag 0), Bd = 1 (shared lags) or B.
        state0: ``(6 + D, B, N)``; ckpt ``(n_seg, 6 + D, B, N)``; final ``(6 + D, B, N)``.
    """
    T = state0.dtype.type
    N = state0.shape[2]
    RS = state0.shape[0] - 5                # D + 1
    NP = ct.shape[2]
    n_seg = ckpt.shape[0]
    n_rows = state0.shape[0]
    hc = _haemo(hc64, state0.dtype)
    W = np.zeros(N_WROWS * LANES, dtype=state0.dtype)
    H = np.zeros(N * 2 * RS, dtype=state0.dtype)
    rsum = np.zeros((2, NP), dtype=np.float64)
    inv_spt = 1.0 / steps_per_tr
    nan = T(np.nan)
    want_rates = (rec_slot[2] >= 0) | (rec_slot[3] >= 0)
    for b in sims:
        _load_coefficients(W, b, coef, N, NP)
        _load_state(W, state0, b, N, NP)
        _load_history(H, state0, b, 0, RS, N)
        bc = b if ct.shape[0] > 1 else 0
        bd = b if off.shape[0] > 1 else 0
        for i in range(NP):
            rsum[0, i] = 0.0
            rsum[1, i] = 0.0
        bad_step = -1
        for seg in range(n_seg):
            start = seg * k_every
            for kk in range(6):
                for i in range(N):
                    ckpt[seg, kk, b, i] = W[kk * LANES + i]
            _store_history(H, ckpt[seg], b, start, RS, N)
            stop = min(start + k_every, n_steps)
            for k in range(start, stop):
                nbad = _step_delayed(W, ct, off, bc, bd, H, RS, hc, griffiths, k, t0 + k,
                                     sim0 + b, key0, key1, N, NP, False)
                if want_rates:
                    for i in range(NP):
                        rsum[0, i] += W[W_RE * LANES + i]
                        rsum[1, i] += W[W_RI * LANES + i]
                if nbad > 0:
                    bad_step = k
                    break
                if (k + 1) % steps_per_tr == 0:
                    _sample_tr(W, rsum, b, k // steps_per_tr, bold, rec, rec_slot, hc, inv_spt,
                               N, NP)
            if bad_step >= 0:
                first_bad[b] = t0 + bad_step
                _nan_from(bold, rec, ckpt, b, bad_step // steps_per_tr, seg + 1)
                break
        if bad_step < 0:
            first_bad[b] = -1
            for kk in range(6):
                for i in range(N):
                    final[kk, b, i] = W[kk * LANES + i]
            _store_history(H, final, b, n_steps, RS, N)
        else:
            for kk in range(n_rows):
                for i in range(N):
                    final[kk, b, i] = nan
