"""One simulation's forward on two threads: a large symmetric connectome, batch 1 (``RWW_NODE_SPLIT``).

Why: at N = 1000 one step of one simulation costs ~40 us on one core, most of it reading the
packed coupling triangle (2 MB in float32, :mod:`rww.ops.numba.symmetric`) from L3. Two cores
read it twice as fast, and handing S_E between two threads costs about a microsecond.

How: the coupling product is already the sum of two parts, rows ``[0, split)`` and
``[split, N)`` of the triangle (:func:`rww.ops.numba.symmetric.symmetric_times_vector` sums them
in that order on one thread too). Thread t computes part t into its own row of ``part`` from the
S_E of every node, then (after both parts exist) ``part[0] + part[1]`` for its own block of nodes
(lanes ``[lo_t, hi_t)``, the edge a multiple of 16 near N / 2), and runs the node-local step, the
Balloon, the TR outputs and the checkpoints on that block in its own workspace, whose lane i is
node ``lo_t + i`` (noise counters included). Per step: one wait for the other thread's S_E of
the previous step (double-buffered in ``xse``), one for its part. Each node's arithmetic is the
single-threaded kernel's, so the outputs are bit for bit those of the single-threaded forward,
and the backward pass (single-threaded, recomputing from the checkpoints) verifies it at every
checkpoint. A diverged step is seen by both threads at the next wait and stops both.

Synchronisation: LLVM atomics emitted by numba intrinsics (acquire loads, release stores), so
that no flag load is hoisted out of a spin loop and what a thread wrote before its release is
visible to the thread that acquires it. A waiting thread spins with ``pause`` for
:data:`SPIN_CYCLES` cycles, then calls ``sched_yield`` on every check, so that on a core shared
with another job the thread waited for can run.

Switch: the environment variable ``RWW_NODE_SPLIT``: ``off`` (default), ``auto`` (batch 1, no
conduction delays, a coupling on the packed path with N >= 32, at least two worker threads,
:func:`rww.ops.numba.backend.num_threads`, not on Windows). It pays only with two otherwise idle
cores. On a machine where other jobs hold the cores it is much slower than one thread: measured
1.2-16x slower at N = 400-1000 with a test suite or a spinning process beside it, since each step
waits twice for the other thread, and a thread that has to wait for a descheduled partner loses
a scheduler time slice. Measured numbers: bench/README.md (W7).
"""

from __future__ import annotations

import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from . import cache  # noqa: F401  (before any @njit(cache=True): the kernels' cache key)

from .forward import _nan_from, _sample_tr
from .layout import FASTMATH, LANES, N_WROWS, W_CS, W_RE, W_RI, W_SE
from .step import _haemo, _load_coefficients, _load_state, _noise, _step_local
from .symmetric import partial_product

SWITCH = "RWW_NODE_SPLIT"
# Cycles (time-stamp counter) a waiting thread spins before it starts yielding its core: a few
# steps' time at N = 1000 (the other thread is normally that close).
SPIN_CYCLES = 200_000
# Words of the int64 ``sync`` array, a cache-line pair apart: DONE[t] (steps thread t finished,
# its S_E published), PART[t] (steps whose coupling part t is written), BAD[t] (thread t's
# diverged-node count of its last step, stored before its DONE).
_STRIDE = 16
DONE, PART, BAD = 0, 2 * _STRIDE, 4 * _STRIDE
SYNC_WORDS = 6 * _STRIDE
# Block edges on multiples of 16 lanes: 64 bytes of float32, so the two threads never write the
# same cache line of an output row or of the exchanged S_E.
ALIGN = 16


def mode() -> str:
    """``RWW_NODE_SPLIT``: ``off`` (default) or ``auto``."""
    value = os.environ.get(SWITCH, "off").strip().lower() or "off"
    if value not in ("auto", "off"):
        raise ValueError(f"{SWITCH} must be auto or off, got {value!r}")
    return value


def use_split(batch: int, operand, threads: int, n_steps: int) -> bool:
    """Whether the forward of this call runs on two threads: ``RWW_NODE_SPLIT=auto``, one
    simulation, its coupling on the packed path (``operand`` from
    :func:`rww.ops.numba.symmetric.coupling_operand`), two worker threads allowed, and at least
    one step."""
    if mode() == "off" or batch != 1 or threads < 2 or n_steps < 1 or os.name == "nt":
        return False
    return bool(operand[4][0]) and operand[0].shape[1] >= 2 * ALIGN


