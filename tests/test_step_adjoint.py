"""Per-step adjoint tests: one step of every checkpointed backend against ``torch.func.vjp`` of
the reference scan in float64, from crafted states and parameters that sit on the equations'
switches and kinks.

What is compared. One Euler-Maruyama step (``n_steps = steps_per_tr = checkpoint_every = 1``:
the step ends a TR, so the BOLD / S_E / S_I record injections at the TR end and the r_E / r_I
record of the step are all exercised; a second case runs 2 steps of 1-step TRs in one segment,
so the adjoint also carries an injected TR-end gradient back through a step). Forward outputs
(BOLD, the final state, the four records) and the vector-Jacobian product of a fixed random
linear functional of all of them (``helpers.upstream_gradients``: BOLD weighted x100) with
respect to the full ``(P, B, N)`` parameter table, the coupling matrix and the initial state.
The reference runs in float64 on the backend's inputs cast to float64, so what is measured is
the backend's own error. Errors are relative max-norms *per row* (per parameter, per state
variable, per output), so a small row (e.g. dL/dtau_E) is not hidden behind a large one.

The crafted inputs (B = 2 simulations x N = 16 regions = 32 elements; every element has its
own parameters, the table being full, and its own case), in three case sets (CASE_SETS):

- transfer-function arguments: every element's I_0 is solved from the current formula so that
  its excitatory argument lands on a chosen ``z = d_E y_E`` (where that I_0 would be within
  0.05 of 0, I_0 keeps its default and W_E is solved instead), and its W_I so that the
  inhibitory ``z = d_I y_I`` lands on another. "deco2014": ``|z|`` just below, at and just
  above the reference's series switch ``H_SERIES_THRESHOLD = 0.1`` (relative offsets 1e-4; "at"
  is 0.1 in float64, so a float32 backend may take either branch: they agree to rounding),
  ``z = 0`` and ``+-1e-3`` (around y = 0), ``|z|`` around 0.5 (where the fused kernels switch
  their phi(z) slope from series to closed form), and ``|z| = 2, 6``. "griffiths2022": ``|z|``
  around 0.5, 0.1, 2, 6, 10 and 15, and the excitatory/inhibitory current sums just below and
  above the ``tanh(relu(.))`` kink (+-1e-4). "griffiths2022-y0": ``|z|`` = 1e-4, 1e-3, 5e-3 and
  0.02 around y = 0, where ``(1e-5 + |y|) / (1e-5 d + |1 - exp(-d y)|)`` is hardest (see
  GRIFFITHS_Y0_Z; not closer: both the float64 reference's slope and y's own rounding are
  ill-conditioned below |y| ~ 1e-4, so torch's sign(0) = 0 at y = 0 exactly, which the kernels
  follow, is not evaluated here).
- the clamps (deco2014): S_E and S_I landing exactly on 0 (S = 0 with gamma = 0, sigma = 0)
  and exactly on 1 (S = 1 with tau = 1e16, gamma_I = 0, sigma = 0), where torch.clamp passes
  the gradient (the convention under test there); the pre-clamp value solved to land at
  ``-1e-5, 1e-5, 1 - 1e-5, 1 + 1e-5, -1e-3, 1 + 1e-3``; and initial S_E, S_I at 0 and 1 and just
  inside/outside them (+-1e-6), with noise. griffiths2022's squash ``tanh(1e-5 + relu(.))``:
  pre-squash values solved to land at ``+-1e-5, +-1e-3``, initial states at 0, 1, +-1e-6.
- griffiths2022's ``0.001 + relu(w)`` gains and ``0.02 + relu(sigma)`` noise: w_EE, w_IE,
  sigma exactly 0 (relu passes nothing at 0: the convention under test; numba inherits it from
  torch.relu in its coefficient table, triton has its own masks) and slightly negative (relu
  dead) in some elements.
- the Balloon: (x, f, v, q) exactly at rest (0, 1, 1, 1), 1e-6 and 1e-3 from it either way, a
  few percent off, and random within 0.2 of rest.

Every non-exact landing is checked to be at least ``MARGIN`` away from its kink (so float32
rounding cannot put it on the other side), and every solved y is checked to land where asked.
Everything else (the other parameters, the coupling) is random within 10% of the defaults.

Backends: numba (float32, float64), triton (float32 only; its kernels under Triton's
interpreter on CPU tensors, ``TRITON_INTERPRET=1`` as conftest.py sets it where there is no GPU;
skipped where the interpreter is off: these cases were not run compiled on a GPU),
torch-checkpoint (float32, float64: the reference equations themselves, so its float32 error is
that of float32 autograd through the reference formulas).

The "griffiths2022-y0" set found that the reference's griffiths2022 rate, differentiated by
autograd through ``(1e-5 + |y|) / (1e-5 d + |1 - exp(-d y)|)``, had slopes near y = 0 wrong by
up to 12x the row's scale in float32 (slope 2.59 instead of 0.49989 at y = 6.25e-4, d = 0.16)
and by ~1e-8 in float64, so torch and torch-checkpoint gradients were wrong there while the
fused kernels (slopes through phi's series) were right. The reference now computes the rate
with expm1 and its slopes without cancellation (``rww.ops.reference._GriffithsRate``); this set
holds every backend to the tolerances below.

Tolerances are in ``TOL`` below, with the measured errors they come from.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import upstream_gradients

from rww.noise import state_noise
from rww.ops.reference import H_SERIES_THRESHOLD, couple, reference_scan, transfer_deco, \
    transfer_griffiths
from rww.ops.scan import backend_available, rww_scan
from rww.ops.spec import STATE_NAMES, ScanSpec
from rww.params import PARAM_INDEX, PARAM_NAMES, get_preset, resolve_haemo

# As in test_triton_backend.py: an overflow or invalid operation in any lane of an interpreted
# kernel (numpy underneath) is an error.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

B, N = 2, 16
RECORDS = ("S_E", "S_I", "r_E", "r_I")
NOISE_SEED = 20240611
# A non-exact landing must be this far from its kink (float32 rounding of the step is ~1e-7).
MARGIN = 3e-6
# ---------------------------------------------------------------------------------- the cases
S1 = H_SERIES_THRESHOLD
DECO_Z = (S1 * (1 - 1e-4), S1, S1 * (1 + 1e-4), -S1 * (1 - 1e-4), -S1, -S1 * (1 + 1e-4),
          0.0, 1e-3, -1e-3, 0.5 * (1 - 1e-4), 0.5 * (1 + 1e-4), -0.5 * (1 - 1e-4),
          -0.5 * (1 + 1e-4), 2.0, -2.0, 6.0, -6.0)
# ("raw", v): the current sum before tanh(relu(.)) is v instead of a chosen z.
GRIFFITHS_Z = (0.5 * (1 - 1e-4), 0.5 * (1 + 1e-4), -0.5 * (1 - 1e-4), -0.5 * (1 + 1e-4),
               0.1, -0.1, 2.0, -2.0, 6.0, -6.0, 15.0, -10.0, ("raw", 1e-4),
               ("raw", -1e-4), ("raw", 0.3))
# griffiths2022 around y = 0: a case set of its own (see the module docstring: the reference's
# slopes there were wrong before they went through phi; numba agrees with it to 4.8e-12 in
# float64). Not closer than |z| = 1e-4: with z = 0 the element
# lands at |y| ~ 1e-14, where y's own float64 rounding (ulp(b_E) = 1.4e-14) moves the slope,
# ~|y| / 1e-5 there, by ~1e-9 (measured 7.8e-9 relative for numba), and in float32 the rounding
# of y = a*I - b (~4e-6) does the same from |y| ~ 1e-3 down (numba/triton 1.0e-5/1.3e-5 here).
GRIFFITHS_Y0_Z = (1e-3, -1e-3, 1e-4, -1e-4, 5e-3, -5e-3, 0.02, -0.02)
# Modes of S_E / S_I: ("exact", 0 or 1), ("pre", target of the pre-clamp value), ("init", S).
DECO_S = (("exact", 0.0), ("exact", 1.0), ("pre", -1e-5), ("pre", 1e-5), ("pre", 1 - 1e-5),
          ("pre", 1 + 1e-5), ("pre", -1e-3), ("pre", 1 + 1e-3), ("init", 0.0), ("init", 1.0),
          ("init", 1e-6), ("init", 1 - 1e-6), ("init", -1e-6), ("init", 1 + 1e-6),
          ("init", 0.3), ("init", 0.7))
GRIFFITHS_S = (("pre", -1e-5), ("pre", 1e-5), ("pre", -1e-3), ("pre", 1e-3), ("init", 0.0),
               ("init", 1.0), ("init", 1e-6), ("init", -1e-6), ("init", 1 - 1e-6),
               ("init", 0.2), ("init", 0.5), ("init", 0.8))
# (x, f - 1, v - 1, q - 1): rest, tiny and moderate deviations of both signs
BALLOON = ((0.0, 0.0, 0.0, 0.0), (1e-6, 1e-6, -1e-6, 1e-6), (-1e-6, -1e-6, 1e-6, -1e-6),
           (1e-3, 1e-3, -1e-3, 1e-3), (-1e-3, -1e-3, 1e-3, -1e-3), (0.05, 0.05, -0.02, 0.02),
           (-0.05, -0.05, 0.02, -0.03), (1e-30, 1e-20, -3e-12, 2e-9))
# griffiths2022 relu kinks of the gains and of the noise amplitude: element -> overrides.
GRIFFITHS_RELU = {1: {"w_EE": 0.0}, 4: {"w_IE": 0.0}, 7: {"sigma": 0.0}, 10: {"w_EE": -0.01},
                  13: {"w_EI": -0.01}, 16: {"sigma": -0.01}, 19: {"w_EE": 0.0, "sigma": 0.0}}


def _cycle(seq, k, shift=0):
    return seq[(k + shift) % len(seq)]


def _spec(preset: str, n_steps: int) -> ScanSpec:
    pr = get_preset(preset)
    return ScanSpec(pr, 0.1 if pr.code == 0 else 0.05, 1, n_steps, seed=NOISE_SEED,
                    haemo=resolve_haemo(pr, None), record=RECORDS)


def _rate_of_y(y, a, d, griffiths):
    """H at the argument y = a*I - b (b = 0 so that y is exact)."""
    cur = y / a
    if griffiths:
        return transfer_griffiths(cur, a, 0.0, d)
    return transfer_deco(cur, a, 0.0, d)


def landing(table, coupling, state, spec):
    """float64: the transfer-function arguments y_E, y_I, the current sums before tanh(relu(.))
    (griffiths2022) and the pre-clamp / pre-squash S_E, S_I of the first step."""
    table, coupling, state = (t.detach().double() for t in (table, coupling, state))
    p = {name: table[i] for name, i in PARAM_INDEX.items()}
    s_e, s_i = state[0], state[1]
    cs = couple(coupling, s_e)
    relu = torch.relu
    if spec.preset.code == 1:
        raw_e = (p["W_E"] * p["I_0"] + (0.001 + relu(p["w_EE"])) * s_e + p["G"] * cs
                 - (0.001 + relu(p["w_IE"])) * s_i)
        raw_i = p["W_I"] * p["I_0"] + (0.001 + relu(p["w_EI"])) * s_e - s_i
        i_e, i_i = torch.tanh(relu(raw_e)), torch.tanh(relu(raw_i))
        rate = transfer_griffiths
        amp = math.sqrt(spec.dt) * (0.02 + relu(p["sigma"]))
    else:
        j = p["J_NMDA"]
        raw_e = i_e = (p["W_E"] * p["I_0"] + p["w_EE"] * j * s_e + p["G"] * j * cs
                       - p["w_IE"] * s_i)
        raw_i = i_i = p["W_I"] * p["I_0"] + p["w_EI"] * j * s_e - s_i
        rate = transfer_deco
        amp = math.sqrt(spec.dt) * p["sigma"]
    r_e = rate(i_e, p["a_E"], p["b_E"], p["d_E"])
    r_i = rate(i_i, p["a_I"], p["b_I"], p["d_I"])
    xi_e, xi_i = state_noise(spec.seed, spec.t0, 1, s_e.shape[1], s_e.shape[0], torch.float64)
    dt = spec.dt
    pre_e = s_e + dt * (-s_e / p["tau_E"] + (1 - s_e) * p["gamma_E"] * r_e) + amp * xi_e[0]
    pre_i = s_i + dt * (-s_i / p["tau_I"] + p["gamma_I"] * r_i) + amp * xi_i[0]
    return {"y_E": p["a_E"] * i_e - p["b_E"], "y_I": p["a_I"] * i_i - p["b_I"],
            "raw_E": raw_e, "raw_I": raw_i, "pre_E": pre_e, "pre_I": pre_i}


CASE_SETS = {"deco2014": ("deco2014", DECO_Z), "griffiths2022": ("griffiths2022", GRIFFITHS_Z),
             "griffiths2022-y0": ("griffiths2022", GRIFFITHS_Y0_Z)}


def craft(case_set: str, dtype, n_steps: int = 1, seed: int = 0):
    """The crafted one-step problem of ``CASE_SETS[case_set]``: ``(table (P, B, N), coupling
    (N, N), state (6, B, N), spec, cases)``, tensors in ``dtype``; ``cases`` lists what every
    element was built to hit."""
    preset, z_list = CASE_SETS[case_set]
    griffiths = preset == "griffiths2022"
    pr = get_preset(preset)
    spec = _spec(preset, n_steps)
    f64 = torch.float64
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=f64)

    def rnd(t):                               # round to the test's dtype, keep float64
        return t.to(dtype).to(f64)

    # coupling as make_problem builds it
    sc = rand(N, N)
    sc = 0.5 * (sc + sc.T)
    if griffiths:
        from rww.coupling import griffiths_laplacian, griffiths_normalise_sc
        coupling = griffiths_laplacian(griffiths_normalise_sc(sc))
    else:
        sc.fill_diagonal_(0)
        coupling = sc / sc.sum(-1).mean()
    coupling = rnd(coupling)

    base = dict(pr.defaults, G=1.0 if griffiths else 0.8, sigma=0.05 if griffiths else 0.02)
    table = torch.stack([base[name] * (1 + 0.2 * (rand(B, N) - 0.5)) for name in PARAM_NAMES])
    p = {name: table[i] for name, i in PARAM_INDEX.items()}      # views: edits reach `table`
    s_list = GRIFFITHS_S if griffiths else DECO_S
    cases = []
    modes = {}
    for k in range(B * N):
        b, n = divmod(k, N)
        ze, zi = _cycle(z_list, k), _cycle(z_list, k, shift=len(z_list) // 2 + 1)
        se_mode, si_mode = _cycle(s_list, k), _cycle(s_list, k, shift=5)
        over = dict(GRIFFITHS_RELU.get(k, {})) if griffiths else {}
        if not griffiths:
            for mode, pop in ((se_mode, "E"), (si_mode, "I")):
                if mode == ("exact", 0.0):
                    over.update({f"gamma_{pop}": 0.0, "sigma": 0.0})
                elif mode == ("exact", 1.0):
                    over.update({f"tau_{pop}": 1e16, "sigma": 0.0})
                    if pop == "I":
                        over["gamma_I"] = 0.0
        for name, value in over.items():
            p[name][b, n] = value
        modes[k] = (ze, zi, se_mode, si_mode)
        cases.append(dict(b=b, n=n, z_E=ze, z_I=zi, S_E=se_mode, S_I=si_mode,
                          balloon=_cycle(BALLOON, k) if k < 2 * len(BALLOON) else "random",
                          **over))
    table = rnd(table)
    p = {name: table[i] for name, i in PARAM_INDEX.items()}          # views

    # the argument each element is to land on, and its rate
    def target(pop):
        a, b_, d = p[f"a_{pop}"], p[f"b_{pop}"], p[f"d_{pop}"]
        y = torch.empty(B, N, dtype=f64)
        raw = torch.full((B, N), float("nan"), dtype=f64)
        for k in range(B * N):
            b, n = divmod(k, N)
            zk = modes[k][0 if pop == "E" else 1]
            if isinstance(zk, tuple):
                raw[b, n] = zk[1]
                y[b, n] = a[b, n] * torch.tanh(torch.relu(raw[b, n])) - b_[b, n]
            else:
                y[b, n] = zk / d[b, n]
                i = (y[b, n] + b_[b, n]) / a[b, n]
                raw[b, n] = torch.atanh(i) if griffiths else i
        return y, raw, _rate_of_y(y, a, d, griffiths)

    y_e, raw_e, r_e = target("E")
    y_i, raw_i, r_i = target("I")

    xi_e, xi_i = (x[0] for x in state_noise(spec.seed, spec.t0, 1, N, B, f64))
    dt = spec.dt
    kinks = (0.0,) if griffiths else (0.0, 1.0)
    sigma = table[PARAM_INDEX["sigma"]]                          # a view: edits reach `table`

    def amp(b, n):
        s = sigma[b, n].item()
        return math.sqrt(dt) * ((0.02 + max(s, 0.0)) if griffiths else s)

    state = torch.empty(6, B, N, dtype=f64)
    for k in range(B * N):
        b, n = divmod(k, N)
        pops = ((0, modes[k][2], p["tau_E"], p["gamma_E"], xi_e, r_e),
                (1, modes[k][3], p["tau_I"], p["gamma_I"], xi_i, r_i))

        def pre(row, s, decay, gain, xi, rate):
            # S + dt*(-S/tau + (1 - S)*gamma*r) + amp*xi  (S_I: gamma*r, without (1 - S))
            drive = gain[b, n] * rate[b, n] * ((1 - s) if row == 0 else 1.0)
            return s + dt * (-s / decay[b, n] + drive) + amp(b, n) * xi[b, n]

        # An initial state with noise must not land within MARGIN of a kink: scale that
        # element's noise up until it does not (unless sigma is one of the cases itself).
        for _ in range(30):
            near = [abs(pre(row, mode[1], *rest) - c) <= 2 * MARGIN for row, mode, *rest in pops
                    if mode[0] == "init" for c in kinks]
            if not any(near) or "sigma" in cases[k]:
                break
            sigma[b, n] = rnd(sigma[b, n] * 1.25)
        for row, (kind, value), decay, gain, xi, rate in pops:
            if kind in ("exact", "init"):
                state[row, b, n] = value
                continue
            # pre is affine in S: solve pre(S) = value
            at0 = pre(row, 0.0, decay, gain, xi, rate)
            state[row, b, n] = (value - at0) / (pre(row, 1.0, decay, gain, xi, rate) - at0)
        if k < 2 * len(BALLOON):
            state[2:, b, n] = torch.tensor(_cycle(BALLOON, k), dtype=f64)
        else:
            state[2, b, n] = 0.2 * (rand(()) - 0.5)
            state[3:, b, n] = 0.4 * (rand(3) - 0.5)
    state = rnd(state)

    # I_0 puts the excitatory current sum on raw_E, then W_I the inhibitory one on raw_I
    s_e, s_i = state[0], state[1]
    cs = couple(coupling, s_e)
    if griffiths:
        rest_e = ((0.001 + torch.relu(p["w_EE"])) * s_e + p["G"] * cs
                  - (0.001 + torch.relu(p["w_IE"])) * s_i)
        e_ei = 0.001 + torch.relu(p["w_EI"])
    else:
        j = p["J_NMDA"]
        rest_e = p["w_EE"] * j * s_e + p["G"] * j * cs - p["w_IE"] * s_i
        e_ei = p["w_EI"] * j
    i_0 = (raw_e - rest_e) / p["W_E"]
    # Where that I_0 would be near 0 (W_I could not move the inhibitory current), keep I_0 at
    # its default and solve W_E instead.
    small = i_0.abs() < 0.05
    i_0 = rnd(torch.where(small, pr.defaults["I_0"], i_0))
    table[PARAM_INDEX["W_E"]] = torch.where(small, rnd((raw_e - rest_e) / i_0), p["W_E"])
    table[PARAM_INDEX["I_0"]] = i_0
    table[PARAM_INDEX["W_I"]] = rnd((raw_i - e_ei * s_e + s_i) / i_0)

    # every landing where it was meant to be
    land = landing(table, coupling, state, spec)
    y_tol = 2e-4 if dtype == torch.float32 else 1e-9          # float32: rounding of I_0, W_I
    assert (land["y_E"] - y_e).abs().max() < y_tol * (1 + y_e.abs().max())
    assert (land["y_I"] - y_i).abs().max() < y_tol * (1 + y_i.abs().max())
    for k in range(B * N):
        b, n = divmod(k, N)
        for pop, mode in (("E", modes[k][2]), ("I", modes[k][3])):
            pre = land[f"pre_{pop}"][b, n].item()
            if mode[0] == "exact":
                assert pre == mode[1], (k, pop, pre)
                continue
            if mode[0] == "pre":
                assert abs(pre - mode[1]) < 2e-7, (k, pop, pre, mode)
            assert min(abs(pre - c) for c in kinks) > MARGIN, (k, pop, pre, mode)
        for pop, z in (("E", modes[k][0]), ("I", modes[k][1])):
            if isinstance(z, tuple):
                assert abs(land[f"raw_{pop}"][b, n].item() - z[1]) < 1e-6, (k, pop)
    if griffiths:             # the current kinks: only the ("raw", +-1e-4) cases come near them
        near = (land["raw_E"].abs() < MARGIN) | (land["raw_I"].abs() < MARGIN)
        assert not near.any()
    return table.to(dtype), coupling.to(dtype), state.to(dtype), spec, cases


# ---------------------------------------------------------------------------------- comparison
def _outputs(result, spec):
    return (result.bold, result.state) + tuple(result.records[k] for k in spec.record)


def reference_vjp(table, coupling, state, spec, upstream):
    """Forward outputs and the VJP of ``upstream`` through the float64 reference scan."""
    def fn(t, c, s):
        return _outputs(reference_scan(t, c, s, spec, check_divergence=False), spec)

    args = tuple(x.detach().double() for x in (table, coupling, state))
    outs, vjp_fn = torch.func.vjp(fn, *args)
    return outs, vjp_fn(tuple(u.double() for u in upstream))


def backend_vjp(backend, table, coupling, state, spec, upstream):
    leaves = [x.detach().clone().requires_grad_(True) for x in (table, coupling, state)]
    result = rww_scan(*leaves, spec, backend=backend, checkpoint_every=spec.n_steps)
    outs = _outputs(result, spec)
    grads = torch.autograd.grad(outs, leaves, [u.to(table.dtype) for u in upstream])
    return tuple(o.detach() for o in outs), grads


def row_errors(actual, expected, names, prefix):
    """``{prefix:name: relative max-norm error}`` over the leading dimension's rows."""
    out = {}
    for name, a, e in zip(names, actual, expected):
        a, e = a.double(), e.double()
        scale = e.abs().max().item()
        err = (a - e).abs().max().item()
        assert torch.isfinite(a).all(), f"{prefix}{name}: non-finite"
        out[f"{prefix}{name}"] = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
    return out


