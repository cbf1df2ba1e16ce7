"""Long horizons: the CPU backends (numba; torch-checkpoint) against the float64 reference over
thousands of steps, forward BOLD and final state, and the gradients of a fixed random linear
functional of BOLD and the final state with respect to G, w_EE, sigma (scalars), a per-region
I_0 ``(N,)`` and the initial state, in float32 and float64 (B = 2 simulations, N = 5 regions).

What this adds to the short-horizon tests (3 TRs of 10 steps): rounding accumulated over
thousands of steps in float32 (state and adjoint carried in float32; numba's parameter gradients
flushed from float32 partial sums into float64 every 16 steps), the adjoint carried back
through tens of checkpoint segments, and BOLD, which integrates S_E over the slow Balloon.

Horizons. The reference loop with autograd costs 1.4-1.9 ms per step at N = 5 on an idle core
(op overhead: the cost hardly depends on N or B), 39 s for 20,000 steps; torch-checkpoint
1.5-2.8 ms per step (it recomputes every segment under autograd), 55 s for 20,000 steps. So the
file runs deco2014 over 5,000 steps (0.5 s at dt = 0.1 ms) and griffiths2022 over 2,000 steps
(dt = 0.05), BOLD every 500 steps, for numba, whose kernels take well under a second, and the
first 500 steps of the same problems for torch-checkpoint (default checkpoint interval
ceil(sqrt(steps)): 71, 45 and 22 segments). One float64 reference run per preset serves all
of them: it is simulated as the first 500 steps followed by the rest continued from their final
state (``t0 = 500``: the same noise and the same operations as one run), so that one graph gives
the reference outputs and VJPs of both horizons. The file takes ~21 s of CPU on 2 cores.

Measured at 20,000 steps (deco2014, this problem with seed 13; too slow to run here), while
the Balloon state was still held as f, v, q rather than their deviations from rest: numba
float32 BOLD 2.5e-4, final state 3.1e-4 (x), gradients <= 7.8e-5; float64 1.9e-15 / 5.9e-14.
The deviation form cut the 5,000-step float32 forward errors 10-25x (see TOL).

Triton is not run here: under the interpreter (no GPU) a step takes ~50 ms, i.e. minutes for
these horizons; tests/test_triton_backend.py and tests/test_step_adjoint.py cover its kernels.

Tolerances (``TOL``) are 3-5x the errors measured over three noise seeds, in comments.
"""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import seeded_connectome

from rww.model import initial_state
from rww.ops.reference import reference_scan
from rww.ops.scan import backend_available, rww_scan
from rww.ops.spec import STATE_NAMES, ScanSpec
from rww.params import get_preset, pack_parameters, resolve_haemo

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B, N = 2, 5
F32, F64 = torch.float32, torch.float64
# preset -> (steps, steps per TR) of the numba comparison; torch-checkpoint runs SHORT steps
HORIZON = {"deco2014": (5_000, 500), "griffiths2022": (2_000, 500)}
SHORT = 500
PARAMS = ("G", "w_EE", "sigma", "I_0")
NOISE_SEED = 13


def _spec(preset: str, n_steps: int, t0: int = 0, seed: int = NOISE_SEED) -> ScanSpec:
    pr = get_preset(preset)
    return ScanSpec(pr, pr.dt, HORIZON[preset][1], n_steps, seed=seed, t0=t0,
                    haemo=resolve_haemo(pr, None))


