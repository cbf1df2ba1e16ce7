"""The numba CPU backend against the reference loop: forward outputs, every gradient, noise,
continuation, divergence reporting, memory, determinism, and its float32 math functions."""

import math
import os

import numpy as np
import pytest
import torch
from helpers import (PARAM_SHAPES, TOLERANCES, assert_close, assert_scan_close,
                     compare_with_reference, make_problem, run_with_grads)

from rww.errors import SimulationDiverged
from rww.noise import to_unit_interval, uniform_words
from rww.ops.reference import reference_scan, simulate_steps
from rww.ops.scan import auto_backend_name, rww_scan
from rww.ops.spec import ScanSpec
from rww.params import resolve_haemo

numba_backend = pytest.importorskip("rww.ops.numba.backend")
from rww.ops.numba import layout, mathfn, step  # noqa: E402

RECORDS = ("S_E", "S_I", "r_E", "r_I")


def numba_scan(checkpoint_every=None):
    def scan(table, coupling, state, spec):
        return rww_scan(table, coupling, state, spec, backend="numba",
                        checkpoint_every=checkpoint_every)
    return scan


def check(**problem):
    """compare_with_reference for the numba backend, plus: the backward pass recomputed every
    segment end bit for bit equal to the forward's checkpoint."""
    out = compare_with_reference("numba", **problem)
    assert numba_backend.last_recompute_mismatches() == 0
    return out


