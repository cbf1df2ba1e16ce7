"""The compiled CPU backend: fused forward and adjoint kernels (numba), checkpointed.

:class:`NumbaBackend` implements :class:`rww.ops.scan.ScanBackend` with the kernels of
:mod:`rww.ops.numba` (:mod:`~rww.ops.numba.forward`, :mod:`~rww.ops.numba.adjoint`):

- ``forward`` runs one fused loop over steps per simulation, state in local arrays, writing BOLD
  and the records at every TR end and the full state every K steps (the checkpoints);
- ``backward`` recomputes each segment from its checkpoint (noise regenerated from the Philox
  counter, never stored), keeping a tape of that segment only (O(N*K) per worker thread), and
  sweeps the hand-derived discrete adjoint of the Euler-Maruyama step back through it.

Conduction delays (``spec.max_delay = D > 0``, integer lags ``delays``): the kernels of
:mod:`~rww.ops.numba.delayed` and :mod:`~rww.ops.numba.delayed_adjoint` (``supports_delays``):
the state, checkpoints and ``grad_state0`` carry the D rows of S_E history; inside the kernels
the history is a ring buffer per simulation (2 (D + 1) N floats, plus as much for the adjoint's
ring and N x NP float64 coupling-gradient sums). Without delays the kernels are those above,
unchanged. The pipelined backward is not used with delays.

Coupling product (``C @ S_E`` forward, ``C^T g`` in the adjoint): the rows of the dense matrix as
axpys, summed in row order; for an exactly symmetric matrix of at least
:data:`rww.ops.numba.symmetric.MIN_BYTES` (N >= 361 in float32, N >= 256 in float64) the kernels
read only its packed upper triangle and use each weight twice (:mod:`rww.ops.numba.symmetric`:
half the bytes per step, which bound a step at large N; one simulation at N = 1000, float32: 40
against 64 us per step). The two orders differ by rounding; each is fixed, whatever the batch and
the thread count. ``RWW_SYMMETRIC_COUPLING=off`` keeps the dense product.

Precision: the kernels compute in the dtype of the inputs (float32 or float64). Gradients of the
parameters and of the coupling are accumulated per simulation in float64 (float32 partial sums
of at most 16 steps are flushed into float64 totals), reduced over simulations and nodes in
float64 in a fixed order, and returned in the input dtype. The adjoint state itself is carried in
the input dtype, like the forward state.

Threads: simulations are distributed over a pool of worker threads (the kernels release the
GIL). The count is ``RWW_NUM_THREADS`` when that environment variable is set, otherwise the
smaller of ``numba.get_num_threads()`` (set by ``numba.set_num_threads`` or
``NUMBA_NUM_THREADS``; numba's default is the number of cores) and ``torch.get_num_threads()``
(``torch.set_num_threads``, which ``rww simulate --threads`` and ``rww fit --threads`` call). Results
do not depend on the thread count: every simulation writes only its own outputs and the sums over
simulations are done afterwards in a fixed order.
One simulation's forward runs on one thread: splitting its nodes across threads needs two waits
per step (the coupling reads every node), which cost more than a whole step at N = 68 (about
1 us). For a large symmetric connectome ``RWW_NODE_SPLIT=auto`` runs a batch of one on two
threads (:mod:`rww.ops.numba.split`, off by default: it pays only with two otherwise idle cores);
the outputs are bitwise those of one thread. A single simulation's backward can run on two
threads as a pipeline (a segment swept while the previous one is recomputed;
``RWW_NUMBA_PIPELINE``, off by default, see :data:`PIPELINE`). ``RWW_SYMMETRIC_COUPLING`` and
``RWW_NODE_SPLIT`` are read at every call: set them before a forward and leave them unchanged
until its backward (the backward recomputes the forward and warns if it cannot reproduce it).

First call: the kernels are compiled once per dtype (tens of seconds) and cached on disk by numba
(``cache=True``; ``NUMBA_CACHE_DIR`` moves the cache), keyed on the sources of every module
of this package (:mod:`rww.ops.numba.cache`: numba alone would miss a change to a module that a
kernel inlines from another file). :func:`warmup` compiles or loads every variant and reports
how long that took.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import torch

from ...params import PARAM_INDEX
from ..scan import ForwardOutput, ScanBackend
from ..spec import RECORDABLE, ScanSpec

# Memory allowed for the per-simulation float64 partials of a shared coupling matrix's gradient
# (B x N x N); beyond it, consecutive simulations share a partial (a fixed grouping that depends
# only on B and N, so the summation order, and the result, never depend on the thread count).
COUPLING_PARTIALS_BYTES = 256 * 2**20

_SUPPORTED = (torch.float32, torch.float64)
_LAST_MISMATCHES = 0


def last_recompute_mismatches() -> int:
    """How many state values at the ends of the segments recomputed by the last backward pass
    differed (bitwise) from the forward's checkpoints: 0 unless the recomputation is inexact."""
    return _LAST_MISMATCHES


