"""The reference scan: a plain PyTorch loop over steps, differentiated by autograd.

This is the ground truth the fused backends are tested against. It is written for clarity, not
speed: one Euler-Maruyama step of the coupled RWW + Balloon system per loop iteration, every state
updated from the previous one (fully explicit), noise generated per TR by the Philox contract.
It works in float32 and float64, on CPU and CUDA tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import SimulationDiverged
from ..noise import check_sim_offset, state_noise
from ..params import PARAM_INDEX
from .spec import ScanSpec, validate_scan_inputs

# |d*y| below this uses the series of y / (1 - exp(-d*y)) = (1/d) * z/(1 - exp(-z)), z = d*y:
# 1 + z/2 + z**2/12 - z**4/720 + z**6/30240. Its relative truncation error is ~z**8/1.2e6 and
# that of its derivative ~z**7/6e5 (< 2e-12 at z = 0.1, so exact enough for float64 too); the
# exact form's derivative loses ~eps/z to cancellation (6e-7 in float32 at z = 0.1). So both
# branches are accurate at the switch, and value and derivative are continuous there.
H_SERIES_THRESHOLD = 0.1


def transfer_deco(current: torch.Tensor, a, b, d) -> torch.Tensor:
    """Firing rate ``H(I) = y / (1 - exp(-d y))``, ``y = a I - b`` [Hz], guarded near y = 0.

    Args:
        current: input current I [nA], any shape.
        a [1/nC], b [Hz], d [s]: broadcastable to ``current``.
    """
    y = a * current - b
    z = d * y
    small = z.abs() < H_SERIES_THRESHOLD
    z_safe = torch.where(small, torch.ones_like(z), z)    # keeps the unused branch finite
    exact = y / -torch.expm1(-z_safe)
    z2 = z * z
    series = (1.0 + 0.5 * z + z2 * (1.0 / 12.0 + z2 * (-1.0 / 720.0 + z2 * (1.0 / 30240.0)))) / d
    return torch.where(small, series, exact)


# Taylor coefficients (-1)^n (n-1)/n!, n = 2..16, of phi(z) = 1 - exp(-z) (1 + z) (the numba
# kernels' phi uses them too).
PHI_SERIES = tuple((-1) ** n * (n - 1) / math.factorial(n) for n in range(2, 17))


def phi(z: torch.Tensor) -> torch.Tensor:
    """``1 - exp(-z) (1 + z)`` without cancellation: the Taylor series for |z| < 0.5
    (truncation < 1e-17 relative), the direct form beyond. Both transfer functions' slopes
    reduce to it; the fused kernels use the same function."""
    small = z.abs() < 0.5
    zs = torch.where(small, z, torch.zeros_like(z))
    series = torch.full_like(zs, PHI_SERIES[-1])
    for c in reversed(PHI_SERIES[:-1]):
        series = series * zs + c
    return torch.where(small, zs * zs * series, 1.0 - torch.exp(-z) * (1.0 + z))


class _GriffithsRate(torch.autograd.Function):
    """``H(y; d) = (1e-5 + |y|) / (1e-5 d + |w|)``, ``w = -expm1(-d y)``, with its slopes
    written to avoid cancellation. Autograd's own slope of this formula is the difference of two
    terms ~1/(1e-5 d + |d y|) that cancel near y = 0 (float32 slopes off by factors up to 1e6
    at |y| ~ 1e-12..1e-5; float64 by ~1e-8); the same derivative is
    ``dH/dy = (1e-5 d |w| + phi(d y)) / D^2`` for either sign of y (0 at y = 0, as torch's
    sign(0) = 0 gives) and ``dH/dd = -(H / D) (1e-5 + sign(w) y exp(-d y))``. The backward is
    written in differentiable torch operations, so second derivatives work (for d > 0)."""

    @staticmethod
    def forward(y, d):
        w = -torch.expm1(-d * y)
        return (1e-5 + y.abs()) / (1e-5 * d + w.abs())

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        y, d = ctx.saved_tensors
        z = d * y
        e = torch.exp(-z)
        w = -torch.expm1(-z)
        den = 1e-5 * d + w.abs()
        rate = (1e-5 + y.abs()) / den
        d_y = (1e-5 * d * w.abs() + phi(z)) / den / den
        d_d = -(rate / den) * (1e-5 + torch.sign(w) * y * e)
        g_y = grad * d_y if ctx.needs_input_grad[0] else None
        g_d = _sum_to(grad * d_d, d.shape) if ctx.needs_input_grad[1] else None
        return g_y, g_d


def _sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape``."""
    while t.dim() > len(shape):
        t = t.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and t.shape[i] != 1:
            t = t.sum(i, keepdim=True)
    return t


