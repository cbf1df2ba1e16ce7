"""Dynamics of the reference scan: fixed points, time-step convergence, continuation."""

import numpy as np
import pytest
import scipy.optimize
import torch

from rww.model import initial_state
from rww.ops.reference import reference_scan
from rww.ops.spec import ScanSpec
from rww.params import get_preset, pack_parameters, resolve_haemo

DECO = get_preset("deco2014")
HAEMO = resolve_haemo(DECO, None)


def small_connectome(n_nodes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sc = rng.random((n_nodes, n_nodes))
    sc = (sc + sc.T) / 2
    np.fill_diagonal(sc, 0)
    return sc / sc.sum(1).mean()


def deco_rhs(y: np.ndarray, sc: np.ndarray, G: float) -> np.ndarray:
    """Right-hand side of the deterministic deco2014 + Balloon system, written from the
    equations stated in README.md ("The model") independently of rww's code (neural in 1/ms, Balloon in 1/s)."""
    p = DECO.defaults
    h = HAEMO
    s_e, s_i, x, f, v, q = np.split(y, 6)

    def rate(current, a, b, d):
        z = a * current - b
        return z / (1 - np.exp(-d * z))

    i_e = p["W_E"] * p["I_0"] + p["w_EE"] * p["J_NMDA"] * s_e + G * p["J_NMDA"] * sc @ s_e - p["w_IE"] * s_i
    i_i = p["W_I"] * p["I_0"] + p["w_EI"] * p["J_NMDA"] * s_e - s_i
    ds_e = -s_e / p["tau_E"] + (1 - s_e) * p["gamma_E"] * rate(i_e, p["a_E"], p["b_E"], p["d_E"])
    ds_i = -s_i / p["tau_I"] + p["gamma_I"] * rate(i_i, p["a_I"], p["b_I"], p["d_I"])
    dx = s_e - h["kappa"] * x - h["gamma_h"] * (f - 1)
    df = x
    dv = (f - v ** (1 / h["alpha"])) / h["tau_0"]
    dq = (f * (1 - (1 - h["rho"]) ** (1 / f)) / h["rho"] - v ** (1 / h["alpha"]) * q / v) / h["tau_0"]
    return np.concatenate([ds_e, ds_i, dx, df, dv, dq])


@pytest.mark.slow
def test_noise_free_run_converges_to_the_fixed_point():
    """sigma = 0: 60 s of simulation (dt = 2 ms: the Euler fixed point does not depend on dt)
    reaches the root that scipy finds from the same starting point, for four values of G run as
    one batch. Measured: relative error ~1e-9 (the Balloon's slowest mode decays as e^{-t/3 s})."""
    n_nodes = 3
    sc = small_connectome(n_nodes)
    gs = [0.0, 0.5, 1.0, 1.5]
    table = pack_parameters({"G": torch.tensor(gs, dtype=torch.float64), "sigma": 0.0}, DECO,
                            len(gs), n_nodes, torch.float64)
    spec = ScanSpec(DECO, dt=2.0, steps_per_tr=500, n_steps=30000, haemo=HAEMO)
    start = initial_state(len(gs), n_nodes, torch.float64)
    final = reference_scan(table, torch.tensor(sc), start, spec).state.numpy()   # (6, B, N)
    final[3:] += 1.0          # rww holds f, v, q as deviations from rest; deco_rhs uses f, v, q
    for b, g in enumerate(gs):
        roots = fixed_points(sc, g, n_nodes)
        assert roots, f"G={g}: scipy found no fixed point"
        simulated = final[:, b].flatten()
        rel = min(np.linalg.norm(simulated - r) / np.linalg.norm(r) for r in roots)
        print(f"G={g}: {len(roots)} fixed point(s); relative error to the nearest {rel:.2e}")
        assert rel < 1e-6, f"G={g}: relative error {rel:.2e}"


def fixed_points(sc: np.ndarray, g: float, n_nodes: int) -> list:
    """Distinct roots of deco_rhs found by scipy from guesses spread over the S_E range (the
    network can be multistable, so one guess is not enough); the haemodynamic part of each
    guess solves the Balloon's steady state for that S_E."""
    h = HAEMO
    roots = []
    for level in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9):
        s_e = np.full(n_nodes, level)
        f = 1 + s_e / h["gamma_h"]
        v = f ** h["alpha"]
        q = v * f * (1 - (1 - h["rho"]) ** (1 / f)) / h["rho"] / v ** (1 / h["alpha"])
        guess = np.concatenate([s_e, np.full(n_nodes, 0.1), np.zeros(n_nodes), f, v, q])
        root = scipy.optimize.root(deco_rhs, guess, args=(sc, g), method="hybr", tol=1e-13)
        if np.abs(deco_rhs(root.x, sc, g)).max() > 1e-12:
            continue
        if all(np.linalg.norm(root.x - r) > 1e-8 * np.linalg.norm(r) for r in roots):
            roots.append(root.x)
    return roots


