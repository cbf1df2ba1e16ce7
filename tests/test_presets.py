"""Both presets against hand-written one-step equations (from the equations stated in README.md, "The model",
and the papers cited there, not from rww's code or the paper's code), and the griffiths2022 connectome and observation pipeline."""

import math

import numpy as np
import pytest
import torch

from rww import RWWBold
from rww.coupling import griffiths_laplacian, griffiths_normalise_sc
from rww.noise import observation_noise, state_noise
from rww.ops.reference import bold_signal, reference_scan
from rww.ops.spec import ScanSpec
from rww.params import get_preset, pack_parameters, resolve_haemo

RNG = np.random.default_rng(5)
N = 4
SC = RNG.random((N, N))
SC = (SC + SC.T) / 2
STATE = np.stack([RNG.uniform(0.05, 0.6, N), RNG.uniform(0.05, 0.4, N), RNG.uniform(-0.2, 0.2, N),
                  RNG.uniform(0.8, 1.3, N), RNG.uniform(0.8, 1.3, N), RNG.uniform(0.8, 1.3, N)])
# rww holds the Balloon's f, v, q as deviations from rest (f - 1, ...): the hand-written
# equations below use f, v, q themselves.
REST = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])[:, None]


def relu(x):
    return np.maximum(x, 0.0)


def expected_step(preset: str, state, coupling, xi_e, xi_i, dt, values):
    """One step written out from the model's equations (README.md, "The model"; numpy, float64)."""
    p = dict(get_preset(preset).defaults, **values)
    h = resolve_haemo(get_preset(preset), None)
    s_e, s_i, x, f, v, q = state
    if preset == "deco2014":
        i_e = p["W_E"] * p["I_0"] + p["w_EE"] * p["J_NMDA"] * s_e + p["G"] * p["J_NMDA"] * coupling @ s_e - p["w_IE"] * s_i
        i_i = p["W_I"] * p["I_0"] + p["w_EI"] * p["J_NMDA"] * s_e - s_i

        def rate(i, a, b, d):
            y = a * i - b
            return y / (1 - np.exp(-d * y))

        amp = p["sigma"] * math.sqrt(dt)
        dtb = dt / 1000
    else:
        g_ee, g_ie, g_ei = 0.001 + relu(p["w_EE"]), 0.001 + relu(p["w_IE"]), 0.001 + relu(p["w_EI"])
        i_e = np.tanh(relu(p["W_E"] * p["I_0"] + g_ee * s_e + p["G"] * coupling @ s_e - g_ie * s_i))
        i_i = np.tanh(relu(p["W_I"] * p["I_0"] + g_ei * s_e - s_i))

        def rate(i, a, b, d):
            y = a * i - b
            return (1e-5 + abs(y)) / (1e-5 * d + abs(1 - np.exp(-d * y)))

        amp = math.sqrt(dt) * (0.02 + relu(p["sigma"]))
        dtb = dt
    r_e, r_i = rate(i_e, p["a_E"], p["b_E"], p["d_E"]), rate(i_i, p["a_I"], p["b_I"], p["d_I"])
    s_e2 = s_e + dt * (-s_e / p["tau_E"] + (1 - s_e) * p["gamma_E"] * r_e) + amp * xi_e
    s_i2 = s_i + dt * (-s_i / p["tau_I"] + p["gamma_I"] * r_i) + amp * xi_i
    x2 = x + dtb * (s_e - h["kappa"] * x - h["gamma_h"] * (f - 1))
    f2 = f + dtb * x
    v2 = v + dtb * (f - v ** (1 / h["alpha"])) / h["tau_0"]
    q2 = q + dtb * (f * (1 - (1 - h["rho"]) ** (1 / f)) / h["rho"] - v ** (1 / h["alpha"]) * q / v) / h["tau_0"]
    if preset == "deco2014":
        new = [np.clip(s_e2, 0, 1), np.clip(s_i2, 0, 1), x2, f2, v2, q2]
        scale = h["V_0"]
    else:
        new = [np.tanh(1e-5 + relu(s_e2)), np.tanh(1e-5 + relu(s_i2)), np.tanh(x2),
               1 + np.tanh(f2 - 1), 1 + np.tanh(v2 - 1), 1 + np.tanh(q2 - 1)]
        scale = 100 * h["V_0"] / h["rho"]
    rho = h["rho"]
    k1, k2, k3 = 7 * rho, 2.0, 2 * rho - 0.2
    bold = scale * (k1 * (1 - new[5]) + k2 * (1 - new[5] / new[4]) + k3 * (1 - new[4]))
    return np.stack(new), bold, r_e, r_i


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_one_step_matches_hand_written_equations(preset):
    pr = get_preset(preset)
    dt = 0.1 if preset == "deco2014" else 0.05
    values = {"G": 0.7, "w_IE": 1.3, "sigma": 0.03} if preset == "deco2014" else \
             {"G": 20.0, "w_EE": 2.0, "w_IE": -0.5, "w_EI": 0.3, "sigma": 0.04}
    coupling = SC / SC.sum(1).mean() if preset == "deco2014" else \
        griffiths_laplacian(griffiths_normalise_sc(torch.tensor(SC))).numpy()
    spec = ScanSpec(pr, dt, 1, 1, seed=11, haemo=resolve_haemo(pr, None), record=("r_E", "r_I"))
    table = pack_parameters(values, pr, 1, N, torch.float64)
    state = torch.tensor(STATE - REST).unsqueeze(1)
    got = reference_scan(table, torch.tensor(coupling), state, spec)
    xi_e, xi_i = (x[0, 0].numpy() for x in state_noise(11, 0, 1, N, 1, torch.float64))
    new, bold, r_e, r_i = expected_step(preset, STATE, coupling, xi_e, xi_i, dt, values)
    np.testing.assert_allclose(got.state[:, 0].numpy() + REST, new, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got.bold[0, 0].numpy(), bold, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.records["r_E"][0, 0].numpy(), r_e, rtol=1e-13)
    np.testing.assert_allclose(got.records["r_I"][0, 0].numpy(), r_i, rtol=1e-13)


