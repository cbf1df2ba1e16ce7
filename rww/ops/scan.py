"""The scan as one checkpointed op (``torch.ops.rww.scan`` and its gradient
``torch.ops.rww.scan_backward``, joined by :class:`RWWScanFunction`), and backend dispatch.

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

import functools
import importlib
import json
import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..noise import check_sim_offset
from .memory import choose_checkpoint_every, default_checkpoint_every
from .reference import ScanResult, raise_if_diverged, reference_scan, simulate_steps
from .spec import RECORDABLE, ScanSpec, validate_scan_inputs


@dataclass
class ForwardOutput:
    """What a backend's forward returns.

    Attributes:
        bold: ``(B, n_TR, N)``.
        records: name -> ``(B, n_TR, N)`` for the names in ``spec.record``.
        state: ``(6 + D, B, N)`` final state (D = ``spec.max_delay`` rows of S_E history).
        checkpoints: ``(n_segments, 6 + D, B, N)``, the state at local steps 0, K, 2K, ...
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

    def forward(self, params, coupling, state, spec: ScanSpec, checkpoint_every: int,
                delays=None) -> ForwardOutput:
        """``delays``: ``None``, or with ``spec.max_delay > 0`` the integer lags ``(N, N)`` or
        ``(B, N, N)`` (:func:`rww.ops.spec.validate_scan_inputs`)."""
        raise NotImplementedError

    def backward(self, params, coupling, checkpoints, spec: ScanSpec, checkpoint_every: int,
                 grad_bold, grad_records: dict, grad_state, need_coupling_grad: bool = True,
                 delays=None):
        """Returns ``(grad_params (P, Bp, Np), grad_coupling, grad_state0 (6 + D, B, N))``; a
        backend may skip dL/dcoupling (returning zeros) when ``need_coupling_grad`` is False.
        Runs inside a custom op, where torch.autograd records nothing: use torch.func there."""
        raise NotImplementedError

    def segment_bytes(self, k: int, batch: int, n_nodes: int, itemsize: int,
                      max_delay: int = 0) -> int:
        """Estimated bytes the backward holds for one segment of ``k`` steps (beyond the
        checkpoints), for :mod:`rww.ops.memory`. Default: an autograd graph of the reference
        step, about 60 saved floats per simulation, region and step (counted with
        ``torch.autograd.graph.saved_tensors_hooks``: 58.6); with conduction delays
        (``max_delay > 0``) each step also saves the gathered lagged S_E, ``B x N x N``."""
        per_step = 60 * n_nodes + (n_nodes * n_nodes if max_delay else 0)
        return k * batch * per_step * itemsize


class TorchCheckpointBackend(ScanBackend):
    """The reference equations run segment by segment: forward under ``no_grad`` keeping only
    checkpoints; backward recomputes each segment with autograd and back-propagates through it.
    Same numbers as the reference loop, memory O(B*N*(T/K + K))."""

    name = "torch-checkpoint"
    supports_delays = True

    def forward(self, params, coupling, state, spec, checkpoint_every, delays=None):
        spt = spec.steps_per_tr
        checkpoints, bold, rec, rate_sums = [], {}, {n: {} for n in ("S_E", "S_I")}, {}
        first_bad = None
        with torch.no_grad():
            current = state
            for start in range(0, max(spec.n_steps, 1), checkpoint_every):
                checkpoints.append(current)
                stop = min(start + checkpoint_every, spec.n_steps)
                seg = simulate_steps(params, coupling, current, spec, start, stop,
                                     delays=delays)
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
                 grad_bold, grad_records, grad_state, need_coupling_grad: bool = True,
                 delays=None):
        spt = spec.steps_per_tr
        params, coupling = params.detach(), coupling.detach()
        grad_params = torch.zeros_like(params)
        grad_coupling = torch.zeros_like(coupling)
        adjoint = grad_state                                  # dL/d(state at segment end)
        n_segments = checkpoints.shape[0]
        for seg_index in reversed(range(n_segments)):
            start = seg_index * checkpoint_every
            stop = min(start + checkpoint_every, spec.n_steps)

            def surrogate(params, coupling, state0, adjoint=adjoint, start=start, stop=stop):
                # <outputs of the segment, their upstream gradients>: its gradient is the
                # segment's vector-Jacobian product.
                seg = simulate_steps(params, coupling, state0, spec, start, stop,
                                     check_divergence=False, delays=delays)
                total = (torch.stack(seg.state) * adjoint).sum()
                for tr, s in seg.samples.items():
                    total = total + (s["bold"] * grad_bold[:, tr]).sum()
                    for name in ("S_E", "S_I"):
                        if name in grad_records:
                            total = total + (s[name] * grad_records[name][:, tr]).sum()
                for tr, (se, si) in seg.rate_sums.items():
                    for name, rate_sum in (("r_E", se), ("r_I", si)):
                        if name in grad_records:
                            total = total + (rate_sum * grad_records[name][:, tr]).sum() / spt
                return total

            # torch.func rather than torch.autograd: it also works inside the scan's custom op.
            g_p, g_c, g_s = torch.func.grad(surrogate, argnums=(0, 1, 2))(
                params, coupling, checkpoints[seg_index].detach())
            grad_params += g_p
            grad_coupling += g_c
            adjoint = g_s
        return grad_params, grad_coupling, adjoint


