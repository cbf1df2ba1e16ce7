"""The linear noise approximation (rww.linear): its linear system is the Jacobian of the
simulators' own equations, the Lyapunov solve and its adjoint are right, the LNA's BOLD covariance
matches long simulations in the linear regime, and the regional fit recovers an FC pattern."""

import math
import re

import numpy as np
import pytest
import torch

import rww
from rww.fic import FICFailed
from rww.linear import LNA_STATE, linear_system, lna, lna_of_model, lyapunov
from rww.linear_fit import fit_regional_lna
from rww.ops.reference import bold_signal, rww_step
from rww.params import PARAM_INDEX, get_preset, pack_parameters


def _network(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    sc = torch.rand(n, n, generator=g, dtype=torch.float64)
    sc = 0.5 * (sc + sc.T)
    sc.fill_diagonal_(0.0)
    return sc / sc.sum(1).mean()


def _table(n, **values):
    return pack_parameters(values, get_preset("deco2014"), 1, n, torch.float64, "cpu")


def test_linear_system_is_the_jacobian_of_the_simulated_equations():
    """A (and L) against autograd through the reference Euler step (noise off) at the FIC point
    and the Balloon's steady state: one Euler step is z + dt f(z), so (step(z) - z)/dt is f."""
    n = 5
    sc = _network(n)
    w_ee = torch.linspace(0.6, 1.2, n, dtype=torch.float64)
    table = _table(n, G=0.9, w_EE=w_ee, w_EI=torch.linspace(0.8, 1.5, n, dtype=torch.float64),
                   sigma=0.01)
    a, q, out, fic = linear_system(table, sc, "deco2014", 3.0)
    model = rww.RWWBold(sc, fic=3.0, G=0.9, w_EE=w_ee, dtype=torch.float64)
    spec = model.spec(1)
    p = {name: fic_table[i] for name, i in PARAM_INDEX.items()
         for fic_table in [rww.fic.with_w_IE(table, fic.w_IE)]}
    from rww.linear import _balloon_steady
    f, v, qq = _balloon_steady(fic.S_E[0], model.haemo)
    z0 = torch.cat([fic.S_E[0], fic.S_I[0], torch.zeros(n), f - 1, v - 1, qq - 1])
    zero = torch.zeros(1, n, dtype=torch.float64)
    dt_s = spec.dt * 1e-3

    def drift(z):
        state = tuple(z.view(6, 1, n).unbind(0))
        new, _, _ = rww_step(state, p, sc, zero, zero, spec)
        return (torch.cat([s.reshape(-1) for s in new]) - z) / dt_s

    assert drift(z0).abs().max() < 1e-9                        # it is a fixed point
    expected = torch.func.jacrev(drift)(z0)
    assert torch.allclose(a[0], expected, rtol=1e-9, atol=1e-9), (a[0] - expected).abs().max()

    def bold(z):
        return bold_signal(z[5 * n:].view(1, n), z[4 * n:5 * n].view(1, n), spec).reshape(-1)

    assert torch.allclose(out[0], torch.func.jacrev(bold)(z0), rtol=1e-12, atol=1e-15)
    # noise: sigma sqrt(dt) per step of dt ms on S_E and S_I -> 1000 sigma^2 per second
    assert torch.allclose(torch.diagonal(q[0])[:2 * n], torch.full((2 * n,), 0.1,
                                                                   dtype=torch.float64))
    assert torch.count_nonzero(q[0]) == 2 * n
    assert LNA_STATE == ("S_E", "S_I", "x", "f", "v", "q")


def test_lyapunov_solves_the_equation_and_its_gradient_is_right():
    g = torch.Generator().manual_seed(1)
    n = 5
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = m - (torch.linalg.eigvals(m).real.max() + 1.0) * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, n, generator=g, dtype=torch.float64)
    q = b @ b.T
    sigma = lyapunov(a, q)
    assert torch.allclose(a @ sigma + sigma @ a.T + q, torch.zeros(n, n, dtype=torch.float64),
                          atol=1e-10)
    assert torch.allclose(sigma, sigma.T)
    weights = torch.randn(n, n, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a_, q_: (lyapunov(a_, 0.5 * (q_ + q_.T)) * weights).sum(),
                                     (a.clone().requires_grad_(), q.clone().requires_grad_()))
    batched = lyapunov(torch.stack([a, a - torch.eye(n, dtype=torch.float64)]),
                       torch.stack([q, q]))
    assert torch.allclose(batched[0], sigma)
    with pytest.raises(ValueError, match="not stable"):
        lyapunov(-a, q)
    with pytest.raises(TypeError, match="float64"):
        lyapunov(a.float(), q.float())