def block_edge(n_nodes: int) -> int:
    """First lane of the second thread's block: a multiple of ALIGN near N / 2 (0 < edge < N)."""
    edge = int(round(n_nodes / 2 / ALIGN)) * ALIGN
    return min(max(edge, ALIGN), n_nodes - 1)


# ----------------------------------------------------------------------------- atomics
def _pointer(context, builder, sig, args):
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    index = context.cast(builder, args[1], sig.args[1], types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [index], wraparound=False)


def _int64_vector(arr, idx):
    return (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1
            and isinstance(idx, types.Integer))


@intrinsic
def _load_acquire(typingctx, arr, idx):
    """``arr[idx]``, an atomic load with acquire ordering (never hoisted out of a loop)."""
    if not _int64_vector(arr, idx):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_pointer(context, builder, sig, args), "acquire", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def _store_release(typingctx, arr, idx, value):
    """``arr[idx] = value``, an atomic store with release ordering."""
    if not _int64_vector(arr, idx):
        return None

    def codegen(context, builder, sig, args):
        builder.store_atomic(context.cast(builder, args[2], sig.args[2], types.int64),
                             _pointer(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()
    return types.none(arr, idx, value), codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def _cpu_relax(typingctx):
    """``pause`` on x86 (a spin-wait hint), nothing elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:                                # (an LLVM intrinsic: inline asm cannot be cached)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _yield_core(typingctx):
    """``sched_yield()`` (POSIX; resolved from the C library of the process)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (``llvm.readcyclecounter``: rdtsc on x86; 0 where there is none,
    and then a waiting thread never yields)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@njit(nogil=True, forceinline=True)
def _wait_at_least(sync, idx, target):
    """Spin until ``sync[idx] >= target`` (acquire) with ``pause``; after SPIN_CYCLES cycles
    yield the core on every check (another job may need it to run the thread waited for)."""
    if _load_acquire(sync, idx) >= target:
        return
    start = _cycles()
    while _load_acquire(sync, idx) < target:
        if _cycles() - start < SPIN_CYCLES:
            _cpu_relax()
        else:
            _yield_core()


# ----------------------------------------------------------------------------- the kernel
@njit(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
def rww_fwd_split_kernel(tid, lo, n_lanes, coef, cp, state0, hc64, griffiths, steps_per_tr,
                         n_steps, k_every, t0, key0, key1, sim0, rec_slot, bold, rec, ckpt, final,
                         xse, part, sync, outcome):
    """Thread ``tid``'s half of the forward of one simulation (see the module docstring).

    Args beyond those of :func:`rww.ops.numba.forward.rww_fwd_kernel` (whose arguments these
    are, for simulation 0 of a batch of 1, except that the per-node inputs and outputs are this
    thread's block: ``coef`` (N_COEF, 1, n or 1), ``state0`` (6, 1, n), ``bold`` (1, n_TR, n),
    ``rec`` (n_rec, 1, n_TR, n), ``ckpt`` (n_seg, 6, 1, n), ``final`` (6, 1, n), with n the
    block's real nodes):
        tid: 0 or 1; lo: the block's first node; n_lanes: the block's lanes (a multiple of 8).
        cp: the whole coupling operand (its packed triangle is read, rows ``[0, split)`` for
            thread 0, ``[split, N)`` for thread 1).
        xse: (2, NP) S_E of every node before even / odd steps (row 0 holds the initial S_E).
        part: (2, NP) the two parts of the coupling product.
        sync: int64 (SYNC_WORDS,) zeros on entry. outcome: int64 (2,) receives the step after
            which a node diverged, or -1.
    """
    N = cp[0].shape[1]
    n = state0.shape[2]
    NP = n_lanes
    hc = _haemo(hc64, state0.dtype)
    W = np.zeros(N_WROWS * LANES, dtype=state0.dtype)
    rsum = np.zeros((2, NP), dtype=np.float64)
    inv_spt = 1.0 / steps_per_tr
    want_rates = (rec_slot[2] >= 0) | (rec_slot[3] >= 0)
    _load_coefficients(W, 0, coef, n, NP)
    _load_state(W, state0, 0, n, NP)
    rows = cp[1][0]
    j0 = 0 if tid == 0 else cp[5]
    j1 = cp[5] if tid == 0 else N
    other = 1 - tid
    own_bad = 0
    bad_step = -1
    for i in range(n, NP):                  # padding lanes: no coupling input (never written)
        W[W_CS * LANES + i] = 0.0
    for k in range(n_steps + 1):
        if k > 0:
            # the other thread's step k - 1: its S_E in xse[k & 1], its divergence count
            _wait_at_least(sync, DONE + other * _STRIDE, k)
            if own_bad > 0 or _load_acquire(sync, BAD + other * _STRIDE) > 0:
                bad_step = k - 1
                break
            if k % steps_per_tr == 0:
                _sample_tr(W, rsum, 0, k // steps_per_tr - 1, bold, rec, rec_slot, hc, inv_spt,
                           n, NP)
        if k == n_steps:
            break
        if k % k_every == 0:
            seg = k // k_every
            for kk in range(6):
                for i in range(n):
                    ckpt[seg, kk, 0, i] = W[kk * LANES + i]
        partial_product(rows, cp[2], cp[3], xse[k & 1], part[tid], j0, j1, N)
        _store_release(sync, PART + tid * _STRIDE, k + 1)
        _wait_at_least(sync, PART + other * _STRIDE, k + 1)
        for i in range(n):
            W[W_CS * LANES + i] = part[0, lo + i] + part[1, lo + i]
        _noise(W, t0 + k, sim0, key0, key1, NP, lo)
        own_bad = _step_local(W, hc, griffiths, n, NP, False)
        if want_rates:
            for i in range(NP):
                rsum[0, i] += W[W_RE * LANES + i]
                rsum[1, i] += W[W_RI * LANES + i]
        nxt = xse[(k + 1) & 1]
        for i in range(n):
            nxt[lo + i] = W[W_SE * LANES + i]
        _store_release(sync, BAD + tid * _STRIDE, own_bad)
        _store_release(sync, DONE + tid * _STRIDE, k + 1)
    if bad_step < 0:
        for kk in range(6):
            for i in range(n):
                final[kk, 0, i] = W[kk * LANES + i]
    outcome[tid] = bad_step


# ----------------------------------------------------------------------------- driver
_RUN_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _worker() -> ThreadPoolExecutor:
    """One dedicated thread for the second half (called under _RUN_LOCK): it only ever runs
    halves of one simulation, whose other half runs in the calling thread. Not the backend's
    shared pool: the calling half spins while it waits, so its partner must start at once, not
    queue behind another caller's tasks."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rww-split")
    return _POOL


def forward(cp, coef, state0, hc, griffiths, steps_per_tr, n_steps, k_every, t0, key0, key1,
            sim0, rec_slot, bold, rec, ckpt, final, first_bad):
    """``rww_fwd_kernel`` for simulation 0 of a batch of 1 (same arguments, the coupling operand
    ``cp`` on the packed path), on two threads. Outputs are bitwise those of the single-threaded
    kernel."""
    N = state0.shape[2]
    lanes = cp[0].shape[2]
    edge = block_edge(N)
    blocks = ((0, edge, edge), (edge, N, lanes - edge))
    xse = np.zeros((2, lanes), dtype=state0.dtype)
    xse[0, :N] = state0[0, 0]
    part = np.zeros((2, lanes), dtype=state0.dtype)
    sync = np.zeros(SYNC_WORDS, dtype=np.int64)
    outcome = np.full(2, -1, dtype=np.int64)
    per_node = coef.shape[2] > 1

    def args(t, steps):
        lo, hi, n_lanes = blocks[t]
        c = coef[:, :, lo:hi] if per_node else coef
        return (t, lo, n_lanes, c, cp, state0[:, :, lo:hi], hc, griffiths, steps_per_tr, steps,
                k_every, t0, key0, key1, sim0, rec_slot, bold[:, :, lo:hi], rec[:, :, :, lo:hi],
                ckpt[:, :, :, lo:hi], final[:, :, lo:hi], xse, part, sync, outcome)

    # Compile (or load) in this thread with a call of no steps, so that a compilation error is
    # raised here rather than leaving the other thread waiting.
    rww_fwd_split_kernel(*args(0, 0))
    outcome[:] = -1
    with _RUN_LOCK:
        second = _worker().submit(rww_fwd_split_kernel, *args(1, n_steps))
        try:
            rww_fwd_split_kernel(*args(0, n_steps))
        finally:
            second.result()
    bad = int(outcome.max())
    if outcome[0] != outcome[1]:
        raise RuntimeError(f"node split: the two threads stopped at different steps {outcome}")
    if bad >= 0:
        first_bad[0] = t0 + bad
        _nan_from(bold, rec, ckpt, 0, bad // steps_per_tr, bad // k_every + 1)
        final[:, 0, :] = np.nan
    else:
        first_bad[0] = -1


__all__ = ["SWITCH", "block_edge", "forward", "mode", "use_split"]
