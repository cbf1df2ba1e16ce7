"""The Triton backend against the reference loop: noise, forward outputs, every gradient,
divergence reporting and memory.

Without a GPU the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``, set here
before triton or the kernels are imported) on CPU tensors: slow (~50 ms per simulated step), so
problems are small (3 TRs of 10 steps) but cross several checkpoint segments. With CUDA
available (``bench/gpu.py`` runs this file there) the same cases run compiled on the GPU, and the
reference still runs in float64 on the CPU.

Tolerances are those of ``helpers.TOLERANCES`` (float32: 1e-5 forward, 1e-4 gradients, relative
max-norm against the float64 reference).
"""

import os
import sys

import torch

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("RWW_TEST_INTERPRET") != "1" else "cpu"
if DEVICE == "cpu":
    # Must precede the first import of the kernels (triton.jit decides at decoration time).
    os.environ["TRITON_INTERPRET"] = "1"
# Kernel outputs start as NaN, so an element a kernel forgets to write fails the comparison.
os.environ["RWW_POISON_OUTPUTS"] = "1"

import math  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
from helpers import (TOLERANCES, assert_close, assert_scan_close, compare_with_reference,  # noqa: E402
                     make_problem, run_with_grads)

triton = pytest.importorskip("triton")

if DEVICE == "cpu" and "rww.ops.triton.mathfn" in sys.modules and not sys.modules["rww.ops.triton.mathfn"].INTERPRET:
    pytest.skip("kernels were imported for GPU before TRITON_INTERPRET=1 could be set; run this "
                "file on its own", allow_module_level=True)

import triton.language as tl  # noqa: E402

from rww.ops.triton.philox import philox4x32_10, philox_probe  # noqa: E402
from rww.errors import SimulationDiverged  # noqa: E402
from rww.noise import box_muller, philox4x32, to_unit_interval  # noqa: E402
from rww.ops.reference import ScanResult, reference_scan, simulate_steps  # noqa: E402
from rww.ops.scan import RWWScanFunction, default_checkpoint_every, get_backend, rww_scan  # noqa: E402
from rww.ops.triton.backend import TritonBackend  # noqa: E402
from rww.params import PARAM_INDEX, get_preset, pack_parameters  # noqa: E402

F32 = torch.float32

# Interpreted kernels run on numpy: an overflow or invalid operation in any lane (padded lanes
# included) is an error. This exposed an out-of-bounds read of a padded simulation's coupling.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


# ----------------------------------------------------------------------------------------------
# helpers


def _scan_with(backend, checkpoint_every):
    def scan(table, coupling, state, spec):
        k = checkpoint_every or default_checkpoint_every(spec.n_steps)
        outs = RWWScanFunction.run(table, coupling, state, spec, backend, k)
        return ScanResult(bold=outs[0], state=outs[1], records=dict(zip(spec.record, outs[2:])))
    return scan


def compare(checkpoint_every=None, backend=None, **problem):
    """``helpers.compare_with_reference`` for the Triton backend, on ``DEVICE``.

    On CPU with the default configuration this *is* ``compare_with_reference("triton", ...)``.
    Otherwise (forced tile shapes, or CUDA) the same procedure with the backend's tensors on
    ``DEVICE``: reference in float64 on the CPU via autograd, the backend in float32, the same
    upstream gradients on BOLD, the final state and every record, every leaf's gradient compared.
    """
    if DEVICE == "cpu" and backend is None:
        return compare_with_reference("triton", checkpoint_every=checkpoint_every, **problem)
    backend = backend or TritonBackend()
    leaves, build, spec = make_problem(**problem)
    ref, upstream, ref_grads = run_with_grads(
        reference_scan, leaves, lambda: tuple(t.to(torch.float64) for t in build()), spec)
    dev = {"params": {k: v.detach().to(DEVICE).requires_grad_(True)
                      for k, v in leaves["params"].items()},
           "coupling": leaves["coupling"].detach().to(DEVICE).requires_grad_(True),
           "state": leaves["state"].detach().to(DEVICE).requires_grad_(True)}
    batch, n_nodes = leaves["state"].shape[1:]
    preset = get_preset(problem.get("preset", "deco2014"))

    def build_dev():
        table = pack_parameters(dev["params"], preset, batch, n_nodes, F32, DEVICE)
        return table, dev["coupling"], dev["state"]

    up = {"bold": upstream["bold"].to(DEVICE, F32), "state": upstream["state"].to(DEVICE, F32),
          "records": {k: v.to(DEVICE, F32) for k, v in upstream["records"].items()}}
    out, _, grads = run_with_grads(_scan_with(backend, checkpoint_every), dev, build_dev, spec, up)
    assert_scan_close(out, grads, ref, ref_grads, F32)
    return out, grads