def transfer_griffiths(current: torch.Tensor, a, b, d) -> torch.Tensor:
    """The paper code's guarded rate ``(1e-5 + |y|) / (1e-5 d + |1 - exp(-d y)|)``, ``y = a I -
    b`` [Hz], with ``1 - exp(-d y)`` as ``-expm1(-d y)`` and slopes free of cancellation
    (:class:`_GriffithsRate`; same function, accurate near y = 0)."""
    y = a * current - b
    return _GriffithsRate.apply(y, torch.as_tensor(d, dtype=y.dtype, device=y.device))


def couple(coupling: torch.Tensor, s_e: torch.Tensor) -> torch.Tensor:
    """``C @ S_E`` per simulation: coupling ``(N, N)`` or ``(B, N, N)``, s_e ``(B, N)`` -> ``(B, N)``."""
    if coupling.dim() == 2:
        return s_e @ coupling.T
    return torch.bmm(coupling, s_e.unsqueeze(-1)).squeeze(-1)


def delay_gather_index(delays: torch.Tensor, batch: int, n_nodes: int) -> torch.Tensor:
    """``(B, N, N)`` int64 indices into the flattened ``(D + 1, B, N)`` stack of S_E now and in
    the past (:func:`couple_delayed`): element ``(b, i, j)`` points at S_E of region j,
    ``delays[b, i, j]`` steps back, in simulation b."""
    lag = delays.to(torch.int64).expand(batch, n_nodes, n_nodes)
    b = torch.arange(batch, device=delays.device).view(batch, 1, 1)
    j = torch.arange(n_nodes, device=delays.device).view(1, 1, n_nodes)
    return (lag * batch + b) * n_nodes + j


def couple_delayed(coupling: torch.Tensor, s_e: torch.Tensor, history: tuple,
                   index: torch.Tensor) -> torch.Tensor:
    """Delayed coupling ``sum_j C_ij S_E,j(t - lag_ij)`` per simulation, ``(B, N)``.

    Args:
        coupling: ``(N, N)`` or ``(B, N, N)``.
        s_e: ``(B, N)`` S_E now (lag 0).
        history: D tensors ``(B, N)``, S_E 1, 2, ..., D steps back.
        index: :func:`delay_gather_index` of the lags.
    """
    past = torch.stack((s_e,) + tuple(history)).reshape(-1)
    return (coupling * past[index]).sum(-1)


def balloon_derivatives(s_e, x, f_dev, v_dev, q_dev, haemo: dict):
    """Right-hand sides of the Balloon-Windkessel equations (time in seconds), on the state held
    as deviations from rest: ``f_dev = f - 1``, ``v_dev = v - 1``, ``q_dev = q - 1`` (each
    ``(B, N)``).

    The equations (Friston et al. 2000, "Nonlinear responses in fMRI: the Balloon model, Volterra
    kernels and other hemodynamics", NeuroImage 12:466; the constants' meaning per model in
    :data:`rww.params.HAEMO_MODELS`)::

        dx/dt = S_E - kappa x - gamma (f - 1)
        df/dt = x
        dv/dt = (f - v**(1/alpha)) / tau_0
        dq/dt = (f (1 - (1 - rho)**(1/f)) / rho - v**(1/alpha) q / v) / tau_0

    are written in the deviations so that every term that vanishes at rest is formed without
    subtracting numbers near 1 (in float32 the increments of f, v, q near 1 would otherwise round
    away; at dt = 0.1 ms the first TRs' BOLD came out exactly 0):

        v**(1/alpha) - 1 = expm1(log1p(v_dev) / alpha)
        f (1 - (1 - rho)**(1/f)) / rho - 1 = f_dev - f (1 - rho) / rho * expm1(-ln(1 - rho) f_dev / f)
        v**(1/alpha) q / v - 1 = q_dev + (v**(1/alpha) - 1 - v_dev) / v * q

    (the second uses ``(1 - rho)**(1/f) = (1 - rho) exp(-ln(1 - rho) f_dev / f)``). The
    derivatives of ``x``, ``f_dev``, ``v_dev``, ``q_dev`` equal those of ``x``, ``f``, ``v``, ``q``.
    """
    kappa, gamma_h, tau_0 = haemo["kappa"], haemo["gamma_h"], haemo["tau_0"]
    alpha, rho = haemo["alpha"], haemo["rho"]
    f, v, q = 1.0 + f_dev, 1.0 + v_dev, 1.0 + q_dev
    v_pow_m1 = torch.expm1(torch.log1p(v_dev) / alpha)
    flow = f_dev - f * ((1.0 - rho) / rho) * torch.expm1(-math.log1p(-rho) * f_dev / f)
    wash = q_dev + (v_pow_m1 - v_dev) / v * q
    dx = s_e - kappa * x - gamma_h * f_dev
    df = x
    dv = (f_dev - v_pow_m1) / tau_0
    dq = (flow - wash) / tau_0
    return dx, df, dv, dq


