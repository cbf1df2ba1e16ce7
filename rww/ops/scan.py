"""The scan as one checkpointed ``torch.autograd.Function``, and backend dispatch.

Chain of names, from the kernels up: kernel launchers (:mod:`rww.ops.triton`,
:mod:`rww.ops.numba`) -> a :class:`ScanBackend` -> :class:`RWWScanFunction` -> :func:`rww_scan`
-> :class:`rww.RWWBold`. :mod:`rww.ops.reference` is the plain loop every backend is tested
against.

A backend implements two operations:

- ``forward``: simulate the whole scan, returning BOLD, the recorded quantities, the final state,
  and the full state at every checkpoint (every ``checkpoint_every`` steps, the first being the
  initial state), plus the first diverged step of every simulation;
- ``backward``: for each segment from last to first, recompute it from its checkpoint (noise
  regenerated, never stored) and sweep the adjoint through it, injecting the upstream gradients of
  BOLD and records, and return the gradients of the parameter table, the coupling and the initial
  state.

The Function saves only the inputs and the checkpoints: O(B*N*T/K) floats, plus O(B*N*K) while a
segment is recomputed in backward.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch

from ..noise import check_sim_offset
from .memory import choose_checkpoint_every
from .reference import ScanResult, raise_if_diverged, reference_scan, simulate_steps
from .spec import RECORDABLE, ScanSpec, validate_scan_inputs


def default_checkpoint_every(n_steps: int) -> int:
    """Checkpoint interval K minimising O(T/K + K) memory: ceil(sqrt(T)), at least 1."""
    return max(1, math.ceil(math.sqrt(max(n_steps, 1))))


@dataclass
class ForwardOutput:
    """What a backend's forward returns.

    Attributes:
        bold: ``(B, n_TR, N)``.
        records: name -> ``(B, n_TR, N)`` for the names in ``spec.record``.
        state: ``(6, B, N)`` final state.
        checkpoints: ``(n_segments, 6, B, N)``, the state at local steps 0, K, 2K, ...
        first_bad: ``(B,)`` int64, the global step of the first diverged step or -1.
    """

    bold: torch.Tensor
    records: dict
    state: torch.Tensor
    checkpoints: torch.Tensor
    first_bad: torch.Tensor


class ScanBackend:
    """Interface of a checkpointed scan backend (see the module docstring)."""

    name = "abstract"

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when the backend can run here, else ``(False, reason)``."""
        return True, ""

    def supports(self, device: torch.device) -> tuple[bool, str]:
        """Whether tensors on ``device`` can be simulated, and if not why."""
        return True, ""

    def forward(self, params, coupling, state, spec: ScanSpec, checkpoint_every: int) -> ForwardOutput:
        raise NotImplementedError

    def backward(self, params, coupling, checkpoints, spec: ScanSpec, checkpoint_every: int,
                 grad_bold, grad_records: dict, grad_state):
        """Returns ``(grad_params (P, Bp, Np), grad_coupling, grad_state0 (6, B, N))``."""
        raise NotImplementedError

    def segment_bytes(self, k: int, batch: int, n_nodes: int, itemsize: int) -> int:
        """Estimated bytes the backward holds for one segment of ``k`` steps (beyond the
        checkpoints), for :mod:`rww.ops.memory`. Default: an autograd graph of the reference
        step, about 60 saved floats per simulation, region and step (counted with
        ``torch.autograd.graph.saved_tensors_hooks``: 58.6)."""
        return 60 * k * batch * n_nodes * itemsize