# ---------------------------------------------------------------------------------------------
# The scan as a registered custom op: torch.compile treats it as one opaque op (no tracing into
# the kernels), and torch.func transforms see its registered gradient. Non-tensor arguments
# travel as strings: the ScanSpec as JSON (parsed back, cached) and the backend as its name, or
# a key into _CUSTOM_BACKENDS for backend objects built with non-default settings.
# ---------------------------------------------------------------------------------------------

_CUSTOM_BACKENDS: dict[str, ScanBackend] = {}


def _spec_to_json(spec: ScanSpec) -> str:
    return json.dumps({"preset": spec.preset.name, "dt": spec.dt,
                       "steps_per_tr": spec.steps_per_tr, "n_steps": spec.n_steps,
                       "seed": spec.seed, "t0": spec.t0, "sim_offset": spec.sim_offset,
                       "haemo": spec.haemo, "record": list(spec.record),
                       "max_delay": spec.max_delay}, sort_keys=True)


@functools.lru_cache(maxsize=512)
def _spec_from_json(text: str) -> ScanSpec:
    from ..params import get_preset

    d = json.loads(text)
    return ScanSpec(get_preset(d["preset"]), d["dt"], d["steps_per_tr"], d["n_steps"],
                    seed=d["seed"], t0=d["t0"], sim_offset=d["sim_offset"], haemo=d["haemo"],
                    record=tuple(d["record"]), max_delay=d["max_delay"])


def _backend_key(backend: ScanBackend) -> str:
    """The op's name for ``backend``: its registry name when it is the shared instance of
    :func:`get_backend`, else a key to the object itself (kept alive for its backward)."""
    name = getattr(backend, "name", None)
    if name in _BACKEND_CLASSES and backend is _load_backend(name):
        return name
    key = f"{name}#{id(backend)}"
    _CUSTOM_BACKENDS[key] = backend
    return key


def _backend_from_key(key: str) -> ScanBackend:
    return _CUSTOM_BACKENDS[key] if "#" in key else _load_backend(key)


def _n_segments(n_steps: int, checkpoint_every: int) -> int:
    return max(1, math.ceil(n_steps / checkpoint_every))