def bold_signal(q_dev: torch.Tensor, v_dev: torch.Tensor, spec: ScanSpec) -> torch.Tensor:
    """BOLD ``V_0 (k_1 (1 - q) + k_2 (1 - q/v) + k_3 (1 - v))`` (dimensionless; scale and k's of
    the preset's haemodynamic model, :attr:`ScanSpec.bold_coefficients`) from the deviations
    ``q_dev = q - 1``, ``v_dev = v - 1`` ``(B, N)``, as ``-k_1 q_dev + k_2 (v_dev - q_dev) / v
    - k_3 v_dev`` so that nothing cancels near rest."""
    scale, k1, k2, k3 = spec.bold_coefficients
    return scale * (-k1 * q_dev + k2 * ((v_dev - q_dev) / (1.0 + v_dev)) - k3 * v_dev)


def rww_step(state: tuple, p: dict, coupling: torch.Tensor, xi_e: torch.Tensor,
             xi_i: torch.Tensor, spec: ScanSpec, delay_index: torch.Tensor | None = None):
    """One Euler-Maruyama step of the coupled system.

    Args:
        state: ``(S_E, S_I, x, f - 1, v - 1, q - 1)``, each ``(B, N)`` (the Balloon's flow,
            volume and deoxyhaemoglobin as deviations from rest, :data:`rww.ops.spec.STATE_NAMES`),
            then with delays ``D`` more: S_E 1, 2, ..., D steps back.
        p: parameter name -> tensor broadcastable to ``(B, N)``.
        coupling: ``(N, N)`` or ``(B, N, N)``.
        xi_e, xi_i: standard normal noise ``(B, N)``.
        delay_index: with delays, :func:`delay_gather_index` of the lags; the coupling input is
            then ``sum_j C_ij S_E,j(t - lag_ij)`` (TVB's convention: lag 0 is the current S_E).

    Returns:
        ``(new_state, r_E, r_I)``: the state after the step and the rates [Hz] that drove it.
    """
    s_e, s_i, x, f, v, q = state[:6]
    history = state[6:]
    if history:
        coupled = couple_delayed(coupling, s_e, history, delay_index)
    else:
        coupled = couple(coupling, s_e)
    dt = spec.dt
    griffiths = spec.preset.code == 1
    if griffiths:
        relu = torch.relu
        g_ee, g_ie, g_ei = (0.001 + relu(p["w_EE"]), 0.001 + relu(p["w_IE"]),
                            0.001 + relu(p["w_EI"]))
        i_e = torch.tanh(relu(p["W_E"] * p["I_0"] + g_ee * s_e + p["G"] * coupled
                              - g_ie * s_i))
        i_i = torch.tanh(relu(p["W_I"] * p["I_0"] + g_ei * s_e - s_i))
        r_e = transfer_griffiths(i_e, p["a_E"], p["b_E"], p["d_E"])
        r_i = transfer_griffiths(i_i, p["a_I"], p["b_I"], p["d_I"])
        noise_amp = math.sqrt(dt) * (0.02 + relu(p["sigma"]))
    else:
        j = p["J_NMDA"]
        i_e = (p["W_E"] * p["I_0"] + p["w_EE"] * j * s_e + p["G"] * j * coupled
               - p["w_IE"] * s_i)
        i_i = p["W_I"] * p["I_0"] + p["w_EI"] * j * s_e - s_i
        r_e = transfer_deco(i_e, p["a_E"], p["b_E"], p["d_E"])
        r_i = transfer_deco(i_i, p["a_I"], p["b_I"], p["d_I"])
        noise_amp = math.sqrt(dt) * p["sigma"]
    s_e_new = s_e + dt * (-s_e / p["tau_E"] + (1.0 - s_e) * p["gamma_E"] * r_e) + noise_amp * xi_e
    s_i_new = s_i + dt * (-s_i / p["tau_I"] + p["gamma_I"] * r_i) + noise_amp * xi_i

    dtb = spec.balloon_dt
    dx, df, dv, dq = balloon_derivatives(s_e, x, f, v, q, spec.haemo)
    x_new, f_new, v_new, q_new = x + dtb * dx, f + dtb * df, v + dtb * dv, q + dtb * dq

    if griffiths:
        # The paper code squashes every state after every step.
        s_e_new = torch.tanh(1e-5 + torch.relu(s_e_new))
        s_i_new = torch.tanh(1e-5 + torch.relu(s_i_new))
        # (the paper's 1 + tanh(f - 1) on f, v, q is tanh of the deviation)
        x_new = torch.tanh(x_new)
        f_new, v_new, q_new = torch.tanh(f_new), torch.tanh(v_new), torch.tanh(q_new)
    else:
        s_e_new = torch.clamp(s_e_new, 0.0, 1.0)
        s_i_new = torch.clamp(s_i_new, 0.0, 1.0)
    # the history shifts by one step: the S_E this step started from is now 1 step back
    return (s_e_new, s_i_new, x_new, f_new, v_new, q_new, *((s_e,) + history[:-1] if history
                                                           else ())), r_e, r_i


