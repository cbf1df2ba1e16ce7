"""Stability of the FIC fixed point (rww.stability): the Jacobian equals autograd's, the leading
eigenvalue predicts what noise-free simulations do around G_c (decay below, growth above, at the
predicted rate), and the gradient of G_c matches finite differences."""

import numpy as np
import pytest
import torch

from rww.fic import analytic_fic, with_w_IE
from rww.model import initial_state
from rww.ops.reference import couple, transfer_deco
from rww.ops.scan import rww_scan
from rww.ops.spec import ScanSpec
from rww.params import PARAM_INDEX, get_preset, pack_parameters, resolve_haemo
from rww.stability import critical_coupling, fic_jacobian, jacobian, leading_eigenvalue

from helpers import random_connectome  # noqa: E402

DECO = get_preset("deco2014")
HAEMO = resolve_haemo(DECO, None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


connectome = random_connectome


def drift(y: torch.Tensor, table: torch.Tensor, coupling: torch.Tensor, b: int) -> torch.Tensor:
    """Noise-free (dS_E/dt, dS_I/dt) [1/ms] of simulation b, written with the reference's
    transfer function and coupling, as in rww.ops.reference.rww_step."""
    n = y.shape[0] // 2
    p = {k: table[i, min(b, table.shape[1] - 1)] for k, i in PARAM_INDEX.items()}
    s_e, s_i = y[:n], y[n:]
    cpl = coupling if coupling.dim() == 2 else coupling[b:b + 1]
    c_s = couple(cpl, s_e.unsqueeze(0))[0]
    j = p["J_NMDA"]
    i_e = p["W_E"] * p["I_0"] + p["w_EE"] * j * s_e + p["G"] * j * c_s - p["w_IE"] * s_i
    i_i = p["W_I"] * p["I_0"] + p["w_EI"] * j * s_e - s_i
    r_e = transfer_deco(i_e, p["a_E"], p["b_E"], p["d_E"])
    r_i = transfer_deco(i_i, p["a_I"], p["b_I"], p["d_I"])
    return torch.cat([-s_e / p["tau_E"] + (1 - s_e) * p["gamma_E"] * r_e,
                      -s_i / p["tau_I"] + p["gamma_I"] * r_i])


def heterogeneous_table(n, batch, seed=0, **extra):
    rng = np.random.default_rng(seed)
    values = {"G": torch.as_tensor(0.3 + 0.6 * rng.random(batch)).view(batch, 1),
              "w_EE": torch.as_tensor(1.2 + 0.4 * rng.random(n)),
              "w_EI": torch.as_tensor(0.8 + 0.4 * rng.random((batch, n))),
              "tau_E": torch.as_tensor(90 + 20 * rng.random(n)), "sigma": 0.0}
    values.update(extra)
    return pack_parameters(values, DECO, batch, n, torch.float64)


def test_jacobian_matches_autograd_of_the_drift():
    """At random states (covering currents on both sides of the transfer function's series band)
    and at the FIC fixed point, per-region and per-simulation parameters, per-simulation
    coupling: jacobian / fic_jacobian equal torch.func.jacrev of the drift to 1e-13; the drift
    vanishes at the FIC point."""
    n, batch = 4, 3
    coupling = connectome(n, 1, batch)
    table = heterogeneous_table(n, batch)
    gen = torch.Generator().manual_seed(0)
    s_e = 0.05 + 0.6 * torch.rand(batch, n, generator=gen, dtype=torch.float64)
    s_i = 0.02 + 0.3 * torch.rand(batch, n, generator=gen, dtype=torch.float64)
    jac = jacobian(table, coupling, s_e, s_i)
    assert jac.shape == (batch, 2 * n, 2 * n)
    for b in range(batch):
        y = torch.cat([s_e[b], s_i[b]])
        auto = torch.func.jacrev(drift)(y, table, coupling, b)
        assert torch.allclose(jac[b], auto, rtol=1e-13, atol=1e-15)

    fic = analytic_fic(table, coupling)
    at_fic = fic_jacobian(table, coupling, fic)
    fic_table = with_w_IE(table, fic.w_IE)
    for b in range(batch):
        y = torch.cat([fic.S_E[b], fic.S_I[b]])
        assert drift(y, fic_table, coupling, b).abs().max() < 1e-16
        auto = torch.func.jacrev(drift)(y, fic_table, coupling, b)
        assert torch.allclose(at_fic[b], auto, rtol=1e-13, atol=1e-15)
    # shared coupling, float32 input: same numbers (float64 inside), float32 out
    j32 = jacobian(table.float(), coupling[0].float(), s_e.float(), s_i.float())
    j64 = jacobian(table.float().double(), coupling[0].float().double(), s_e.float().double(),
                   s_i.float().double())
    assert j32.dtype == torch.float32 and torch.equal(j32, j64.float())


def test_eigenvalue_sign_confirmed_by_simulation():
    """N = 5, sigma = 0, started at the FIC point plus 1e-6 times the leading eigenvector: at
    G = 0.9 G_c the deviation decays and at 1.1 G_c it grows, each at the rate the leading
    eigenvalue predicts (log-slope over 5 TRs within 0.1% of lambda; measured 3e-5 and 1.2e-4:
    Euler's own rate ln(1 + dt lambda)/dt differs by dt|lambda|/2 ~ 3e-5, and the growing
    deviation picks up nonlinear terms), and lambda(G_c) = 0."""
    n = 5
    sc = connectome(n, 11)
    base = pack_parameters({"sigma": 0.0}, DECO, 1, n, torch.float64)
    g_c = critical_coupling(base, sc).item()
    assert 0.5 < g_c < 3.0
    at_c = pack_parameters({"sigma": 0.0, "G": g_c}, DECO, 1, n, torch.float64)
    assert abs(leading_eigenvalue(at_c, sc).item()) < 1e-12
    gs = torch.tensor([0.9 * g_c, 1.1 * g_c], dtype=torch.float64)
    table = pack_parameters({"sigma": 0.0, "G": gs}, DECO, 2, n, torch.float64)
    lam = leading_eigenvalue(table, sc)
    assert lam[0] < 0 < lam[1]
    fic = analytic_fic(table, sc)
    evals, evecs = torch.linalg.eig(fic_jacobian(table, sc, fic))
    lead = evals.real.argmax(dim=1)
    start = initial_state(2, n, torch.float64)
    for b in range(2):
        assert abs(evals[b, lead[b]].imag) < 1e-14            # a real (saddle-node) crossing
        v = evecs[b, :, lead[b]].real
        v = v / v.norm()
        start[0, b] = fic.S_E[b] + 1e-6 * v[:n]
        start[1, b] = fic.S_I[b] + 1e-6 * v[n:]
    spec = ScanSpec(DECO, dt=0.1, steps_per_tr=7200, n_steps=7200 * 6, haemo=HAEMO,
                    record=("S_E",))
    out = rww_scan(with_w_IE(table, fic.w_IE), sc, start, spec, backend="numba")
    dev = (out.records["S_E"] - fic.S_E.unsqueeze(1)).norm(dim=-1)           # (2, 6)
    assert (dev[0, 1:] < dev[0, :-1]).all() and (dev[1, 1:] > dev[1, :-1]).all()
    rate = torch.log(dev[:, -1] / dev[:, 0]) / (5 * 720.0)                   # 1/ms
    assert torch.allclose(rate, lam, rtol=1e-3, atol=0), (rate, lam)


def test_critical_coupling_gradient_matches_finite_differences():
    """gradcheck (float64 central differences of brentq roots at xtol 1e-12, default tolerances)
    of G_c with respect to the whole table (G and w_IE rows are overridden: zero gradient), a
    per-simulation coupling and a tensor target rate; B = 2 with different parameters."""
    n, batch = 3, 2
    table = heterogeneous_table(n, batch, seed=3).detach().requires_grad_(True)
    coupling = connectome(n, 4, batch).requires_grad_(True)
    target = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)

    def fn(tab, cpl, tgt):
        return critical_coupling(tab, cpl, tgt, g_max=4.0, n_grid=9, tol=1e-12)

    g_c = fn(table, coupling, target)
    assert torch.isfinite(g_c).all()
    assert torch.autograd.gradcheck(fn, (table, coupling, target))
    (g_tab,) = torch.autograd.grad(g_c.sum(), table)
    assert (g_tab[PARAM_INDEX["G"]] == 0).all() and (g_tab[PARAM_INDEX["w_IE"]] == 0).all()
    assert (g_tab[PARAM_INDEX["w_EE"]] < 0).all()        # more recurrence, earlier instability


