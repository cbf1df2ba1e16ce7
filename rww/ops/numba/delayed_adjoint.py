"""The discrete adjoint with conduction delays (the forward is :mod:`rww.ops.numba.delayed`).

The coupling input of step t, ``c_i(t) = sum_j C_ij S_E_j(t - lag_ij)``, sends ``C_ij g_i(t)``
(``g = dL/dc``, the adjoint step's ``W[W_LCS]``) to the adjoint of S_E_j at step t - lag_ij. The
sweep gathers instead of scattering: S_E_j at step s receives ``sum_i C_ij g_i(s + lag_ij)``, and
every g it needs (steps s..s + D) is known once the sweep has done step s. So the g of the last
D + 1 steps are kept in a ring (node-major, each value stored twice as the forward's S_E ring,
:mod:`.delayed`: g_i(s + lag) at ``G[i*2RS + lag + (s mod RS)]``, no wrap-around test), zero for
steps past the end; step s adds the gathered sum to dL/dS_E(s), summed over i = 0..N-1. The same
gathered values give the coupling gradient per edge, ``dC_ij += g_i(s + lag_ij) S_E_j(s)``
(float64 sums per edge and step: the rank-FLUSH product of the kernels without delays assumes
lag 0). After step 0 the sweep continues over s = -1..-D with g = 0 for its own steps: what S_E
at those steps (the initial history) receives is dL/d(initial history). The final state's history
rows (S_E at step T - d) receive their upstream gradient when the sweep reaches step T - d.

Recomputation: each segment is recomputed from its checkpoint (state and history) with the
forward's step function and checked bitwise against the next checkpoint, history included.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from . import cache  # noqa: F401  (before any @njit(cache=True): the kernels' cache key)

from .adjoint import _adjoint_step, _bwd_begin, _flush, _step_tape_and_outputs
from .delayed import _history_mismatches, _load_history, _step_delayed
from .layout import (FASTMATH, FLUSH, LANES, N_COEF, N_TAPE, N_WROWS, W_EXT, W_LAM, W_LCS, W_SE,
                     W_U0)
from .step import _haemo, _load_state

# Row of the sweep's workspace holding the gathered g_i(s + lag_ij) of one row i (the uniforms'
# row: the sweep draws no noise).
W_GAM = W_U0


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _recompute_segment_delayed(W, tape, H, b, seg, ckpt, ct, off, bc, bd, hc, griffiths, n_steps,
                               k_every, t0, key0, key1, sim0, N, NP):
    """:func:`rww.ops.numba.adjoint._recompute_segment` with delays (the ring ``H`` loaded from
    the checkpoint's history); returns the number of state and history values at the segment's
    end that differ from the next checkpoint."""
    n_seg = ckpt.shape[0]
    RS = ckpt.shape[1] - 5
    start = seg * k_every
    length = min(start + k_every, n_steps) - start
    _load_state(W, ckpt[seg], b, N, NP)
    _load_history(H, ckpt[seg], b, start, RS, N)
    for j in range(length):
        for fld in range(6):
            for i in range(NP):
                tape[j, fld, i] = W[fld * LANES + i]
        _step_delayed(W, ct, off, bc, bd, H, RS, hc, griffiths, start + j, t0 + start + j,
                      sim0 + b, key0, key1, N, NP, True)
        for fld in range(6, N_TAPE):
            for i in range(NP):
                tape[j, fld, i] = W[fld * LANES + i]
    for fld in range(6):
        for i in range(NP):
            tape[length, fld, i] = W[fld * LANES + i]
    n_mismatch = 0
    if seg + 1 < n_seg:
        for fld in range(6):
            for i in range(N):
                n_mismatch += 1 if W[fld * LANES + i] != ckpt[seg + 1, fld, b, i] else 0
        n_mismatch += _history_mismatches(H, ckpt[seg + 1], b, start + length, RS, N)
    return n_mismatch


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _pull_delayed(W, G, gacc, cm, offa, bc, bd, base, RS, want_gc, N, NP):
    """Step s (``base`` = s mod RS) of the delayed coupling's adjoint: push ``W[W_LCS]`` (g(s))
    into the ring, then ``W[W_LAM] += sum_i C_ij g_i(s + lag_ij)`` (i in order 0..N-1) and, with
    ``want_gc``, ``gacc[i, j] += g_i(s + lag_ij) * W[W_SE][j]`` (float64). ``offa``: int32
    ``(Bd, N, NP)`` offsets ``i*2RS + lag_ij`` (row i = receiving region, lane j = sending)."""
    T = W.dtype.type
    for i in range(N):
        v = W[W_LCS * LANES + i]
        G[i * 2 * RS + base] = v
        G[i * 2 * RS + base + RS] = v
    for j in range(NP):
        W[W_EXT * LANES + j] = T(0.0)
    for i in range(N):
        for j in range(NP):
            W[W_GAM * LANES + j] = G[offa[bd, i, j] + base]
        for j in range(NP):
            W[W_EXT * LANES + j] = W[W_EXT * LANES + j] + cm[bc, i, j] * W[W_GAM * LANES + j]
        if want_gc:
            for j in range(NP):
                gacc[i, j] += np.float64(W[W_GAM * LANES + j]) * np.float64(W[W_SE * LANES + j])
    for j in range(NP):
        W[W_LAM * LANES + j] = W[W_LAM * LANES + j] + W[W_EXT * LANES + j]


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _sweep_segment_delayed(W, tape, G, b, seg, cm, offa, bc, bd, hc, griffiths, steps_per_tr,
                           n_steps, k_every, grad_bold, grad_rec, grec_slot, grad_state, want_gc,
                           acc, gacc, N, NP):
    """:func:`rww.ops.numba.adjoint._sweep_segment` with delays: the coupling's adjoint by
    :func:`_pull_delayed`, and the upstream gradient of the final state's history rows added to
    dL/dS_E at the steps they hold."""
    T = W.dtype.type
    RS = grad_state.shape[0] - 5
    inv_spt = T(1.0 / steps_per_tr)
    start = seg * k_every
    length = min(start + k_every, n_steps) - start
    for fld in range(6):
        for i in range(NP):
            W[fld * LANES + i] = tape[length, fld, i]
    since_flush = 0
    for j in range(length - 1, -1, -1):
        k = start + j
        _step_tape_and_outputs(W, tape, j, k, b, steps_per_tr, grad_bold, grad_rec, grec_slot,
                               hc, inv_spt, N, NP)
        _adjoint_step(W, hc, griffiths, NP)
        _pull_delayed(W, G, gacc, cm, offa, bc, bd, k % RS, RS, want_gc, N, NP)
        d = n_steps - k                     # S_E at step k is the final state's history row d
        if d < RS:
            for i in range(N):
                W[W_LAM * LANES + i] += grad_state[6 + d - 1, b, i]
        since_flush += 1
        if since_flush == FLUSH:
            _flush(W, acc, NP)
            since_flush = 0
    _flush(W, acc, NP)


@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _history_adjoint(W, G, gacc, ckpt0, grad_state, g_state0, cm, offa, b, bc, bd, n_steps,
                     want_gc, N, NP):
    """After the sweep's step 0: dL/d(initial history), S_E at steps s = -1..-D, which receive
    the gathered coupling adjoint (g = 0 at their own steps) and, where the final state's history
    reaches back to them (T - d' = s), its upstream gradient. Writes rows 6.. of ``g_state0`` and
    adds the edges' coupling gradient terms with the initial history."""
    T = W.dtype.type
    RS = ckpt0.shape[0] - 5
    for d in range(1, RS):
        s = -d
        for i in range(NP):
            W[W_LCS * LANES + i] = T(0.0)
            W[W_LAM * LANES + i] = T(0.0)
            W[W_SE * LANES + i] = ckpt0[6 + d - 1, b, i if i < N else 0]
        _pull_delayed(W, G, gacc, cm, offa, bc, bd, s % RS, RS, want_gc, N, NP)
        dfin = n_steps + d
        if dfin < RS:
            for i in range(N):
                W[W_LAM * LANES + i] += grad_state[6 + dfin - 1, b, i]
        for i in range(N):
            g_state0[6 + d - 1, b, i] = W[W_LAM * LANES + i]


@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_bwd_delayed_kernel(sims, coef, ct, cm, off, offa, ckpt, hc64, griffiths, steps_per_tr,
                           n_steps, k_every, t0, key0, key1, sim0, grad_bold, grad_rec, grec_slot,
                           grad_state, want_gc, gc_slot, g_coef, g_c, g_state0, mismatch):
    """:func:`rww.ops.numba.adjoint.rww_bwd_kernel` with conduction delays.

    Args beyond those of ``rww_bwd_kernel``:
        off: the forward's ring offsets (:func:`rww.ops.numba.delayed.rww_fwd_delayed_kernel`).
        offa: int32 ``(Bd, N, NP)`` offsets ``i*2RS + lag_ij`` of the adjoint's gather (row i =
            receiving region, lane j = sending; padding lanes lag 0).
        ckpt ``(n_seg, 6 + D, B, N)``; grad_state and g_state0 ``(6 + D, B, N)``.
    """
    N = ckpt.shape[3]
    NP = ct.shape[2]
    RS = ckpt.shape[1] - 5
    n_seg = ckpt.shape[0]
    dtype = ckpt.dtype
    hc = _haemo(hc64, dtype)
    W = np.zeros(N_WROWS * LANES, dtype=dtype)
    tape = np.empty((k_every + 1, N_TAPE, NP), dtype=dtype)
    H = np.zeros(N * 2 * RS, dtype=dtype)
    G = np.zeros(N * 2 * RS, dtype=dtype)
    acc = np.zeros((N_COEF, NP), dtype=np.float64)
    gacc = np.zeros((N if want_gc else 0, NP), dtype=np.float64)
    for b in sims:
        bc = b if ct.shape[0] > 1 else 0
        bd = b if off.shape[0] > 1 else 0
        _bwd_begin(W, b, coef, grad_state, acc, gacc, N, NP)
        G[:] = 0.0                          # g at steps past the end
        n_mismatch = 0
        for seg in range(n_seg - 1, -1, -1):
            n_mismatch += _recompute_segment_delayed(W, tape, H, b, seg, ckpt, ct, off, bc, bd,
                                                     hc, griffiths, n_steps, k_every, t0, key0,
                                                     key1, sim0, N, NP)
            _sweep_segment_delayed(W, tape, G, b, seg, cm, offa, bc, bd, hc, griffiths,
                                   steps_per_tr, n_steps, k_every, grad_bold, grad_rec,
                                   grec_slot, grad_state, want_gc, acc, gacc, N, NP)
        mismatch[b] = n_mismatch
        for kk in range(6):
            for i in range(N):
                g_state0[kk, b, i] = W[(W_LAM + kk) * LANES + i]
        _history_adjoint(W, G, gacc, ckpt[0], grad_state, g_state0, cm, offa, b, bc, bd,
                         n_steps, want_gc, N, NP)
        for k in range(N_COEF):
            for i in range(N):
                g_coef[k, b, i] = acc[k, i]
        if want_gc:
            slot = gc_slot[b]
            for r in range(N):
                for i in range(N):
                    g_c[slot, r, i] += gacc[r, i]
