"""Linear stability of the deco2014 network at its feedback-inhibition-control (FIC) fixed point,
and the critical global coupling ``G_c`` where that fixed point loses stability.

Deco et al. (2014, J Neurosci 34:7886) show that with FIC the low-activity state (every
excitatory population at ~3 Hz) exists for every G and loses stability at a critical coupling,
beyond which the network jumps to high-activity states; fits place G just below it. Here the
loss of stability is computed exactly from the Jacobian of the noise-free neural system
``(S_E, S_I)`` (the Balloon is driven by S_E but does not feed back, so it does not change
stability):

With ``f_E = -S_E/tau_E + (1 - S_E) gamma_E H_E(I_E)``, ``f_I = -S_I/tau_I + gamma_I H_I(I_I)``,
``I_E = W_E I_0 + w_EE J S_E + G J (C S_E) - w_IE S_I``, ``I_I = W_I I_0 + w_EI J S_E - S_I``
(``J = J_NMDA``, everything per region, time in ms), the Jacobian [1/ms] in the state order
``(S_E, S_I)`` has the blocks

- ``J_EE = diag(-1/tau_E - gamma_E r_E) + diag((1 - S_E) gamma_E H_E') K``,
  ``K = diag(w_EE J) + diag(G J) C``
- ``J_EI = diag(-(1 - S_E) gamma_E H_E' w_IE)``
- ``J_IE = diag(gamma_I H_I' w_EI J)``
- ``J_II = diag(-1/tau_I - gamma_I H_I')``

with ``H' = dH/dI`` [Hz/nA] (:func:`rww.fic.transfer_deco_derivative`). The fixed point is stable
when every eigenvalue has a negative real part. The Euler scheme the simulators use has the same
fixed points and, for ``dt |lambda| < 2``, the same stability.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from .fic import _analytic_fic64, _prepare, _rows, transfer_deco_derivative, with_w_IE
from .ops.reference import transfer_deco
from .params import replace_row

__all__ = ["jacobian", "fic_jacobian", "leading_eigenvalue", "critical_coupling"]


@contextlib.contextmanager
def _one_lapack_thread():
    """Run eigen-decompositions on one torch thread, restoring the caller's setting: a 200 x 200
    ``eigvals`` took 12 ms on one thread but 3.6 s on two on a loaded two-core machine (threads
    contending for busy cores); one thread is never much slower at these sizes."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _coupling_matrix(coupling64: torch.Tensor, batch: int) -> torch.Tensor:
    return coupling64.expand(batch, -1, -1) if coupling64.dim() == 2 else coupling64