def _problem(preset: str, dtype):
    """Leaves ``{G, w_EE, sigma, I_0, state0}`` (requiring grad, ``dtype``) and the coupling."""
    pr = get_preset(preset)
    gen = torch.Generator().manual_seed(3)
    griffiths = pr.code == 1
    values = {"G": 1.0 if griffiths else 0.5, "w_EE": pr.defaults["w_EE"],
              "sigma": 0.05 if griffiths else 0.02}
    leaves = {k: torch.tensor(v, dtype=F64) for k, v in values.items()}
    leaves["I_0"] = pr.defaults["I_0"] * (1 + 0.1 * (torch.rand(N, generator=gen, dtype=F64) - 0.5))
    # the Balloon away from rest, so that BOLD is well above float32 rounding from the start
    state = initial_state(B, N, F64) + (torch.rand(6, B, N, generator=gen, dtype=F64) - 0.5) \
        * torch.tensor([0.1, 0.1, 0.3, 0.3, 0.3, 0.3], dtype=F64).view(6, 1, 1)
    leaves["state0"] = state
    leaves = {k: v.to(dtype).requires_grad_(True) for k, v in leaves.items()}
    sc = seeded_connectome(N, 1)
    if griffiths:
        from rww.coupling import griffiths_laplacian, griffiths_normalise_sc
        coupling = griffiths_laplacian(griffiths_normalise_sc(sc))
    else:
        coupling = sc
    return leaves, coupling.to(dtype)


def _table(leaves, preset, dtype):
    return pack_parameters({k: leaves[k] for k in PARAMS}, get_preset(preset), B, N, dtype)


def _upstream(bold, state, seed=5):
    """The random linear functional: weights on BOLD (scaled to the BOLD's size) and the final
    state."""
    gen = torch.Generator().manual_seed(seed)
    w_bold = torch.randn(bold.shape, generator=gen, dtype=F64) / bold.detach().abs().max()
    w_state = torch.randn(state.shape, generator=gen, dtype=F64)
    return w_bold, w_state


@functools.lru_cache(maxsize=None)
def reference(preset: str, seed: int = NOISE_SEED):
    """float64 reference outputs, upstream weights and VJPs at both horizons:
    ``{"long": ..., "short": ...}``, each ``(bold, state, upstream, grads)``."""
    n_steps = HORIZON[preset][0]
    leaves, coupling = _problem(preset, F64)
    table = _table(leaves, preset, F64)
    first = reference_scan(table, coupling, leaves["state0"], _spec(preset, SHORT, seed=seed),
                           check_divergence=False)
    rest = reference_scan(table, coupling, first.state,
                          _spec(preset, n_steps - SHORT, t0=SHORT, seed=seed),
                          check_divergence=False)
    out = {}
    inputs = list(leaves.values())
    for name, bold, state in (("short", first.bold, first.state),
                              ("long", torch.cat([first.bold, rest.bold], 1), rest.state)):
        up = _upstream(bold, state)
        grads = torch.autograd.grad([bold, state], inputs, up, retain_graph=name == "short")
        out[name] = (bold.detach(), state.detach(), up, dict(zip(leaves, grads)))
    return out


def run_backend(backend: str, preset: str, dtype, horizon: str, seed: int = NOISE_SEED):
    """A backend's outputs and VJP on the problem, with the reference's upstream weights."""
    n_steps = HORIZON[preset][0] if horizon == "long" else SHORT
    *_, up, _ = reference(preset, seed)[horizon]
    leaves, coupling = _problem(preset, dtype)
    result = rww_scan(_table(leaves, preset, dtype), coupling, leaves["state0"],
                      _spec(preset, n_steps, seed=seed), backend=backend)
    grads = torch.autograd.grad([result.bold, result.state], list(leaves.values()),
                                [u.to(dtype) for u in up])
    return result.bold.detach(), result.state.detach(), dict(zip(leaves, grads))