# ----------------------------------------------------------------------------------------------
# backend selection


def test_backend_is_selectable_and_explains_refusals(monkeypatch):
    ok, why = TritonBackend().available()
    assert ok, why
    assert isinstance(get_backend("triton", torch.device(DEVICE)), TritonBackend)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = TritonBackend().supports(torch.device("cpu"))
    assert not ok and "TRITON_INTERPRET=1" in why and "CUDA" in why
    ok, why = TritonBackend().supports(torch.device("meta"))
    assert not ok and "meta" in why


def test_float64_is_refused_with_a_clear_error():
    leaves, build, spec = make_problem(batch=1, n_nodes=2, n_trs=1, steps_per_tr=2,
                                       dtype=torch.float64)
    table, coupling, state = (t.detach().to(DEVICE) for t in build())
    with pytest.raises(TypeError, match="float32"):
        rww_scan(table, coupling, state, spec, backend="triton")


# ----------------------------------------------------------------------------------------------
# noise


def test_philox_device_functions_equal_the_contract():
    """Words bit for bit, normals to float32 rounding, on random and edge counters (t across
    2**32, large node and simulation indices, seeds with both halves set)."""
    gen = torch.Generator().manual_seed(7)
    n = 512
    steps = torch.randint(0, 2**62, (n,), generator=gen)
    steps[:8] = torch.tensor([0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**33 - 1, 2**62, 12345])
    nodes = torch.randint(0, 2**31 - 1, (n,), generator=gen)
    sims = torch.randint(0, 2**31 - 1, (n,), generator=gen)
    nodes[:4] = 0
    sims[:4] = torch.tensor([0, 1, 2**31 - 2, 5])
    for seed in (0, 12345, (0x299F31D0 << 32) | 0xA4093822, 2**64 - 1):
        words, normals = philox_probe(seed, steps.to(DEVICE), nodes.to(DEVICE), sims.to(DEVICE))
        words, normals = words.cpu(), normals.cpu()
        expected = torch.stack(philox4x32(steps & 0xFFFFFFFF, steps >> 32, nodes, sims,
                                          seed & 0xFFFFFFFF, seed >> 32), dim=1)
        assert torch.equal(words, expected), f"seed {seed}"
        xi_e, xi_i = box_muller(to_unit_interval(expected[:, 0], F32),
                                to_unit_interval(expected[:, 1], F32))
        # log, sqrt, cos and sin are each within ~1 ulp on both sides: allow 4 ulp of max(1, |x|).
        for got, want in ((normals[:, 0], xi_e), (normals[:, 1], xi_i)):
            ulps = (got.double() - want.double()).abs() / (2.0**-23 * want.abs().clamp(min=1.0)).double()
            assert ulps.max() <= 4.0, f"seed {seed}: {ulps.max():.1f} ulp"


def test_philox_device_function_equals_triton_philox():
    """An independent implementation: triton.language.philox on the same counters."""

    @triton.jit
    def both(p_out, seed, k0, k1, t_lo, t_hi, N: tl.constexpr):
        o = tl.arange(0, N)
        c0 = tl.full((N,), 0, tl.uint32) + t_lo.to(tl.uint32)
        c1 = tl.full((N,), 0, tl.uint32) + t_hi.to(tl.uint32)
        c2 = (o * 3 + 1).to(tl.uint32)
        c3 = (o * 7 + 5).to(tl.uint32)
        a0, a1, a2, a3 = tl.philox(seed, c0, c1, c2, c3)
        b0, b1, b2, b3 = philox4x32_10(k0.to(tl.uint32), k1.to(tl.uint32), c0, c1, c2, c3)
        same = (a0 == b0) & (a1 == b1) & (a2 == b2) & (a3 == b3)
        tl.store(p_out + o, same.to(tl.int32))

    n = 64
    for seed, t in [(0, 0), (12345, 987654321), ((0x299F31D0 << 32) | 0xA4093822, (5 << 32) | 17)]:
        out = torch.zeros(n, dtype=torch.int32, device=DEVICE)
        both[(1,)](out, seed, seed & 0xFFFFFFFF, seed >> 32, t & 0xFFFFFFFF, t >> 32, N=n)
        assert bool(out.all()), f"seed {seed}, t {t}"