def step_errors(backend, case_set, dtype, n_steps=1, seed=0):
    """Relative errors, per row, of a backend's outputs and VJP on the crafted problem."""
    table, coupling, state, spec, _ = craft(case_set, dtype, n_steps, seed)
    preset = spec.preset.name
    up = _upstream(table, coupling, state, spec)
    ref_outs, ref_grads = reference_vjp(table, coupling, state, spec, up)
    outs, grads = backend_vjp(backend, table, coupling, state, spec, up)
    errs = {}
    errs.update(row_errors([outs[0]], [ref_outs[0]], ["bold"], ""))
    errs.update(row_errors(outs[1], ref_outs[1], STATE_NAMES, "state:"))
    errs.update(row_errors(outs[2:], ref_outs[2:], spec.record, "record:"))
    used = get_preset(preset).used
    names = [n for n in PARAM_NAMES if n in used]
    idx = [PARAM_INDEX[n] for n in names]
    errs.update(row_errors(grads[0][idx], ref_grads[0][idx], names, "grad:"))
    unused = [PARAM_INDEX[n] for n in PARAM_NAMES if n not in used]
    assert (grads[0][unused] == 0).all()
    errs.update(row_errors([grads[1]], [ref_grads[1]], ["coupling"], "grad:"))
    errs.update(row_errors(grads[2], ref_grads[2], STATE_NAMES, "grad:state0:"))
    return errs


