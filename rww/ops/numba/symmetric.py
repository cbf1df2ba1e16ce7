"""The coupling product ``C @ x`` from the upper triangle of a symmetric C: half the bytes per step.

Why: at large N one step of one simulation is bound by reading the N x N coupling matrix, not by
arithmetic. At N = 1000 in float32 the matrix (4 MB) does not fit a core's L2 and streams from L3
every step (~70 GB/s on the 2-core AMD EPYC machine this was measured on: 54 us of a 61-us step).
Structural connectomes from tractography are symmetric, and for a symmetric C the strict upper
triangle U holds everything: ``C = U + U^T``, so ``C @ x = U @ x + U^T @ x`` reads each stored
weight once and uses it twice (a dot product for row j, an axpy into the lanes k > j). Measured
on that machine, one product alone: 1.43-1.6x faster at N = 1000, 1.65-1.8x at N = 400-600, and
no faster at N = 200-300 (0.9x at N = 100), where the matrix stays in cache and the row
reductions cost more than the bytes they save; hence :data:`MIN_BYTES`.

The result is the same product summed in a different order: it differs from the dense kernels'
by rounding (measured against float64 at N = 1000, float32: 1.0e-6 of the largest output, the
dense form 1.3e-6). It is deterministic (one order per compiled kernel) and does not depend on
the batch, the thread count, or the other simulations of a call.

Storage (:func:`pack_upper`): rows are grouped by 16 (one AVX-512 vector of float32); row j is
stored from lane ``start_j = 16 * (j // 16)`` to N - 1, with the entries at lanes <= j set to zero
(padding), so four consecutive rows of a group share one start and are read in one pass; the
diagonal follows the last row. About N^2 / 2 + 9 N values per matrix.

Switch: the environment variable ``RWW_SYMMETRIC_COUPLING``, ``auto`` (default: the packed product
for every exactly symmetric matrix of at least :data:`MIN_BYTES`) or ``off`` (always the dense
product, e.g. to reproduce results of rww 0.1.0 bit for bit). Read at every call: set it before
a forward and leave it until its backward, whose recomputation must reproduce the forward.

The coupling operand of the kernels is the tuple ``(dense, packed, offsets, starts, symmetric,
split)`` built by :func:`coupling_operand`: the dense ``(Bc, N, NP)`` matrix the kernels always
accept, and for each matrix ``bc`` with ``symmetric[bc] == 1`` its packed rows ``packed[bc]``.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from .layout import LANES

# Matrices smaller than this (bytes of the dense (N, NP) copy in the kernels' dtype) keep the
# dense product: below it the matrix stays in a core's L2 (1 MB on the machine measured) and the
# triangle's row reductions cost more than the bytes they save. 512 KiB is N >= 361 in float32
# and N >= 256 in float64. Measured, whole steps of one simulation (dense / packed time): float32
# 1.41 at N = 400, 1.33 at 600, 1.6 at 1000; float64 1.07 at N = 256, 1.14 at 362; the product
# alone in float32 was 0.95-1.06 at N = 200-300 and 0.9 at N = 100.
MIN_BYTES = 512 * 2**10

SWITCH = "RWW_SYMMETRIC_COUPLING"

# Rows of one group share a start lane; a multiple of 4 (the rows read per pass).
GROUP = 16


def enabled() -> bool:
    """Whether ``RWW_SYMMETRIC_COUPLING`` allows the packed product (``auto``, the default)."""
    value = os.environ.get(SWITCH, "auto").strip().lower() or "auto"
    if value not in ("auto", "off"):
        raise ValueError(f"{SWITCH} must be auto or off, got {value!r}")
    return value == "auto"


def row_starts(n_nodes: int) -> np.ndarray:
    """int64 ``(N,)``: the first stored lane of each packed row, ``16 * (j // 16)``."""
    return (np.arange(n_nodes, dtype=np.int64) // GROUP) * GROUP


def pack_upper(c: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Pack the strict upper triangle of one ``(N, N)`` matrix.

    Returns ``(packed, offsets)``: ``packed`` (L + N,) in ``dtype`` with row j at
    ``packed[offsets[j] : offsets[j] + N - start_j]`` holding ``c[j, start_j:N]`` with the entries
    at lanes <= j zeroed (``start_j`` from :func:`row_starts`), and the diagonal at
    ``packed[L : L + N]``, ``L = offsets[N]``; ``offsets`` int64 (N + 1,). Only the upper
    triangle and the diagonal of ``c`` are read."""
    n = c.shape[0]
    starts = row_starts(n)
    lengths = n - starts
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    packed = np.zeros(int(offsets[-1]) + n, dtype=dtype)
    for g0 in range(0, n, GROUP):
        g1 = min(g0 + GROUP, n)
        # rows g0..g1-1 from lane g0: keep lane k of row j only when k > j (np.triu, offset 1)
        block = np.triu(c[g0:g1, g0:n], 1)
        packed[offsets[g0]:offsets[g1]] = block.reshape(-1)
    packed[offsets[-1]:] = np.diagonal(c)
    return packed, offsets


def split_row(offsets: np.ndarray) -> int:
    """The row that splits a packed matrix into two parts of about equal weight counts: the
    first multiple of 16 (a row group's start) at or past half the stored values. ``offsets``
    from :func:`pack_upper`."""
    n = offsets.shape[0] - 1
    half = offsets[n] / 2.0
    row = int(np.searchsorted(offsets[:n + 1], half))
    return min(n, -(-row // GROUP) * GROUP)


def coupling_operand(dense: np.ndarray, coupling: np.ndarray, dtype, min_bytes: int | None = None):
    """The kernels' coupling operand ``(dense, packed, offsets, starts, symmetric, split)``.

    Args:
        dense: ``(Bc, N, NP)`` the dense matrix as the kernels read it (C^T for the forward
            product, C for the adjoint's C^T product; for a symmetric matrix they are the same).
        coupling: ``(Bc, N, N)`` the coupling C (float64 or the kernels' dtype), used for the
            symmetry check and the packing.
        dtype: the kernels' numpy dtype.
        min_bytes: size threshold (default :data:`MIN_BYTES`, read at call time).

    Returns the tuple; ``split`` the row of :func:`split_row` (0 when nothing is packed);
    ``symmetric`` int8 ``(Bc,)`` is 1 for each matrix that is exactly symmetric
    (``np.array_equal(C, C^T)``) when the dense copy holds at least ``min_bytes`` bytes and
    :func:`enabled`;
    ``packed`` ``(Bc, L)`` holds those matrices' triangles (rows of the others stay zero and are
    never read), or is ``(0, 0)`` when no matrix qualifies."""
    threshold = MIN_BYTES if min_bytes is None else min_bytes
    bc, n = coupling.shape[0], coupling.shape[-1]
    starts = row_starts(n)
    symmetric = np.zeros(bc, dtype=np.int8)
    if enabled() and dense.nbytes // max(bc, 1) >= threshold:
        for b in range(bc):
            symmetric[b] = np.array_equal(coupling[b], coupling[b].T)
    if not symmetric.any():
        return (dense, np.zeros((0, 0), dtype=dtype), np.zeros(n + 1, dtype=np.int64), starts,
                symmetric, 0)
    packed = None
    offsets = None
    for b in np.nonzero(symmetric)[0]:
        rows, offsets = pack_upper(coupling[b], dtype)
        if packed is None:
            packed = np.zeros((bc, rows.shape[0]), dtype=dtype)
        packed[b] = rows
    return dense, packed, offsets, starts, symmetric, split_row(offsets)


@njit(nogil=True, error_model="numpy", fastmath={"contract", "reassoc"})
def partial_product(rows, offsets, starts, x, y, j0, j1, N):
    """``y[:N] = (rows j0..j1-1 of the packed C) applied to x``: for each stored weight C_jk
    (j0 <= j < j1, k > j) ``C_jk x_j`` into ``y[k]`` (axpy) and ``C_jk x_k`` into ``y[j]`` (dot
    product), plus ``C_jj x_j`` into ``y[j]``. ``rows`` is one matrix's :func:`pack_upper`
    output; ``x``, ``y`` (>= N,) 1-D; j0 a multiple of 4. Reads ``x[:N]`` only.

    Four rows per pass; their four dot products are reassociated (``reassoc``) so that they
    vectorise. Slices, not computed indices, so that numba emits no negative-index wrap-around
    that would stop LLVM from vectorising. One compiled function for every caller (the
    single-threaded kernels and the node split), so its result is the same wherever it runs."""
    T = x.dtype.type
    for i in range(N):
        y[i] = T(0.0)
    diagonal = rows[offsets[N]:offsets[N] + N]
    j = j0
    while j + 4 <= j1:
        k0 = starts[j]
        length = N - k0
        o = offsets[j]
        r0 = rows[o:o + length]
        r1 = rows[o + length:o + 2 * length]
        r2 = rows[o + 2 * length:o + 3 * length]
        r3 = rows[o + 3 * length:o + 4 * length]
        xs = x[k0:N]
        ys = y[k0:N]
        x0 = x[j]
        x1 = x[j + 1]
        x2 = x[j + 2]
        x3 = x[j + 3]
        a0 = T(0.0)
        a1 = T(0.0)
        a2 = T(0.0)
        a3 = T(0.0)
        for k in range(length):
            c0 = r0[k]
            c1 = r1[k]
            c2 = r2[k]
            c3 = r3[k]
            xk = xs[k]
            a0 += c0 * xk
            a1 += c1 * xk
            a2 += c2 * xk
            a3 += c3 * xk
            ys[k] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
        y[j] += a0 + diagonal[j] * x0
        y[j + 1] += a1 + diagonal[j + 1] * x1
        y[j + 2] += a2 + diagonal[j + 2] * x2
        y[j + 3] += a3 + diagonal[j + 3] * x3
        j += 4
    while j < j1:
        k0 = starts[j]
        length = N - k0
        o = offsets[j]
        r0 = rows[o:o + length]
        xs = x[k0:N]
        ys = y[k0:N]
        x0 = x[j]
        a0 = T(0.0)
        for k in range(length):
            c0 = r0[k]
            a0 += c0 * xs[k]
            ys[k] += c0 * x0
        y[j] += a0 + diagonal[j] * x0
        j += 1


@njit(nogil=True, error_model="numpy", fastmath={"contract"})
def symmetric_times_vector(W, packed, offsets, starts, split, bc, N, NP, src, dst, scratch):
    """``W[dst][i] = sum_j C_ij W[src][j]`` for i < N (lanes N..NP-1 of ``dst`` set to 0), C
    symmetric, packed in ``packed[bc]`` (:func:`pack_upper`); ``W`` is the flat workspace,
    ``src``, ``dst``, ``scratch`` its row indices. Reads only lanes < N of ``src``.

    The rows are taken in two parts, ``[0, split)`` and ``[split, N)`` (:func:`split_row`: about
    half the stored weights each), into ``dst`` and ``scratch``, and summed ``dst + scratch``:
    the order the node-split forward (:mod:`rww.ops.numba.split`) uses on two threads, so that a
    simulation's result does not depend on whether it was split."""
    T = W.dtype.type
    rows = packed[bc]
    x = W[src * LANES:src * LANES + N]
    y = W[dst * LANES:dst * LANES + N]
    z = W[scratch * LANES:scratch * LANES + N]
    partial_product(rows, offsets, starts, x, y, 0, split, N)
    partial_product(rows, offsets, starts, x, z, split, N, N)
    for i in range(N):
        y[i] = y[i] + z[i]
    for i in range(N, NP):
        W[dst * LANES + i] = T(0.0)
