"""The linear noise approximation (LNA) of the deco2014 network with Balloon-Windkessel BOLD:
the model's BOLD covariance and FC without simulating, differentiable in every parameter.

Around the feedback-inhibition-control (FIC) fixed point (every region at the target rate,
:func:`rww.fic.analytic_fic`), small fluctuations of the state ``z = (S_E, S_I, x, f, v, q)``
(each ``(N,)``, 6N in all) obey the linear stochastic system

    dz = A z dt + B dW,        BOLD y = L z

(time in seconds). ``A`` [1/s] stacks the neural Jacobian of :mod:`rww.stability` (times 1000,
since the neural equations are in ms) and the Balloon equations linearised at their steady state
under the fixed point's S_E (:func:`balloon_jacobian`); ``Q = B B^T`` [1/s] is the simulators'
noise, ``sigma sqrt(dt)`` per step of ``dt`` ms on S_E and S_I, i.e. ``1000 sigma^2`` per second
on each; ``L`` is the BOLD signal linearised (:func:`bold_gradient`). The stationary covariance
``Sigma`` solves the Lyapunov equation

    A Sigma + Sigma A^T + Q = 0,

and the model's BOLD covariance is ``L Sigma L^T``; its correlation matrix is the LNA's FC. This
is how Demirtas et al. (2019, Neuron 101:1181, "Hierarchical heterogeneity across human cortex
shapes large-scale neural dynamics", STAR Methods) computed the FC of this model with regional
heterogeneity; the linear noise approximation itself is van Kampen's (Stochastic Processes in
Physics and Chemistry, 1981) and the Lyapunov covariance of a linear system is standard (e.g.
Gardiner, Handbook of Stochastic Methods, sec. 4.4.6).

What it is good for, measured on the embedded demo (Schaefer-100, the homogeneous recipe's point,
``examples/fit_lna.py``, dt 0.1 ms): the LNA's FC correlates 0.92-0.95 with one simulated
1200-TR FC and 0.95 with the average of 4. It is not a substitute for simulating: the LNA's FC
*level* was 0.16 where the simulations' was 0.26 (fluctuations near the bifurcation are not
linear), the FCD needs simulations, and the LNA knows nothing of other attractors (a region that
noise can kick to a high-activity state is invisible to it). On a 3-region network at small
noise (sigma 0.0005 nA) simulated BOLD variances agree with the LNA's within 2%; at sigma 0.002
they are 9-12% higher (``tests/test_linear.py``). Use it to shape FC patterns quickly (e.g.
regional heterogeneity, :func:`fit_regional_lna`), then check by simulation.

The Lyapunov equation is solved blockwise (:func:`_structured`; equal to scipy's dense 6N x 6N
Bartels-Stewart solve to 1e-13), on the CPU in float64: the 2N x 2N neural block by
Bartels-Stewart on one complex Schur form of the neural Jacobian (LAPACK ztrsyl), the Balloon
blocks region by region; its gradient is the adjoint Lyapunov equation (:class:`_Lyapunov`),
which reuses the forward solve's Schur form. The cost grows as N^3: at N = 100 one value and
gradient of the regional fit took 0.31-0.34 s on the two cores of the development machine
(0.48-0.60 s in the same run with the previous blockwise solve, which computed four Schur
decompositions per step; 0.80 s with the dense solve in an earlier session).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .params import PARAM_INDEX, bold_coefficients, get_preset, resolve_haemo

__all__ = ["LNAResult", "lyapunov", "balloon_jacobian", "bold_gradient", "linear_system",
           "lna", "lna_fc", "lna_of_model", "fit_regional_lna", "RegionalLNAFit"]

# The state order of the linear system (rows/columns come in blocks of N).
LNA_STATE = ("S_E", "S_I", "x", "f", "v", "q")


def _blocks(a: np.ndarray, q: np.ndarray):
    """The structure of the LNA's system, or ``None``: with ``m = 2N`` neural and ``4N`` Balloon
    rows (state-major, as :data:`LNA_STATE`), ``A = [[J, 0], [D, K]]`` with ``K`` coupling only
    each region's own four Balloon variables and ``Q`` zero outside the neural block. Returns
    ``(J, D, Kb, Qn)`` with ``Kb`` ``(N, 4, 4)`` the per-region Balloon blocks."""
    size = a.shape[0]
    if size % 6:
        return None
    n = size // 6
    m = 2 * n
    if np.any(a[:m, m:]) or np.any(q[:, m:]) or np.any(q[m:, :]):
        return None
    k = a[m:, m:].reshape(4, n, 4, n)
    r = np.arange(n)
    kb = k[:, r, :, r]                                   # (N, 4, 4): [region, i, j]
    rebuilt = np.zeros_like(k)
    rebuilt[:, r, :, r] = kb
    if not np.array_equal(rebuilt, k):
        return None
    return a[:m, :m], a[m:, :m], kb, q[:m, :m]


def _left(x: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """``B x`` for the block-diagonal ``B`` whose region-r block is ``blocks[r]`` (4 x 4), ``x``
    ``(4N, k)`` in state-major order."""
    n = blocks.shape[0]
    return np.einsum("rai,irk->ark", blocks, x.reshape(4, n, -1)).reshape(4 * n, -1)


def _factors(a: np.ndarray, parts) -> dict:
    """What both solves need of the structured system: its blocks (``parts``, :func:`_blocks`),
    the complex Schur form of the neural block ``J = W T W^H`` (``T`` upper triangular) and each
    region's Balloon block ``K_r = U_r diag(mu_r) U_r^-1``. Computed once per forward solve and
    reused by its adjoint."""
    from scipy.linalg import schur
    j, _, kb, _ = parts
    t, w = schur(j, output="complex")
    mu_b, ub = np.linalg.eig(kb)                          # (N, 4), (N, 4, 4)
    return {"t": t, "w": w, "mu": mu_b.T.reshape(-1),     # state-major: a * N + r
            "ub": ub, "ubi": np.linalg.inv(ub), "parts": parts}


def _trsyl(t: np.ndarray, c: np.ndarray, trana: str, tranb: str) -> np.ndarray:
    """``X`` with ``opa(T) X + X opb(T) = C`` for upper-triangular complex ``T`` (LAPACK ztrsyl;
    ``opa`` is set by ``trana``, ``opb`` by ``tranb``: ``T`` for ``"N"``, ``T^H`` for ``"C"``)."""
    import warnings

    from scipy.linalg.lapack import ztrsyl
    x, scale, info = ztrsyl(t, t, c.astype(complex), trana=trana, tranb=tranb)
    if info < 0:
        raise RuntimeError(f"ztrsyl: argument {-info} was invalid")
    if info == 1:                 # cannot happen for a stable J (lna checks stability first)
        warnings.warn("lyapunov: the neural block has eigenvalues close to the imaginary axis "
                      "(LAPACK perturbed them to solve); the covariance is inaccurate",
                      RuntimeWarning, stacklevel=3)
    return x / scale


def _sylvester_diag_triangular(mu: np.ndarray, t: np.ndarray, f: np.ndarray,
                               conjugate: bool = False) -> np.ndarray:
    """``Y`` with ``diag(mu) Y + Y T = F`` (``conjugate``: ``diag(mu) Y + Y T^H = F``), ``T``
    upper triangular, column by column (forwards for ``T``, backwards for the lower-triangular
    ``T^H``)."""
    y = np.zeros_like(f)
    size = t.shape[0]
    if not conjugate:
        for j in range(size):
            y[:, j] = (f[:, j] - y[:, :j] @ t[:j, j]) / (mu + t[j, j])
        return y
    tc = t.conj()
    for j in range(size - 1, -1, -1):              # (T^H)[k, j] = conj(T[j, k]), k >= j
        y[:, j] = (f[:, j] - y[:, j + 1:] @ tc[j, j + 1:]) / (mu + tc[j, j])
    return y


def _structured(a: np.ndarray, q: np.ndarray, parts, adjoint: bool, factors: dict) -> np.ndarray:
    """``A X + X A^T + Q = 0`` (``adjoint``: ``A^T X + X A + Q = 0``) for the LNA's block
    structure (:func:`_blocks`), from :func:`_factors`: the 2N x 2N neural block by the
    Bartels-Stewart back-substitution on ``J``'s Schur form (ztrsyl), the Balloon blocks by the
    eigen-decomposition of each region's 4 x 4 block. O(N^3) like the dense solve, with one
    Schur decomposition of 2N x 2N instead of one of 6N x 6N, shared by the forward and adjoint
    solves."""
    j, d, _, qn = parts
    m = j.shape[0]
    t, w, mu, ub, ubi = (factors[k] for k in ("t", "w", "mu", "ub", "ubi"))
    wh = w.conj().T
    tr = lambda blocks: np.swapaxes(blocks, 1, 2)         # noqa: E731
    out = np.zeros_like(a)
    if not adjoint:
        # J S + S J^T = -Qn with J^T = J^H = W T^H W^H: T X + X T^H = -W^H Qn W, S = W X W^H.
        s_nn = np.real(w @ _trsyl(t, -(wh @ qn @ w), "N", "C") @ wh)
        # K X + X J^T = -D S_nn: with X = U Y W^H, diag(mu) Y + Y T^H = U^-1 (-D S_nn) W.
        y = _sylvester_diag_triangular(mu, t, _left(-(d @ s_nn), ubi) @ w, conjugate=True)
        s_bn = np.real(_left(y @ wh, ub))
        c = d @ s_bn.T + s_bn @ d.T
        ct = _left(_left(c, ubi).T, ubi).T                # U^-1 C U^-T
        s_bb = np.real(_left(_left(-ct / (mu[:, None] + mu[None, :]), ub).T, ub).T)
        out[:m, :m], out[m:, :m], out[:m, m:], out[m:, m:] = s_nn, s_bn, s_bn.T, s_bb
        return out
    g_nn, g_nb, g_bb = q[:m, :m], q[:m, m:], q[m:, m:]
    zt = _left(_left(g_bb, tr(ub)).T, tr(ub)).T           # U^T G U
    l_bb = np.real(_left(_left(-zt / (mu[:, None] + mu[None, :]), tr(ubi)).T, tr(ubi)).T)
    r2t = -(g_nb + d.T @ l_bb).T                          # K^T L_nb^T + L_nb^T J = R2^T
    y = _sylvester_diag_triangular(mu, t, _left(r2t, tr(ub)) @ w)
    l_bn = np.real(_left(y @ wh, tr(ubi)))
    # J^T L + L J = -R with J = W T W^H: T^H X + X T = -W^H R W, L = W X W^H.
    r = g_nn + d.T @ l_bn + l_bn.T @ d
    l_nn = np.real(w @ _trsyl(t, -(wh @ r @ w), "C", "N") @ wh)
    out[:m, :m], out[m:, :m], out[:m, m:], out[m:, m:] = l_nn, l_bn, l_bn.T, l_bb
    return out


def _solve(a: np.ndarray, q: np.ndarray, adjoint: bool, cache: dict | None = None) -> np.ndarray:
    """The structured solve where the system has the LNA's structure, else scipy's dense one.
    ``cache``: a dict that keeps the structured solve's blocks and factors of ``a``
    (:func:`_blocks`, :func:`_factors`) between a forward solve and its adjoint (filled when
    empty), so the adjoint neither re-checks the structure nor re-factors."""
    from scipy.linalg import solve_continuous_lyapunov
    cache = {} if cache is None else cache
    if "factors" in cache:
        parts = cache["factors"]["parts"]
    else:
        parts = _blocks(a, np.zeros_like(q) if adjoint else q)
    if parts is not None:
        if "factors" not in cache:
            cache["factors"] = _factors(a, parts)
        x = _structured(a, q, parts, adjoint, cache["factors"])
    else:
        x = solve_continuous_lyapunov(a.T if adjoint else a, -q)
    return np.ascontiguousarray(0.5 * (x + x.T))


class _Lyapunov(torch.autograd.Function):
    """``Sigma`` with ``A Sigma + Sigma A^T + Q = 0`` for one ``(n, n)`` pair (float64, CPU).

    Backward: for a loss ``l(Sigma)`` with symmetric gradient ``G``, the adjoint ``Lambda``
    solves ``A^T Lambda + Lambda A + G = 0``; then ``dl/dA = 2 Lambda Sigma`` and
    ``dl/dQ = Lambda`` (differentiate the equation: ``dA Sigma + A dSigma + dSigma A^T +
    Sigma dA^T + dQ = 0``, and ``<G, dSigma> = <Lambda, dA Sigma + Sigma dA^T + dQ>``).
    Systems with the LNA's block structure (:func:`_blocks`) are solved blockwise
    (:func:`_structured`), others by scipy's dense Bartels-Stewart.
    """

    @staticmethod
    def forward(ctx, a, q):
        ctx.cache = {}            # the Schur and eigen factors of a, reused by backward
        sigma = _solve(a.detach().cpu().numpy(), q.detach().cpu().numpy(), adjoint=False,
                       cache=ctx.cache)
        sigma = torch.from_numpy(sigma).to(a.device)
        ctx.save_for_backward(a, sigma)
        return sigma

    @staticmethod
    def backward(ctx, grad):
        a, sigma = ctx.saved_tensors
        g = 0.5 * (grad + grad.T)
        lam = _solve(a.detach().cpu().numpy(), g.detach().cpu().numpy(), adjoint=True,
                     cache=ctx.cache)
        lam = torch.from_numpy(lam).to(a.device)
        return 2.0 * lam @ sigma, lam


def lyapunov(a: torch.Tensor, q: torch.Tensor, *, check_stable: bool = True) -> torch.Tensor:
    """Solve ``A Sigma + Sigma A^T + Q = 0`` (the stationary covariance of ``dz = A z dt + dW``
    with ``Cov(dW) = Q dt``).

    Args:
        a: ``(n, n)`` or ``(B, n, n)`` float64 drift matrix whose eigenvalues all have negative
            real parts (else no stationary covariance exists: ``ValueError``).
        q: ``(n, n)`` or ``(B, n, n)`` float64 symmetric noise covariance rate.
        check_stable: check the eigenvalues of ``a`` first (skip only when the caller has).

    Returns:
        ``Sigma`` of the shape of ``a``, float64, symmetric; differentiable in ``a`` and ``q``
        (adjoint Lyapunov equation). Solved on the CPU by scipy, returned on ``a``'s device.
    """
    for name, t in (("a", a), ("q", q)):
        if torch.is_tensor(t) and t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"lyapunov: {name} has non-finite entries")
        if not torch.is_tensor(t) or t.dtype != torch.float64:
            raise TypeError(f"lyapunov: {name} must be a float64 tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}")
        if t.dim() not in (2, 3) or t.shape[-1] != t.shape[-2] or 0 in t.shape:
            raise ValueError(f"lyapunov: {name} must be (n, n) or (B, n, n), got {tuple(t.shape)}")
    if a.shape != q.shape:
        raise ValueError(f"lyapunov: a {tuple(a.shape)} and q {tuple(q.shape)} differ in shape")
    if check_stable:
        with torch.no_grad():
            lead = torch.linalg.eigvals(a.detach().cpu()).real.amax(dim=-1)
    if check_stable and bool((lead >= 0).any()):
        raise ValueError(f"lyapunov: the system is not stable (largest real part of an "
                         f"eigenvalue {float(lead.max()):.4g} >= 0); no stationary covariance "
                         "exists")
    if a.dim() == 2:
        return _Lyapunov.apply(a, q)
    return torch.stack([_Lyapunov.apply(a[b], q[b]) for b in range(a.shape[0])])


def _balloon_steady(s_e: torch.Tensor, haemo: dict):
    """Steady state of the Balloon under constant ``s_e``: ``x = 0``, ``f = 1 + s_e/gamma``,
    ``v = f**alpha``, ``q = v E(f)/rho`` with ``E(f) = 1 - (1 - rho)**(1/f)``."""
    rho, alpha = haemo["rho"], haemo["alpha"]
    f = 1.0 + s_e / haemo["gamma_h"]
    v = f ** alpha
    extraction = -torch.expm1(math.log1p(-rho) / f)
    q = v * extraction / rho
    return f, v, q


def balloon_jacobian(s_e: torch.Tensor, haemo: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The Balloon equations of :func:`rww.ops.reference.balloon_derivatives` linearised at
    their steady state under a constant S_E.

    Args:
        s_e: ``(B, N)`` fixed-point S_E (dimensionless).
        haemo: haemodynamic constants (:func:`rww.params.resolve_haemo`).

    Returns:
        ``(jac, drive)``: ``jac`` ``(B, N, 4, 4)`` [1/s], d(dx, df, dv, dq)/d(x, f, v, q) per
        region, and ``drive`` ``(B, N, 4)`` [1/s], d(dx, df, dv, dq)/dS_E (only dx depends on
        S_E). Derivatives (Friston et al. 2000's equations):
        ``d(dv)/dv = -v**(1/alpha - 1)/(alpha tau_0)``,
        ``d(dq)/df = (E + f E'(f))/(rho tau_0)`` with ``E'(f) = (1 - rho)**(1/f) ln(1 - rho)/f**2``,
        ``d(dq)/dv = -(1/alpha - 1) v**(1/alpha - 2) q/tau_0``, ``d(dq)/dq = -v**(1/alpha - 1)/tau_0``.
    """
    kappa, gamma_h, tau_0 = haemo["kappa"], haemo["gamma_h"], haemo["tau_0"]
    alpha, rho = haemo["alpha"], haemo["rho"]
    f, v, q = _balloon_steady(s_e, haemo)
    remain = torch.exp(math.log1p(-rho) / f)               # (1 - rho)**(1/f)
    extraction = 1.0 - remain
    d_flow = (extraction + f * remain * math.log1p(-rho) / f ** 2) / rho
    v_pow = v ** (1.0 / alpha - 1.0)
    zero, one = torch.zeros_like(s_e), torch.ones_like(s_e)
    rows = [
        [-kappa * one, -gamma_h * one, zero, zero],
        [one, zero, zero, zero],
        [zero, one / tau_0, -v_pow / (alpha * tau_0), zero],
        [zero, d_flow / tau_0, -(1.0 / alpha - 1.0) * v_pow / v * q / tau_0, -v_pow / tau_0],
    ]
    jac = torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)
    drive = torch.stack([one, zero, zero, zero], dim=-1)
    return jac, drive