class TorchCheckpointBackend(ScanBackend):
    """The reference equations run segment by segment: forward under ``no_grad`` keeping only
    checkpoints; backward recomputes each segment with autograd and back-propagates through it.
    Same numbers as the reference loop, memory O(B*N*(T/K + K))."""

    name = "torch-checkpoint"

    def forward(self, params, coupling, state, spec, checkpoint_every):
        spt = spec.steps_per_tr
        checkpoints, bold, rec, rate_sums = [], {}, {n: {} for n in ("S_E", "S_I")}, {}
        first_bad = None
        with torch.no_grad():
            current = state
            for start in range(0, max(spec.n_steps, 1), checkpoint_every):
                checkpoints.append(current)
                stop = min(start + checkpoint_every, spec.n_steps)
                seg = simulate_steps(params, coupling, current, spec, start, stop)
                current = torch.stack(seg.state)
                first_bad = seg.first_bad if first_bad is None else torch.where(
                    first_bad < 0, seg.first_bad, first_bad)
                for tr, s in seg.samples.items():
                    bold[tr] = s["bold"]
                    rec["S_E"][tr], rec["S_I"][tr] = s["S_E"], s["S_I"]
                for tr, (se, si) in seg.rate_sums.items():
                    old = rate_sums.get(tr, (0.0, 0.0))
                    rate_sums[tr] = (old[0] + se, old[1] + si)
        batch, n_nodes = state.shape[1:]
        empty = state.new_zeros(batch, 0, n_nodes)

        def stack(d):
            return torch.stack([d[tr] for tr in range(spec.n_trs)], 1) if spec.n_trs else empty

        records = {}
        for name in spec.record:
            if name in ("r_E", "r_I"):
                which = 0 if name == "r_E" else 1
                records[name] = stack({tr: v[which] / spt for tr, v in rate_sums.items()})
            else:
                records[name] = stack(rec[name])
        return ForwardOutput(stack(bold), records, current, torch.stack(checkpoints), first_bad)

    def backward(self, params, coupling, checkpoints, spec, checkpoint_every,
                 grad_bold, grad_records, grad_state):
        spt = spec.steps_per_tr
        params = params.detach().requires_grad_(True)
        coupling = coupling.detach().requires_grad_(True)
        grad_params = torch.zeros_like(params)
        grad_coupling = torch.zeros_like(coupling)
        adjoint = grad_state                                  # dL/d(state at segment end)
        n_segments = checkpoints.shape[0]
        for seg_index in reversed(range(n_segments)):
            start = seg_index * checkpoint_every
            stop = min(start + checkpoint_every, spec.n_steps)
            with torch.enable_grad():
                state0 = checkpoints[seg_index].detach().requires_grad_(True)
                seg = simulate_steps(params, coupling, state0, spec, start, stop,
                                     check_divergence=False)
                surrogate = (torch.stack(seg.state) * adjoint).sum()
                for tr, s in seg.samples.items():
                    surrogate = surrogate + (s["bold"] * grad_bold[:, tr]).sum()
                    for name in ("S_E", "S_I"):
                        if name in grad_records:
                            surrogate = surrogate + (s[name] * grad_records[name][:, tr]).sum()
                for tr, (se, si) in seg.rate_sums.items():
                    for name, total in (("r_E", se), ("r_I", si)):
                        if name in grad_records:
                            surrogate = surrogate + (total * grad_records[name][:, tr]).sum() / spt
                g_p, g_c, g_s = torch.autograd.grad(surrogate, (params, coupling, state0),
                                                    allow_unused=True)
            grad_params += g_p if g_p is not None else 0.0
            grad_coupling += g_c if g_c is not None else 0.0
            adjoint = g_s if g_s is not None else torch.zeros_like(state0)
        return grad_params, grad_coupling, adjoint