def test_griffiths_connectome_pipeline():
    """log1p((SC + SC^T)/2)/||.||_F, then w = (1 + tanh(w_bb)) SC symmetrised and Frobenius-
    normalised, L = w - diag(rowsum w): rows of L sum to zero, L is symmetric."""
    sc = torch.tensor(SC)
    pre = griffiths_normalise_sc(sc)
    sym = np.log1p((SC + SC.T) / 2)
    np.testing.assert_allclose(pre.numpy(), sym / np.linalg.norm(sym), rtol=1e-14)
    w_bb = torch.tensor(RNG.normal(0, 0.3, (N, N)))
    lap = griffiths_laplacian(pre, w_bb).numpy()
    w = (1 + np.tanh(w_bb.numpy())) * pre.numpy()
    w = (w + w.T) / 2
    w = w / np.linalg.norm(w)
    np.testing.assert_allclose(lap, w - np.diag(w.sum(1)), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(lap.sum(1), 0, atol=1e-14)


def test_griffiths_model_observation_noise_and_aliases():
    """The model accepts the paper's names, adds (0.001 + relu(std_out)) * xi to BOLD with xi
    from Philox words 2 and 3 at each TR's last step, and learns w_bb."""
    model = RWWBold(torch.tensor(SC), preset="griffiths2022", g=5.0, g_EE=2.0, std_in=0.1,
                    sigma_out=0.05, learn=["g", "g_IE", "sigma_out"], w_bb=True, dtype=torch.float64,
                    backend="torch")
    assert model.steps_per_tr == 15 and model.dt == 0.05
    assert model.G.item() == 5.0 and model.w_EE.item() == 2.0 and model.sigma.item() == 0.1
    result = model.simulate(3, seed=4)
    spec = model.spec(3, seed=4)
    clean = reference_scan(model.parameter_table(), model.coupling(), model.initial_state(), spec).bold
    ends = torch.tensor([14, 29, 44])
    expected = clean + (0.001 + 0.05) * observation_noise(4, ends, N, 1, torch.float64)
    torch.testing.assert_close(result.bold, expected, rtol=1e-14, atol=1e-14)
    result.bold.sum().backward()
    for name in ("G", "w_IE", "sigma_out", "w_bb"):
        grad = model.learned[name].raw.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_bold_signal_formula():
    pr = get_preset("deco2014")
    spec = ScanSpec(pr, 0.1, 1, 1, haemo=resolve_haemo(pr, None))
    q, v = torch.tensor([0.9, 1.1]), torch.tensor([1.05, 0.95])
    rho = 0.34
    expected = 0.02 * (7 * rho * (1 - q) + 2 * (1 - q / v) + (2 * rho - 0.2) * (1 - v))
    torch.testing.assert_close(bold_signal(q - 1, v - 1, spec), expected)


# ------------------------------------------------------------------ haemodynamic models
def test_deco2014_balloon_uses_time_constants():
    """deco2014's Balloon is Deco et al.'s code: dx/dt = S_E - x/0.65 - (f-1)/0.41 (0.65 s and
    0.41 s are time constants); Friston 2003's rates stay available by name."""
    from rww.params import HAEMO_MODELS
    h = resolve_haemo(get_preset("deco2014"), None)
    assert h["model"] == "deco2014"
    assert h["kappa"] == 1 / 0.65 and h["gamma_h"] == 1 / 0.41
    f03 = resolve_haemo(get_preset("deco2014"), "friston2003")
    assert f03["kappa"] == 0.65 and f03["gamma_h"] == 0.41
    assert (h["k_1"], h["k_2"], h["k_3"]) == pytest.approx((7 * 0.34, 2.0, 2 * 0.34 - 0.2))
    heinzle = resolve_haemo(get_preset("deco2014"), "heinzle2016_3t")
    assert (heinzle["k_1"], heinzle["k_2"], heinzle["k_3"]) == (3.72, 0.527, 0.53)
    assert heinzle["kappa"] == h["kappa"]
    st = HAEMO_MODELS["stephan2007"]
    assert st["k_1"] == pytest.approx(4.3 * 40.3 * 0.4 * 0.04) and st["rho"] == 0.4
    custom = resolve_haemo(get_preset("deco2014"), {"model": "friston2003", "tau_0": 1.0})
    assert custom["model"] == "friston2003+custom" and custom["tau_0"] == 1.0
    assert custom["kappa"] == 0.65


@pytest.mark.parametrize("bad, message", [
    ("balloon", r"unknown haemodynamic model 'balloon'"),
    ({"tau": 1.0}, r"unknown constant 'tau'"),
    ({"model": "nope"}, r"unknown haemodynamic model 'nope'"),
    ({"rho": 1.5}, r"rho must be in \(0, 1\)"),
    (3, r"expected a model name or a dict"),
])
def test_haemo_errors_name_the_problem(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        resolve_haemo(get_preset("deco2014"), bad)


@pytest.mark.parametrize("haemo", ["deco2014", "friston2003", "heinzle2016_3t", "stephan2007"])
def test_haemodynamic_models_match_the_written_out_step(haemo):
    """Each named model, through the model and the reference scan, equals a plain numpy Euler
    integration of the Balloon written here from the model's constants, driven by the same S_E."""
    torch.manual_seed(0)
    n, dt, spt, n_tr = 3, 0.5, 4, 3          # deco2014 units: dt in ms, Balloon step dt/1000 s
    sc = torch.rand(n, n, dtype=torch.float64)
    model = RWWBold(sc, dt=dt, tr=spt * dt / 1000, haemo=haemo, dtype=torch.float64,
                    backend="torch", sigma=0.0, G=0.3)
    result = model.simulate(n_tr, record=("S_E",))
    h = model.haemo
    # Drive the written-out Balloon with the reference's S_E trajectory, step by step.
    spec = model.spec(n_tr)
    state = model.initial_state()
    x, f, v, q = (state[k, 0].numpy() + rest for k, rest in ((2, 0), (3, 1), (4, 1), (5, 1)))
    from rww.ops.reference import simulate_steps
    bold = []
    current = state
    dtb = dt / 1000
    for k in range(n_tr * spt):
        s_e = current[0, 0].numpy()
        x, f, v, q = (x + dtb * (s_e - h["kappa"] * x - h["gamma_h"] * (f - 1)), f + dtb * x,
                      v + dtb * (f - v ** (1 / h["alpha"])) / h["tau_0"],
                      q + dtb * (f * (1 - (1 - h["rho"]) ** (1 / f)) / h["rho"]
                                 - v ** (1 / h["alpha"]) * q / v) / h["tau_0"])
        seg = simulate_steps(model.parameter_table(), model.coupling(), current, spec, k, k + 1)
        current = torch.stack(seg.state)
        if (k + 1) % spt == 0:
            bold.append(h["V_0"] * (h["k_1"] * (1 - q) + h["k_2"] * (1 - q / v) + h["k_3"] * (1 - v)))
    # The loop above holds f, v, q near 1, so its BOLD carries ~1e-16 of absolute rounding (rww
    # holds deviations from rest and does not): the tolerance is absolute at that level.
    np.testing.assert_allclose(result.bold[0].numpy(), np.stack(bold), rtol=1e-12, atol=1e-15)


def test_deco_and_friston_balloons_differ():
    """The two Balloons give different BOLD from the same neural trajectory (the time-constant
    reading is faster: its BOLD responds more within the first seconds)."""
    sc = torch.rand(4, 4, dtype=torch.float64)
    out = {}
    for haemo in ("deco2014", "friston2003"):
        model = RWWBold(sc, dt=1.0, tr=0.72, haemo=haemo, dtype=torch.float64, backend="torch",
                        sigma=0.0, G=0.3)
        out[haemo] = model(5)[0]
    assert not torch.allclose(out["deco2014"], out["friston2003"], rtol=1e-3)