def bold_gradient(s_e: torch.Tensor, haemo: dict, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dy/dv, dy/dq)``, each ``(B, N)``, of ``y = scale (k_1 (1 - q) + k_2 (1 - q/v) +
    k_3 (1 - v))`` at the Balloon's steady state under ``s_e`` (``scale`` from
    :func:`rww.params.bold_coefficients`)."""
    _, v, q = _balloon_steady(s_e, haemo)
    k1, k2, k3 = haemo["k_1"], haemo["k_2"], haemo["k_3"]
    return scale * (k2 * q / v ** 2 - k3), scale * (-k1 - k2 / v)


def linear_system(params: torch.Tensor, coupling: torch.Tensor, haemo: dict | str = "deco2014",
                  target_rate=3.0):
    """The linear system ``(A, Q, L)`` of the module docstring at the FIC fixed point.

    Args:
        params: ``(P, Bp, Np)`` deco2014 table (:func:`rww.params.pack_parameters`); its ``w_IE``
            row is replaced by analytic FIC's.
        coupling: ``(N, N)`` or ``(B, N, N)``.
        haemo: haemodynamic model name or constants (:func:`rww.params.resolve_haemo`).
        target_rate: FIC target [Hz], a number or a ``(B, 1)`` tensor (one per simulation).

    Returns:
        ``(A, Q, L, fic)``: ``A`` ``(B, 6N, 6N)`` [1/s], ``Q`` ``(B, 6N, 6N)`` [1/s], ``L``
        ``(B, N, 6N)`` (BOLD per unit state), all float64, state order :data:`LNA_STATE` in
        blocks of N; ``fic`` the :class:`rww.fic.FICResult`. Differentiable in ``params``,
        ``coupling`` and a tensor ``target_rate``.

    Raises:
        rww.fic.FICFailed: where analytic FIC fails (the linearisation point does not exist).
    """
    from .fic import FICFailed
    from .stability import _fic_jacobian64
    preset = get_preset("deco2014")
    from .params import HAEMO_NAMES
    if not (isinstance(haemo, dict) and all(k in haemo for k in HAEMO_NAMES)):
        haemo = resolve_haemo(preset, haemo)       # a name, or a dict of overrides
    neural, fic = _fic_jacobian64(params, coupling, None, target_rate, "deco2014", "linear_system")
    if bool(fic.failed.any()):
        raise FICFailed(fic.describe() + "; the LNA needs the FIC fixed point")
    batch, n2, _ = neural.shape
    n = n2 // 2
    s_e = fic.S_E.expand(batch, n)
    jac_b, drive = balloon_jacobian(s_e, haemo)
    a = neural.new_zeros(batch, 6 * n, 6 * n)
    a[:, :2 * n, :2 * n] = 1000.0 * neural                   # 1/ms -> 1/s
    for i in range(4):
        rows = slice((2 + i) * n, (3 + i) * n)
        a[:, rows, :n] = torch.diag_embed(drive[..., i])
        for j in range(4):
            a[:, rows, (2 + j) * n:(3 + j) * n] = torch.diag_embed(jac_b[..., i, j])
    p = params.to(torch.float64)
    sigma = p[PARAM_INDEX["sigma"]].expand(batch, n)
    if not bool((sigma.detach() > 0).all()):
        raise ValueError("the LNA needs a positive noise amplitude sigma in every region and "
                         f"simulation (got min {float(sigma.detach().min()):.4g} nA): with none "
                         "there is no stationary covariance to correlate")
    noise = 1000.0 * sigma ** 2                               # per second on S_E and S_I
    q = a.new_zeros(batch, 6 * n, 6 * n)
    q[:, :2 * n, :2 * n] = torch.diag_embed(torch.cat([noise, noise], dim=-1))
    scale = bold_coefficients(preset, haemo)[0]
    dy_dv, dy_dq = bold_gradient(s_e, haemo, scale)
    out = a.new_zeros(batch, n, 6 * n)
    out[:, :, 4 * n:5 * n] = torch.diag_embed(dy_dv)
    out[:, :, 5 * n:] = torch.diag_embed(dy_dq)
    return a, q, out, fic


@dataclass
class LNAResult:
    """Outcome of :func:`lna`.

    Attributes:
        bold_cov: ``(B, N, N)`` stationary BOLD covariance (BOLD units squared); B is the
            batch of the parameter table and coupling broadcast together (1 for a model whose
            parameters are the same in every simulation).
        fc: ``(B, N, N)`` its correlation matrix (the LNA's FC).
        leading_eigenvalue: ``(B,)`` largest real part of the eigenvalues of the neural
            Jacobian [1/s] (negative: stable; near 0: near the bifurcation).
        state_cov: ``(B, 6N, 6N)`` covariance of the whole state (order :data:`LNA_STATE`).
        fic: the :class:`rww.fic.FICResult` of the fixed point.
    """

    bold_cov: torch.Tensor
    fc: torch.Tensor
    leading_eigenvalue: torch.Tensor
    state_cov: torch.Tensor
    fic: object


def lna(params: torch.Tensor, coupling: torch.Tensor, haemo: dict | str = "deco2014",
        target_rate=3.0) -> LNAResult:
    """BOLD covariance and FC of the deco2014 network by the linear noise approximation.

    Args:
        params: ``(P, Bp, Np)`` deco2014 table (:func:`rww.params.pack_parameters`); ``w_IE``
            is set by analytic FIC at ``target_rate`` (the LNA linearises at the FIC fixed
            point); ``sigma`` [nA] sets the noise (a sigma uniform over regions scales the
            covariance and leaves the FC unchanged; one that differs between regions does
            change it). Must be positive.
        coupling: ``(N, N)`` or ``(B, N, N)`` (normalised SC, as simulated).
        haemo: haemodynamic model (name, or a dict of constants or overrides).
        target_rate: FIC target [Hz], a number or a ``(B, 1)`` tensor.

    Returns:
        :class:`LNAResult`, float64, on the device of ``params``; differentiable in ``params``,
        ``coupling`` and a tensor ``target_rate``.

    Raises:
        rww.fic.FICFailed: analytic FIC failed in some region.
        ValueError: the FIC fixed point is not stable (at or beyond the bifurcation, G >= G_c):
            no stationary covariance exists; or sigma is not positive.
    """
    a, q, out, fic = linear_system(params, coupling, haemo, target_rate)
    n = out.shape[1]
    # The eigenvalues of the block-triangular A are the neural Jacobian's and the Balloon's
    # (stable by construction), so the neural block decides stability.
    lead = torch.linalg.eigvals(a[:, :2 * n, :2 * n]).real.amax(dim=-1)
    if bool((lead.detach() >= 0).any()):
        worst = float(lead.detach().max())
        hint = ("; an eigenvalue this large usually means an unnormalised connectome: normalise "
                "it as simulated (e.g. load_demo(normalise='mean_row_sum'))"
                if worst > 1000.0 else "")
        raise ValueError(f"lna: the FIC fixed point is not stable (leading eigenvalue "
                         f"{worst:.4g}/s >= 0): no stationary covariance exists. Lower G below "
                         f"G_c (rww.stability.critical_coupling) or w_EE{hint}")
    state_cov = lyapunov(a, q, check_stable=False)
    bold_cov = out @ state_cov @ out.transpose(-1, -2)
    sd = torch.sqrt(torch.diagonal(bold_cov, dim1=-2, dim2=-1))
    fc = bold_cov / (sd.unsqueeze(-1) * sd.unsqueeze(-2))
    return LNAResult(bold_cov=bold_cov, fc=fc, leading_eigenvalue=lead, state_cov=state_cov,
                     fic=fic)


def lna_fc(params: torch.Tensor, coupling: torch.Tensor, haemo: dict | str = "deco2014",
           target_rate=3.0) -> torch.Tensor:
    """``(B, N, N)`` float64 FC of :func:`lna` (same arguments and errors)."""
    return lna(params, coupling, haemo, target_rate).fc


def lna_of_model(model) -> LNAResult:
    """:func:`lna` of a :class:`rww.RWWBold` with FIC (its parameters, with G times G_c under
    ``g_relative``; its coupling, haemodynamic model and FIC target). Ignored: delays (they do
    not move the fixed point but can change its stability) and a :meth:`~rww.RWWBold.refine_fic`
    correction (the LNA linearises at the analytic FIC point).

    Raises:
        ValueError: the model has no FIC, or is not deco2014.
    """
    if model.preset.name != "deco2014":
        raise ValueError(f"lna_of_model: the LNA is implemented for deco2014, not "
                         f"{model.preset.name}")
    if getattr(model, "fic_target", None) is None:
        raise ValueError("lna_of_model: the model has no FIC (construct it with fic=True or a "
                         "target rate); the LNA linearises at the FIC fixed point")
    table = model.parameter_table()
    return lna(table, model.coupling(), model.haemo, model._fic_target_tensor())


from .linear_fit import RegionalLNAFit, fit_regional_lna  # noqa: E402  (re-exported)