class RWWScanFunction(torch.autograd.Function):
    """Checkpointed scan. Inputs: ``params (P, Bp, Np)``, ``coupling``, ``state (6, B, N)``;
    outputs: ``bold (B, n_TR, N)``, ``state (6, B, N)``, then one ``(B, n_TR, N)`` tensor per
    recorded name in ``spec.record`` order."""

    @staticmethod
    def forward(ctx, params, coupling, state, spec, backend, checkpoint_every):
        out = backend.forward(params, coupling, state, spec, checkpoint_every)
        raise_if_diverged(out.first_bad)
        ctx.save_for_backward(params, coupling, out.checkpoints)
        ctx.spec, ctx.backend, ctx.checkpoint_every = spec, backend, checkpoint_every
        ctx.state_shape = state.shape
        return (out.bold, out.state) + tuple(out.records[name] for name in spec.record)

    @staticmethod
    def backward(ctx, grad_bold, grad_state, *grad_recs):
        # The backends' adjoints are not themselves differentiable. Grad mode is on here only
        # under create_graph=True; refuse then, rather than return gradients that a second
        # derivative would treat as constants (torch's once_differentiable raises only when the
        # graph is walked past it, so torch.autograd.grad(..., inputs) would silently drop the
        # scan's part of a second derivative).
        if torch.is_grad_enabled():
            raise RuntimeError(
                "second derivatives through the RWW scan are not supported (the checkpointed "
                "scan's backward is not differentiable): this backward was called with "
                "create_graph=True. Use backend='torch' (the plain loop, differentiable to any "
                "order, slow), or finite differences of first derivatives")
        params, coupling, checkpoints = ctx.saved_tensors
        spec = ctx.spec
        batch, n_nodes = ctx.state_shape[1:]
        zeros = params.new_zeros(batch, spec.n_trs, n_nodes)
        grad_bold = zeros if grad_bold is None else grad_bold.contiguous()
        grad_state = params.new_zeros(ctx.state_shape) if grad_state is None else grad_state.contiguous()
        grad_records = {name: g.contiguous() for name, g in zip(spec.record, grad_recs)
                        if g is not None}
        g_params, g_coupling, g_state = ctx.backend.backward(
            params, coupling, checkpoints, spec, ctx.checkpoint_every,
            grad_bold, grad_records, grad_state)
        return (g_params if ctx.needs_input_grad[0] else None,
                g_coupling if ctx.needs_input_grad[1] else None,
                g_state if ctx.needs_input_grad[2] else None, None, None, None)


# Backends by name: the plain loop ("torch", None here), and checkpointed implementations of
# ScanBackend, imported lazily so that a missing optional dependency only disables its backend.
_BACKEND_CLASSES = {
    "torch-checkpoint": ("rww.ops.scan", "TorchCheckpointBackend"),
    "numba": ("rww.ops.numba.backend", "NumbaBackend"),
    "triton": ("rww.ops.triton.backend", "TritonBackend"),
}
BACKENDS = ("auto", "torch") + tuple(_BACKEND_CLASSES)


def _load_backend(name: str) -> ScanBackend:
    module_name, class_name = _BACKEND_CLASSES[name]
    module = importlib.import_module(module_name)
    return getattr(module, class_name)()


def backend_available(name: str) -> tuple[bool, str]:
    """``(available, reason)`` for a backend name (the reason says what is missing)."""
    if name == "torch":
        return True, ""
    if name not in _BACKEND_CLASSES:
        return False, f"unknown backend {name!r}"
    try:
        backend = _load_backend(name)
    except ImportError as err:
        return False, f"{name} backend unavailable: {err}"
    return backend.available()


def get_backend(name: str, device: torch.device) -> ScanBackend | None:
    """The backend object for ``name`` on ``device``; ``None`` means the plain reference loop."""
    if name == "auto":
        name = auto_backend_name(device)
    if name == "torch":
        return None
    if name not in _BACKEND_CLASSES:
        raise ValueError(f"backend: unknown backend {name!r}; choose one of {BACKENDS}")
    try:
        backend = _load_backend(name)
    except ImportError as err:
        raise RuntimeError(f"backend {name!r} cannot be used: {err}") from err
    ok, why = backend.supports(torch.device(device))
    if not ok:
        raise ValueError(f"backend {name!r}: {why}")
    return backend