# ---------------------------------------------------------------- forward and all gradients
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
@pytest.mark.parametrize("per_sim", [False, True], ids=["shared_C", "per_sim_C"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("n_nodes", [1, 5, 68, 83])
def test_matches_reference(preset, dtype, n_nodes, batch, per_sim):
    # 3 TRs of 10 steps with K = 7: five segments, which cut TRs, the last one partial. The
    # parameters cycle through the shapes (), (N,), (B, 1) and (B, N) (make_problem).
    check(checkpoint_every=7, preset=preset, batch=batch, n_nodes=n_nodes,
          per_sim_coupling=per_sim, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", PARAM_SHAPES)
@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_every_parameter_shape(preset, kind, dtype):
    """Every parameter in one shape: (), (N,), (B, 1) or (B, N); 30 steps, K = 6 (5 segments
    that cut the 10-step TRs)."""
    names = ("G", "w_EE", "w_IE", "w_EI", "I_0", "sigma", "J_NMDA", "tau_E")
    check(checkpoint_every=6, preset=preset, batch=3, n_nodes=5, dtype=dtype,
          shapes={name: kind for name in names})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_pipelined_backward(preset, dtype, monkeypatch):
    """B = 1 on two threads (a segment swept while the previous one is recomputed): against the
    reference, and bitwise equal to the one-thread kernel, for every output's gradient."""
    monkeypatch.setenv("RWW_NUM_THREADS", "2")
    monkeypatch.setattr(numba_backend, "PIPELINE", "on")
    check(checkpoint_every=7, preset=preset, batch=1, n_nodes=68, dtype=dtype)
    leaves, build, spec = make_problem(preset=preset, batch=1, n_nodes=5, n_trs=4, dtype=dtype)

    def grads(mode):
        monkeypatch.setattr(numba_backend, "PIPELINE", mode)
        return run_with_grads(numba_scan(checkpoint_every=6), leaves, build, spec)[2]

    on, off = grads("on"), grads("off")
    for name in on:
        assert torch.equal(on[name], off[name]), name


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_parameters_of_shape_b(preset):
    """Parameters given as 1-d ``(B,)`` tensors (B != N), the shape users write for one value per
    simulation, alongside scalars and ``(N,)``; against the reference in float64."""
    batch, n_nodes = 3, 5
    leaves, build, spec = make_problem(preset=preset, batch=batch, n_nodes=n_nodes,
                                       dtype=torch.float64, shapes={"G": "sim", "w_IE": "sim",
                                                                    "sigma": "sim"})
    for name in ("G", "w_IE", "sigma"):
        leaves["params"][name] = leaves["params"][name].detach().reshape(batch).requires_grad_(True)
    ref, upstream, expected = run_with_grads(reference_scan, leaves, build, spec)
    out, _, actual = run_with_grads(numba_scan(checkpoint_every=7), leaves, build, spec, upstream)
    tol = TOLERANCES[torch.float64]
    assert_close(out.bold, ref.bold, tol["forward"], "bold")
    for name in expected:
        assert_close(actual[name], expected[name], tol["grad"], f"grad {name}")
    assert actual["param:G"].shape == (batch,)


@pytest.mark.parametrize("k, n_trs", [(1, 2), (20, 2), (1000, 3), (13, 7)])
def test_checkpoint_intervals(k, n_trs):
    """K = 1 (a segment per step), K = TR length, K > T (one segment), and 70 steps / K = 13."""
    check(checkpoint_every=k, preset="deco2014", batch=2, n_nodes=5, n_trs=n_trs,
          dtype=torch.float64)


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_continued_run_matches_reference(preset):
    """t0 > 0: the noise counter starts at t0 (here past 2**32, so its high word is used)."""
    check(checkpoint_every=7, preset=preset, batch=2, n_nodes=5, t0=2**32 + 5,
          dtype=torch.float64)


WHICH = ("bold", "state") + RECORDS


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_gradient_from_each_output(preset, which):
    """Each output alone feeds the loss, so an injection that is wrong in one path cannot be
    hidden by the others."""
    leaves, build, spec = make_problem(preset=preset, batch=2, n_nodes=5, dtype=torch.float64,
                                       n_trs=3, steps_per_tr=10)
    inputs = list(leaves["params"].values()) + [leaves["coupling"], leaves["state"]]

    def grads(scan):
        result = scan(*build(), spec)
        out = {"bold": result.bold, "state": result.state, **result.records}[which]
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(3),
                             dtype=out.dtype)
        return torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True)

    expected = grads(reference_scan)
    actual = grads(numba_scan(checkpoint_every=7))
    for x, e, a in zip(inputs, expected, actual):
        e = torch.zeros_like(x) if e is None else e
        a = torch.zeros_like(x) if a is None else a
        assert_close(a, e, TOLERANCES[torch.float64]["grad"], f"{which}: grad {tuple(x.shape)}")


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_gradient_at_the_kinks(preset):
    """States and currents sitting exactly on the clamp / relu kinks, where the gradient
    convention decides: deco2014 with gamma = 0 and sigma = 0 keeps S_E = S_I = 0 exactly, so the
    pre-clamp value is exactly 0 every step (torch.clamp passes the gradient there);
    griffiths2022 with W_E = W_I = 0 starts from S_E = S_I = 0, so both currents are exactly
    relu(0) at the first step (relu passes nothing there), and sigma = w_EE = 0 put the gains'
    relu on its kink."""
    from rww.params import get_preset, pack_parameters
    pr = get_preset(preset)
    n_nodes, batch = 4, 2
    rng = np.random.default_rng(5)
    sc = rng.random((n_nodes, n_nodes))
    coupling = torch.tensor((sc + sc.T) / 4, requires_grad=True)
    if preset == "deco2014":
        values = {"gamma_E": 0.0, "gamma_I": 0.0, "sigma": 0.0, "G": 0.7}
    else:
        values = {"W_E": 0.0, "W_I": 0.0, "sigma": 0.0, "w_EE": 0.0}
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for k, v in values.items()}
    state0 = torch.tensor(rng.uniform(0.5, 1.5, (6, batch, n_nodes)))
    state0[0:2] = 0.0
    state0[2] = 0.1
    state0 = state0.requires_grad_(True)
    spec = ScanSpec(pr, 0.1 if preset == "deco2014" else 0.05, 5, 15, seed=3,
                    haemo=resolve_haemo(pr, None), record=RECORDS)
    inputs = list(leaves.values()) + [coupling, state0]

    def grads(scan):
        table = pack_parameters(leaves, pr, batch, n_nodes, torch.float64)
        out = scan(table, coupling, state0, spec)
        loss = 100 * out.bold.sum() + out.state.sum() + sum(r.sum() for r in out.records.values())
        return out, torch.autograd.grad(loss, inputs)

    ref, expected = grads(reference_scan)
    if preset == "deco2014":
        assert (ref.state[0:2] == 0).all()
    out, actual = grads(numba_scan(checkpoint_every=4))
    assert_close(out.bold, ref.bold, TOLERANCES[torch.float64]["forward"], "bold")
    for x, name in zip(range(len(inputs)), list(leaves) + ["coupling", "state"]):
        assert_close(actual[x], expected[x], TOLERANCES[torch.float64]["grad"], f"grad {name}")