def test_lna_gradient_against_finite_differences():
    """d r(FC_LNA, target)/d w_EE through analytic FIC, the Jacobian and the Lyapunov adjoint."""
    n = 4
    sc = _network(n, seed=3)
    target = torch.eye(n, dtype=torch.float64) + 0.3 * _network(n, seed=4)
    iu = torch.triu_indices(n, n, 1)

    def loss(w_ee):
        fc = lna(_table(n, G=0.8, w_EE=w_ee, sigma=0.01), sc).fc[0]
        return (fc[iu[0], iu[1]] * target[iu[0], iu[1]]).sum()

    w = torch.tensor([0.7, 0.9, 1.1, 1.0], dtype=torch.float64, requires_grad=True)
    grad, = torch.autograd.grad(loss(w), w)
    h = 1e-6
    for i in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = h
        fd = (loss(w.detach() + e) - loss(w.detach() - e)) / (2 * h)
        assert abs(float(grad[i] - fd)) < 1e-6 * max(1.0, abs(float(fd))), (i, grad[i], fd)


@pytest.mark.slow
def test_lna_bold_covariance_matches_long_simulations():
    """In the linear regime (small noise) the simulated BOLD covariance and FC converge to the
    LNA's. 3 regions, 16 realisations x 2500 TRs (0.72 s) at dt 0.5 ms, sigma 0.0005 nA.
    Measured: variances within 1.7% of the LNA (standard error of the estimate 1.1%), FC
    entries within 4e-4 (at dt 0.1 ms: 1.4% and 2e-3). At sigma 0.002 the simulated variance
    is 9-12% above the LNA's at dt 0.1 and 0.5 ms alike (the fluctuations are no longer linear),
    FC within 0.012. A different coupling's LNA differs by far more (checked, so the comparison
    can fail)."""
    n = 3
    sc = torch.tensor([[0.0, 1.0, 0.2], [1.0, 0.0, 0.6], [0.2, 0.6, 0.0]], dtype=torch.float64)
    sc = sc / sc.sum(1).mean()
    values = dict(G=1.2, w_EE=1.0, sigma=0.0005)
    pred = lna(_table(n, **values), sc)
    model = rww.RWWBold(sc, fic=3.0, dt=0.5, batch=16, dtype=torch.float64, **values)
    with torch.no_grad():
        bold = model(2600, seed=11)[0][:, 100:]                          # (16, 2500, 3)
    centred = bold - bold.mean(1, keepdim=True)
    cov = torch.einsum("rti,rtj->ij", centred, centred) / (centred.shape[0] * centred.shape[1])
    sd = torch.sqrt(torch.diagonal(cov))
    fc = cov / torch.outer(sd, sd)
    rel_var = (torch.diagonal(cov) / torch.diagonal(pred.bold_cov[0]) - 1).abs().max()
    assert rel_var < 0.05, rel_var
    assert (fc - pred.fc[0]).abs().max() < 0.005, fc - pred.fc[0]
    other = lna(_table(n, **values), sc.flip(0).flip(1) * torch.tensor([[1, 0.1, 1]] * 3,
                                                                      dtype=torch.float64))
    assert (fc - other.fc[0]).abs().max() > 0.1