def auto_backend_name(device) -> str:
    """The backend ``"auto"`` picks for tensors on ``device``: Triton on CUDA, the compiled CPU
    backend on CPU when numba is installed, otherwise the plain reference loop."""
    device = torch.device(device)
    candidates = ("triton",) if device.type == "cuda" else ("numba",)
    for name in candidates:
        try:
            backend = _load_backend(name)
        except ImportError:
            continue
        if backend.available()[0] and backend.supports(device)[0]:
            return name
    return "torch"


def rww_scan(params: torch.Tensor, coupling: torch.Tensor, state: torch.Tensor, spec: ScanSpec,
             backend: str = "auto", checkpoint_every: int | None = None) -> ScanResult:
    """Simulate B coupled RWW + Balloon networks for ``spec.n_steps`` steps.

    Args:
        params: ``(P, Bp, Np)`` parameter table from :func:`rww.params.pack_parameters`
            (``P = len(PARAM_NAMES)``, ``Bp`` in {1, B}, ``Np`` in {1, N}).
        coupling: ``(N, N)`` shared or ``(B, N, N)`` per-simulation effective coupling matrix
            (for griffiths2022, the Laplacian from :func:`rww.coupling.griffiths_laplacian`).
        state: ``(6, B, N)`` initial state ``(S_E, S_I, x, f, v, q)``.
        spec: :class:`ScanSpec` (preset, dt, steps per TR, steps, seed, t0, haemo, record).
        backend: ``"auto"`` (see :func:`auto_backend_name`), ``"torch"`` (plain loop, autograd
            stores every step), ``"torch-checkpoint"`` (same equations, checkpointed: memory
            O(B*N*(T/K + K))), ``"numba"`` (compiled CPU kernels) or ``"triton"`` (GPU kernels;
            CPU tensors only under ``TRITON_INTERPRET=1``).
        checkpoint_every: K, steps per checkpoint segment (default ceil(sqrt(n_steps)) when a
            gradient may be needed; without one (``torch.no_grad()`` or no input requiring
            grad) a single segment, so a forward-only run stores no checkpoints).

    Returns:
        :class:`rww.ops.reference.ScanResult` with ``bold (B, n_TR, N)``, ``state (6, B, N)`` and
        ``records`` name -> ``(B, n_TR, N)``. Differentiable with respect to ``params``,
        ``coupling`` and ``state``.

    Raises:
        rww.errors.SimulationDiverged: a simulation produced a non-finite or invalid state.

    Example:
        >>> from rww.params import get_preset, pack_parameters, resolve_haemo
        >>> preset = get_preset("deco2014")
        >>> spec = ScanSpec(preset, dt=0.1, steps_per_tr=7200, n_steps=14400,
        ...                 haemo=resolve_haemo(preset, None))
    """
    batch, _ = validate_scan_inputs(params, coupling, state)
    check_sim_offset(spec.sim_offset, batch)
    impl = get_backend(backend, state.device)
    if impl is None:
        return reference_scan(params, coupling, state, spec)
    if checkpoint_every is not None:
        k = checkpoint_every
    elif torch.is_grad_enabled() and any(t.requires_grad for t in (params, coupling, state)):
        # sqrt(T), or the interval that fits the memory budget (rww.ops.memory).
        k = choose_checkpoint_every(impl, spec.n_steps, batch, state.shape[2],
                                    state.element_size(), state.device)
    else:
        k = max(1, spec.n_steps)        # no backward will come: keep only the initial state
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"checkpoint_every: must be a positive integer, got {k!r}")
    outputs = RWWScanFunction.apply(params, coupling, state, spec, impl, k)
    bold, final = outputs[0], outputs[1]
    return ScanResult(bold=bold, state=final, records=dict(zip(spec.record, outputs[2:])))


__all__ = ["rww_scan", "RWWScanFunction", "ScanBackend", "ForwardOutput", "TorchCheckpointBackend",
           "default_checkpoint_every", "get_backend", "auto_backend_name", "backend_available",
           "BACKENDS", "RECORDABLE"]