def test_coupling_without_gradient():
    """A coupling that needs no gradient skips its accumulation; the others are unchanged."""
    leaves, build, spec = make_problem(batch=2, n_nodes=5, dtype=torch.float64)
    leaves["coupling"].requires_grad_(False)
    table, coupling, state = build()
    ref = reference_scan(table, coupling, state, spec)
    g_ref = torch.autograd.grad(ref.bold.sum() + ref.state.sum(), [leaves["state"]])[0]
    table, coupling, state = build()
    out = rww_scan(table, coupling, state, spec, backend="numba", checkpoint_every=7)
    g = torch.autograd.grad(out.bold.sum() + out.state.sum(), [leaves["state"]])[0]
    assert_close(g, g_ref, TOLERANCES[torch.float64]["grad"], "grad state")


def test_zero_steps():
    leaves, build, spec = make_problem(batch=2, n_nodes=3, dtype=torch.float64)
    spec = ScanSpec(spec.preset, spec.dt, spec.steps_per_tr, 0, seed=1, haemo=spec.haemo,
                    record=RECORDS)
    table, coupling, state = build()
    out = rww_scan(table, coupling, state, spec, backend="numba")
    assert out.bold.shape == (2, 0, 3) and torch.equal(out.state, state)
    (g,) = torch.autograd.grad(out.state.sum(), [leaves["state"]])
    assert torch.equal(g, torch.ones_like(g))