@dataclass
class ScanResult:
    """Output of a scan.

    Attributes:
        bold: ``(B, n_TR, N)`` BOLD at the end of every TR.
        state: ``(6 + D, B, N)`` final state (order :data:`rww.ops.spec.STATE_NAMES`, then the
            S_E history of a scan with delays of up to D steps).
        records: name -> ``(B, n_TR, N)`` for each recorded quantity.
    """

    bold: torch.Tensor
    state: torch.Tensor
    records: dict
    seed: int | None = None


def _bad_mask(state: tuple, griffiths: bool) -> torch.Tensor:
    """``(B,)``: some state of the simulation is non-finite (or, deco2014, f, v or q <= 0)."""
    s_e, s_i, x, f_dev, v_dev, q_dev = state[:6]        # (the history holds copies of S_E)
    bad = ~torch.isfinite(s_e + s_i + x + f_dev + v_dev + q_dev)
    if not griffiths:
        bad |= ~(torch.minimum(torch.minimum(f_dev, v_dev), q_dev) > -1.0)
    return bad.any(dim=-1)


@dataclass
class SegmentResult:
    """What :func:`simulate_steps` returns for steps ``[start, stop)`` of a scan.

    Attributes:
        state: final state, tuple of six ``(B, N)`` tensors.
        samples: ``{tr: {"bold", "S_E", "S_I": (B, N)}}`` for every TR that ends in the segment.
        rate_sums: ``{tr: (sum r_E, sum r_I)}`` over the segment's steps of each TR it touches.
        first_bad: ``(B,)`` int64, global step of the first diverged step, or -1.
    """

    state: tuple
    samples: dict
    rate_sums: dict
    first_bad: torch.Tensor


