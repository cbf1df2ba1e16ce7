"""Feedback inhibition control (FIC): the per-region inhibitory weight ``w_IE`` that holds every
excitatory population at a target firing rate (deco2014 preset only).

Sources:

- Deco, Ponce-Alvarez, Hagmann, Romani, Mantini & Corbetta (2014), "How local
  excitation-inhibition ratio impacts the whole brain dynamics", J Neurosci 34:7886. FIC: adjust
  the local feedback inhibition ``J_i`` (rww's ``w_IE``) of every region so that its excitatory
  rate is ~3 Hz whatever its network input. The paper finds ``J_i`` numerically.
- Demirtas et al. (2019), "Hierarchical heterogeneity across human cortex shapes large-scale
  neural dynamics", Neuron 101:1181 (their Eq. 10 and methods): the analytic form used here. If
  every region sits at the target rate ``r*``, the excitatory gating, the excitatory current, the
  inhibitory current and gating are fixed by the local equations, and ``w_IE`` follows from the
  excitatory current balance. cuBNM implements the same calculation (amnsbr/cubnm,
  ``src/ext/models/rww_fic.cpp``, ``analytical_fic_het``, translated from murraylab/hbnm); that
  code uses precomputed isolated-node constants (``r_E_ss = 3.0773 Hz``, ``S_E_ss = 0.16476``,
  ``I_E_ss = 0.37738 nA``) and Brent's method on ``I_I`` in ``[0, 2]`` nA. Here the steady state is
  computed for the requested target (default exactly 3 Hz) from the table's own constants,
  per region and per simulation, in float64.

The equations (units as in :data:`rww.params.PARAM_DOC`: currents nA, rates Hz, time ms,
``gamma`` in 1/ms per Hz, so ``gamma * tau`` is per Hz), with ``H`` the transfer function
:func:`rww.ops.reference.transfer_deco`:

1. ``S_E* = gamma_E tau_E r* / (1 + gamma_E tau_E r*)``      (dS_E/dt = 0 at r_E = r*)
2. ``I_E* = H_E^{-1}(r*)``                                    (r_E = r*)
3. ``I_I*`` solves ``I_I = W_I I_0 + w_EI J_NMDA S_E* - gamma_I tau_I H_I(I_I)``
   (the inhibitory current with ``S_I = gamma_I tau_I H_I(I_I)``, dS_I/dt = 0); its right side
   minus the left is strictly decreasing, so the root is unique; ``r_I* = H_I(I_I*)``,
   ``S_I* = gamma_I tau_I r_I*``
4. ``w_IE = (W_E I_0 + w_EE J_NMDA S_E* + G J_NMDA (C @ S_E*)_i - I_E*) / S_I*``
   (the excitatory current balance ``I_E = I_E*``).

Because ``H`` is increasing and convex, both scalar equations (2, 3) are solved by Newton's
method started to the right of the root (``y = a I - b = r*`` for 2, since ``H(y) > y``; ``I_I =
W_I I_0 + w_EI J_NMDA S_E*`` for 3), which converges monotonically; then one differentiable
Newton correction ``x = x* - F(x*, theta) / F_x(x*)`` with ``F_x`` detached gives autograd
exactly the implicit-function derivative ``dx/dtheta = -F_theta / F_x``.

:func:`refine_fic` corrects the analytic weights numerically for the shift of the mean rate
caused by noise (``sigma > 0``), by simulation (no gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .ops.reference import H_SERIES_THRESHOLD, couple, transfer_deco
from .params import N_PARAMS, PARAM_INDEX, get_preset, replace_row, same_device

__all__ = ["FICResult", "RefineResult", "FICFailed", "analytic_fic", "refine_fic", "with_w_IE",
           "transfer_deco_derivative", "inverse_transfer_deco"]

# Newton iterations allowed for the scalar roots (each converges monotonically; from the default
# constants the excitatory inverse needs ~6 and the inhibitory current ~5; a target of 1e-6 Hz
# needs ~40).
MAX_NEWTON = 200


class FICFailed(ValueError):
    """FIC could not place some region at the target rate (see :meth:`FICResult.describe`)."""


def _prepare(params: torch.Tensor, coupling: torch.Tensor, preset: str, what: str):
    """Validate ``params`` ``(P, Bp, Np)`` and ``coupling`` ``(N, N)`` / ``(Bc, N, N)``.

    Returns ``(B, N)``."""
    pr = get_preset(preset)
    if pr.code != 0:
        raise ValueError(
            f"{what}: FIC is defined for the deco2014 preset only (got {pr.name!r}); the "
            "griffiths2022 equations squash the currents (tanh(relu(.))), so the analytic "
            "balance does not apply. Use preset='deco2014' or set w_IE yourself"
        )
    if not torch.is_tensor(params) or params.dim() != 3 or params.shape[0] != N_PARAMS:
        shape = tuple(params.shape) if torch.is_tensor(params) else type(params).__name__
        raise ValueError(f"{what}: params must be the ({N_PARAMS}, Bp, Np) table from "
                         f"rww.params.pack_parameters, got {shape}")
    if not torch.is_tensor(coupling) or coupling.dim() not in (2, 3) \
            or coupling.shape[-1] != coupling.shape[-2]:
        shape = tuple(coupling.shape) if torch.is_tensor(coupling) else type(coupling).__name__
        raise ValueError(f"{what}: coupling must be a tensor (N, N) or (B, N, N), got {shape}")
    for name, t in (("params", params), ("coupling", coupling)):
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{what}: {name} has dtype {t.dtype}; use float32 or float64")
    if params.dtype != coupling.dtype:
        raise TypeError(f"{what}: params ({params.dtype}) and coupling ({coupling.dtype}) must "
                        "have the same dtype")
    if not same_device(params.device, coupling.device):
        raise ValueError(f"{what}: params on {params.device} but coupling on {coupling.device}")
    n_nodes = coupling.shape[-1]
    bc = coupling.shape[0] if coupling.dim() == 3 else 1
    bp, np_ = params.shape[1], params.shape[2]
    if np_ not in (1, n_nodes):
        raise ValueError(f"{what}: params table has {np_} regions but coupling has {n_nodes}")
    if bp > 1 and bc > 1 and bp != bc:
        raise ValueError(f"{what}: params table has {bp} simulations but coupling has {bc}")
    for name, t in (("params", params), ("coupling", coupling)):
        if not torch.isfinite(t.detach()).all():
            raise ValueError(f"{what}: {name} contains NaN or infinite values")
    for name in ("a_E", "d_E", "a_I", "d_I", "tau_E", "tau_I", "gamma_E", "gamma_I"):
        row = params[PARAM_INDEX[name]].detach()
        if not (row > 0).all():
            raise ValueError(f"{what}: {name} must be positive in every region and simulation "
                             f"(min {row.min().item():.4g}); the FIC root-finding relies on an "
                             "increasing transfer function and positive time constants")
    return max(bp, bc), n_nodes


def _target64(target_rate, batch: int, n_nodes: int, device, what: str) -> torch.Tensor:
    """The target rate as a float64 tensor broadcast to ``(B, N)`` (differentiable)."""
    if torch.is_tensor(target_rate):
        t = target_rate.to(torch.float64)
        if not same_device(t.device, device):
            raise ValueError(f"{what}: target_rate on {t.device}, params on {device}")
    else:
        try:
            t = torch.tensor(float(target_rate), dtype=torch.float64, device=device)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{what}: target_rate must be a number or a tensor, got "
                            f"{type(target_rate).__name__}") from err
    try:
        t = torch.broadcast_to(t, (batch, n_nodes))
    except RuntimeError as err:
        raise ValueError(f"{what}: target_rate of shape {tuple(t.shape)} does not broadcast to "
                         f"(B, N) = ({batch}, {n_nodes})") from err
    d = t.detach()
    if not (torch.isfinite(d).all() and (d > 0).all()):
        raise ValueError(f"{what}: target_rate must be positive and finite [Hz] (H_E^-1(0) is "
                         f"-infinity); got min {d.min().item():.4g}")
    return t


def transfer_deco_derivative(current: torch.Tensor, a, b, d) -> torch.Tensor:
    """``dH/dI`` [Hz/nA] of :func:`rww.ops.reference.transfer_deco`, guarded like it near y = 0.

    With ``z = d (a I - b)`` and ``g(z) = z / (1 - exp(-z))``, ``H = g(z) / d`` and
    ``dH/dI = a g'(z)``: ``g'(z) = (1 - e^{-z} - z e^{-z}) / (1 - e^{-z})^2`` for z > 0,
    ``e^z (e^z - 1 - z) / (e^z - 1)^2`` for z < 0 (both free of overflow), and the derivative of
    the reference's series ``1/2 + z/6 - z^3/180 + z^5/5040`` for ``|z| < 0.1``.
    """
    y = a * current - b
    z = d * y
    small = z.abs() < H_SERIES_THRESHOLD
    z_safe = torch.where(small, torch.ones_like(z), z)
    neg = z_safe < 0
    e = torch.exp(-z_safe.abs())                          # in (0, 1)
    em1 = -torch.expm1(-z_safe.abs())                     # 1 - e, in (0, 1)
    pos_form = (em1 - z_safe * e) / (em1 * em1)            # z > 0
    neg_form = e * (-em1 - z_safe) / (em1 * em1)           # z < 0: e^z (e^z - 1 - z) / (e^z - 1)^2
    exact = torch.where(neg, neg_form, pos_form)
    z2 = z * z
    series = 0.5 + z * (1.0 / 6.0 + z2 * (-1.0 / 180.0 + z2 * (1.0 / 5040.0)))
    return a * torch.where(small, series, exact)


def inverse_transfer_deco(rate: torch.Tensor, a, b, d, max_iter: int = MAX_NEWTON):
    """``I = H^{-1}(rate)`` [nA] for rates > 0 [Hz], by Newton's method (no autograd).

    ``H`` is increasing and convex and ``H(y) > y``, so Newton from ``y = rate`` converges
    monotonically. Returns ``(current, converged)``, both shaped like the broadcast inputs.
    """
    with torch.no_grad():
        rate, a, b, d = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float64)
                                                  for v in (rate, a, b, d)))
        x = (rate + b) / a
        return _newton(lambda x: transfer_deco(x, a, b, d) - rate,
                       lambda x: transfer_deco_derivative(x, a, b, d), x, max_iter)


def _newton(f, fprime, x, max_iter: int):
    """Monotone Newton iteration on a convex increasing ``f`` from the right of its root.

    Stops when every step is below ``1e-14 (1 + |x|)``. Returns ``(x, converged)``."""
    converged = torch.zeros_like(x, dtype=torch.bool)
    for _ in range(max_iter):
        step = f(x) / fprime(x)
        step = torch.where(converged, torch.zeros_like(step), step)
        x = x - step
        converged = converged | (step.abs() <= 1e-14 * (1.0 + x.abs()))
        if bool(converged.all()):
            break
    converged = converged & torch.isfinite(x)
    return x, converged


def with_w_IE(params: torch.Tensor, w_IE: torch.Tensor) -> torch.Tensor:
    """The table ``params`` ``(P, Bp, Np)`` with its ``w_IE`` row replaced by ``w_IE`` ``(B, N)``
    (differentiable in both). Returns ``(P, B', N')`` with the broadcast batch and regions."""
    if not torch.is_tensor(w_IE) or w_IE.dim() != 2:
        raise ValueError(f"w_IE: expected a (B, N) tensor, got "
                         f"{tuple(w_IE.shape) if torch.is_tensor(w_IE) else type(w_IE).__name__}")
    return replace_row(params, "w_IE", w_IE)


def _rows(params64: torch.Tensor) -> dict:
    return {name: params64[i] for name, i in PARAM_INDEX.items()}


class _Failures:
    """Listing of the failed regions of a result with a ``failed`` (B, N) mask."""

    failed: torch.Tensor

    @property
    def any_failed(self) -> bool:
        return bool(self.failed.any())

    def failed_regions(self) -> list:
        """``[(b, i), ...]``: simulation and region indices that failed."""
        return [tuple(ix) for ix in torch.nonzero(self.failed).tolist()]

    def _summary(self, reasons: dict, limit: int = 20) -> str:
        lines = []
        for label, mask in reasons.items():
            idx = torch.nonzero(mask).tolist()
            if not idx:
                continue
            shown = ", ".join(f"(sim {b}, region {i})" for b, i in idx[:limit])
            more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
            lines.append(f"{len(idx)} region(s) {label}: {shown}{more}")
        return "; ".join(lines)


@dataclass
class FICResult(_Failures):
    """Output of :func:`analytic_fic`; every tensor is ``(B, N)`` in the input dtype.

    Attributes:
        w_IE: FIC weight (dimensionless), as computed even where it failed (do not simulate with
            a failed region's value: it is negative or non-finite).
        failed: ``w_IE < 0`` or non-finite, or a root not found (``unsolved``).
        negative: ``w_IE < 0``: even without inhibition the region's excitatory current
            ``W_E I_0 + w_EE J S_E* + G J (C S_E*)_i`` is below ``I_E* = H_E^{-1}(r*)``, so no
            inhibition can bring it *up* to the target (raise ``I_0``, ``w_EE``, ``G``, or lower
            the target).
        unsolved: a Newton iteration did not converge or produced a non-finite value.
        S_E, S_I: fixed-point gating variables (dimensionless).
        I_E, I_I: fixed-point currents [nA].
        r_E, r_I: fixed-point rates [Hz] (``r_E`` is the target, broadcast).
        target_rate: the target as given (number or tensor) [Hz].
    """

    w_IE: torch.Tensor
    failed: torch.Tensor
    negative: torch.Tensor
    unsolved: torch.Tensor
    S_E: torch.Tensor
    S_I: torch.Tensor
    I_E: torch.Tensor
    I_I: torch.Tensor
    r_E: torch.Tensor
    r_I: torch.Tensor
    target_rate: object = 3.0

    def describe(self) -> str:
        """One line naming the failing regions and why ("" when none failed)."""
        text = self._summary({"have negative w_IE (too little excitation to reach the target "
                              "even without inhibition)": self.negative & ~self.unsolved,
                              "have no root / non-finite values": self.unsolved})
        return f"analytic FIC failed: {text}" if text else ""

    def __str__(self) -> str:
        b, n = self.w_IE.shape
        return f"FICResult(B={b}, N={n}, failed={int(self.failed.sum())}) {self.describe()}".strip()

    def raise_if_failed(self):
        """Raise :class:`FICFailed` naming the failed regions, if any."""
        if self.any_failed:
            raise FICFailed(self.describe() + ". Exclude these simulations, or change their "
                            "parameters (higher I_0, w_EE or G; lower target_rate)")
        return self

    def to(self, dtype) -> "FICResult":
        """A copy with every floating tensor cast to ``dtype`` (differentiable)."""
        kw = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
              for k, v in self.__dict__.items()}
        return FICResult(**kw)


def _analytic_fic64(params, coupling, target_rate, preset, what="analytic_fic") -> FICResult:
    """:func:`analytic_fic` in float64 (every tensor of the result float64)."""
    batch, n_nodes = _prepare(params, coupling, preset, what)
    p = _rows(params.to(torch.float64))
    c64 = coupling.to(torch.float64)
    r = _target64(target_rate, batch, n_nodes, params.device, what)
    full = (batch, n_nodes)

    def bx(t):
        return t.expand(full)

    # 1. excitatory gating at the target rate.
    ge_te = p["gamma_E"] * p["tau_E"]
    s_e = bx(ge_te * r / (1.0 + ge_te * r))

    # 2. excitatory current: root of F(I) = H_E(I) - r, then one IFT Newton correction.
    a_e, b_e, d_e = bx(p["a_E"]), bx(p["b_E"]), bx(p["d_E"])
    with torch.no_grad():
        i_e0, ok_e = inverse_transfer_deco(r.detach(), a_e.detach(), b_e.detach(), d_e.detach())
        slope_e = transfer_deco_derivative(i_e0, a_e.detach(), b_e.detach(), d_e.detach())
    i_e = i_e0 - (transfer_deco(i_e0, a_e, b_e, d_e) - r) / slope_e

    # 3. inhibitory current: root of F(x) = x - A + c H_I(x), F increasing and convex.
    a_i, b_i, d_i = bx(p["a_I"]), bx(p["b_I"]), bx(p["d_I"])
    c_i = bx(p["gamma_I"] * p["tau_I"])
    drive_i = bx(p["W_I"] * p["I_0"] + p["w_EI"] * p["J_NMDA"] * s_e)
    with torch.no_grad():
        A, c, ai, bi, di = (t.detach() for t in (drive_i, c_i, a_i, b_i, d_i))
        i_i0, ok_i = _newton(lambda x: x - A + c * transfer_deco(x, ai, bi, di),
                             lambda x: 1.0 + c * transfer_deco_derivative(x, ai, bi, di),
                             A.clone(), MAX_NEWTON)
        slope_i = 1.0 + c * transfer_deco_derivative(i_i0, ai, bi, di)
    i_i = i_i0 - (i_i0 - drive_i + c_i * transfer_deco(i_i0, a_i, b_i, d_i)) / slope_i
    r_i = transfer_deco(i_i, a_i, b_i, d_i)
    s_i = c_i * r_i

    # 4. the excitatory current balance.
    excitation = (p["W_E"] * p["I_0"] + p["w_EE"] * p["J_NMDA"] * s_e
                  + p["G"] * p["J_NMDA"] * couple(c64, s_e))
    w_ie = (excitation - i_e) / s_i

    unsolved = ~(ok_e & ok_i) | ~torch.isfinite(w_ie.detach()) | ~(s_i.detach() > 0)
    negative = w_ie.detach() < 0
    failed = unsolved | negative
    return FICResult(w_IE=w_ie, failed=failed, negative=negative, unsolved=unsolved, S_E=s_e,
                     S_I=s_i, I_E=i_e, I_I=i_i, r_E=r, r_I=r_i, target_rate=target_rate)


def analytic_fic(params: torch.Tensor, coupling: torch.Tensor, target_rate=3.0, *,
                 preset: str = "deco2014") -> FICResult:
    """Analytic FIC: per region, the ``w_IE`` that puts its excitatory rate at ``target_rate``
    at the fixed point where every region is at the target (Demirtas et al. 2019; equations in
    the module docstring).

    Args:
        params: ``(P, Bp, Np)`` table from :func:`rww.params.pack_parameters` (deco2014). Its
            ``w_IE`` and ``sigma`` rows are not read. Rows that enter: G, w_EE, w_EI, J_NMDA,
            I_0, W_E, W_I, a_E, b_E, d_E, a_I, b_I, d_I, tau_E, tau_I, gamma_E, gamma_I.
        coupling: ``(N, N)`` shared or ``(B, N, N)`` per simulation; row i holds the inputs of
            region i (``C @ S_E``), same dtype and device as ``params``.
        target_rate: excitatory rate [Hz] (> 0): a number, or a tensor broadcastable to
            ``(B, N)`` (it may require grad).
        preset: must be ``"deco2014"`` (``ValueError`` for griffiths2022).

    Returns:
        :class:`FICResult` with ``(B, N)`` tensors in the dtype of ``params`` (computed in
        float64), ``B = max(Bp, batch of coupling)``. Differentiable (first derivatives, by the
        implicit function theorem) with respect to ``params``, ``coupling`` and a tensor
        ``target_rate``.

    Failures are never hidden: ``result.failed`` marks regions whose ``w_IE`` is negative or
    non-finite (``result.describe()`` names them, ``result.raise_if_failed()`` raises
    :class:`FICFailed`). The caller should exclude those simulations or change their parameters
    (a negative ``w_IE`` means the excitatory current is below ``H_E^{-1}(target)`` even with no
    inhibition: raise ``I_0``, ``w_EE`` or ``G``, or lower the target); cuBNM instead sets
    ``w_IE = 1`` everywhere in such a simulation, which rww does not do.

    Note: the FIC fixed point exists by construction but need not be stable (it loses stability
    at the critical coupling, :func:`rww.stability.critical_coupling`); above it a simulation
    leaves the fixed point and the rates are not held at the target.

    Raises:
        ValueError: griffiths2022 preset, malformed shapes, non-finite values, non-positive
            ``a``, ``d``, ``tau`` or ``gamma``, or a non-positive target.
        TypeError: unsupported or mismatched dtypes.

    Example:
        >>> table = pack_parameters({"G": 0.5}, get_preset("deco2014"), 1, sc.shape[0])
        >>> fic = analytic_fic(table, sc)          # fic.w_IE: (1, N)
        >>> table = with_w_IE(table, fic.w_IE)     # simulate with the FIC weights
    """
    return _analytic_fic64(params, coupling, target_rate, preset).to(params.dtype)


@dataclass
class RefineResult(_Failures):
    """Output of :func:`refine_fic` (tensors ``(B, N)`` in the dtype of ``params``, detached).

    Attributes:
        w_IE: refined weights (the ones the reported rates were measured with).
        r_E: mean excitatory rate [Hz] after the burn-in with ``w_IE``, for the given seed.
        initial_r_E: the same with the input weights.
        converged: ``|r_E - target| <= tol_hz``.
        failed: ``~converged``.
        n_iter: ``(B,)`` simulations run for each simulation (1 = accepted as given).
        history: max ``|r_E - target|`` over the batch after each iteration [Hz].
        target_rate: the target [Hz].
    """

    w_IE: torch.Tensor
    r_E: torch.Tensor
    initial_r_E: torch.Tensor
    converged: torch.Tensor
    failed: torch.Tensor
    n_iter: torch.Tensor
    history: list = field(default_factory=list)
    target_rate: object = 3.0

    def describe(self) -> str:
        text = self._summary({"did not reach the target rate": self.failed})
        if not text:
            return ""
        worst = (self.r_E - torch.as_tensor(self.target_rate, dtype=self.r_E.dtype)).abs()
        return (f"numerical FIC did not converge: {text} (largest error "
                f"{worst.max().item():.3g} Hz)")

    def raise_if_failed(self):
        if self.any_failed:
            raise FICFailed(self.describe() + ". Increase max_iter, or check the simulations are "
                            "below the critical coupling (rww.stability.critical_coupling)")
        return self


def _whole_trs(seconds, tr: float, name: str, minimum: int) -> int:
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"refine_fic: {name} must be a non-negative number of seconds, "
                         f"got {seconds!r}")
    n = int(round(seconds / tr))
    if abs(n * tr - seconds) > 1e-9 * max(1.0, seconds) or n < minimum:
        raise ValueError(f"refine_fic: {name}={seconds} s must be a whole number (>= {minimum}) "
                         f"of TRs of {tr} s")
    return n


def refine_fic(params: torch.Tensor, coupling: torch.Tensor, w_IE, *, dt: float = 0.1,
               tr: float = 0.72, duration_s: float = 14.4, burn_in_s: float = 2.16,
               seed: int = 0, target_rate: float = 3.0, max_iter: int = 8,
               tol_hz: float = 0.05, damping: float = 1.0, backend: str = "auto",
               haemo: dict | None = None, preset: str = "deco2014",
               progress: bool = False, delays: torch.Tensor | None = None) -> RefineResult:
    """Numerical FIC: adjust ``w_IE`` until every region's *mean* excitatory rate under noise is
    within ``tol_hz`` of the target (the noise-driven correction that Deco et al. 2014 do by
    simulation and cuBNM's ``max_fic_trials`` does per region).

    Every iteration simulates the whole (still unconverged part of the) batch with
    :func:`rww.ops.scan.rww_scan` from the analytic FIC fixed point (Balloon at rest) with the
    same ``seed`` (common random numbers, so the measured rate is a smooth function of ``w_IE``),
    discards ``burn_in_s``, averages ``r_E`` over the next ``duration_s``, and takes a damped
    chord-Newton step ``w_IE <- w_IE - damping * M^{-1} (r_E - target)`` with ``M = d r_E* /
    d w_IE`` the ``(N, N)`` noise-free linear response of the steady-state rates to the weights
    at the analytic FIC point (from the Jacobian of :func:`rww.stability.jacobian`, so network
    effects are included): ``dS/dw = -J^{-1} df/dw`` with ``df_E,i/dw_IE,i = -(1 - S_E)
    gamma_E H_E'(I_E) S_I``, and ``dr_E/dS_E = 1 / (gamma_E tau_E (1 - S_E)^2)``. From the second
    step on, ``M`` is corrected by Broyden's rank-one update from the last measured step (noise
    makes the mean rate steeper in ``w_IE`` than the noise-free response). A simulation whose
    regions are all within ``tol_hz`` is not simulated again.

    Args:
        params, coupling: as for :func:`analytic_fic` (``sigma`` is used here: it is why the
            refinement is needed; with ``sigma = 0`` the analytic weights already hold the target).
        w_IE: ``(B, N)`` starting weights, e.g. ``analytic_fic(...).w_IE``, or a
            :class:`FICResult`.
        dt: step [ms]; tr: seconds per TR (``r_E`` is recorded as TR averages).
        duration_s: averaging window [s] after the burn-in; burn_in_s: discarded transient [s];
            both whole numbers of TRs.
        seed: noise seed (the refined weights are tuned to this realisation; other seeds give
            mean rates within the sampling error of a ``duration_s`` average).
        target_rate: [Hz], a number. max_iter: simulations at most. tol_hz: [Hz].
        damping: step multiplier in (0, 1].
        backend, haemo: passed to the scan (haemodynamics do not affect the rates).
        progress: print the largest error after each iteration.
        delays: conduction lags [steps] ``(N, N)`` or ``(B, N, N)`` (:mod:`rww.delays`) to
            simulate with, or ``None``; the S_E history starts at the FIC fixed point.

    Returns:
        :class:`RefineResult`; ``failed`` marks regions not within ``tol_hz`` after
        ``max_iter`` simulations (e.g. above the critical coupling, where the fixed point is
        unstable and the network leaves it).

    No gradient flows through the refinement (everything is detached): it is a correction on
    top of the analytic point. To differentiate, use the analytic weights.

    Raises:
        ValueError: as :func:`analytic_fic`, bad durations or options, or an analytic FIC
            failure for the starting state (:class:`FICFailed`).
        rww.errors.SimulationDiverged: a simulation diverged.
    """
    from .model import initial_state
    from .ops.scan import rww_scan
    from .ops.spec import ScanSpec, steps_per_tr_from
    from .params import resolve_haemo
    from .stability import _jacobian64

    what = "refine_fic"
    batch, n_nodes = _prepare(params, coupling, preset, what)
    if isinstance(w_IE, FICResult):
        w_IE = w_IE.w_IE
    if not torch.is_tensor(w_IE) or w_IE.dim() != 2 or w_IE.shape[1] not in (1, n_nodes) \
            or w_IE.shape[0] not in (1, batch):
        raise ValueError(f"{what}: w_IE must be a ({batch}, {n_nodes}) tensor, got "
                         f"{tuple(w_IE.shape) if torch.is_tensor(w_IE) else type(w_IE).__name__}")
    if torch.is_tensor(target_rate) or not isinstance(target_rate, (int, float)):
        raise TypeError(f"{what}: target_rate must be a number (no gradient flows here)")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"{what}: max_iter must be a positive integer, got {max_iter!r}")
    if not (isinstance(tol_hz, (int, float)) and tol_hz > 0):
        raise ValueError(f"{what}: tol_hz must be positive, got {tol_hz!r}")
    if not (isinstance(damping, (int, float)) and 0 < damping <= 1):
        raise ValueError(f"{what}: damping must be in (0, 1], got {damping!r}")
    pr = get_preset(preset)
    spt = steps_per_tr_from(tr, dt, pr.balloon_dt_scale)
    n_burn = _whole_trs(burn_in_s, tr, "burn_in_s", 0)
    n_meas = _whole_trs(duration_s, tr, "duration_s", 1)
    haemo = resolve_haemo(pr, haemo)
    dtype, device = params.dtype, params.device

    with torch.no_grad():
        params, coupling = params.detach(), coupling.detach()
        fic = _analytic_fic64(params, coupling, target_rate, preset, what)
        if fic.any_failed:
            raise FICFailed(fic.describe() + "; refine_fic starts from the analytic fixed point")
        # Linear response of the noise-free steady-state rates to w_IE at the FIC point.
        p64 = with_w_IE(params.to(torch.float64), fic.w_IE).expand(-1, batch, n_nodes)
        jac = _jacobian64(p64, coupling.to(torch.float64), fic.S_E, fic.S_I)       # (B, 2N, 2N)
        pr_ = _rows(p64)
        slope_e = transfer_deco_derivative(fic.I_E, pr_["a_E"], pr_["b_E"], pr_["d_E"])
        dfdw = torch.zeros(batch, 2 * n_nodes, n_nodes, dtype=torch.float64, device=device)
        dfdw[:, :n_nodes] = torch.diag_embed(-(1 - fic.S_E) * pr_["gamma_E"] * slope_e * fic.S_I)
        ds_dw = -torch.linalg.solve(jac, dfdw)[:, :n_nodes]                       # (B, N, N)
        dr_ds = 1.0 / (pr_["gamma_E"] * pr_["tau_E"] * (1 - fic.S_E) ** 2)        # (B, N)
        response = dr_ds.unsqueeze(-1) * ds_dw                                    # dr_i / dw_j

        max_delay = 0 if delays is None else int(delays.max())
        if max_delay == 0:
            delays = None
        start = initial_state(batch, n_nodes, dtype, device, max_delay)
        start[0], start[1] = fic.S_E.to(dtype), fic.S_I.to(dtype)
        start[6:] = fic.S_E.to(dtype)
        w = w_IE.detach().to(torch.float64).expand(batch, n_nodes).clone()
        rate = torch.full((batch, n_nodes), float("nan"), dtype=torch.float64, device=device)
        initial_rate = rate.clone()
        n_iter = torch.zeros(batch, dtype=torch.int64, device=device)
        active = torch.ones(batch, dtype=torch.bool, device=device)
        spec = ScanSpec(pr, float(dt), spt, (n_burn + n_meas) * spt, seed=seed, haemo=haemo,
                        record=("r_E",), max_delay=max_delay)
        history, prev = [], None
        for it in range(max_iter):
            idx = torch.nonzero(active).squeeze(1)
            tab = with_w_IE(params, w.to(dtype))[:, idx]
            cpl = coupling[idx] if coupling.dim() == 3 else coupling
            lags = delays[idx] if delays is not None and delays.dim() == 3 else delays
            out = rww_scan(tab, cpl, start[:, idx].contiguous(), spec, backend=backend,
                           delays=lags)
            measured = out.records["r_E"][:, n_burn:].to(torch.float64).mean(1)
            rate[idx] = measured
            n_iter[idx] += 1
            if it == 0:
                initial_rate = rate.clone()
            err = rate - float(target_rate)
            history.append(err.abs().max().item())
            if progress:
                print(f"refine_fic: iteration {it + 1}: max |r_E - target| = {history[-1]:.4g} Hz "
                      f"({int(active.sum())} simulation(s) simulated)")
            done = (err.abs() <= tol_hz).all(dim=1)
            active = active & ~done
            if not bool(active.any()) or it == max_iter - 1:
                break
            if prev is not None:
                # Broyden's ("good") rank-one update of the response from the last step.
                dw, dr = w - prev[0], rate - prev[1]
                upd = active & (dw.abs().amax(dim=1) > 0)
                denom = (dw * dw).sum(1, keepdim=True).clamp_min(1e-300)
                resid = dr - (response @ dw.unsqueeze(-1)).squeeze(-1)
                corr = resid.unsqueeze(-1) * (dw / denom).unsqueeze(-2)
                response = torch.where(upd.view(-1, 1, 1), response + corr, response)
            prev = (w.clone(), rate.clone())
            step = torch.linalg.solve(response[active], err[active].unsqueeze(-1)).squeeze(-1)
            w[active] = w[active] - damping * step
        converged = (rate - float(target_rate)).abs() <= tol_hz
        return RefineResult(w_IE=w.to(dtype), r_E=rate.to(dtype),
                            initial_r_E=initial_rate.to(dtype), converged=converged,
                            failed=~converged, n_iter=n_iter, history=history,
                            target_rate=target_rate)