def test_lna_of_model_uses_the_simulated_parameters():
    n = 4
    sc = _network(n, seed=5)
    model = rww.RWWBold(sc, fic=3.0, g_relative=True, G=0.8, w_EE=1.0, dtype=torch.float64)
    via_model = lna_of_model(model)
    direct = lna(model.parameter_table(), sc)
    assert torch.equal(via_model.fc, direct.fc)
    g_abs = float(model.parameter_table()[PARAM_INDEX["G"]].flatten()[0])
    assert 0.79 * float(model.critical_coupling()) < g_abs < 0.81 * float(model.critical_coupling())
    with pytest.raises(ValueError, match="no FIC"):
        lna_of_model(rww.RWWBold(sc, dtype=torch.float64))
    with pytest.raises(ValueError, match="not stable"):
        lna(_table(n, G=1.5 * float(model.critical_coupling()), w_EE=1.0), sc)


def test_lna_refuses_failed_fic():
    n = 3
    with pytest.raises(FICFailed):
        lna(_table(n, G=0.5, w_EE=1.0, I_0=0.05), _network(n))


def test_regional_fit_recovers_a_heterogeneous_fc_pattern():
    """The target is the LNA FC of a known heterogeneous w_EE; from a homogeneous start the fit
    brings the FC within a tenth of the start's largest error (measured: 0.042 -> 0.0007)."""
    n = 6
    sc = _network(n, seed=7)
    true_w = torch.tensor([0.5, 1.3, 0.8, 1.1, 0.6, 1.2], dtype=torch.float64)
    target = lna(_table(n, G=0.8, w_EE=true_w, sigma=0.01), sc).fc[0]
    fit = fit_regional_lna(sc, target, {"G": 0.8, "w_EE": 0.9, "sigma": 0.01}, learn=("w_EE",),
                           iterations=150, lr=0.1, progress=False)
    start = fit.history[0]["fc_r"]
    fitted = lna(_table(n, G=0.8, w_EE=fit.values["w_EE"], sigma=0.01), sc).fc[0]
    homogeneous = lna(_table(n, G=0.8, w_EE=0.9, sigma=0.01), sc).fc[0]
    before, after = (homogeneous - target).abs().max(), (fitted - target).abs().max()
    assert after < 0.1 * before, (before, after)
    assert fit.fc_r > start
    assert fit.values["w_EE"].shape == (n,)
    assert fit.leading_eigenvalue < -1.0
    assert fit.settings["learn"] == ["w_EE"]
    with pytest.raises(ValueError, match="is not strictly inside its bounds"):
        fit_regional_lna(sc, target, {"G": 0.8, "w_EE": 3.0}, learn=("w_EE",), iterations=1,
                         progress=False)
    with pytest.raises(ValueError, match="give G"):
        fit_regional_lna(sc, target, {"w_EE": 1.0}, iterations=1, progress=False)
    with pytest.raises(ValueError, match=r"target_fc: expected \(6, 6\)"):
        fit_regional_lna(sc, target[:5, :5], {"G": 0.8}, iterations=1, progress=False)
    assert math.isfinite(fit.fc_level)
    assert np.isfinite([h["loss"] for h in fit.history]).all()


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(learn="w_EE"), ValueError, "learn: a sequence of parameter names"),
    (dict(learn=("w_IE",)), ValueError, "w_IE cannot be fitted per region (it is set by FIC)"),
    (dict(learn=("w_EE", "w_EE")), ValueError, "names a parameter twice"),
    (dict(bounds={"w_EE": 1.0}), ValueError, "w_EE needs a pair (lo, hi) of numbers"),
    (dict(iterations=2.5), ValueError, "iterations: a whole number >= 1"),
    (dict(params={"G": 0.8, "w_EE": torch.ones(3)}), ValueError, "w_EE must be a number or (6,)"),
    (dict(params={"G": 0.8, "sigma": 0.0}), ValueError, "positive noise amplitude sigma"),
    (dict(target=float("nan")), ValueError, "target_fc: its upper triangle must be finite"),
])
def test_regional_fit_input_errors(kwargs, error, message):
    n = 6
    sc = _network(n, seed=7)
    target = lna(_table(n, G=0.8, w_EE=1.0, sigma=0.01), sc).fc[0].clone()
    if "target" in kwargs:
        target[0, 1] = target[1, 0] = kwargs.pop("target")
    call = dict(learn=("w_EE",), iterations=1, progress=False)
    call.update(kwargs)
    params = call.pop("params", {"G": 0.8, "w_EE": 0.9})
    with pytest.raises(error, match=re.escape(message)):
        fit_regional_lna(sc, target, params, **call)


