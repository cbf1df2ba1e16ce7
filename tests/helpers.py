"""Shared test machinery: one tolerance table, one ``assert_close``, and a backend-vs-reference
comparison used by every backend's tests (same inputs, same upstream gradients)."""

from __future__ import annotations

import os
import sys

import torch

from rww.model import initial_state
from rww.ops.reference import reference_scan
from rww.ops.scan import rww_scan
from rww.ops.spec import ScanSpec
from rww.params import N_PARAMS, PARAM_INDEX, get_preset, pack_parameters, resolve_haemo

# Relative tolerances (error norm / reference norm, see assert_close) per dtype and quantity.
TOLERANCES = {
    torch.float32: {"forward": 1e-5, "grad": 1e-4},
    torch.float64: {"forward": 1e-12, "grad": 1e-9},
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str = ""):
    """``max|actual - expected| <= rtol * max|expected|`` (a relative max-norm error), shapes
    equal, no NaN anywhere. Prints diagnostics on failure."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual, expected = actual.detach().double(), expected.detach().double()
    assert not torch.isnan(actual).any(), f"{name}: NaN in actual"
    assert not torch.isnan(expected).any(), f"{name}: NaN in expected"
    scale = expected.abs().max().item() if expected.numel() else 0.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    if scale == 0.0:
        assert err == 0.0, f"{name}: expected all zeros, max |actual| = {err:.3e}"
        return
    rel = err / scale
    if rel > rtol:
        where = torch.nonzero((actual - expected).abs() == err)[0].tolist()
        raise AssertionError(
            f"{name}: relative max error {rel:.3e} > {rtol:.1e} (max|err| {err:.3e}, "
            f"max|expected| {scale:.3e}; worst at {where}: actual "
            f"{actual[tuple(where)].item():.8g}, expected {expected[tuple(where)].item():.8g})"
        )


# Shapes a parameter may take, and one representative each.
PARAM_SHAPES = ("scalar", "region", "sim", "full")


def make_problem(preset: str = "deco2014", batch: int = 2, n_nodes: int = 5,
                 per_sim_coupling: bool = False, dtype=torch.float32, seed: int = 0,
                 n_trs: int = 3, steps_per_tr: int = 10, t0: int = 0, record=("S_E", "S_I", "r_E", "r_I"),
                 shapes: dict | None = None, G: float | None = None,
                 symmetric_coupling: bool = False):
    """Random but physiological inputs for a scan.

    Returns ``(leaves, build, spec)``: ``leaves`` a dict of leaf tensors that require grad
    (``"params"`` name -> tensor, ``"coupling"``, ``"state"``); ``build()`` turns them into the
    scan's ``(params_table, coupling, state)`` through differentiable ops; ``spec`` the ScanSpec.
    Parameter shapes cycle through scalar, per-region, per-simulation and full unless ``shapes``
    maps names to one of :data:`PARAM_SHAPES`. The coupling is row-normalised (not symmetric)
    unless ``symmetric_coupling``, which makes it ``(C + C^T) / 2`` (diagonal kept).
    """
    gen = torch.Generator().manual_seed(seed)
    pr = get_preset(preset)
    griffiths = pr.code == 1

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    sc = rand(batch, n_nodes, n_nodes) if per_sim_coupling else rand(n_nodes, n_nodes)
    sc = 0.5 * (sc + sc.transpose(-1, -2))
    if griffiths:
        from rww.coupling import griffiths_laplacian, griffiths_normalise_sc
        coupling = griffiths_laplacian(griffiths_normalise_sc(sc))
    else:
        coupling = sc / sc.sum(-1, keepdim=True).mean(-1, keepdim=True)
    if symmetric_coupling:
        coupling = 0.5 * (coupling + coupling.transpose(-1, -2))
    params = {}
    chosen = shapes or {}
    for i, name in enumerate(("G", "w_EE", "w_IE", "w_EI", "I_0", "sigma", "J_NMDA", "tau_E")):
        if griffiths and name == "J_NMDA":
            continue
        kind = chosen.get(name, PARAM_SHAPES[i % len(PARAM_SHAPES)])
        base = pr.defaults[name]
        if name == "G":
            base = (G if G is not None else (0.8 if not griffiths else 1.0))
        if name == "sigma" and not griffiths:
            base = 0.02
        shape = {"scalar": (), "region": (n_nodes,), "sim": (batch, 1), "full": (batch, n_nodes)}[kind]
        if kind == "region" and n_nodes == batch and batch > 1:
            shape = (1, n_nodes)
        value = base * (1.0 + 0.1 * (rand(*shape) - 0.5)) if shape else torch.tensor(base, dtype=torch.float64)
        params[name] = value.to(dtype).requires_grad_(True)
    state = initial_state(batch, n_nodes, torch.float64)
    # Perturb the Balloon away from rest so that BOLD is ~1e-2, well above float32 rounding.
    state = state + (rand(6, batch, n_nodes) - 0.5) * torch.tensor(
        [0.1, 0.1, 0.3, 0.3, 0.3, 0.3], dtype=torch.float64).view(6, 1, 1)
    leaves = {"params": params, "coupling": coupling.to(dtype).requires_grad_(True),
              "state": state.to(dtype).requires_grad_(True)}

    def build():
        table = pack_parameters(leaves["params"], pr, batch, n_nodes, dtype)
        return table, leaves["coupling"], leaves["state"]

    dt = 0.05 if griffiths else 0.1
    spec = ScanSpec(pr, dt, steps_per_tr, n_trs * steps_per_tr, seed=seed + 12345, t0=t0,
                    haemo=resolve_haemo(pr, None), record=tuple(record))
    return leaves, build, spec


def upstream_gradients(result, seed: int = 1):
    """Fixed random upstream gradients for every output of a scan (BOLD scaled up, since BOLD is
    ~1e-3 and its gradient path would otherwise be swamped by the state's)."""
    gen = torch.Generator().manual_seed(seed)

    def like(t, scale=1.0):
        return (scale * torch.randn(t.shape, generator=gen, dtype=torch.float64)).to(t.dtype)

    return {"bold": like(result.bold, 100.0), "state": like(result.state),
            "records": {k: like(v, 0.1 if k.startswith("r_") else 1.0) for k, v in result.records.items()}}


def run_with_grads(scan, leaves, build, spec, upstream=None):
    """Run ``scan(params, coupling, state, spec)`` and back-propagate fixed upstream gradients.

    Returns ``(result, upstream, grads)`` with ``grads`` a dict of every leaf's gradient
    (``"param:<name>"``, ``"coupling"``, ``"state"``).
    """
    table, coupling, state = build()
    result = scan(table, coupling, state, spec)
    if upstream is None:
        upstream = upstream_gradients(result)
    outputs = [result.bold, result.state] + [result.records[k] for k in spec.record]
    grads_out = [upstream["bold"], upstream["state"]] + [upstream["records"][k] for k in spec.record]
    inputs = list(leaves["params"].values()) + [leaves["coupling"], leaves["state"]]
    grads = torch.autograd.grad(outputs, inputs, grads_out, allow_unused=True)
    names = [f"param:{n}" for n in leaves["params"]] + ["coupling", "state"]
    return result, upstream, {n: (g if g is not None else torch.zeros_like(x))
                              for n, g, x in zip(names, grads, inputs)}


def compare_with_reference(backend: str, checkpoint_every: int | None = None,
                           reference_dtype=torch.float64, **problem):
    """Check a backend's forward outputs and every gradient against autograd through the
    reference loop (run in ``reference_dtype`` on the same inputs, so that the error measured is
    the backend's own), with the tolerances of :data:`TOLERANCES` for the problem's dtype."""
    dtype = problem.get("dtype", torch.float32)
    leaves, build, spec = make_problem(**problem)

    def build_reference():
        return tuple(t.to(reference_dtype) for t in build())

    ref, upstream, ref_grads = run_with_grads(reference_scan, leaves, build_reference, spec)
    upstream = {"bold": upstream["bold"].to(dtype), "state": upstream["state"].to(dtype),
                "records": {k: v.to(dtype) for k, v in upstream["records"].items()}}

    def scan(table, coupling, state, spec):
        return rww_scan(table, coupling, state, spec, backend=backend,
                        checkpoint_every=checkpoint_every)

    out, _, grads = run_with_grads(scan, leaves, build, spec, upstream)
    conditioning = None
    if dtype == torch.float32 and reference_dtype == torch.float64:
        conditioning = float32_sensitivity(leaves, build_reference, spec, upstream, ref_grads)
    assert_scan_close(out, grads, ref, ref_grads, dtype, conditioning)
    return out, grads


def float32_sensitivity(leaves, build_reference, spec, upstream, ref_grads, repeats: int = 2):
    """Per gradient name, the largest relative change of the float64 reference gradient when
    the scan's inputs are perturbed at random by float32's rounding (2^-24 relative): how much
    of a float32 gradient's error is the problem's conditioning rather than the backend's."""
    eps = 2.0 ** -24
    worst = dict.fromkeys(ref_grads, 0.0)
    for rep in range(repeats):
        gen = torch.Generator().manual_seed(1000 + rep)

        def perturbed():
            return tuple(t * (1 + eps * (2 * torch.rand(t.shape, generator=gen,
                                                       dtype=torch.float64) - 1))
                         for t in build_reference())

        upstream64 = {"bold": upstream["bold"].double(), "state": upstream["state"].double(),
                      "records": {k: v.double() for k, v in upstream["records"].items()}}
        _, _, grads = run_with_grads(reference_scan, leaves, perturbed, spec, upstream64)
        for name in ref_grads:
            worst[name] = max(worst[name], relative_error(grads[name], ref_grads[name]))
    return worst


# A float32 gradient can be ill-conditioned: on griffiths2022, N = 68, per-simulation C, seed 0,
# dL/dG moves by 7.0e-5 (relative) when only the float64 inputs and upstream gradients are
# perturbed by float32's rounding (2^-24 relative), against ~1e-6 on deco2014, and a float32 run
# rounds at every step as well: the float32 reference loop is 1.3e-5 off there and numba 1.08e-4
# (1.5x that sensitivity). So a float32 gradient may miss TOLERANCES by up to this factor times its
# measured sensitivity to float32-sized input perturbations (:func:`float32_sensitivity`); a
# real fault is off by orders of magnitude more.
FLOAT32_CONDITIONING_FACTOR = 4.0


def assert_scan_close(out, grads: dict, ref, ref_grads: dict, dtype, conditioning: dict | None = None):
    """A scan's outputs (BOLD, final state, every record) and every gradient against expected
    ones, at the tolerances of ``dtype`` (tensors compared on the CPU). ``conditioning`` maps a
    gradient's name to its sensitivity to float32 rounding (:func:`float32_sensitivity`, see
    :data:`FLOAT32_CONDITIONING_FACTOR`)."""
    tol = TOLERANCES[dtype]
    conditioning = conditioning or {}
    assert_close(out.bold.cpu(), ref.bold, tol["forward"], "bold")
    assert_close(out.state.cpu(), ref.state, tol["forward"], "final state")
    for name in ref.records:
        assert_close(out.records[name].cpu(), ref.records[name], tol["forward"], f"record {name}")
    for name in ref_grads:
        rtol = max(tol["grad"], FLOAT32_CONDITIONING_FACTOR * conditioning.get(name, 0.0))
        assert_close(grads[name].cpu(), ref_grads[name], rtol, f"grad {name}")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max|actual - expected| / max|expected|`` (0 where expected is all zero)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    return (actual - expected).abs().max().item() / scale if scale else 0.0


def run_cli(capsys, *argv):
    """``rww <argv>`` in this process: ``(exit code, stdout, stderr)`` (arguments str()-ed)."""
    from rww import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# Two processes under torchrun (gloo on CPU), as the distributed tests start them themselves.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun_env() -> dict:
    """The environment for a torchrun child: this checkout on PYTHONPATH, no inherited rank
    variables (a test run under torchrun itself must not leak them), one OpenMP thread per rank."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), env.get("PYTHONPATH")]))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env["OMP_NUM_THREADS"] = "1"
    return env


__all__ = ["TORCHRUN", "torchrun_env", "run_cli", "TOLERANCES", "FLOAT32_CONDITIONING_FACTOR", "float32_sensitivity", "relative_error", "assert_close", "assert_scan_close", "make_problem", "run_with_grads", "compare_with_reference",
           "upstream_gradients", "N_PARAMS", "PARAM_INDEX"]


def random_connectome(n_nodes: int, seed: int = 0, batch: int | None = None) -> torch.Tensor:
    """A random symmetric float64 connectome with zero diagonal, scaled to mean row sum 1:
    ``(N, N)``, or ``(B, N, N)`` one per simulation (numpy's default generator, ``seed``)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    shape = (n_nodes, n_nodes) if batch is None else (batch, n_nodes, n_nodes)
    sc = rng.random(shape)
    sc = (sc + np.swapaxes(sc, -1, -2)) / 2
    sc[..., np.arange(n_nodes), np.arange(n_nodes)] = 0
    return torch.tensor(sc / sc.sum(-1, keepdims=True).mean(-1, keepdims=True))


def seeded_connectome(n_nodes: int, seed: int = 0) -> torch.Tensor:
    """Like :func:`random_connectome` (``(N, N)`` float64) from torch's generator: the matrices
    the fit, evaluation and search tests were written against."""
    g = torch.Generator().manual_seed(seed)
    sc = torch.rand(n_nodes, n_nodes, generator=g, dtype=torch.float64)
    sc = (sc + sc.T) / 2
    sc.fill_diagonal_(0)
    return sc / sc.sum(1).mean()