@torch.library.custom_op("rww::scan", mutates_args=())
def _scan_op(params: torch.Tensor, coupling: torch.Tensor, state: torch.Tensor,
             delays: Optional[torch.Tensor], spec: str, backend: str, checkpoint_every: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(bold (B, T, N), final state (6 + D, B, N), checkpoints (S, 6 + D, B, N), first_bad (B,)
    int64, records (R, B, T, N))``; raises :class:`rww.errors.SimulationDiverged`."""
    scan_spec = _spec_from_json(spec)
    out = _backend_from_key(backend).forward(params, coupling, state, scan_spec, checkpoint_every,
                                             delays=delays)
    raise_if_diverged(out.first_bad)
    if out.checkpoints.shape[0] != _n_segments(scan_spec.n_steps, checkpoint_every):
        raise RuntimeError(f"backend {backend}: {out.checkpoints.shape[0]} checkpoints for "
                           f"{scan_spec.n_steps} steps at K = {checkpoint_every}")
    records = (torch.stack([out.records[name] for name in scan_spec.record]) if scan_spec.record
               else out.bold.new_zeros((0,) + tuple(out.bold.shape)))
    # Outputs must not alias inputs (a custom op's contract): the state of a 0-step scan is.
    final = out.state.clone() if out.state.data_ptr() == state.data_ptr() else out.state
    return (out.bold.contiguous(), final.contiguous(), out.checkpoints.contiguous(),
            out.first_bad.to(torch.int64), records.contiguous())


@_scan_op.register_fake
def _scan_op_fake(params, coupling, state, delays, spec, backend, checkpoint_every):
    scan_spec = _spec_from_json(spec)
    rows, batch, n_nodes = state.shape
    n_trs = scan_spec.n_trs
    return (state.new_empty(batch, n_trs, n_nodes), state.new_empty(rows, batch, n_nodes),
            state.new_empty(_n_segments(scan_spec.n_steps, checkpoint_every), rows, batch,
                            n_nodes),
            state.new_empty(batch, dtype=torch.int64),
            state.new_empty(len(scan_spec.record), batch, n_trs, n_nodes))


@torch.library.custom_op("rww::scan_backward", mutates_args=())
def _scan_backward_op(params: torch.Tensor, coupling: torch.Tensor, checkpoints: torch.Tensor,
                      grad_bold: torch.Tensor, grad_state: torch.Tensor,
                      grad_records: torch.Tensor, delays: Optional[torch.Tensor], spec: str,
                      backend: str, checkpoint_every: int, need_coupling_grad: bool
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dL/dparams, dL/dcoupling, dL/dstate0)`` by the backend's checkpointed adjoint."""
    scan_spec = _spec_from_json(spec)
    records = {name: grad_records[i].contiguous() for i, name in enumerate(scan_spec.record)}
    g_params, g_coupling, g_state = _backend_from_key(backend).backward(
        params, coupling, checkpoints, scan_spec, checkpoint_every, grad_bold.contiguous(),
        records, grad_state.contiguous(), need_coupling_grad=need_coupling_grad, delays=delays)
    return (g_params.to(params.dtype).contiguous(), g_coupling.to(coupling.dtype).contiguous(),
            g_state.to(checkpoints.dtype).contiguous())


@_scan_backward_op.register_fake
def _scan_backward_op_fake(params, coupling, checkpoints, grad_bold, grad_state, grad_records,
                           delays, spec, backend, checkpoint_every, need_coupling_grad):
    return torch.empty_like(params), torch.empty_like(coupling), torch.empty_like(grad_state)


VMAP_MESSAGE = (
    "torch.vmap over the RWW scan is not supported: the scan is already batched. Give each "
    "simulation its own parameters instead (values of shape (B,) or (B, N), or a (B, N, N) "
    "connectome) with RWWBold(batch=B), or rww_scan with a (P, B, N) parameter table")


def raise_if_vmapped(*tensors):
    """Raise the vmap advice when called under ``torch.vmap`` (batched tensors among
    ``tensors``), before data-dependent checks would fail with torch's generic message."""
    is_batched = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", None)
    if is_batched is not None and any(torch.is_tensor(t) and is_batched(t) for t in tensors):
        raise ValueError(VMAP_MESSAGE)


class _NoSecondDerivative(torch.autograd.Function):
    """Identity on the scan's gradients whose own backward raises (see RWWScanFunction)."""

    @staticmethod
    def forward(g_params, g_coupling, g_state, params, coupling):
        return g_params.clone(), g_coupling.clone(), g_state.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "second derivatives through the RWW scan are not supported (the checkpointed "
            "scan's adjoint is not differentiable). Use backend='torch' (the plain loop, "
            "differentiable to any order, slow), or finite differences of first derivatives")