# ----------------------------------------------------------------------------------------------
# forward and gradients against the reference
#
# make_problem: parameters of every shape (scalar, per-region, per-simulation, full), Balloon
# perturbed from rest, records S_E, S_I, r_E, r_I. The default 3 TRs of 10 steps with K = 7 give
# 5 segments, the last one partial, with segment boundaries inside TRs. SHORT (2 TRs of 6 steps,
# K = 5: segments of 5, 5, 2 steps, boundaries inside TRs) keeps the costlier interpreted cases
# (streamed columns at N = 68, 83; grids of several programs) within the time budget.

SHORT = dict(n_trs=2, steps_per_tr=6)
K_SHORT = 5


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
@pytest.mark.parametrize("per_sim_coupling", [False, True])
def test_small_network_matches_reference(preset, per_sim_coupling):
    compare(checkpoint_every=7, preset=preset, batch=3, n_nodes=5,
            per_sim_coupling=per_sim_coupling)


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
def test_single_node_single_simulation(preset):
    compare(checkpoint_every=7, preset=preset, batch=1, n_nodes=1)


@pytest.mark.slow
@pytest.mark.parametrize("preset,batch,n_nodes,per_sim", [
    ("deco2014", 1, 68, False),
    ("griffiths2022", 3, 68, True),
    ("deco2014", 3, 83, True),
    ("griffiths2022", 1, 83, False),
])
def test_streamed_coupling_at_atlas_sizes(preset, batch, n_nodes, per_sim):
    # N = 68, 83 exceed the register-resident limit: C is streamed by columns.
    compare(checkpoint_every=K_SHORT, preset=preset, batch=batch, n_nodes=n_nodes,
            per_sim_coupling=per_sim, **SHORT)


def test_resident_forward_with_streamed_adjoint():
    """N = 20 (BLOCK_N = 32): the default configuration keeps C in registers in the forward but
    streams it in the adjoint (rww.ops.triton.config.RESIDENT_MAX), so the two kernels differ."""
    from rww.ops.triton.config import choose_config

    assert choose_config(3, 20, True, "fwd").resident
    assert not choose_config(3, 20, True, "bwd").resident
    compare(checkpoint_every=K_SHORT, preset="deco2014", batch=3, n_nodes=20,
            per_sim_coupling=True, **SHORT)


def test_default_configurations_are_the_measured_ones():
    """choose_config's defaults are those bench/gpu_tune.py measured fastest on an H200
    (bench/results/gpu-tune-h200.json): 16 unrolled columns for the streamed forward, 16 warps
    at N = 1000, tl.dot tiles for large batches sharing C up to BLOCK_N = 128; the adjoint keeps
    its own (unmeasured) rule."""
    from rww.ops.triton.config import DOT_MIN_BATCH, choose_config

    w5 = choose_config(1, 100, False, "fwd")
    assert (w5.resident, w5.use_dot, w5.block_j, w5.num_warps, w5.block_b) == (False, False, 16, 4, 1)
    assert choose_config(1, 100, False, "bwd").block_j == 8
    assert choose_config(1, 1000, False, "fwd").num_warps == 16
    assert choose_config(1, 1000, False, "bwd").num_warps == 8
    w4 = choose_config(32768, 100, False, "fwd")
    assert w4.use_dot and w4.block_b == 16
    assert not choose_config(32768, 100, False, "bwd").use_dot
    assert not choose_config(DOT_MIN_BATCH - 1, 100, False, "fwd").use_dot
    assert not choose_config(32768, 100, True, "fwd").use_dot        # per-simulation C
    assert not choose_config(32768, 200, False, "fwd").use_dot       # BLOCK_N = 256


