"""The forward kernel: the K-step scan of a list of simulations (BOLD, records, checkpoints, final
state, first diverged step)."""

from __future__ import annotations

import numpy as np
from numba import njit
from . import cache  # noqa: F401  (before any @njit(cache=True): the kernels' cache key)

from .layout import FASTMATH, H_K1, H_K2, H_K3, H_SCALE, LANES, N_WROWS, W_Q, W_RE, W_RI, W_SE, W_SI, W_V

from .step import _haemo, _load_coefficients, _load_state, _step

# ----------------------------------------------------------------------------- TR outputs
@njit(forceinline=True, error_model="numpy", fastmath=FASTMATH)
def _sample_tr(W, rsum, b, tr, bold, rec, rec_slot, hc, inv_spt, N, NP):
    """At the end of TR ``tr``: BOLD from the state rows, the recorded S_E/S_I, and the TR means
    of the rates from ``rsum`` (float64 sums over the TR's steps, then reset)."""
    T = W.dtype.type
    scale = hc[H_SCALE]
    k1 = hc[H_K1]
    k2 = hc[H_K2]
    k3 = hc[H_K3]
    one = T(1.0)
    for i in range(N):
        # deviations from rest: 1 - q/v = (v - q) / v, no cancellation
        vd = W[W_V * LANES + i]
        qd = W[W_Q * LANES + i]
        bold[b, tr, i] = scale * (-(k1 * qd) + k2 * ((vd - qd) / (one + vd)) - k3 * vd)
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


@njit(forceinline=True)
def _nan_from(bold, rec, ckpt, b, first_tr, first_seg):
    """A diverged simulation is not continued: its outputs from TR ``first_tr`` and its
    checkpoints from segment ``first_seg`` on (every state row) are NaN."""
    nan = bold.dtype.type(np.nan)
    N = bold.shape[2]
    for tr in range(first_tr, bold.shape[1]):
        for i in range(N):
            bold[b, tr, i] = nan
            for r in range(rec.shape[0]):
                rec[r, b, tr, i] = nan
    for s2 in range(first_seg, ckpt.shape[0]):
        for kk in range(ckpt.shape[1]):
            for i in range(N):
                ckpt[s2, kk, b, i] = nan


# ----------------------------------------------------------------------------- forward
@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_fwd_kernel(sims, coef, cp, state0, hc64, griffiths, steps_per_tr, n_steps, k_every, t0,
                   key0, key1, sim0, rec_slot, bold, rec, ckpt, final, first_bad):
    """Forward scan of the simulations listed in ``sims``.

    Args:
        sims: int64 (S,) simulation indices handled by this call.
        coef: (N_COEF, Bp, Np) coefficients, Bp in {1, B}, Np in {1, N}.
        cp: the coupling operand (:func:`rww.ops.numba.symmetric.coupling_operand`): ``cp[0]``
            (Bc, N, NP) transposed coupling, columns N..NP-1 zero; Bc = 1 (shared) or B; plus the
            packed upper triangles of the large symmetric ones.
        state0: (6, B, N) initial state.
        hc64: float64 (12,) haemodynamic constants (:data:`HAEMO_FIELDS`).
        griffiths: 1 for the griffiths2022 equations, 0 for deco2014.
        steps_per_tr, n_steps, k_every: steps per TR, steps, checkpoint interval K.
        t0: global index of the first step; key0, key1: Philox key words (uint64).
        sim0: noise index of simulation 0 (the noise counter's simulation word is sim0 + b).
        rec_slot: int64 (4,) row of ``rec`` for S_E, S_I, r_E, r_I, or -1 when not recorded.

    Outputs (written for the simulations in ``sims`` only):
        bold (B, n_TR, N); rec (n_rec, B, n_TR, N); ckpt (n_seg, 6, B, N) the state at local
        steps 0, K, 2K, ...; final (6, B, N); first_bad (B,) int64 global step of the first step
        after which a state is invalid, else -1. From that step on the simulation is stopped and
        its remaining outputs are NaN.
    """
    T = state0.dtype.type
    N = state0.shape[2]
    ct = cp[0]
    NP = ct.shape[2]                        # lanes, chosen by the caller (padded_nodes)
    n_seg = ckpt.shape[0]
    hc = _haemo(hc64, state0.dtype)
    W = np.zeros(N_WROWS * LANES, dtype=state0.dtype)
    rsum = np.zeros((2, NP), dtype=np.float64)     # rate sums over the current TR (float64)
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
                nbad = _step(W, cp, bc, hc, griffiths, t0 + k, sim0 + b, key0, key1, N, NP,
                             False)
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
                for kk in range(6):
                    for i in range(N):
                        W[(kk) * LANES + i] = nan
                break
        if bad_step < 0:
            first_bad[b] = -1
        for kk in range(6):
            for i in range(N):
                final[kk, b, i] = W[(kk) * LANES + i]