class RWWScanFunction(torch.autograd.Function):
    """The checkpointed scan: forward ``torch.ops.rww.scan``, backward
    ``torch.ops.rww.scan_backward``, both opaque custom ops (torch.compile does not trace into
    the kernels), joined by this Function (whose ``setup_context`` form torch.func supports).

    ``apply(params (P, Bp, Np), coupling, state (6 + D, B, N), spec, backend, checkpoint_every,
    delays)`` returns ``bold (B, n_TR, N)``, ``state (6 + D, B, N)``, then one ``(B, n_TR, N)`` tensor per
    recorded name in ``spec.record`` order. ``backend`` is a :class:`ScanBackend` object.
    """

    @staticmethod
    def forward(params, coupling, state, spec: ScanSpec, backend: ScanBackend,
                checkpoint_every: int, delays=None):
        bold, final, checkpoints, _, records = _scan_op(
            params, coupling, state, delays, _spec_to_json(spec), _backend_key(backend),
            int(checkpoint_every))
        return bold, final, checkpoints, records

    @staticmethod
    def setup_context(ctx, inputs, output):
        params, coupling, _, spec, backend, checkpoint_every, delays = inputs
        checkpoints = output[2]
        ctx.save_for_backward(params, coupling, checkpoints)
        ctx.delays = delays
        ctx.spec, ctx.backend = _spec_to_json(spec), _backend_key(backend)
        ctx.checkpoint_every = int(checkpoint_every)
        ctx.mark_non_differentiable(checkpoints)

    @staticmethod
    def backward(ctx, grad_bold, grad_state, grad_checkpoints, grad_records):
        params, coupling, checkpoints = ctx.saved_tensors
        shape = checkpoints.shape[1:]
        spec = _spec_from_json(ctx.spec)
        bold_shape = (shape[1], spec.n_trs, shape[2])
        grad_bold = checkpoints.new_zeros(bold_shape) if grad_bold is None else grad_bold
        grad_state = checkpoints.new_zeros(shape) if grad_state is None else grad_state
        if grad_records is None:
            grad_records = checkpoints.new_zeros((len(spec.record),) + bold_shape)
        # Detached: the adjoint op is not differentiated (see below), and attached inputs would
        # make torch wrap it in an autograd node that torch.func cannot run.
        g_params, g_coupling, g_state = _scan_backward_op(
            params.detach(), coupling.detach(), checkpoints.detach(), grad_bold.detach(),
            grad_state.detach(), grad_records.detach(), ctx.delays, ctx.spec, ctx.backend,
            ctx.checkpoint_every, bool(ctx.needs_input_grad[1]))
        if torch.is_grad_enabled():
            # create_graph=True (or a torch.func transform): the adjoint is not itself
            # differentiable, so the gradients are tied to the inputs through a node that
            # raises if a second derivative reaches it, instead of being treated as constants
            # (which would silently drop the scan's part of a second derivative).
            g_params, g_coupling, g_state = _NoSecondDerivative.apply(
                g_params, g_coupling, g_state, params, coupling)
        return g_params, g_coupling, g_state, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, *args):
        raise ValueError(VMAP_MESSAGE)

    @staticmethod
    def run(params, coupling, state, spec: ScanSpec, backend: ScanBackend,
            checkpoint_every: int, delays=None):
        """The scan's outputs ``(bold, final state, *records)`` (the public entry point)."""
        bold, final, _, records = RWWScanFunction.apply(params, coupling, state, spec, backend,
                                                        checkpoint_every, delays)
        return (bold, final) + tuple(records.unbind(0))


_EAGER_REFERENCE = []


def _reference_scan_eager(*args):
    """reference_scan behind torch.compiler.disable, wrapped on first use: wrapping imports
    torch._dynamo, which imports triton, and ``import rww`` must not."""
    if not _EAGER_REFERENCE:
        _EAGER_REFERENCE.append(torch.compiler.disable(reference_scan))
    return _EAGER_REFERENCE[0](*args)

_BACKEND_CLASSES = {
    "torch-checkpoint": ("rww.ops.scan", "TorchCheckpointBackend"),
    "numba": ("rww.ops.numba.backend", "NumbaBackend"),
    "triton": ("rww.ops.triton.backend", "TritonBackend"),
}
BACKENDS = ("auto", "torch") + tuple(_BACKEND_CLASSES)


_INSTANCES: dict[str, ScanBackend] = {}


