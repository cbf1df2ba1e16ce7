"""Conduction delays: the reference against a plain numpy loop written here (noise off, hand-set
lags), zero lags equal to the no-delay path bit for bit, continuation across calls, per-simulation
velocities, gradients (the initial S_E history included) against finite differences and autograd,
and every checkpointed backend that simulates delays against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TOLERANCES, assert_close, seeded_connectome

import rww
from rww.delays import delay_steps
from rww.model import initial_state
from rww.ops.reference import reference_scan
from rww.ops.scan import backend_available, get_backend, rww_scan
from rww.ops.spec import ScanSpec
from rww.params import PARAM_INDEX, get_preset, pack_parameters, resolve_haemo

DECO = get_preset("deco2014")
HAEMO = resolve_haemo(DECO, None)
N = 4
# hand-set lags [steps], row = receiving region; the diagonal is 0 (self-coupling is current)
LAGS = torch.tensor([[0, 3, 1, 5],
                     [3, 0, 2, 0],
                     [1, 2, 0, 4],
                     [5, 0, 4, 0]])


def numpy_delayed_run(sc: np.ndarray, lags: np.ndarray, g: float, n_steps: int, dt: float,
                      s_e0: np.ndarray, history: np.ndarray):
    """deco2014 with delayed coupling and the Balloon (f, v, q themselves), noise off, written
    from the equations (README "The model"; TVB's delay convention: lag 0 = current S_E).
    ``history[d - 1]`` is S_E d steps before the start. Returns S_E after every step (T, N)."""
    p = DECO.defaults
    h = HAEMO
    n = sc.shape[0]
    past = [history[d] for d in range(history.shape[0])]       # past[d-1] = S_E(t - d)
    s_e, s_i = s_e0.copy(), np.full(n, 0.1)
    x, f, v, q = np.zeros(n), np.ones(n), np.ones(n), np.ones(n)
    out = []
    for _ in range(n_steps):
        seq = [s_e] + past                                     # seq[d] = S_E(t - d)
        cs = np.array([sum(sc[i, j] * seq[lags[i, j]][j] for j in range(n)) for i in range(n)])
        i_e = (p["W_E"] * p["I_0"] + p["w_EE"] * p["J_NMDA"] * s_e + g * p["J_NMDA"] * cs
               - p["w_IE"] * s_i)
        i_i = p["W_I"] * p["I_0"] + p["w_EI"] * p["J_NMDA"] * s_e - s_i

        def rate(cur, a, b, d):
            y = a * cur - b
            return y / (1 - np.exp(-d * y))

        r_e = rate(i_e, p["a_E"], p["b_E"], p["d_E"])
        r_i = rate(i_i, p["a_I"], p["b_I"], p["d_I"])
        s_e_new = np.clip(s_e + dt * (-s_e / p["tau_E"] + (1 - s_e) * p["gamma_E"] * r_e), 0, 1)
        s_i_new = np.clip(s_i + dt * (-s_i / p["tau_I"] + p["gamma_I"] * r_i), 0, 1)
        dtb = dt / 1000
        x, f, v, q = (x + dtb * (s_e - h["kappa"] * x - h["gamma_h"] * (f - 1)), f + dtb * x,
                      v + dtb * (f - v ** (1 / h["alpha"])) / h["tau_0"],
                      q + dtb * (f * (1 - (1 - h["rho"]) ** (1 / f)) / h["rho"]
                                 - v ** (1 / h["alpha"]) * q / v) / h["tau_0"])
        past = [s_e] + past[:-1]
        s_e, s_i = s_e_new, s_i_new
        out.append(s_e)
    return np.stack(out)


def test_reference_matches_a_plain_numpy_loop_with_hand_set_lags():
    """Noise off, lags up to 5 steps, a history that is not constant: S_E after every one of 40
    steps equal to the numpy loop to float64 rounding."""
    sc = seeded_connectome(N, 2).numpy()
    g, n_steps, dt = 2.5, 40, 0.1
    rng = np.random.default_rng(0)
    s_e0 = rng.uniform(0.05, 0.5, N)
    history = rng.uniform(0.05, 0.5, (5, N))
    expected = numpy_delayed_run(sc, LAGS.numpy(), g, n_steps, dt, s_e0, history)
    spec = ScanSpec(DECO, dt, 1, n_steps, haemo=HAEMO, record=("S_E",), max_delay=5)
    table = pack_parameters({"G": g, "sigma": 0.0}, DECO, 1, N, torch.float64)
    state = initial_state(1, N, torch.float64, max_delay=5)
    state[0, 0] = torch.tensor(s_e0)
    state[6:, 0] = torch.tensor(history)
    got = reference_scan(table, torch.tensor(sc), state, spec, delays=LAGS)
    np.testing.assert_allclose(got.records["S_E"][0].numpy(), expected, rtol=1e-13, atol=1e-15)
    # and the delays matter: without them the trajectory differs
    plain = reference_scan(table, torch.tensor(sc), state[:6].clone(),
                           ScanSpec(DECO, dt, 1, n_steps, haemo=HAEMO, record=("S_E",)))
    assert (plain.records["S_E"][0].numpy() - expected).__abs__().max() > 1e-6


def test_delay_steps_rounding_and_errors():
    lengths = torch.tensor([[0.0, 1.5, 0.75], [1.5, 0.0, 2.5], [0.75, 2.5, 0.0]])
    # L / (v dt) with v = 2 mm/ms, dt = 0.5 ms (v dt = 1 mm exactly): 1.5, 0.75, 2.5 -> 2, 1, 2
    # (halves to even, as numpy.rint in TVB)
    lags = delay_steps(lengths, 2.0, 0.5)
    assert lags.tolist() == [[0, 2, 1], [2, 0, 2], [1, 2, 0]]
    per_sim = delay_steps(lengths, torch.tensor([2.0, 4.0]), 0.5)
    assert per_sim.shape == (2, 3, 3) and per_sim[1].tolist() == [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match="non-negative"):
        delay_steps(-lengths, 2.0, 0.5)
    with pytest.raises(ValueError, match="positive number of m/s"):
        delay_steps(lengths, 0.0, 0.5)
    with pytest.raises(ValueError, match="square"):
        delay_steps(lengths[:2], 2.0, 0.5)


def _lengths(seed=1, scale=60.0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.rand(N, N, generator=g, dtype=torch.float64) * scale
    lengths = (lengths + lengths.T) / 2
    lengths.fill_diagonal_(0)
    return lengths


def test_zero_lags_are_the_no_delay_path_bit_for_bit():
    """Tract lengths so short that every lag rounds to 0 steps: the model takes the no-delay path
    (6-row state) and its BOLD equals a model without lengths exactly."""
    sc = seeded_connectome(N, 3)
    plain = rww.RWWBold(sc, G=0.9, dtype=torch.float64, tr=0.01, backend="torch")
    with pytest.warns(RuntimeWarning, match=r"delays have no effect.*in mm \(not m\)"):
        short = rww.RWWBold(sc, G=0.9, dtype=torch.float64, tr=0.01, backend="torch",
                            lengths=_lengths(scale=0.1), velocity=3.0)
    assert short.max_delay == 0 and short.initial_state().shape[0] == 6
    a, b = plain.simulate(3, seed=2), short.simulate(3, seed=2)
    assert torch.equal(a.bold, b.bold) and torch.equal(a.state, b.state)


def test_implausible_units_warn_and_changed_delays_refuse_to_load():
    """Lengths in metres (0.06 m read as 0.06 mm) and a velocity in mm/s-like units warn; a state
    saved with other delays (or none) is refused by load_state_dict, naming what differs."""
    sc = seeded_connectome(N, 3)
    with pytest.warns(RuntimeWarning, match=r"longest tract is 0.0\d+ mm.*in mm \(not m\)"):
        rww.RWWBold(sc, lengths=_lengths() / 1000, velocity=3.0)
    with pytest.warns(RuntimeWarning, match=r"longest conduction lag is .* ms"):
        rww.RWWBold(sc, lengths=_lengths(), velocity=0.003)
    with pytest.raises(TypeError, match="got the string '5'"):
        rww.RWWBold(sc, lengths=_lengths(), velocity="5")
    saved = rww.RWWBold(sc, lengths=_lengths(), velocity=3.0, learn=["G"], G=0.5).state_dict()
    for other, what in ((dict(lengths=_lengths(), velocity=6.0), r": velocity\. Build"),
                        ({}, r"this model's \(no delays\): lengths and velocity")):
        model = rww.RWWBold(sc, learn=["G"], G=0.5, **other)
        with pytest.raises(ValueError, match=what):
            model.load_state_dict(saved)
    same = rww.RWWBold(sc, lengths=_lengths(), velocity=3.0, learn=["G"], G=0.5)
    same.load_state_dict(saved)


def test_model_errors_name_the_fix():
    sc = seeded_connectome(N, 3)
    with pytest.raises(ValueError, match="need tract lengths"):
        rww.RWWBold(sc, velocity=3.0)
    with pytest.raises(ValueError, match=r"expected \(4, 4\) tract lengths"):
        rww.RWWBold(sc, lengths=torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"one value per simulation \(2,\) \[m/s\], got shape \(3,\)"):
        rww.RWWBold(sc, batch=2, lengths=_lengths(), velocity=torch.tensor([1.0, 2.0, 3.0]))
    model = rww.RWWBold(sc, lengths=_lengths(), velocity=3.0, tr=0.01, backend="torch")
    rows = model.initial_state().shape[0]
    assert rows == 6 + model.max_delay > 6
    with pytest.raises(ValueError, match=r"S_E history for this model's conduction delays"):
        model.simulate(1, state=torch.zeros(6, 1, N))


@pytest.mark.parametrize("backend", ["torch", "torch-checkpoint"])
def test_continued_run_equals_one_long_run(backend):
    """Two calls of 2 TRs (state with its S_E history, t0 carried) equal one call of 4 TRs."""
    sc = seeded_connectome(N, 3)
    model = rww.RWWBold(sc, G=0.9, dtype=torch.float64, tr=0.01, backend=backend,
                        lengths=_lengths(), velocity=2.0)
    whole = model.simulate(4, seed=5)
    first = model.simulate(2, seed=5)
    second = model.simulate(2, state=first.state, seed=5, t0=2 * model.steps_per_tr)
    assert torch.equal(torch.cat([first.bold, second.bold], 1), whole.bold)
    assert torch.equal(second.state, whole.state)


def test_per_simulation_velocity_equals_separate_runs():
    """velocity (B,): simulation b equals a batch-1 model at velocity v_b with sim_offset b."""
    sc = seeded_connectome(N, 3)
    velocities = torch.tensor([1.5, 6.0], dtype=torch.float64)
    batch = rww.RWWBold(sc, G=0.9, batch=2, dtype=torch.float64, tr=0.01, backend="torch",
                        lengths=_lengths(), velocity=velocities)
    together = batch.simulate(2, seed=7).bold
    for b in range(2):
        alone = rww.RWWBold(sc, G=0.9, dtype=torch.float64, tr=0.01, backend="torch",
                            lengths=_lengths(), velocity=float(velocities[b]))
        # the batch's history has max over both velocities' lags; the slower one's lags are
        # longer, so the faster simulation's extra history rows are never read
        out = alone.simulate(2, seed=7, sim_offset=b).bold
        torch.testing.assert_close(together[b], out[0], rtol=0, atol=0)


def _problem(dtype=torch.float64, batch=2, per_sim_lags=False):
    g = torch.Generator().manual_seed(4)
    sc = seeded_connectome(N, 5).to(dtype)
    lags = (torch.randint(0, 6, (batch, N, N), generator=g) if per_sim_lags
            else LAGS.clone())
    d = int(lags.max())
    spec = ScanSpec(DECO, 0.1, 10, 30, seed=3, haemo=HAEMO, record=("S_E", "r_E"), max_delay=d)
    params = {"G": torch.tensor([0.9, 1.4], dtype=dtype)[:batch].requires_grad_(),
              "w_EE": torch.tensor(1.2, dtype=dtype, requires_grad=True)}
    state = initial_state(batch, N, dtype, max_delay=d)
    state[6:] += 0.05 * torch.rand(d, batch, N, generator=g, dtype=torch.float64).to(dtype)
    state.requires_grad_()
    coupling = sc.clone().requires_grad_()
    return params, coupling, state, spec, lags


def _loss(params, coupling, state, spec, lags, backend="torch", checkpoint_every=None):
    table = pack_parameters(params, DECO, state.shape[1], N, state.dtype)
    out = rww_scan(table, coupling, state, spec, backend=backend,
                   checkpoint_every=checkpoint_every, delays=lags)
    w = torch.linspace(-1, 1, out.bold.numel(), dtype=state.dtype).view_as(out.bold)
    return ((out.bold * w).sum() * 1e3 + (out.state[:6] ** 2).sum() + out.state[6:].sum()
            + out.records["S_E"].sum() + 1e-2 * out.records["r_E"].sum())


def test_reference_gradients_match_finite_differences():
    """float64 central differences for G, w_EE, one coupling entry and one entry of the initial
    S_E history (the loss reads the final history too)."""
    params, coupling, state, spec, lags = _problem()
    loss = _loss(params, coupling, state, spec, lags)
    g_g, g_w, g_c, g_s = torch.autograd.grad(loss, [params["G"], params["w_EE"], coupling, state])
    eps = 1e-6

    def f(**change):
        with torch.no_grad():
            p = {k: v.detach().clone() for k, v in params.items()}
            c, s = coupling.detach().clone(), state.detach().clone()
            if "G" in change:
                p["G"][1] += change["G"]
            if "w" in change:
                p["w_EE"] += change["w"]
            if "c" in change:
                c[0, 3] += change["c"]
            if "s" in change:
                s[6 + 2, 1, 3] += change["s"]          # S_E of region 3, 3 steps back, sim 1
            return float(_loss(p, c, s, spec, lags))

    for key, analytic in (("G", g_g[1]), ("w", g_w), ("c", g_c[0, 3]), ("s", g_s[8, 1, 3])):
        fd = (f(**{key: eps}) - f(**{key: -eps})) / (2 * eps)
        assert float(analytic) == pytest.approx(fd, rel=1e-5, abs=1e-9), key
    assert g_s[6:].abs().sum() > 0        # the history receives gradient


DELAY_BACKENDS = ["torch-checkpoint", "numba", "triton"]


@pytest.mark.parametrize("per_sim_lags", [False, True], ids=["shared_lags", "per_sim_lags"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend", DELAY_BACKENDS)
def test_backend_with_delays_matches_the_reference(backend, dtype, per_sim_lags):
    """Forward outputs and every gradient (parameters, coupling, initial state with its S_E
    history) of a checkpointed backend against autograd through the float64 reference loop,
    with segments (K = 7) that cut TRs, at the short-horizon tolerances of tests/helpers.py."""
    ok, why = backend_available(backend)
    if not ok:
        pytest.skip(why)
    if not getattr(get_backend(backend, torch.device("cuda" if backend == "triton" and
                                                     torch.cuda.is_available() else "cpu")),
                   "supports_delays", False):
        pytest.skip(f"{backend} does not simulate conduction delays yet")
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("triton runs float32 only")
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    ref_in = _problem(torch.float64, per_sim_lags=per_sim_lags)
    params64, coupling64, state64, spec, lags = ref_in
    ref_loss = _loss(params64, coupling64, state64, spec, lags)
    ref_grads = torch.autograd.grad(ref_loss, [params64["G"], params64["w_EE"], coupling64,
                                               state64])
    params = {k: v.detach().to(dtype=dtype, device=device).requires_grad_()
              for k, v in params64.items()}
    coupling = coupling64.detach().to(dtype=dtype, device=device).requires_grad_()
    state = state64.detach().to(dtype=dtype, device=device).requires_grad_()
    loss = _loss(params, coupling, state, spec, lags.to(device), backend, checkpoint_every=7)
    grads = torch.autograd.grad(loss, [params["G"], params["w_EE"], coupling, state])
    tol = TOLERANCES[dtype]
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=tol["forward"])
    for name, got, want in zip(("G", "w_EE", "coupling", "state"), grads, ref_grads):
        assert_close(got.cpu(), want, tol["grad"], f"grad {name}")


# ----------------------------------------------------------------------------------------------
# Triton backend with delays (streamed coupling variant; the kernels run under the interpreter
# without a GPU): continuation across calls and the backward's recomputation check.


def _triton_device():
    pytest.importorskip("triton")
    ok, why = backend_available("triton")
    if not ok:
        pytest.skip(why)
    return "cuda" if torch.cuda.is_available() else "cpu"


def test_triton_continued_run_with_delays_equals_one_long_run_bit_for_bit():
    """float32, per-simulation lags up to 5 steps: two calls of 10 steps (the final state with
    its S_E history and t0 carried) equal one call of 20 steps bit for bit (BOLD, records and
    the state with its history)."""
    device = _triton_device()
    params, coupling, state, _, lags = _problem(torch.float32, per_sim_lags=True)
    d = int(lags.max())
    table = pack_parameters({k: v.detach() for k, v in params.items()}, DECO, 2, N,
                            torch.float32).to(device)
    coupling, state, lags = coupling.detach().to(device), state.detach().to(device), lags.to(device)

    def spec(n_steps, t0=0):
        return ScanSpec(DECO, 0.1, 5, n_steps, seed=3, t0=t0, haemo=HAEMO,
                        record=("S_E", "r_E"), max_delay=d)

    whole = rww_scan(table, coupling, state, spec(20), backend="triton", delays=lags)
    first = rww_scan(table, coupling, state, spec(10), backend="triton", delays=lags)
    second = rww_scan(table, coupling, first.state, spec(10, t0=10), backend="triton",
                      delays=lags)
    assert whole.state.shape == (6 + d, 2, N)
    assert torch.equal(torch.cat([first.bold, second.bold], 1), whole.bold)
    for name in ("S_E", "r_E"):
        assert torch.equal(torch.cat([first.records[name], second.records[name]], 1),
                           whole.records[name])
    assert torch.equal(second.state, whole.state)
    # history row 6 + d - 1 is S_E d steps before the end (after step 10 - d, 1-based)
    every = rww_scan(table, coupling, state, ScanSpec(DECO, 0.1, 1, 10, seed=3, haemo=HAEMO,
                                                      record=("S_E",), max_delay=d),
                     backend="triton", delays=lags)
    for back in range(1, d + 1):
        assert torch.equal(first.state[5 + back], every.records["S_E"][:, 9 - back])


def test_triton_backward_with_delays_checks_its_recomputation_history_included(monkeypatch):
    """The recomputed end of every segment but the last, S_E history included, equals the next
    checkpoint to the last bit; a corrupted history row of a checkpoint is reported."""
    device = _triton_device()
    from rww.ops.triton import adjoint

    params, coupling, state, spec, lags = _problem(torch.float32, per_sim_lags=True)
    loss = _loss({k: v.detach().to(device).requires_grad_() for k, v in params.items()},
                 coupling.detach().to(device).requires_grad_(),
                 state.detach().to(device).requires_grad_(), spec, lags.to(device), "triton",
                 checkpoint_every=7)
    loss.backward()
    assert adjoint.last_recompute_check() == (0, 0.0)
    real_bwd = adjoint.rww_bwd

    def corrupt(params, coupling, checkpoints, *args, **kwargs):
        checkpoints = checkpoints.clone()
        checkpoints[-1, 6 + 2, 0, 1] += 1e-3       # S_E of region 1, 3 steps before step 28
        return real_bwd(params, coupling, checkpoints, *args, **kwargs)

    monkeypatch.setattr(adjoint, "rww_bwd", corrupt)
    loss = _loss({k: v.detach().to(device).requires_grad_() for k, v in params.items()},
                 coupling.detach().to(device), state.detach().to(device), spec, lags.to(device),
                 "triton", checkpoint_every=7)
    with pytest.warns(RuntimeWarning, match="recomputed in the backward pass differ"):
        loss.backward()
    mismatches, difference = adjoint.last_recompute_check()
    assert mismatches == 1 and difference == pytest.approx(1e-3, rel=1e-2)


def test_triton_delays_need_the_streamed_variant():
    """Resident or tl.dot coupling with delays is refused, naming the supported variant; the
    default configuration with delays is streamed."""
    _triton_device()
    from rww.ops.triton.config import choose_config

    cfg = choose_config(2, N, False, "bwd", delays=True)
    assert not cfg.resident and not cfg.use_dot
    assert not choose_config(8192, 100, False, "fwd", delays=True).use_dot
    with pytest.raises(ValueError, match="streamed coupling variant only"):
        choose_config(2, N, False, "fwd", delays=True, resident=True)
    from rww.ops.triton.backend import TritonBackend

    params, coupling, state, spec, lags = _problem(torch.float32)
    table = pack_parameters({k: v.detach() for k, v in params.items()}, DECO, 2, N,
                            torch.float32)
    with pytest.raises(ValueError, match="streamed coupling variant only"):
        TritonBackend(resident=True).forward(table, coupling.detach(), state.detach(), spec, 7,
                                             delays=lags.to(torch.int32))


# ----------------------------------------------------------------------------- numba with delays
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numba_continued_run_equals_one_long_run(dtype):
    """numba: two calls of 2 TRs (state with its S_E history, t0 carried) equal one call of 4
    TRs bit for bit; the lags (up to 328 steps) reach further back than one call's 200 steps."""
    ok, why = backend_available("numba")
    if not ok:
        pytest.skip(why)
    sc = seeded_connectome(N, 3)
    model = rww.RWWBold(sc, G=0.9, dtype=dtype, tr=0.01, backend="numba",
                        lengths=_lengths(), velocity=1.0)
    assert model.max_delay > 2 * model.steps_per_tr
    whole = model.simulate(4, seed=5)
    first = model.simulate(2, seed=5)
    second = model.simulate(2, state=first.state, seed=5, t0=2 * model.steps_per_tr)
    assert torch.equal(torch.cat([first.bold, second.bold], 1), whole.bold)
    assert torch.equal(second.state, whole.state)
    # and the history it carries is the reference's (torch-checkpoint, same lags and noise)
    ref = rww.RWWBold(sc, G=0.9, dtype=dtype, tr=0.01, backend="torch-checkpoint",
                      lengths=_lengths(), velocity=1.0).simulate(4, seed=5)
    tol = TOLERANCES[dtype]["forward"]
    assert_close(whole.bold, ref.bold, 10 * tol, "bold")
    assert_close(whole.state, ref.state, 10 * tol, "state")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numba_zero_lags_equal_the_no_delay_kernels(dtype):
    """Lags all 0 with max_delay 1 (the delayed kernels, a 7-row state) against the numba kernels
    without delays: outputs and gradients equal to rounding (relative max error <= 1e-14 in
    float64, 1e-6 in float32; the coupling sums run in the same order, so they are in practice
    equal); the initial history, never read, receives exactly zero gradient."""
    ok, why = backend_available("numba")
    if not ok:
        pytest.skip(why)
    sc = seeded_connectome(N, 5).to(dtype)
    spec0 = ScanSpec(DECO, 0.1, 10, 30, seed=3, haemo=HAEMO, record=("S_E", "r_E"))
    spec1 = ScanSpec(DECO, 0.1, 10, 30, seed=3, haemo=HAEMO, record=("S_E", "r_E"), max_delay=1)
    lags = torch.zeros(N, N, dtype=torch.int32)
    results = []
    for spec, delays in ((spec0, None), (spec1, lags)):
        params = {"G": torch.tensor([0.9, 1.4], dtype=dtype, requires_grad=True)}
        coupling = sc.clone().requires_grad_()
        state = initial_state(2, N, dtype, max_delay=spec.max_delay).requires_grad_()
        table = pack_parameters(params, DECO, 2, N, dtype)
        out = rww_scan(table, coupling, state, spec, backend="numba", checkpoint_every=7,
                       delays=delays)
        w = torch.linspace(-1, 1, out.bold.numel(), dtype=dtype).view_as(out.bold)
        loss = ((out.bold * w).sum() * 1e3 + (out.state[:6] ** 2).sum()
                + out.records["S_E"].sum() + 1e-2 * out.records["r_E"].sum())
        grads = torch.autograd.grad(loss, [params["G"], coupling, state])
        results.append((out, grads))
    (plain, g_plain), (zero, g_zero) = results
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    assert_close(zero.bold, plain.bold, tol, "bold")
    for name in ("S_E", "r_E"):
        assert_close(zero.records[name], plain.records[name], tol, name)
    assert_close(zero.state[:6], plain.state, tol, "state")
    for name, got, want in zip(("G", "coupling"), g_zero[:2], g_plain[:2]):
        assert_close(got, want, tol, f"grad {name}")
    assert_close(g_zero[2][:6], g_plain[2], tol, "grad state")
    assert torch.equal(g_zero[2][6], torch.zeros_like(g_zero[2][6]))


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numba_delays_recompute_is_exact(preset, dtype):
    """The backward's recomputation of every segment (K = 4 cutting TRs, history included)
    reproduces the forward's checkpoints bit for bit, with a scan (6 steps) shorter than the longest lag (8)
    (the final history reaches into the initial one); gradients against the float64 reference
    (autograd through the plain loop)."""
    ok, why = backend_available("numba")
    if not ok:
        pytest.skip(why)
    from rww.ops.numba.backend import last_recompute_mismatches

    pr = get_preset(preset)
    haemo = resolve_haemo(pr, None)
    g = torch.Generator().manual_seed(8)
    lags = torch.randint(0, 9, (2, N, N), generator=g)
    spec = ScanSpec(pr, 0.1, 3, 6, seed=4, haemo=haemo, record=("S_E",), max_delay=8)
    sc = seeded_connectome(N, 5)
    if pr.code == 1:
        from rww.coupling import griffiths_laplacian, griffiths_normalise_sc
        sc = griffiths_laplacian(griffiths_normalise_sc(sc))
    hist = 0.05 * torch.rand(8, 2, N, generator=g, dtype=torch.float64)

    def grads(backend, dt):
        params = {"G": torch.tensor([0.9, 1.4], dtype=dt, requires_grad=True)}
        coupling = sc.to(dt).requires_grad_()
        state = initial_state(2, N, dt, max_delay=8)
        state[6:] += hist.to(dt)
        state.requires_grad_()
        table = pack_parameters(params, pr, 2, N, dt)
        out = rww_scan(table, coupling, state, spec, backend=backend,
                       checkpoint_every=4 if backend == "numba" else None, delays=lags)
        w = torch.linspace(-1, 1, out.bold.numel(), dtype=dt).view_as(out.bold)
        hw = torch.linspace(0.5, 2, out.state[6:].numel(), dtype=dt).view_as(out.state[6:])
        loss = ((out.bold * w).sum() * 1e3 + (out.state[:6] ** 2).sum()
                + (out.state[6:] * hw).sum() + out.records["S_E"].sum())
        return torch.autograd.grad(loss, [params["G"], coupling, state])

    got = grads("numba", dtype)
    assert last_recompute_mismatches() == 0
    want = grads("torch", torch.float64)
    for name, a, b in zip(("G", "coupling", "state"), got, want):
        assert_close(a, b, TOLERANCES[dtype]["grad"], f"grad {name}")
    assert got[2][6:].abs().sum() > 0