# ---------------------------------------------------------------- noise and continuation
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniforms_equal_the_noise_contract(dtype):
    seed = (0x299F31D0 << 32) | 0xA4093822
    for t in (0, 12345, 2**32 + 7):
        for sim in (0, 5):
            out = np.empty((2, 11), dtype=dtype)
            step.philox_uniforms(t, sim, 11, seed & 0xFFFFFFFF, seed >> 32, out)
            words = uniform_words(seed, torch.tensor([t]), 11, sim + 1)
            tdtype = torch.float32 if dtype == np.float32 else torch.float64
            for k in range(2):
                expected = to_unit_interval(words[k][0, sim], tdtype).numpy()
                assert np.array_equal(out[k], expected)


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_two_halves_equal_one_run_bitwise(preset):
    """A run of 2T steps equals a run of T continued from its final state with t0 = T."""
    leaves, build, spec = make_problem(preset=preset, batch=2, n_nodes=6, n_trs=4,
                                       steps_per_tr=10, dtype=torch.float32)
    with torch.no_grad():
        table, coupling, state = build()
        whole = rww_scan(table, coupling, state, spec, backend="numba", checkpoint_every=9)

        def half(t0, start):
            sub = ScanSpec(spec.preset, spec.dt, spec.steps_per_tr, spec.n_steps // 2,
                           seed=spec.seed, t0=t0, haemo=spec.haemo, record=spec.record)
            return rww_scan(table, coupling, start, sub, backend="numba", checkpoint_every=5)

        first = half(0, state)
        second = half(spec.n_steps // 2, first.state)
    assert torch.equal(whole.state, second.state)
    assert torch.equal(whole.bold, torch.cat([first.bold, second.bold], 1))
    for name in spec.record:
        assert torch.equal(whole.records[name],
                           torch.cat([first.records[name], second.records[name]], 1))


# ---------------------------------------------------------------- numba vs triton
@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_agrees_with_triton_interpreter(preset):
    """The two fused backends on the same float32 inputs and upstream gradients: outputs and
    every gradient within the float32 tolerances (relative max-norm), the Triton kernels run
    under the interpreter (TRITON_INTERPRET=1, set session-wide by conftest.py without a GPU).
    Small on purpose: the interpreter takes ~50 ms per step."""
    pytest.importorskip("triton")
    from rww.ops.scan import backend_available
    ok, why = backend_available("triton")
    if not ok:
        pytest.skip(why)
    from rww.ops.triton.backend import TritonBackend
    ok, why = TritonBackend().supports(torch.device("cpu"))
    if not ok:
        pytest.skip(why)
    leaves, build, spec = make_problem(preset=preset, batch=2, n_nodes=5, n_trs=3,
                                       steps_per_tr=10, dtype=torch.float32)

    def scan(name):
        def run(table, coupling, state, spec):
            return rww_scan(table, coupling, state, spec, backend=name, checkpoint_every=7)
        return run

    tri, upstream, expected = run_with_grads(scan("triton"), leaves, build, spec)
    out, _, actual = run_with_grads(scan("numba"), leaves, build, spec, upstream)
    assert_scan_close(out, actual, tri, expected, torch.float32)


# ---------------------------------------------------------------- divergence
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_divergence_reported_like_the_reference(dtype):
    """f pushed through 0 by a strongly negative flow signal: simulation 1 at local step 4,
    simulation 2 later; simulation 0 stays healthy and is not affected."""
    leaves, build, spec = make_problem(batch=3, n_nodes=4, n_trs=3, steps_per_tr=10, dtype=dtype,
                                       t0=100)
    with torch.no_grad():
        table, coupling, healthy = build()
        state = healthy.clone()
        state[2, 1, 2], state[3, 1, 2] = -1.0, 4.5e-4 - 1.0     # x, f - 1
        state[2, 2, 0], state[3, 2, 0] = -1.0, 1.25e-3 - 1.0
        ref = simulate_steps(table.double(), coupling.double(), state.double(), spec, 0,
                             spec.n_steps)
        out = numba_backend.NumbaBackend().forward(table, coupling, state, spec, 7)
        assert out.first_bad.tolist() == ref.first_bad.tolist()
        assert out.first_bad[0] == -1 and out.first_bad[1] == 104 and out.first_bad[2] > 104
        # a diverged simulation stops: its outputs from the bad step on are NaN
        assert torch.isnan(out.state[:, 1:]).all() and torch.isnan(out.bold[1]).all()
        assert torch.isfinite(out.bold[2, 0]).all() and torch.isnan(out.bold[2, 1:]).all()
        clean = numba_backend.NumbaBackend().forward(table, coupling, healthy, spec, 7)
        assert torch.equal(out.bold[0], clean.bold[0]) and torch.equal(out.state[:, 0],
                                                                       clean.state[:, 0])
        with pytest.raises(SimulationDiverged) as expected:
            reference_scan(table.double(), coupling.double(), state.double(), spec)
        with pytest.raises(SimulationDiverged) as raised:
            rww_scan(table, coupling, state, spec, backend="numba")
    assert (raised.value.simulation, raised.value.step, raised.value.n_diverged) == \
        (expected.value.simulation, expected.value.step, expected.value.n_diverged) == (1, 104, 2)


# ---------------------------------------------------------------- memory, determinism
def saved_bytes(fn) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_saves_only_checkpoints():
    """The Function saves the inputs and ceil(T/K) states: O(B*N*T/K), against O(B*N*T) floats
    for autograd through the loop."""
    leaves, build, spec = make_problem(batch=2, n_nodes=5, n_trs=40, steps_per_tr=25,
                                       dtype=torch.float32, record=())
    k = 32
    table, coupling, state = build()
    n_seg = math.ceil(spec.n_steps / k)
    expected = (table.numel() + coupling.numel() + n_seg * state.numel()) * 4
    ours = saved_bytes(lambda: rww_scan(*build(), spec, backend="numba", checkpoint_every=k))
    assert ours == expected
    reference = saved_bytes(lambda: reference_scan(*build(), spec))
    # every one of the 1000 steps saves several (B, N) tensors
    assert reference > 10 * spec.n_steps * state[0].numel() * 4
    assert reference > 50 * ours


def test_independent_of_thread_count(monkeypatch):
    def run(threads):
        monkeypatch.setenv("RWW_NUM_THREADS", str(threads))
        leaves, build, spec = make_problem(batch=3, n_nodes=5, dtype=torch.float32)
        table, coupling, state = build()
        out = rww_scan(table, coupling, state, spec, backend="numba", checkpoint_every=7)
        loss = out.bold.sum() * 100 + out.state.sum() + sum(r.sum() for r in out.records.values())
        inputs = list(leaves["params"].values()) + [leaves["coupling"], leaves["state"]]
        return [out.bold, out.state] + list(torch.autograd.grad(loss, inputs))

    one, two, again = run(1), run(2), run(2)
    for a, b, c in zip(one, two, again):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_thread_count_follows_torch(monkeypatch):
    """Without RWW_NUM_THREADS the pool is at most torch's thread count (rww simulate --threads)."""
    monkeypatch.delenv("RWW_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert numba_backend.num_threads() == 1
        assert torch.get_num_threads() == 1         # numba's threading layer did not reset it
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("RWW_NUM_THREADS", "3")
    assert numba_backend.num_threads() == 3


def test_user_thread_setting_survives_numba_start_with_rww_num_threads():
    """numba's threading layer starts once per process and then resets OpenMP's (torch's) thread
    count: in a fresh process, with RWW_NUM_THREADS set, a user's torch setting must survive."""
    import subprocess
    import sys
    code = ("import torch; torch.set_num_threads(1); from rww.ops.numba import backend as nb; "
            "print(nb.num_threads(), torch.get_num_threads())")
    env = dict(os.environ, RWW_NUM_THREADS="2", NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1"]


# ---------------------------------------------------------------- interface
def test_interface_and_errors(monkeypatch):
    backend = numba_backend.NumbaBackend()
    assert backend.available() == (True, "")
    assert backend.supports(torch.device("cpu"))[0]
    ok, why = backend.supports(torch.device("cuda"))
    assert not ok and "CPU" in why
    assert auto_backend_name("cpu") == "numba"
    leaves, build, spec = make_problem(batch=1, n_nodes=3)
    with torch.no_grad():
        table, coupling, state = build()
    with pytest.raises(TypeError, match="float16"):
        backend.forward(table.half(), coupling.half(), state.half(), spec, 4)
    big = layout.MAX_NODES + 1
    with pytest.raises(ValueError, match="exceeds"):
        backend.forward(table, torch.zeros(big, big), torch.zeros(6, 1, big), spec, 4)
    monkeypatch.setenv("RWW_NUM_THREADS", "0")
    with pytest.raises(ValueError, match="RWW_NUM_THREADS"):
        numba_backend.num_threads()


# ---------------------------------------------------------------- float32 math
EPS32 = float(np.finfo(np.float32).eps)


def apply(kind, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    mathfn.math_check(kind, x, out)
    return out


def test_float32_math_accuracy():
    """The vectorisable float32 functions against float64 numpy. Measured maxima (in units of
    float32 eps): exp 0.81, expm1 1.30, log 1.81, sin/cos 0.69 (absolute), tanh 1.87."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-86, 88.72, 400_000), rng.uniform(-1, 1, 200_000),
                        rng.uniform(-1e-3, 1e-3, 50_000)]).astype(np.float32)
    x64 = x.astype(np.float64)

    def rel(actual, expected):
        keep = expected != 0
        return np.max(np.abs(actual[keep] - expected[keep]) / np.abs(expected[keep])) / EPS32

    assert rel(apply(0, x), np.exp(x64)) <= 1.0
    assert rel(apply(1, x), np.expm1(x64)) <= 1.5
    y = np.concatenate([rng.uniform(0, 1, 200_000), 10 ** rng.uniform(-44, 38, 200_000),
                        1 + rng.uniform(-1e-3, 1e-3, 50_000)]).astype(np.float32)
    y = y[y > 0]
    assert rel(apply(2, y), np.log(y.astype(np.float64))) <= 2.0
    u = rng.uniform(0, 1, 200_000).astype(np.float32)
    angle = 2 * np.pi * u.astype(np.float64)
    assert np.max(np.abs(apply(3, u) - np.sin(angle))) <= EPS32
    assert np.max(np.abs(apply(4, u) - np.cos(angle))) <= EPS32
    t = np.concatenate([rng.uniform(-25, 25, 200_000), rng.uniform(-1e-2, 1e-2, 200_000)])
    assert rel(apply(5, t), np.tanh(t.astype(np.float32).astype(np.float64))) <= 2.0
    # log1p where the Balloon state lives (deviations from rest, > -1), tiny values included
    w = np.concatenate([rng.uniform(-0.99, 3, 200_000), rng.uniform(-1e-3, 1e-3, 200_000),
                        np.sign(rng.uniform(-1, 1, 50_000)) * 10 ** rng.uniform(-30, -7, 50_000)]
                       ).astype(np.float32)
    assert rel(apply(6, w), np.log1p(w.astype(np.float64))) <= 3.0


def test_float32_math_special_values():
    nan, inf = np.nan, np.inf
    sp = np.array([nan, inf, -inf, 0.0, 1.0, 88.72, 88.73, -86.6], dtype=np.float32)
    e = apply(0, sp)
    assert np.isnan(e[0]) and e[1] == inf and e[2] == 0 and e[3] == 1 and e[6] == inf
    assert e[7] == 0 and abs(e[5] / np.exp(np.float64(sp[5])) - 1) <= EPS32   # 2**128 range
    assert np.isnan(apply(1, sp)[0])
    assert apply(1, sp)[2] == -1 and apply(1, sp)[7] == -1 and apply(1, sp)[3] == 0
    logs = apply(2, np.array([nan, inf, -1.0, 0.0, 1.0, 1e-45], dtype=np.float32))
    assert np.isnan(logs[0]) and logs[1] == inf and np.isnan(logs[2]) and logs[3] == -inf
    assert logs[4] == 0 and abs(logs[5] - np.log(np.float64(np.float32(1e-45)))) < 2 * EPS32 * 104
    th = apply(5, np.array([nan, inf, -inf, 0.0, 30.0], dtype=np.float32))
    assert np.isnan(th[0]) and list(th[1:]) == [1, -1, 0, 1]
    # Box-Muller's u in (0, 1]: log(u) <= 0, so sqrt(-2 log u) is never NaN
    u = ((np.arange(2**24 - 1000, 2**24, dtype=np.float32) + np.float32(0.5))
         * np.float32(2.0**-24))
    assert (apply(2, u) <= 0).all()


def _exact_rate_and_slope(kind: str, y: float, d: float):
    """H(y) and dH/dy with 50 significant digits: deco2014 ``y / (1 - e^{-d y})``; griffiths2022
    ``(1e-5 + |y|) / (1e-5 d + |1 - e^{-d y}|)`` with torch's sign(0) = 0."""
    import mpmath

    with mpmath.workdps(50):
        y, d = mpmath.mpf(y), mpmath.mpf(d)
        e = mpmath.exp(-d * y)
        w = 1 - e
        if kind == "deco":
            if y == 0:
                return 1 / d, mpmath.mpf(0.5)
            return y / w, 1 / w - y * d * e / w ** 2
        eps = mpmath.mpf(1e-5)
        num, den = eps + abs(y), eps * d + abs(w)
        return num / den, mpmath.sign(y) / den - num * mpmath.sign(w) * d * e / den ** 2


# Measured worst relative errors over the points below (rate, slope): float32 4.8e-7 / 5.4e-7;
# float64 9e-15 / 1.1e-15 (griffiths2022) and 1.4e-12 (deco2014's slope: the reference's
# series below |d y| = 0.1 is the derivative of a truncated series). Before the slopes went
# through phi's series, float32 griffiths2022 slopes near y = 0 were wrong by up to a factor
# 1e6 (1e-12 < |y| < 1e-5) and float64 ones by 2e-3.
RATE_TOL = {(np.float32, "deco"): (1e-6, 2e-6), (np.float32, "griffiths"): (1e-6, 2e-6),
            (np.float64, "deco"): (1e-13, 5e-12), (np.float64, "griffiths"): (1e-13, 1e-13)}


@pytest.mark.parametrize("kind", ["deco", "griffiths"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transfer_functions_and_slopes_near_y_zero(kind, dtype):
    """The kernels' rates and slopes against 50-digit values, at the y they see (a = 1, b = 0,
    so y is the input exactly): dense around 0 and the series switch, |y| from 1e-12 to 1, wide."""
    pytest.importorskip("mpmath")
    fn = step._rate_deco if kind == "deco" else step._rate_griffiths
    tol_rate, tol_slope = RATE_TOL[(dtype, kind)]
    for d in (0.16, 0.087):
        switch = 0.1 / d
        ys = np.concatenate([np.linspace(-3 * switch, 3 * switch, 601),
                             switch * np.array([1 - 1e-6, 1, 1 + 1e-6, -1 + 1e-6, -1, -1 - 1e-6]),
                             np.geomspace(1e-12, 1, 120), -np.geomspace(1e-12, 1, 120),
                             np.linspace(-60, 60, 241)]).astype(dtype)
        for y in ys[ys != 0]:
            rate, slope, _ = fn(y, dtype(1.0), dtype(0.0), dtype(d))
            exact_rate, exact_slope = _exact_rate_and_slope(kind, float(y), float(dtype(d)))
            assert abs(float(rate) / float(exact_rate) - 1) < tol_rate, (y, rate, exact_rate)
            assert abs(float(slope) / float(exact_slope) - 1) < tol_slope, (y, slope, exact_slope)


def test_warmup_runs_every_kernel_variant():
    """The real warm-up (``rww info --warmup``), not a stand-in: it must import what it needs and
    run every variant (it once failed on a relative import that the CLI test's fake hid)."""
    seconds = numba_backend.warmup()
    assert isinstance(seconds, float) and seconds > 0