def test_automatic_tensor_core_forward_with_streamed_adjoint(monkeypatch):
    """A batch at or above DOT_MIN_BATCH sharing C: the forward (and the adjoint's
    recomputation) on tl.dot tiles, the adjoint streamed, the two chosen automatically."""
    import rww.ops.triton.config as config

    monkeypatch.setattr(config, "DOT_MIN_BATCH", 2)
    assert config.choose_config(3, 20, False, "fwd").use_dot
    assert not config.choose_config(3, 20, False, "bwd").use_dot
    compare(checkpoint_every=K_SHORT, preset="deco2014", batch=3, n_nodes=20, **SHORT)


@pytest.mark.slow
def test_thousand_regions():
    """N = 1000 (BLOCK_N = 1024, C streamed by columns), 2 steps in 2 segments: forward and every
    gradient, the 1000 x 1000 connectome's included."""
    compare(checkpoint_every=1, preset="deco2014", batch=1, n_nodes=1000, n_trs=2,
            steps_per_tr=1)


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
@pytest.mark.parametrize("per_sim_coupling", [False, True])
def test_forced_small_tiles(preset, per_sim_coupling):
    """GPU-style small tiles at small N: streamed mat-vec unrolled by 2 columns (the last group
    partial), one simulation per program (a grid of 3 programs)."""
    compare(checkpoint_every=K_SHORT, backend=TritonBackend(block_j=2, block_b=1), preset=preset,
            batch=3, n_nodes=5, per_sim_coupling=per_sim_coupling, **SHORT)


@pytest.mark.parametrize("resident", [True, False])
def test_tensor_core_tile_variant(resident):
    """Shared C as tl.dot tiles (16 simulations x 32 nodes), register-resident and streamed."""
    compare(checkpoint_every=K_SHORT, backend=TritonBackend(use_dot=True, resident=resident,
                                                            block_j=16),
            preset="deco2014", batch=3, n_nodes=20, **SHORT)


@pytest.mark.parametrize("shape", ["scalar", "region", "sim"])
def test_parameter_table_broadcast_layouts(shape):
    """Tables (P, 1, 1), (P, 1, N) and (P, B, 1): parameters read with stride 0 on broadcast
    dimensions, gradients summed over them."""
    names = ("G", "w_EE", "w_IE", "w_EI", "I_0", "sigma", "J_NMDA", "tau_E")
    compare(checkpoint_every=K_SHORT, preset="deco2014", batch=3, n_nodes=4,
            shapes={name: shape for name in names}, **SHORT)


@pytest.mark.parametrize("record", [(), ("r_I", "S_E")])
def test_subsets_of_records(record):
    compare(checkpoint_every=K_SHORT, preset="griffiths2022", batch=2, n_nodes=3, record=record,
            **SHORT)


def test_upstream_gradient_on_bold_only_and_continued_counter():
    """Outputs without gradients (autograd passes None) and a global step counter that crosses
    2**32 within the scan (the noise counter's carry)."""
    leaves, build, spec = make_problem(batch=2, n_nodes=3, t0=2**32 - 7, **SHORT)
    table, coupling, state = build()
    ref = reference_scan(*(t.double() for t in (table, coupling, state)), spec)
    out = rww_scan(*(t.to(DEVICE) for t in (table, coupling, state)), spec, backend="triton",
                   checkpoint_every=K_SHORT)
    assert_close(out.bold.cpu(), ref.bold, TOLERANCES[F32]["forward"], "bold")
    (g_ref,) = torch.autograd.grad(ref.bold.pow(2).sum() * 1e4, [leaves["state"]])
    (g_out,) = torch.autograd.grad(out.bold.pow(2).sum() * 1e4, [leaves["state"]])
    assert_close(g_out.cpu(), g_ref, TOLERANCES[F32]["grad"], "grad state (BOLD only)")


def test_backward_is_deterministic():
    """No float atomics: two backward passes give bit-identical gradients."""
    backend = TritonBackend(block_j=2, block_b=1)
    leaves, build, spec = make_problem(batch=2, n_nodes=5, n_trs=1, steps_per_tr=8)
    dev = [t.detach().to(DEVICE).requires_grad_(True) for t in build()]
    grads = []
    for _ in range(2):
        out = _scan_with(backend, 3)(*dev, spec)
        loss = out.bold.pow(2).sum() + out.state.sum() + sum(r.sum() for r in out.records.values())
        grads.append(torch.autograd.grad(loss, dev))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# divergence