def _jacobian64(params64: torch.Tensor, coupling64: torch.Tensor, s_e: torch.Tensor,
                s_i: torch.Tensor) -> torch.Tensor:
    """The Jacobian in float64 (inputs already float64, ``s_e``/``s_i`` ``(B, N)``)."""
    p = _rows(params64)
    batch, n = s_e.shape
    j = p["J_NMDA"]
    c_s = s_e @ coupling64.T if coupling64.dim() == 2 else \
        torch.bmm(coupling64, s_e.unsqueeze(-1)).squeeze(-1)
    i_e = p["W_E"] * p["I_0"] + p["w_EE"] * j * s_e + p["G"] * j * c_s - p["w_IE"] * s_i
    i_i = p["W_I"] * p["I_0"] + p["w_EI"] * j * s_e - s_i
    r_e = transfer_deco(i_e, p["a_E"], p["b_E"], p["d_E"])
    h_e = transfer_deco_derivative(i_e, p["a_E"], p["b_E"], p["d_E"])
    h_i = transfer_deco_derivative(i_i, p["a_I"], p["b_I"], p["d_I"])
    gain_e = ((1.0 - s_e) * p["gamma_E"] * h_e).expand(batch, n)           # (B, N)
    c_mat = _coupling_matrix(coupling64, batch)
    j_ee = (gain_e * (p["G"] * j).expand(batch, n)).unsqueeze(-1) * c_mat \
        + torch.diag_embed((-1.0 / p["tau_E"] - p["gamma_E"] * r_e
                            + gain_e * p["w_EE"] * j).expand(batch, n))
    j_ei = torch.diag_embed((-gain_e * p["w_IE"]).expand(batch, n))
    j_ie = torch.diag_embed((p["gamma_I"] * h_i * p["w_EI"] * j).expand(batch, n))
    j_ii = torch.diag_embed((-1.0 / p["tau_I"] - p["gamma_I"] * h_i).expand(batch, n))
    top = torch.cat([j_ee, j_ei], dim=-1)
    bottom = torch.cat([j_ie, j_ii], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def _state(t, batch, n, name):
    if not torch.is_tensor(t):
        raise TypeError(f"jacobian: {name} must be a tensor, got {type(t).__name__}")
    try:
        return torch.broadcast_to(t.to(torch.float64), (batch, n))
    except RuntimeError as err:
        raise ValueError(f"jacobian: {name} of shape {tuple(t.shape)} does not broadcast to "
                         f"(B, N) = ({batch}, {n})") from err


def jacobian(params: torch.Tensor, coupling: torch.Tensor, S_E: torch.Tensor,
             S_I: torch.Tensor, *, preset: str = "deco2014") -> torch.Tensor:
    """Jacobian [1/ms] of the noise-free deco2014 neural drift ``(dS_E/dt, dS_I/dt)`` at any state.

    Args:
        params: ``(P, Bp, Np)`` table (:func:`rww.params.pack_parameters`), including ``w_IE``.
        coupling: ``(N, N)`` or ``(B, N, N)``.
        S_E, S_I: ``(B, N)`` (or broadcastable) gating variables.

    Returns:
        ``(B, 2N, 2N)`` in the dtype of ``params`` (computed in float64), state order
        ``(S_E_1..N, S_I_1..N)``, row = derivative of, column = with respect to. Differentiable
        in every input. Blocks in the module docstring.
    """
    batch, n = _prepare(params, coupling, preset, "jacobian")
    if torch.is_tensor(S_E) and S_E.dim() == 2:
        batch = max(batch, S_E.shape[0])
    s_e, s_i = _state(S_E, batch, n, "S_E"), _state(S_I, batch, n, "S_I")
    jac = _jacobian64(params.to(torch.float64), coupling.to(torch.float64), s_e, s_i)
    return jac.to(params.dtype)


def _fic_jacobian64(params, coupling, fic, target_rate, preset, what):
    if fic is None:
        fic = _analytic_fic64(params, coupling, target_rate, preset, what)
    else:
        _prepare(params, coupling, preset, what)
        fic = fic.to(torch.float64)
    p64 = with_w_IE(params.to(torch.float64), fic.w_IE)
    return _jacobian64(p64, coupling.to(torch.float64), fic.S_E, fic.S_I), fic


def fic_jacobian(params: torch.Tensor, coupling: torch.Tensor, fic=None, target_rate=3.0, *,
                 preset: str = "deco2014") -> torch.Tensor:
    """Jacobian [1/ms] at the FIC fixed point (every region at ``target_rate``), with ``w_IE``
    from analytic FIC (the table's ``w_IE`` row is overridden).

    Args:
        params, coupling, target_rate: as :func:`rww.fic.analytic_fic`.
        fic: a :class:`rww.fic.FICResult` already computed for these inputs (else computed).

    Returns:
        ``(B, 2N, 2N)`` in the dtype of ``params`` (computed in float64); differentiable in
        ``params``, ``coupling`` and a tensor ``target_rate`` through the FIC fixed point. Regions
        where FIC failed (``fic.failed``) give the Jacobian at that (unphysical, ``w_IE < 0``)
        point; check ``fic.failed``.
    """
    jac, _ = _fic_jacobian64(params, coupling, fic, target_rate, preset, "fic_jacobian")
    return jac.to(params.dtype)


def _leading64(params, coupling, target_rate, preset, what):
    jac, fic = _fic_jacobian64(params, coupling, None, target_rate, preset, what)
    with _one_lapack_thread():
        lam = torch.linalg.eigvals(jac).real.max(dim=-1).values
    bad = fic.failed.any(dim=-1)
    return torch.where(bad, torch.full_like(lam, float("nan")), lam)


def leading_eigenvalue(params: torch.Tensor, coupling: torch.Tensor, target_rate=3.0, *,
                       preset: str = "deco2014") -> torch.Tensor:
    """Largest real part of the eigenvalues [1/ms] of :func:`fic_jacobian`, per simulation.

    Returns:
        ``(B,)`` in float64 (``torch.linalg.eigvals`` of the float64 Jacobian); negative means
        the FIC fixed point is linearly stable. NaN for a simulation where analytic FIC failed in
        some region (see :func:`rww.fic.analytic_fic`). Differentiable in ``params``,
        ``coupling`` and a tensor ``target_rate`` (the derivative of the leading eigenvalue;
        undefined where two eigenvalues of different real parts tie for the lead).
    """
    return _leading64(params, coupling, target_rate, preset, "leading_eigenvalue")


def _with_g(params64: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Table with the G row set to ``g`` ``(B,)`` uniformly across regions."""
    return replace_row(params64, "G", g.unsqueeze(-1))


def critical_coupling(params: torch.Tensor, coupling: torch.Tensor, target_rate=3.0, *,
                      g_max: float = 10.0, n_grid: int = 41, tol: float = 1e-10,
                      preset: str = "deco2014") -> torch.Tensor:
    """Critical global coupling ``G_c``: the smallest G in ``[0, g_max]`` at which the FIC fixed
    point loses linear stability (the leading real part of :func:`fic_jacobian` crosses 0), with
    FIC recomputed at every G.

    Method: :func:`leading_eigenvalue` on a uniform grid of ``n_grid`` values in ``[0, g_max]``
    (all simulations and grid values in one batched eigen-decomposition), the first grid interval
    where it changes sign from negative to non-negative, then ``scipy.optimize.brentq`` per
    simulation to ``xtol = tol``. A crossing that enters and leaves the unstable region between
    two grid points is missed (refine ``n_grid``).

    Args:
        params: ``(P, Bp, Np)`` table; its ``G`` row is replaced by one value per simulation
            (uniform over regions) and its ``w_IE`` row by FIC.
        coupling: ``(N, N)`` or ``(B, N, N)``.
        target_rate: FIC target [Hz] (number or tensor, as :func:`rww.fic.analytic_fic`).
        g_max: upper end of the search (dimensionless, > 0).
        n_grid: grid points (>= 2). tol: absolute tolerance on ``G_c``.

    Returns:
        ``(B,)`` float64. NaN where there is no crossing in ``[0, g_max]``: the fixed point is
        stable up to ``g_max`` (raise ``g_max``), already unstable at ``G = 0`` (the isolated
        regions with FIC are unstable: e.g. very large ``w_EE``), or FIC failed at a grid value
        before the crossing. Differentiable with respect to ``params`` (every row but ``G`` and
        ``w_IE``, which are overridden), ``coupling`` and a tensor ``target_rate``, by the
        implicit function theorem ``dG_c/dtheta = -(d lambda/d theta) / (d lambda/d G)`` at
        ``G_c`` (first derivatives only).
    """
    from scipy.optimize import brentq

    what = "critical_coupling"
    batch, n_nodes = _prepare(params, coupling, preset, what)
    if not (isinstance(g_max, (int, float)) and math.isfinite(g_max) and g_max > 0):
        raise ValueError(f"{what}: g_max must be a positive number, got {g_max!r}")
    if not (isinstance(n_grid, int) and n_grid >= 2):
        raise ValueError(f"{what}: n_grid must be an integer >= 2, got {n_grid!r}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"{what}: tol must be positive, got {tol!r}")
    p64 = params.to(torch.float64).expand(-1, batch, -1)
    c64 = coupling.to(torch.float64)
    t_rate = target_rate.to(torch.float64) if torch.is_tensor(target_rate) else target_rate

    def sim_inputs(b: int, detach: bool):
        p = p64[:, b:b + 1]
        c = c64[b:b + 1] if c64.dim() == 3 else c64
        t = t_rate
        if torch.is_tensor(t) and t.dim() == 2 and t.shape[0] == batch and batch > 1:
            t = t[b:b + 1]
        if detach:
            p, c = p.detach(), c.detach()
            t = t.detach() if torch.is_tensor(t) else t
        return p, c, t

    grid = torch.linspace(0.0, float(g_max), n_grid, dtype=torch.float64, device=params.device)
    with torch.no_grad():
        g_all = grid.repeat(batch)                                        # (B * n_grid,)
        p_rep = p64.detach().repeat_interleave(n_grid, dim=1) if p64.shape[1] > 1 else \
            p64.detach().expand(-1, batch * n_grid, -1)
        if c64.dim() == 3:
            c_rep = c64.detach().repeat_interleave(n_grid, dim=0)
        else:
            c_rep = c64.detach()
        t_rep = t_rate.detach() if torch.is_tensor(t_rate) else t_rate
        if torch.is_tensor(t_rep) and t_rep.dim() == 2 and t_rep.shape[0] == batch and batch > 1:
            t_rep = t_rep.repeat_interleave(n_grid, dim=0)
        lam_grid = _leading64(_with_g(p_rep, g_all), c_rep, t_rep, preset, what)
        lam_grid = lam_grid.view(batch, n_grid).cpu().numpy()

    g_c = torch.full((batch,), float("nan"), dtype=torch.float64, device=params.device)
    roots = []
    for b in range(batch):
        lam = lam_grid[b]
        k = None
        for i in range(n_grid - 1):
            if not (np.isfinite(lam[i]) and np.isfinite(lam[i + 1])) or lam[i] >= 0:
                break                                     # failed FIC or unstable at the start
            if lam[i + 1] >= 0:
                k = i
                break
        if k is None:
            continue
        p_b, c_b, t_b = sim_inputs(b, detach=True)

        def f(g, p_b=p_b, c_b=c_b, t_b=t_b):
            with torch.no_grad():
                gt = torch.tensor([g], dtype=torch.float64, device=params.device)
                return float(_leading64(_with_g(p_b, gt), c_b, t_b, preset, what)[0])

        roots.append((b, brentq(f, float(grid[k]), float(grid[k + 1]), xtol=tol, rtol=1e-15,
                                maxiter=200)))

    needs_grad = torch.is_grad_enabled() and (params.requires_grad or coupling.requires_grad or (
        torch.is_tensor(target_rate) and target_rate.requires_grad))
    values = []
    for b, root in roots:
        if not needs_grad:
            values.append((b, torch.tensor(root, dtype=torch.float64, device=params.device)))
            continue
        p_b, c_b, t_b = sim_inputs(b, detach=False)
        g = torch.tensor([root], dtype=torch.float64, device=params.device, requires_grad=True)
        lam = _leading64(_with_g(p_b, g), c_b, t_b, preset, what)[0]
        (dlam_dg,) = torch.autograd.grad(lam, g, retain_graph=True)
        # value root; derivative -(d lambda/d theta)/(d lambda/d G) (IFT), lambda(root) ~ 0.
        values.append((b, root - (lam - lam.detach()) / dlam_dg[0].detach()))
    if values:
        idx = torch.tensor([b for b, _ in values], device=params.device)
        g_c = g_c.index_put((idx,), torch.stack([v.reshape(()) for _, v in values]))
    return g_c