def _rel(actual, expected):
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all()
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def long_horizon_errors(backend: str, preset: str, dtype, horizon: str, seed: int = NOISE_SEED):
    """Relative max-norm errors: BOLD, each final state variable, each initial state variable's
    gradient, and each parameter's gradient as a sensitivity ``theta * dL/dtheta`` relative to
    the largest of the four parameters' (a scalar gradient can nearly cancel over thousands of
    steps: with seed 12, deco2014's dL/dw_EE is 8.8e-3 where G's is 0.57 and I_0's 24, and its
    own relative error is then 3.0e-3 in float32 and 1.3e-12 in float64, a 100-fold
    amplification that says nothing about the backend)."""
    ref_bold, ref_state, _, ref_grads = reference(preset, seed)[horizon]
    bold, state, grads = run_backend(backend, preset, dtype, horizon, seed)
    errs = {"bold": _rel(bold, ref_bold)}
    errs.update({f"state:{n}": _rel(state[i], ref_state[i]) for i, n in enumerate(STATE_NAMES)})
    theta, _ = _problem(preset, F64)
    sens = {k: (theta[k].detach() * ref_grads[k]).abs().max().item() for k in PARAMS}
    scale = max(sens.values())
    for k in PARAMS:
        assert torch.isfinite(grads[k]).all()
        err = (theta[k].detach() * (grads[k].double() - ref_grads[k])).abs().max().item()
        errs[f"grad:{k}"] = err / scale
    errs.update({f"grad:state0:{n}": _rel(grads["state0"][i], ref_grads["state0"][i])
                 for i, n in enumerate(STATE_NAMES)})
    return errs


# (forward, gradient) tolerances, 3-5x the worst errors measured over noise seeds 11, 12, 13
# (the test runs seed 13), in comments as (forward, gradient). Forward: relative max-norm of
# BOLD and of each final state variable; gradients: each initial state variable relative
# max-norm, each parameter as a sensitivity (see long_horizon_errors).
TOL = {
    # deco2014, 5,000 steps: (6.0e-6 final v - 1 / 2.4e-6 BOLD, 7.5e-5 dL/dS_E(0)). With the
    # Balloon held as f, v, q themselves (before 0.2) the forward was 6.7e-5 / 6.3e-5.
    ("numba", "deco2014", F32): (2.5e-5, 2.5e-4),
    # griffiths2022, 2,000 steps: (1.5e-6 BOLD, 3.3e-5 dL/d(f - 1)(0)); before: 1.4e-5 final x
    ("numba", "griffiths2022", F32): (5e-6, 1.5e-4),
    # (6.3e-16, 1.3e-13) and (4.4e-15, 1.1e-13)
    ("numba", "deco2014", F64): (5e-15, 5e-13),
    ("numba", "griffiths2022", F64): (5e-14, 5e-13),
    # 500 steps: (1.5e-6, 7.9e-6 dL/d(f - 1)(0)) and (1.3e-6, 7.5e-6)
    ("torch-checkpoint", "deco2014", F32): (5e-6, 3e-5),
    ("torch-checkpoint", "griffiths2022", F32): (5e-6, 3e-5),
    # the forward is the reference's own operations (0 exactly); gradients (2.6e-15, 6.5e-16):
    # the same autograd graph, summed segment by segment
    ("torch-checkpoint", "deco2014", F64): (0.0, 1e-14),
    ("torch-checkpoint", "griffiths2022", F64): (0.0, 1e-14),
}
HORIZON_OF = {"numba": "long", "torch-checkpoint": "short"}


@pytest.mark.parametrize("backend, preset, dtype", list(TOL),
                         ids=[f"{b}-{p}-{str(d)[6:]}" for b, p, d in TOL])
def test_long_horizon_matches_reference(backend, preset, dtype):
    """numba over HORIZON steps, torch-checkpoint over SHORT steps (default checkpoint
    interval: ceil(sqrt(steps)) segments), against the float64 reference at TOL."""
    ok, why = backend_available(backend)
    if not ok:
        pytest.skip(why)
    errs = long_horizon_errors(backend, preset, dtype, HORIZON_OF[backend])
    if backend == "numba":
        from rww.ops.numba.backend import last_recompute_mismatches
        assert last_recompute_mismatches() == 0        # every segment recomputed bit for bit
    tol_fwd, tol_grad = TOL[(backend, preset, dtype)]
    bad = {k: f"{v:.2e}" for k, v in errs.items()
           if v > (tol_grad if k.startswith("grad:") else tol_fwd)}
    assert not bad, f"beyond tolerance ({tol_fwd:.0e} forward, {tol_grad:.0e} gradients): {bad}"