def test_divergence_is_reported_like_the_reference():
    """Simulation 1 overflows (G so large that the current is inf in float32, S_E saturates at 1,
    then (1 - S_E) * inf is NaN one step later); simulation 2 starts with f < 0 (f - 1 < -1) (invalid from its
    first step). The first bad global step of each must match the float32 reference loop."""
    batch, n_nodes = 3, 4
    leaves, build, spec = make_problem(batch=batch, n_nodes=n_nodes, t0=1000,
                                       shapes={"G": "sim"}, **SHORT)
    table, coupling, state = (t.detach().clone() for t in build())
    table[PARAM_INDEX["G"], 1] = 3e38
    state[3, 2, 1] = -1.5             # f - 1: f = -0.5
    expected = simulate_steps(table, coupling, state, spec, 0, spec.n_steps).first_bad
    assert expected.tolist()[0] == -1 and expected.tolist()[1] > 1000 and expected.tolist()[2] == 1000
    # The overflow is the point here. (A filterwarnings mark on this function would not do: the
    # module's "error" filter is installed after it and wins.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = TritonBackend().forward(table.to(DEVICE), coupling.to(DEVICE), state.to(DEVICE),
                                      spec, K_SHORT)
        assert out.first_bad.cpu().tolist() == expected.tolist()
        with pytest.raises(SimulationDiverged) as err:
            rww_scan(table.to(DEVICE), coupling.to(DEVICE), state.to(DEVICE), spec,
                     backend="triton")
    assert (err.value.simulation, err.value.step, err.value.n_diverged) == (1, expected[1].item(), 2)


# ----------------------------------------------------------------------------------------------
# memory


def _saved_bytes(fn):
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_saved_memory_is_checkpoints_only():
    """A 12-TR scan (96 steps): the Function saves the parameter table, C and ceil(T/K) checkpoints, i.e.
    O(B*N*T/K), where autograd through the reference saves O(B*N*T)."""
    leaves, build, spec = make_problem(batch=2, n_nodes=5, n_trs=12, steps_per_tr=8)
    table, coupling, state = (t.to(DEVICE) for t in build())
    k = 11
    n_seg = math.ceil(spec.n_steps / k)
    triton_bytes = _saved_bytes(lambda: rww_scan(table, coupling, state, spec, backend="triton",
                                                 checkpoint_every=k))
    expected = 4 * (table.numel() + coupling.numel() + n_seg * 6 * 2 * 5)
    assert triton_bytes == expected
    cpu = tuple(t.detach().cpu().requires_grad_(True) for t in (table, coupling, state))
    reference_bytes = _saved_bytes(lambda: reference_scan(*cpu, spec))
    assert reference_bytes > 10 * triton_bytes, (reference_bytes, triton_bytes)


def test_backward_checks_its_recomputation_against_the_checkpoints(monkeypatch):
    """Each recomputed segment but the last runs one step further and its end state is compared
    with the next checkpoint: equal to the last bit here (the same kernel, the same arithmetic).
    A corrupted checkpoint is reported with a warning naming the difference."""
    from rww.ops.triton import adjoint

    compare(checkpoint_every=K_SHORT, preset="deco2014", batch=2, n_nodes=4, **SHORT)
    assert adjoint.last_recompute_check() == (0, 0.0)
    leaves, build, spec = make_problem("deco2014", batch=2, n_nodes=4, **SHORT)
    table, coupling, state = (t.detach().to(DEVICE).float() for t in build())
    table.requires_grad_(True)
    real_bwd = adjoint.rww_bwd

    def corrupt(params, coupling, checkpoints, *args, **kwargs):
        checkpoints = checkpoints.clone()
        checkpoints[1, 0] += 1e-3                  # S_E at the second checkpoint
        return real_bwd(params, coupling, checkpoints, *args, **kwargs)

    monkeypatch.setattr(adjoint, "rww_bwd", corrupt)
    out = rww_scan(table, coupling, state, spec, backend="triton", checkpoint_every=K_SHORT)
    with pytest.warns(RuntimeWarning, match="recomputed in the backward pass differ"):
        out.bold.sum().backward()
    mismatches, difference = adjoint.last_recompute_check()
    assert mismatches > 0 and difference == pytest.approx(1e-3, rel=1e-2)