def _upstream(table, coupling, state, spec):
    """The fixed random linear functional: upstream gradients of every output (float64)."""
    with torch.no_grad():
        ref = reference_scan(*(x.double() for x in (table, coupling, state)), spec,
                             check_divergence=False)
    up = upstream_gradients(ref, seed=7)
    return (up["bold"], up["state"]) + tuple(up["records"][k] for k in spec.record)


# ---------------------------------------------------------------------------------- tolerances
F32, F64 = torch.float32, torch.float64
# (forward, gradient) relative max-norm per row, about 3-5x the worst error measured over craft
# seeds 0-4 and n_steps 1 and 2 (test seed 0), in comments as (forward, gradient).
TOL = {
    # float32: numba (9.9e-7, 2.0e-6), triton (1.3e-6, 2.8e-6), torch-checkpoint (1.4e-6, 2.6e-6)
    ("numba", "deco2014", F32): (5e-6, 1e-5),
    ("triton", "deco2014", F32): (5e-6, 1e-5),
    ("torch-checkpoint", "deco2014", F32): (5e-6, 1e-5),
    # float32: numba (6.5e-7, 2.9e-6), triton (8.3e-7, 6.2e-6), torch-checkpoint (9.1e-7, 1.5e-5,
    # measured before the reference's rate went through expm1 and phi; see the module docstring)
    ("numba", "griffiths2022", F32): (3e-6, 1e-5),
    ("triton", "griffiths2022", F32): (3e-6, 2.5e-5),
    ("torch-checkpoint", "griffiths2022", F32): (3e-6, 5e-5),
    # float32: numba (4.9e-6, 1.0e-5), triton (3.4e-6, 1.3e-5): the model's own float32 rounding
    # of y = a*I - b (~4e-6) moves the slope near y = 0
    ("numba", "griffiths2022-y0", F32): (2e-5, 5e-5),
    ("triton", "griffiths2022-y0", F32): (2e-5, 5e-5),
    ("torch-checkpoint", "griffiths2022-y0", F32): (2e-5, 5e-5),
    # float64: numba (2.4e-15, 7.3e-13), (1.3e-15, 4.5e-14), (9.1e-15, 4.8e-12; against the
    # accurate reference); torch-checkpoint runs the reference's own operations: 0 and 0 exactly
    # on the first two sets
    ("numba", "deco2014", F64): (1e-14, 3e-12),
    ("numba", "griffiths2022", F64): (5e-15, 2e-13),
    ("numba", "griffiths2022-y0", F64): (4e-14, 2e-11),
    ("torch-checkpoint", "deco2014", F64): (0.0, 0.0),
    ("torch-checkpoint", "griffiths2022", F64): (0.0, 0.0),
    ("torch-checkpoint", "griffiths2022-y0", F64): (4e-14, 2e-11),
}