def deterministic_bold(dt: float, n_trs: int = 5, tr: float = 0.2) -> torch.Tensor:
    n_nodes = 3
    sc = torch.tensor(small_connectome(n_nodes, seed=1))
    table = pack_parameters({"G": 0.8, "sigma": 0.0}, DECO, 1, n_nodes, torch.float64)
    steps_per_tr = round(tr * 1000 / dt)
    spec = ScanSpec(DECO, dt=dt, steps_per_tr=steps_per_tr, n_steps=n_trs * steps_per_tr, haemo=HAEMO)
    # Start away from rest so that BOLD moves over the whole second.
    start = initial_state(1, n_nodes, torch.float64)
    start[0] = torch.tensor([0.05, 0.3, 0.6])
    start[2] = 0.2
    return reference_scan(table, sc, start, spec).bold


@pytest.mark.slow
def test_time_step_convergence_is_first_order():
    """Deterministic BOLD over 1 s at dt = 0.2, 0.1 and 0.05 ms. Euler-Maruyama is first order,
    so halving dt halves the difference (measured ratio 2.00). The difference between dt = 0.1
    and dt = 0.05 ms is the error budget of the default step: measured 1.03e-4 relative (max-norm
    of BOLD; 2.06e-4 between 0.2 and 0.1 ms), i.e. dt = 0.1 ms is within ~2e-4 of the
    continuous-time model here. The tolerance 5e-4 is that measurement with headroom."""
    b_02, b_01, b_005 = (deterministic_bold(dt) for dt in (0.2, 0.1, 0.05))
    scale = b_005.abs().max()
    d_coarse = (b_02 - b_01).abs().max() / scale
    d_fine = (b_01 - b_005).abs().max() / scale
    print(f"relative differences: dt 0.2 vs 0.1: {d_coarse:.3e}, 0.1 vs 0.05: {d_fine:.3e}")
    assert 1.8 < d_coarse / d_fine < 2.2, f"ratio {d_coarse / d_fine:.3f}"
    assert d_fine < 5e-4, f"dt=0.1 vs 0.05 ms: relative difference {d_fine:.2e}"


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_two_calls_continued_with_t0_equal_one_call(preset):
    """A run of 2T steps equals two runs of T steps, the second from the first's final state
    with t0 = T: same noise, same trajectory, bit for bit in float64."""
    pr = get_preset(preset)
    haemo = resolve_haemo(pr, None)
    n_nodes, batch, spt = 4, 2, 5
    sc = torch.tensor(small_connectome(n_nodes, seed=2))
    table = pack_parameters({"G": 0.6}, pr, batch, n_nodes, torch.float64)
    start = initial_state(batch, n_nodes, torch.float64)
    dt = 0.1 if pr.code == 0 else 0.05

    def spec(n_trs, t0):
        return ScanSpec(pr, dt, spt, n_trs * spt, seed=99, t0=t0, haemo=haemo, record=("S_E", "r_E"))

    whole = reference_scan(table, sc, start, spec(8, 0))
    first = reference_scan(table, sc, start, spec(4, 0))
    second = reference_scan(table, sc, first.state, spec(4, 4 * spt))
    assert torch.equal(whole.bold, torch.cat([first.bold, second.bold], dim=1))
    assert torch.equal(whole.state, second.state)
    for name in ("S_E", "r_E"):
        assert torch.equal(whole.records[name], torch.cat([first.records[name], second.records[name]], 1))
    # and a different t0 gives a different trajectory (the counter really is used)
    shifted = reference_scan(table, sc, first.state, spec(4, 4 * spt + 1))
    assert not torch.equal(shifted.bold, second.bold)