def test_regional_fit_warns_inside_the_margin_and_stops_at_a_lost_fixed_point():
    """Starting at 0.99 G_c: a warning that the start lies inside the margin; with no margin and
    a large step the second iterate crosses the bifurcation, so the fit stops with a warning
    and returns the best earlier iterate (here the start), not an error."""
    n = 6
    sc = _network(n, seed=7)
    g_c = float(rww.stability.critical_coupling(_table(n, w_EE=0.9), sc))
    target = lna(_table(n, G=0.5, w_EE=torch.linspace(0.5, 1.2, n, dtype=torch.float64)),
                 sc).fc[0]
    with pytest.warns(RuntimeWarning, match="the start lies within the stability margin"):
        fit_regional_lna(sc, target, {"G": 0.99 * g_c, "w_EE": 0.9}, learn=("w_EE",),
                         iterations=2, lr=0.3, margin=1.0, progress=False)
    with pytest.warns(RuntimeWarning, match="stopped at iteration 1: lna: the FIC fixed point "
                                            "is not stable"):
        fit = fit_regional_lna(sc, target, {"G": 0.99 * g_c, "w_EE": 0.9}, learn=("w_EE",),
                               iterations=10, lr=1.0, margin=0.0, progress=False)
    assert fit.settings["stopped"].startswith("stopped at iteration 1")
    assert len(fit.history) == 1
    assert torch.allclose(fit.values["w_EE"], torch.full((n,), 0.9, dtype=torch.float64),
                          rtol=0, atol=1e-12)
    assert fit.fc_r == pytest.approx(fit.history[0]["fc_r"], rel=1e-12)


def test_structured_solve_equals_the_dense_one():
    """The blockwise solve of the LNA's system (neural Lyapunov, per-region Balloon blocks)
    against scipy's dense Bartels-Stewart, forward and adjoint, on a heterogeneous network; a
    system without the structure falls back to the dense solve."""
    from scipy.linalg import solve_continuous_lyapunov

    from rww.linear import _blocks, _solve
    n = 7
    sc = _network(n, seed=9)
    table = _table(n, G=0.9, w_EE=torch.linspace(0.5, 1.2, n, dtype=torch.float64),
                   w_EI=torch.linspace(0.7, 1.6, n, dtype=torch.float64), sigma=0.01)
    a, q, _, _ = linear_system(table, sc)
    a, q = a[0].numpy(), q[0].numpy()
    assert _blocks(a, q) is not None
    dense = solve_continuous_lyapunov(a, -q)
    assert np.abs(_solve(a, q, adjoint=False) - dense).max() < 1e-10 * np.abs(dense).max()
    g = np.random.default_rng(2).standard_normal(a.shape)
    g = g + g.T
    dense_adj = solve_continuous_lyapunov(a.T, -g)
    assert np.abs(_solve(a, g, adjoint=True) - dense_adj).max() < 1e-10 * np.abs(dense_adj).max()
    cache = {}                  # the factors of the forward solve, reused by the adjoint one
    assert np.abs(_solve(a, q, adjoint=False, cache=cache) - dense).max() < \
        1e-10 * np.abs(dense).max()
    assert set(cache) == {"factors"}
    factors = cache["factors"]
    assert np.abs(_solve(a, g, adjoint=True, cache=cache) - dense_adj).max() < \
        1e-10 * np.abs(dense_adj).max()
    assert cache["factors"] is factors                 # reused, not recomputed
    a2 = a.copy()
    a2[0, -1] = 1e-3                                  # breaks the block-triangular structure
    assert _blocks(a2, q) is None
    assert np.allclose(_solve(a2, q, adjoint=False), solve_continuous_lyapunov(a2, -q),
                       rtol=1e-10, atol=1e-14 * np.abs(dense).max())