@functools.cache
def _kernels() -> SimpleNamespace:
    """The kernels' entry points and layout constants as one namespace. Importing the kernel
    modules imports numba, so it happens on first use, not with ``import rww``."""
    from . import adjoint, delayed, delayed_adjoint, forward, layout

    constants = {name: value for name, value in vars(layout).items() if name.isupper()}
    entry = {name: getattr(module, name) for module, names in (
        (forward, ("rww_fwd_kernel",)),
        (adjoint, ("rww_bwd_kernel", "rww_bwd_begin", "rww_bwd_recompute", "rww_bwd_sweep",
                   "rww_bwd_end")),
        (delayed, ("rww_fwd_delayed_kernel",)),
        (delayed_adjoint, ("rww_bwd_delayed_kernel",))) for name in names}
    return SimpleNamespace(**constants, **entry)


def num_threads() -> int:
    """Worker threads used by the numba backend: ``RWW_NUM_THREADS`` if set, else the smaller of
    ``numba.get_num_threads()`` and ``torch.get_num_threads()`` (so ``torch.set_num_threads``,
    and ``rww simulate --threads``, limit it too)."""
    import numba
    torch_threads = torch.get_num_threads()
    # The first numba.get_num_threads() launches numba's threading layer, which (with its OpenMP
    # layer) sets OpenMP's thread count, i.e. torch's, back to numba's: restore torch's setting.
    # Done on every path (RWW_NUM_THREADS set or not), so a user's setting is never undone.
    n = int(numba.get_num_threads())
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    env = os.environ.get("RWW_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"RWW_NUM_THREADS must be a positive integer, got {env!r}") from None
        if value < 1:
            raise ValueError(f"RWW_NUM_THREADS must be a positive integer, got {env!r}")
        return value
    return max(1, min(n, int(torch_threads)))


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    """The shared worker pool, with at least ``n`` threads."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < n:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="rww-numba")
            _POOL_SIZE = n
        return _POOL


def _run_tasks(fn, tasks: list):
    """Run ``fn(task)`` for every task, on the worker pool when there is more than one."""
    n = min(num_threads(), len(tasks))
    if n <= 1:
        for task in tasks:
            fn(task)
        return
    pool = _pool(n)
    futures = [pool.submit(fn, task) for task in tasks]
    for fut in futures:
        fut.result()


def coefficient_table(params: torch.Tensor, spec: ScanSpec) -> torch.Tensor:
    """The kernels' per-node coefficients from the parameter table (differentiable).

    Args:
        params: ``(P, Bp, Np)`` parameter table (:func:`rww.params.pack_parameters`).
        spec: the scan (its preset and dt enter the coefficients).

    Returns:
        ``(N_COEF, Bp, Np)`` in the order of :data:`rww.ops.numba.layout.COEF_NAMES`: the
        constant parts of the currents (``W_E*I_0``, ``W_I*I_0``), the weights as they multiply
        the states (deco2014 ``w_EE*J_NMDA``, ``G*J_NMDA``, ``w_IE``, ``w_EI*J_NMDA``;
        griffiths2022 ``0.001 + relu(.)`` gains and ``G``), the transfer-function constants, the
        decay rates ``1/tau`` [1/ms], the kinetic factors and the noise amplitude
        ``sqrt(dt)*sigma`` (griffiths2022: ``sqrt(dt)*(0.02 + relu(sigma))``).
    """
    p = {name: params[i] for name, i in PARAM_INDEX.items()}
    sqrt_dt = math.sqrt(spec.dt)
    if spec.preset.code == 1:
        relu = torch.relu
        c_ee, c_ie, c_ei = 0.001 + relu(p["w_EE"]), 0.001 + relu(p["w_IE"]), 0.001 + relu(p["w_EI"])
        c_g = p["G"]
        amp = sqrt_dt * (0.02 + relu(p["sigma"]))
    else:
        j = p["J_NMDA"]
        c_ee, c_g, c_ie, c_ei = p["w_EE"] * j, p["G"] * j, p["w_IE"], p["w_EI"] * j
        amp = sqrt_dt * p["sigma"]
    rows = [p["W_E"] * p["I_0"], c_ee, c_g, c_ie, p["W_I"] * p["I_0"], c_ei,
            p["a_E"], p["b_E"], p["d_E"], p["a_I"], p["b_I"], p["d_I"],
            1.0 / p["tau_E"], 1.0 / p["tau_I"], p["gamma_E"], p["gamma_I"], amp]
    return torch.stack(rows)


def _coefficient_signs(dt: float) -> np.ndarray:
    """Factors turning the kernel's raw adjoint sums into dL/dcoefficient (the kernel leaves out
    constant factors: -1 for c_IE and b, -dt for the decay rates, dt for the kinetic factors)."""
    k = _kernels()
    signs = np.ones(k.N_COEF)
    signs[[k.C_IE, k.C_BE, k.C_BI]] = -1.0
    signs[[k.C_KE, k.C_KI]] = -dt
    signs[[k.C_GE, k.C_GI]] = dt
    return signs


def _haemo_vector(spec: ScanSpec) -> np.ndarray:
    h = spec.haemo
    scale, k1, k2, k3 = spec.bold_coefficients
    rho = h["rho"]
    return np.array([spec.dt, spec.balloon_dt, h["kappa"], h["gamma_h"], 1.0 / h["tau_0"],
                     1.0 / h["alpha"], math.log1p(-rho), 1.0 / rho, scale, k1, k2, k3, 1.0 - rho,
                     (1.0 - rho) / rho], dtype=np.float64)


# Lanes of the kernels' node loops: N rounded up to a multiple of LANE_ALIGN (the padding lanes
# compute harmless copies of node 0). Measured forward time at N = 68, B = 1 (one process,
# interleaved): 8 and 16 equal, 32 +20%, 64 +55% (more padded lanes cost more than the scalar
# remainder LLVM leaves after its vector loop).
LANE_ALIGN = 8


def padded_nodes(n: int) -> int:
    """Lanes of the kernels' node loops for ``n`` nodes: ``n`` rounded up to LANE_ALIGN."""
    return -(-n // LANE_ALIGN) * LANE_ALIGN


def _padded_coupling(coupling: torch.Tensor, transpose: bool, np_dtype) -> np.ndarray:
    """``(Bc, N, NP)`` copy of C (or C^T) with zero columns up to NP = :func:`padded_nodes` (N);
    the kernels take NP from it."""
    c = coupling.detach()
    c = c.unsqueeze(0) if c.dim() == 2 else c
    if transpose:
        c = c.transpose(-1, -2)
    n = c.shape[-1]
    out = np.zeros((c.shape[0], n, padded_nodes(n)), dtype=np_dtype)
    out[:, :, :n] = c.numpy()
    return out


def _coupling_operand(dense: np.ndarray, coupling: torch.Tensor, np_dtype):
    """The kernels' coupling operand: ``dense`` plus the packed upper triangle of each large,
    exactly symmetric matrix (:func:`rww.ops.numba.symmetric.coupling_operand`)."""
    from . import symmetric
    c = coupling.detach()
    c = c.unsqueeze(0) if c.dim() == 2 else c
    return symmetric.coupling_operand(dense, c.numpy(), np_dtype)


def _use_split(batch: int, cp, n_steps: int) -> bool:
    """Whether one simulation's forward runs on two threads (:mod:`rww.ops.numba.split`,
    ``RWW_NODE_SPLIT=auto``)."""
    from . import split
    return split.use_split(batch, cp, num_threads(), n_steps)


def _check_switches():
    """Raise on an invalid ``RWW_SYMMETRIC_COUPLING`` or ``RWW_NODE_SPLIT`` whichever kernels
    run (with conduction delays neither applies, but a typo should not pass silently)."""
    from . import split, symmetric
    symmetric.enabled()
    split.mode()


def _delay_offsets(delays: torch.Tensor, n_nodes: int, max_delay: int, forward: bool) -> np.ndarray:
    """int32 ``(Bd, N, NP)`` offsets of the delayed kernels' gathers into a ring of ``2 (D + 1)``
    slots per node (:mod:`rww.ops.numba.delayed`): for the forward (``forward``) row j, lane i
    ``j*2RS + RS - lag_ij``; for the adjoint row i, lane j ``i*2RS + lag_ij`` (RS = D + 1).
    Padding lanes get lag 0 (their coupling entries are zero)."""
    rs = max_delay + 1
    if n_nodes * 2 * rs >= 2**31:
        raise ValueError(f"numba backend: N={n_nodes} regions with delays of up to {max_delay} "
                         "steps exceed the kernels' 32-bit ring offsets; use "
                         "backend='torch-checkpoint'")
    lag = delays.detach().to(torch.int64).cpu()
    lag = lag.unsqueeze(0) if lag.dim() == 2 else lag
    lanes = padded_nodes(n_nodes)
    out = np.zeros((lag.shape[0], n_nodes, lanes), dtype=np.int64)
    row = (np.arange(n_nodes, dtype=np.int64) * 2 * rs)[None, :, None]
    if forward:
        out[:, :, :n_nodes] = rs - lag.transpose(-1, -2).numpy()
        out[:, :, n_nodes:] = rs
    else:
        out[:, :, :n_nodes] = lag.numpy()
    return np.ascontiguousarray((out + row).astype(np.int32))


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _check_dtype(*tensors):
    for t in tensors:
        if t.dtype not in _SUPPORTED:
            raise TypeError(f"numba backend: dtype {t.dtype} is not supported; use float32 or "
                            "float64")
        if t.device.type != "cpu":
            raise ValueError(f"numba backend: tensors must be on the CPU, got {t.device}")


def _check_size(n_nodes: int):
    limit = _kernels().MAX_NODES
    if n_nodes > limit:
        raise ValueError(
            f"numba backend: N={n_nodes} regions exceeds its limit of {limit} (the kernels keep a "
            "simulation's nodes in a fixed-stride workspace); use backend='torch-checkpoint' on "
            "the CPU or backend='triton' on a GPU")


def _seed_words(seed: int) -> tuple[np.uint64, np.uint64]:
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


class NumbaBackend(ScanBackend):
    """Fused forward and adjoint scan kernels compiled for the CPU with numba (see the module
    docstring for precision and threading)."""

    name = "numba"
    supports_delays = True

    def available(self) -> tuple[bool, str]:
        try:
            import numba  # noqa: F401
        except ImportError as err:
            return False, f"numba is not installed ({err}); pip install numba"
        return True, ""

    def supports(self, device: torch.device) -> tuple[bool, str]:
        device = torch.device(device)
        if device.type != "cpu":
            return False, (f"the numba backend runs on CPU tensors only, got device {device}; "
                           "use backend='triton' on CUDA or move the model to the CPU")
        return True, ""

    def segment_bytes(self, k: int, batch: int, n_nodes: int, itemsize: int,
                      max_delay: int = 0) -> int:
        """The adjoint's working set: per worker thread a tape of ``(k + 1, N_TAPE, NP)`` (two
        with the pipelined backward) and, with conduction delays, the S_E and adjoint history
        rings (each ``2 (D + 1) x NP``); it does not grow with the batch. Plus the float64
        gradient sums of every simulation, ``(17 + N, B, N)``."""
        lanes = padded_nodes(n_nodes)
        workers = min(batch, num_threads())
        tapes = 2 * workers * (k + 1) * _kernels().N_TAPE * lanes * itemsize
        rings = workers * 4 * (max_delay + 1) * lanes * itemsize if max_delay else 0
        return tapes + rings + (17 + n_nodes) * batch * n_nodes * 8

    def forward(self, params, coupling, state, spec: ScanSpec, checkpoint_every: int,
                delays=None) -> ForwardOutput:
        _check_dtype(params, coupling, state)
        _check_switches()
        k = _kernels()
        dtype = state.dtype
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        batch, n_nodes = state.shape[1], state.shape[2]
        _check_size(n_nodes)
        with torch.no_grad():
            coef = _as_numpy(coefficient_table(params.detach().double(), spec).to(dtype))
        ct = _padded_coupling(coupling, True, np_dtype)
        state0 = _as_numpy(state)
        n_seg = max(1, math.ceil(spec.n_steps / checkpoint_every))
        n_trs = spec.n_trs
        rec_slot = np.full(4, -1, dtype=np.int64)
        for slot, name in enumerate(spec.record):
            rec_slot[RECORDABLE.index(name)] = slot
        bold = torch.empty(batch, n_trs, n_nodes, dtype=dtype)
        rec = torch.empty(len(spec.record), batch, n_trs, n_nodes, dtype=dtype)
        rows = state.shape[0]                   # 6 + D
        ckpt = torch.empty(n_seg, rows, batch, n_nodes, dtype=dtype)
        final = torch.empty(rows, batch, n_nodes, dtype=dtype)
        first_bad = torch.empty(batch, dtype=torch.int64)
        key0, key1 = _seed_words(spec.seed)
        hc = _haemo_vector(spec)
        griffiths = int(spec.preset.code == 1)
        outs = (bold.numpy(), rec.numpy(), ckpt.numpy(), final.numpy(), first_bad.numpy())

        cp = None                               # (the delayed kernels read ct directly)
        if _delayed(spec, delays):
            off = _delay_offsets(delays, n_nodes, spec.max_delay, True)

            def run(sims):
                k.rww_fwd_delayed_kernel(sims, coef, ct, off, state0, hc, griffiths,
                                         spec.steps_per_tr, spec.n_steps, checkpoint_every,
                                         spec.t0, key0, key1, spec.sim_offset, rec_slot, *outs)
        else:
            cp = _coupling_operand(ct, coupling, np_dtype)

            def run(sims):
                k.rww_fwd_kernel(sims, coef, cp, state0, hc, griffiths, spec.steps_per_tr,
                                 spec.n_steps, checkpoint_every, spec.t0, key0, key1,
                                 spec.sim_offset, rec_slot, *outs)

        if cp is not None and _use_split(batch, cp, spec.n_steps):
            from . import split
            split.forward(cp, coef, state0, hc, griffiths, spec.steps_per_tr, spec.n_steps,
                          checkpoint_every, spec.t0, key0, key1, spec.sim_offset, rec_slot, *outs)
        else:
            n_tasks = min(batch, num_threads())
            _run_tasks(run, [np.arange(batch, dtype=np.int64)[i::n_tasks]
                             for i in range(n_tasks)])
        records = {name: rec[slot].clone() for slot, name in enumerate(spec.record)}
        return ForwardOutput(bold, records, final, ckpt, first_bad)

    def backward(self, params, coupling, checkpoints, spec: ScanSpec, checkpoint_every: int,
                 grad_bold, grad_records: dict, grad_state, need_coupling_grad: bool = True,
                 delays=None):
        _check_dtype(params, coupling, checkpoints)
        _check_switches()
        k = _kernels()
        dtype = checkpoints.dtype
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        batch, n_nodes = checkpoints.shape[2], checkpoints.shape[3]
        # Parameters -> coefficients and its vector-Jacobian product with torch.func (which,
        # unlike torch.autograd, also works inside the scan's custom op).
        coef64, coef_vjp = torch.func.vjp(lambda p: coefficient_table(p, spec),
                                          params.detach().double())
        coef = _as_numpy(coef64.detach().to(dtype))
        ct = _padded_coupling(coupling, True, np_dtype)
        cm = _padded_coupling(coupling, False, np_dtype)
        ckpt = _as_numpy(checkpoints)
        hc = _haemo_vector(spec)
        griffiths = int(spec.preset.code == 1)
        key0, key1 = _seed_words(spec.seed)

        names = [n for n in RECORDABLE if grad_records.get(n) is not None]
        grec_slot = np.full(4, -1, dtype=np.int64)
        for slot, name in enumerate(names):
            grec_slot[RECORDABLE.index(name)] = slot
        if names:
            grec = np.ascontiguousarray(np.stack([_as_numpy(grad_records[n].to(dtype))
                                                  for n in names]))
        else:
            grec = np.zeros((0, batch, spec.n_trs, n_nodes), dtype=np_dtype)
        gbold = _as_numpy(grad_bold.to(dtype))
        gstate = _as_numpy(grad_state.to(dtype))

        # The coupling gradient costs as much as the adjoint's own coupling product: skip it when
        # autograd will not use it (the scan returns no gradient for inputs that need none).
        want_gc = bool(need_coupling_grad)
        per_sim = coupling.dim() == 3
        if per_sim:
            gc_slot = np.arange(batch, dtype=np.int64)
        else:
            group = max(1, math.ceil(batch * n_nodes * n_nodes * 8 / COUPLING_PARTIALS_BYTES))
            gc_slot = np.arange(batch, dtype=np.int64) // group
        n_slots = int(gc_slot[-1]) + 1 if want_gc else 0
        g_coef = np.zeros((k.N_COEF, batch, n_nodes), dtype=np.float64)
        g_c = np.zeros((n_slots, n_nodes, n_nodes), dtype=np.float64)
        g_state0 = torch.empty(checkpoints.shape[1], batch, n_nodes, dtype=dtype)
        g_state0_np = g_state0.numpy()
        mismatch = np.zeros(batch, dtype=np.int64)

        delayed = _delayed(spec, delays)
        if delayed:
            off = _delay_offsets(delays, n_nodes, spec.max_delay, True)
            offa = _delay_offsets(delays, n_nodes, spec.max_delay, False)

            def run(sims):
                k.rww_bwd_delayed_kernel(sims, coef, ct, cm, off, offa, ckpt, hc, griffiths,
                                         spec.steps_per_tr, spec.n_steps, checkpoint_every,
                                         spec.t0, key0, key1, spec.sim_offset, gbold, grec,
                                         grec_slot, gstate, want_gc, gc_slot, g_coef, g_c,
                                         g_state0_np, mismatch)
        else:
            cp = _coupling_operand(ct, coupling, np_dtype)
            cpm = (cm,) + cp[1:]        # a packed triangle is C and C^T at once

            def run(sims):
                k.rww_bwd_kernel(sims, coef, cp, cpm, ckpt, hc, griffiths, spec.steps_per_tr,
                                 spec.n_steps, checkpoint_every, spec.t0, key0, key1,
                                 spec.sim_offset, gbold, grec,
                                 grec_slot, gstate, want_gc, gc_slot, g_coef, g_c, g_state0_np,
                                 mismatch)

        n_seg = checkpoints.shape[0]
        # (the two-thread pipeline exists for the kernels without delays only)
        if not delayed and _use_pipeline(batch, n_seg, checkpoint_every, n_nodes):
            _pipelined_backward(k, 0, coef, cp, cpm, ckpt, hc, griffiths, spec, checkpoint_every,
                                key0, key1, gbold, grec, grec_slot, gstate, want_gc, gc_slot,
                                g_coef, g_c, g_state0_np, mismatch)
        else:
            # Simulations that add into the same coupling partial run in one task, in order.
            if want_gc:
                tasks = [np.nonzero(gc_slot == s)[0].astype(np.int64) for s in range(n_slots)]
            else:
                tasks = [np.array([b], dtype=np.int64) for b in range(batch)]
            _run_tasks(run, tasks)
        global _LAST_MISMATCHES
        _LAST_MISMATCHES = int(mismatch.sum())
        if _LAST_MISMATCHES:
            warnings.warn(
                f"numba backend: {_LAST_MISMATCHES} state values recomputed in the "
                "backward pass differ from the forward's checkpoints; gradients are evaluated on "
                "a trajectory that differs by rounding. Please report this with the problem "
                "size and dtype.", RuntimeWarning, stacklevel=2)

        # dL/dcoefficient per (b, n) -> the table's (Bp, Np) broadcast shape -> parameters.
        g_coef *= _coefficient_signs(spec.dt)[:, None, None]
        bp, np_ = params.shape[1], params.shape[2]
        axes = tuple(ax for ax, keep in ((1, bp > 1), (2, np_ > 1)) if not keep)
        if axes:
            g_coef = g_coef.sum(axis=axes, keepdims=True)
        (grad_params,) = coef_vjp(torch.from_numpy(g_coef).expand(coef64.shape))
        grad_params = grad_params.to(params.dtype)
        if not want_gc:
            grad_coupling = torch.zeros_like(coupling)
        elif per_sim:
            grad_coupling = torch.from_numpy(g_c).to(coupling.dtype)
        else:
            grad_coupling = torch.from_numpy(g_c.sum(axis=0)).to(coupling.dtype)
        return grad_params, grad_coupling, g_state0


def _delayed(spec: ScanSpec, delays) -> bool:
    """Whether the scan runs the kernels with conduction delays (:mod:`rww.ops.numba.delayed`)."""
    if spec.max_delay > 0 and delays is None:
        raise ValueError(f"numba backend: spec.max_delay={spec.max_delay} needs the delays")
    return spec.max_delay > 0


# Backward of a single simulation on two threads (see _pipelined_backward), chosen by the
# environment variable RWW_NUMBA_PIPELINE: "off" (default), "auto" (B = 1, two worker threads
# allowed, and K * N >= PIPELINE_MIN_WORK: about 0.3 ms of work per segment against ~0.05 ms of
# Python per segment) or "on" (whenever B = 1, for tests). Results are identical either way.
# Off by default because it is only a gain with two otherwise idle cores, which the machines it
# was developed on never had: there (2 cores shared with other jobs; two independent
# recomputations in two threads took 2.0x the time of one, i.e. one free core) the pipelined
# backward of 10 s at N = 68 took 361-409 ms against 352 ms on one thread. With two idle cores
# the recomputation (~45-55% of the backward) overlaps the sweep, which should take the backward
# towards half its time.
PIPELINE = os.environ.get("RWW_NUMBA_PIPELINE", "off").strip().lower() or "off"
PIPELINE_MIN_WORK = 8192


def _use_pipeline(batch: int, n_seg: int, k_every: int, n_nodes: int) -> bool:
    if PIPELINE not in ("off", "auto", "on"):
        raise ValueError(f"RWW_NUMBA_PIPELINE must be off, auto or on, got {PIPELINE!r}")
    if PIPELINE == "off" or batch != 1 or n_seg < 2:
        return False
    if PIPELINE == "on":
        return True
    return num_threads() >= 2 and k_every * n_nodes >= PIPELINE_MIN_WORK


def _pipelined_backward(k, b, coef, cp, cpm, ckpt, hc, griffiths, spec, k_every, key0, key1, gbold,
                        grec, grec_slot, gstate, want_gc, gc_slot, g_coef, g_c, g_state0, mismatch):
    """The adjoint of simulation ``b`` as a two-stage pipeline: while this thread sweeps segment s
    back (from one tape), a worker recomputes segment s - 1 (into the other). The recomputation
    is about half of the backward's work, so with two free cores the backward takes about half
    as long; the kernels and every summation order are those of ``rww_bwd_kernel``, so the
    results are bitwise the same."""
    dtype = ckpt.dtype
    n_nodes, lanes = ckpt.shape[3], cp[0].shape[2]
    n_seg = ckpt.shape[0]
    ws = np.zeros(k.N_WROWS * k.LANES, dtype=dtype)
    wr = np.zeros(k.N_WROWS * k.LANES, dtype=dtype)
    tapes = [np.empty((k_every + 1, k.N_TAPE, lanes), dtype=dtype) for _ in range(2)]
    acc = np.zeros((k.N_COEF, lanes), dtype=np.float64)
    gacc = np.zeros((n_nodes if want_gc else 0, lanes), dtype=np.float64)
    k.rww_bwd_begin(b, coef, gstate, ws, wr, acc, gacc)

    def recompute(seg):
        return k.rww_bwd_recompute(b, seg, cp, ckpt, hc, griffiths, spec.n_steps, k_every,
                                   spec.t0, key0, key1, spec.sim_offset, wr, tapes[seg % 2])

    pool = _pool(1)
    n_mismatch = recompute(n_seg - 1)
    for seg in range(n_seg - 1, -1, -1):
        ahead = pool.submit(recompute, seg - 1) if seg > 0 else None
        try:
            k.rww_bwd_sweep(b, seg, cpm, hc, griffiths, spec.steps_per_tr, spec.n_steps, k_every,
                            gbold, grec, grec_slot, want_gc, ws, tapes[seg % 2], acc, gacc)
        finally:
            if ahead is not None:
                n_mismatch += ahead.result()
    mismatch[b] = n_mismatch
    k.rww_bwd_end(b, ws, acc, gacc, want_gc, gc_slot, g_coef, g_c, g_state0)


def warmup() -> float:
    """Compile (or load from numba's on-disk cache) every kernel variant: forward and adjoint,
    without and with conduction delays, float32 and float64. Returns the wall seconds it took
    (``rww info`` reports it). The two-thread forward of ``RWW_NODE_SPLIT=auto``
    (:mod:`rww.ops.numba.split`) is compiled on first use instead, once per layout of its
    outputs (a few seconds each)."""
    from ...model import initial_state
    from ...params import get_preset, pack_parameters, resolve_haemo

    global PIPELINE
    start = time.perf_counter()
    backend = NumbaBackend()
    preset = get_preset("deco2014")
    for dtype in _SUPPORTED:
        params = pack_parameters({}, preset, 1, 2, dtype)
        coupling = torch.full((2, 2), 0.5, dtype=dtype, requires_grad=True)
        state = initial_state(1, 2, dtype)
        spec = ScanSpec(preset, 0.1, 2, 4, haemo=resolve_haemo(preset, None),
                        record=RECORDABLE)
        lags = torch.tensor([[0, 2], [1, 0]], dtype=torch.int32)
        dspec = ScanSpec(preset, 0.1, 2, 4, haemo=spec.haemo, record=RECORDABLE, max_delay=2)
        dstate = initial_state(1, 2, dtype, max_delay=2)
        dout = backend.forward(params, coupling, dstate, dspec, 3, delays=lags)
        backend.backward(params, coupling, dout.checkpoints, dspec, 3, torch.ones_like(dout.bold),
                         {n: torch.ones_like(v) for n, v in dout.records.items()},
                         torch.ones_like(dout.state), delays=lags)
        out = backend.forward(params, coupling, state, spec, 3)
        saved = PIPELINE
        try:
            # the two-thread kernels only when they may be used (they take as long to compile)
            for PIPELINE in ("off",) if saved == "off" else ("off", "on"):
                backend.backward(params, coupling, out.checkpoints, spec, 3,
                                 torch.ones_like(out.bold),
                                 {n: torch.ones_like(v) for n, v in out.records.items()},
                                 torch.ones_like(out.state))
        finally:
            PIPELINE = saved
    return time.perf_counter() - start


__all__ = ["NumbaBackend", "coefficient_table", "last_recompute_mismatches", "num_threads", "warmup"]