def _cases():
    out = []
    for backend, case_set, dtype in TOL:
        out.append(pytest.param(backend, case_set, dtype,
                                id=f"{backend}-{case_set}-{str(dtype)[6:]}"))
    return out


def _skip_unavailable(backend):
    ok, why = backend_available(backend)
    if not ok:
        pytest.skip(why)
    if backend == "triton":
        from rww.ops.triton.backend import TritonBackend
        ok, why = TritonBackend().supports(torch.device("cpu"))
        if not ok:
            pytest.skip(why)


# ---------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case_set", CASE_SETS)
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_crafted_cases_land_where_asked(case_set, dtype):
    """craft() checks every landing itself (y on its target, pre-clamp values on theirs or at
    least MARGIN from every kink, exact cases exactly on the bound); here also the coverage:
    both clamp bounds hit exactly and from both sides (deco2014), both sides of 0 for the
    squash and current relu (griffiths2022), both sides of every switch."""
    table, coupling, state, spec, cases = craft(case_set, dtype)
    land = landing(table, coupling, state, spec)
    pre = torch.cat([land["pre_E"].flatten(), land["pre_I"].flatten()])
    assert (pre < 0).any() and (pre > 0).any() and (pre == 0).any() == (case_set == "deco2014")
    if case_set == "deco2014":
        assert (pre == 1).any() and (pre > 1).any() and ((pre > 0) & (pre < 1)).any()
        z = torch.cat([(land["y_E"] * table[PARAM_INDEX["d_E"]].double()).flatten(),
                       (land["y_I"] * table[PARAM_INDEX["d_I"]].double()).flatten()]).abs()
        for lo, hi in ((0.0999, 0.1), (0.1, 0.1001), (0.4999, 0.5), (0.5, 0.5001)):
            assert ((z > lo) & (z < hi)).any(), (lo, hi)
        assert (z < 1e-5).any()
    if case_set == "griffiths2022":
        raw = torch.cat([land["raw_E"].flatten(), land["raw_I"].flatten()])
        assert ((raw > 0) & (raw < 1e-3)).any() and ((raw < 0) & (raw > -1e-3)).any()
    if case_set == "griffiths2022-y0":
        y = torch.cat([land["y_E"].flatten(), land["y_I"].flatten()])
        assert ((y > 0) & (y < 2e-3)).any() and ((y < 0) & (y > -2e-3)).any()


@pytest.mark.parametrize("n_steps", [1, 2])
@pytest.mark.parametrize("backend, case_set, dtype", _cases())
def test_step_matches_reference_vjp(backend, case_set, dtype, n_steps):
    """Forward outputs and the VJP of one step (n_steps = 1; or two 1-step TRs in one segment)
    against torch.func.vjp of the float64 reference, per row, at TOL."""
    _skip_unavailable(backend)
    errs = step_errors(backend, case_set, dtype, n_steps)
    tol_fwd, tol_grad = TOL[(backend, case_set, dtype)]
    bad = {k: f"{v:.2e}" for k, v in errs.items()
           if v > (tol_grad if k.startswith("grad:") else tol_fwd)}
    assert not bad, f"beyond tolerance ({tol_fwd:.0e} forward, {tol_grad:.0e} gradients): {bad}"