def _load_backend(name: str) -> ScanBackend:
    """The shared instance of a named backend (imported on first use). A plain dict rather than
    functools.cache, which torch.compile warns about when it traces the call."""
    if name not in _INSTANCES:
        module_name, class_name = _BACKEND_CLASSES[name]
        module = importlib.import_module(module_name)
        _INSTANCES[name] = getattr(module, class_name)()
    return _INSTANCES[name]


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
             backend: str = "auto", checkpoint_every: int | None = None,
             delays: torch.Tensor | None = None) -> ScanResult:
    """Simulate B coupled RWW + Balloon networks for ``spec.n_steps`` steps.

    Args:
        params: ``(P, Bp, Np)`` parameter table from :func:`rww.params.pack_parameters`
            (``P = len(PARAM_NAMES)``, ``Bp`` in {1, B}, ``Np`` in {1, N}).
        coupling: ``(N, N)`` shared or ``(B, N, N)`` per-simulation effective coupling matrix
            (for griffiths2022, the Laplacian from :func:`rww.coupling.griffiths_laplacian`).
        state: ``(6 + D, B, N)`` initial state ``(S_E, S_I, x, f - 1, v - 1, q - 1)``
            (:data:`rww.ops.spec.STATE_NAMES`: the Balloon as deviations from rest), then with
            conduction delays (``D = spec.max_delay > 0``) S_E 1, 2, ..., D steps back.
        spec: :class:`ScanSpec` (preset, dt, steps per TR, steps, seed, t0, haemo, record).
        backend: ``"auto"`` (see :func:`auto_backend_name`), ``"torch"`` (plain loop, autograd
            stores every step), ``"torch-checkpoint"`` (same equations, checkpointed: memory
            O(B*N*(T/K + K))), ``"numba"`` (compiled CPU kernels) or ``"triton"`` (GPU kernels;
            CPU tensors only under ``TRITON_INTERPRET=1``).
        checkpoint_every: K, steps per checkpoint segment (default ceil(sqrt(n_steps)) when a
            gradient may be needed; without one (``torch.no_grad()`` or no input requiring
            grad) a single segment, so a forward-only run stores no checkpoints).
        delays: with ``spec.max_delay > 0``, integer lags [steps] ``(N, N)`` or ``(B, N, N)``
            (row: receiving region; :func:`rww.delays.delay_steps`); the coupling input to
            region i is then ``sum_j C_ij S_E,j(t - delays_ij)``. Not differentiable (integer
            steps); gradients reach the initial S_E history through ``state``.

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
    raise_if_vmapped(params, coupling, state)
    batch, _ = validate_scan_inputs(params, coupling, state, spec.max_delay, delays)
    check_sim_offset(spec.sim_offset, batch)
    impl = get_backend(backend, state.device)
    if impl is None:
        # The plain loop runs eagerly under torch.compile: tracing thousands of steps would take
        # minutes and gain nothing (it is the correctness reference, not the fast path).
        return _reference_scan_eager(params, coupling, state, spec, True, delays)
    if delays is not None and not getattr(impl, "supports_delays", False):
        raise ValueError(f"backend {impl.name!r} does not simulate conduction delays yet; use "
                         "backend='torch-checkpoint' (or 'torch') for a model with delays")
    if checkpoint_every is not None:
        k = checkpoint_every
    elif torch.is_grad_enabled() and any(t.requires_grad for t in (params, coupling, state)):
        # sqrt(T), or the interval that fits the memory budget (rww.ops.memory).
        k = choose_checkpoint_every(impl, spec.n_steps, batch, state.shape[2],
                                    state.element_size(), state.device,
                                    state_rows=state.shape[0])
    else:
        k = max(1, spec.n_steps)        # no backward will come: keep only the initial state
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"checkpoint_every: must be a positive integer, got {k!r}")
    outputs = RWWScanFunction.run(params, coupling, state, spec, impl, k,
                                  None if delays is None else delays.to(torch.int32))
    bold, final = outputs[0], outputs[1]
    return ScanResult(bold=bold, state=final, records=dict(zip(spec.record, outputs[2:])))


__all__ = ["rww_scan", "RWWScanFunction", "ScanBackend", "ForwardOutput", "TorchCheckpointBackend",
           "default_checkpoint_every", "get_backend", "auto_backend_name", "backend_available",
           "BACKENDS", "RECORDABLE"]