def simulate_steps(params: torch.Tensor, coupling: torch.Tensor, state: torch.Tensor,
                   spec: ScanSpec, start: int, stop: int,
                   check_divergence: bool = True,
                   delays: torch.Tensor | None = None) -> SegmentResult:
    """Simulate local steps ``[start, stop)`` of the scan described by ``spec`` from ``state``
    (``(6 + spec.max_delay, B, N)``; ``delays`` the integer lags when ``spec.max_delay > 0``).

    Local step k uses global noise counter ``spec.t0 + k``; TR boundaries are at local multiples of
    ``spec.steps_per_tr``. Segments need not align with TRs (the checkpointed backends cut
    anywhere).
    """
    batch, n_nodes = validate_scan_inputs(params, coupling, state, spec.max_delay, delays)
    check_sim_offset(spec.sim_offset, batch)
    delay_index = delay_gather_index(delays, batch, n_nodes) if spec.max_delay else None
    p = {name: params[i] for name, i in PARAM_INDEX.items()}
    current = tuple(state.unbind(0))
    griffiths = spec.preset.code == 1
    first_bad = torch.full((batch,), -1, dtype=torch.int64, device=state.device)
    spt = spec.steps_per_tr
    samples, rate_sums = {}, {}
    k = start
    while k < stop:
        tr = k // spt
        chunk_end = min(stop, (tr + 1) * spt)
        xi_e, xi_i = state_noise(spec.seed, spec.t0 + k, chunk_end - k, n_nodes, batch,
                                 state.dtype, state.device, spec.sim_offset)
        sum_e = sum_i = 0.0
        for j in range(chunk_end - k):
            current, r_e, r_i = rww_step(current, p, coupling, xi_e[j], xi_i[j], spec,
                                         delay_index)
            sum_e, sum_i = sum_e + r_e, sum_i + r_i
            if check_divergence:
                bad = _bad_mask(current, griffiths)
                first_bad = torch.where(bad & (first_bad < 0), spec.t0 + k + j, first_bad)
        rate_sums[tr] = (sum_e, sum_i)
        if chunk_end % spt == 0:
            samples[tr] = {"bold": bold_signal(current[5], current[4], spec),
                           "S_E": current[0], "S_I": current[1]}
        k = chunk_end
    return SegmentResult(current, samples, rate_sums, first_bad)


def reference_scan(params: torch.Tensor, coupling: torch.Tensor, state: torch.Tensor,
                   spec: ScanSpec, check_divergence: bool = True,
                   delays: torch.Tensor | None = None) -> ScanResult:
    """Simulate ``spec.n_steps`` steps with a plain loop (autograd-differentiable).

    Args:
        params: ``(P, Bp, Np)`` parameter table (:func:`rww.params.pack_parameters`).
        coupling: ``(N, N)`` or ``(B, N, N)`` effective coupling matrix.
        state: ``(6 + D, B, N)`` initial state (``D = spec.max_delay`` rows of S_E history).
        spec: the scan description.
        check_divergence: raise :class:`rww.errors.SimulationDiverged` on a non-finite state or a
            non-positive Balloon state (checked every step, reported once at the end).
        delays: with ``spec.max_delay > 0``, integer lags [steps] ``(N, N)`` or ``(B, N, N)``.

    Returns:
        :class:`ScanResult`.
    """
    seg = simulate_steps(params, coupling, state, spec, 0, spec.n_steps, check_divergence,
                         delays)
    if check_divergence:
        raise_if_diverged(seg.first_bad)
    spt = spec.steps_per_tr
    trs = range(spec.n_trs)
    empty = state.new_zeros(state.shape[1], 0, state.shape[2])

    def stack(values):
        return torch.stack(values, dim=1) if values else empty

    records = {}
    for name in spec.record:
        if name in ("r_E", "r_I"):
            which = 0 if name == "r_E" else 1
            records[name] = stack([seg.rate_sums[tr][which] / spt for tr in trs])
        else:
            records[name] = stack([seg.samples[tr][name] for tr in trs])
    return ScanResult(bold=stack([seg.samples[tr]["bold"] for tr in trs]),
                      state=torch.stack(seg.state), records=records)


def raise_if_diverged(first_bad: torch.Tensor):
    """Raise :class:`SimulationDiverged` if any entry of ``first_bad`` ``(B,)`` is >= 0."""
    diverged = first_bad >= 0
    n = int(diverged.sum())
    if n:
        sim = int(torch.nonzero(diverged)[0, 0])
        raise SimulationDiverged(
            sim, int(first_bad[sim]), n,
            hint="try a smaller dt, a smaller G, or parameters nearer the defaults",
        )