def test_critical_coupling_no_crossing_and_validation():
    """NaN (documented) when the fixed point is stable up to g_max, or already unstable at
    G = 0; griffiths2022 and bad options raise ValueError."""
    n = 3
    sc = connectome(n, 2)
    table = pack_parameters({}, DECO, 1, n, torch.float64)
    g_c = critical_coupling(table, sc).item()
    assert np.isnan(critical_coupling(table, sc, g_max=0.5 * g_c).item())
    unstable = pack_parameters({"w_EE": 4.0}, DECO, 1, n, torch.float64)
    assert leading_eigenvalue(unstable, sc).item() > 0
    assert np.isnan(critical_coupling(unstable, sc).item())
    with pytest.raises(ValueError, match="deco2014 preset only"):
        critical_coupling(table, sc, preset="griffiths2022")
    with pytest.raises(ValueError, match="g_max"):
        critical_coupling(table, sc, g_max=-1.0)
    with pytest.raises(ValueError, match="n_grid"):
        critical_coupling(table, sc, n_grid=1)


def test_demo_connectome_critical_coupling_decreases_with_recurrence():
    """Embedded HCP Schaefer-100 SC normalised by its mean row sum, deco2014 defaults: G_c
    for w_EE = 0.5, 0.75, 1.0, 1.4 (one batch) is finite, decreasing, and lambda changes sign
    across each within +-1e-6."""
    from rww.data import load_demo

    sc = load_demo(include_bold=False).sc
    sc = sc / sc.sum(1).mean()
    w_ee = torch.tensor([0.5, 0.75, 1.0, 1.4], dtype=torch.float64)
    table = pack_parameters({"w_EE": w_ee}, DECO, 4, sc.shape[0], torch.float64)
    g_c = critical_coupling(table, sc, g_max=4.0, n_grid=9, tol=1e-9)
    assert torch.isfinite(g_c).all() and (g_c[1:] < g_c[:-1]).all(), g_c
    for eps, sign in ((-1e-6, -1), (1e-6, 1)):
        near = pack_parameters({"w_EE": w_ee, "G": (g_c + eps).view(4, 1)}, DECO, 4,
                               sc.shape[0], torch.float64)
        assert (torch.sign(leading_eigenvalue(near, sc)) == sign).all()
