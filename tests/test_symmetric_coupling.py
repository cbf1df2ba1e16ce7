"""The numba kernels' coupling product from the packed upper triangle of a symmetric connectome
(rww/ops/numba/symmetric.py): the product itself against float64 numpy, and whole scans (forward
and every gradient) against the float64 reference with the size threshold lowered so that small
problems take the packed path."""

import numpy as np
import pytest
import torch

from helpers import compare_with_reference, make_problem, relative_error, run_with_grads
from rww.ops.scan import rww_scan
from rww.ops.reference import reference_scan

numba = pytest.importorskip("numba")

from rww.ops.numba import symmetric  # noqa: E402
from rww.ops.numba.layout import LANES, N_WROWS, W_CS, W_SCR, W_SE  # noqa: E402


def _symmetric(n, seed, diagonal=True):
    rng = np.random.default_rng(seed)
    c = rng.random((n, n))
    c = (c + c.T) / 2
    if not diagonal:
        np.fill_diagonal(c, 0.0)
    return c


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-6), (np.float64, 1e-15)])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 16, 17, 37, 70])
def test_product_matches_dense(n, dtype, rtol):
    """Every N modulo 4 and 16 (the pass width and the row group), a non-zero diagonal (the
    griffiths2022 Laplacian has one); padding lanes of the input hold NaN and must not be read;
    the output's padding lanes are zero and nothing past NP is written."""
    c = _symmetric(n, n)
    lanes = -(-n // 8) * 8
    packed, offsets = symmetric.pack_upper(c, dtype)
    rng = np.random.default_rng(100 + n)
    x = rng.random(n)
    W = np.zeros(N_WROWS * LANES, dtype=dtype)
    W[W_SE * LANES:W_SE * LANES + n] = x
    W[W_SE * LANES + n:(W_SE + 1) * LANES] = np.nan
    W[W_CS * LANES:(W_CS + 1) * LANES] = 7.0
    symmetric.symmetric_times_vector(W, packed[None], offsets, symmetric.row_starts(n),
                                     symmetric.split_row(offsets), 0, n, lanes, W_SE, W_CS, W_SCR)
    y = W[W_CS * LANES:(W_CS + 1) * LANES]
    expected = c @ x
    assert np.abs(y[:n] - expected).max() <= rtol * np.abs(expected).max()
    assert np.all(y[n:lanes] == 0)
    assert np.all(y[lanes:] == 7.0)


def test_operand_selects_large_exactly_symmetric_matrices(monkeypatch):
    """Packed only for matrices that are bitwise symmetric and at least MIN_BYTES large."""
    n = 20
    sym = _symmetric(n, 0)
    asym = sym.copy()
    asym[2, 5] += 1e-12
    both = np.stack([sym, asym])
    dense = np.zeros((2, n, 24), dtype=np.float64)
    op = symmetric.coupling_operand(dense, both, np.float64, min_bytes=0)
    assert op[4].tolist() == [1, 0]
    assert op[1].shape[0] == 2 and not op[1][1].any()
    op = symmetric.coupling_operand(dense, both, np.float64, min_bytes=n * 24 * 8 + 1)
    assert op[4].tolist() == [0, 0] and op[1].shape == (0, 0)
    # the default threshold: an N = 1000 float32 matrix qualifies, an N = 100 one does not
    for n_big, expected in ((1000, [1]), (100, [0])):
        c = _symmetric(n_big, 1).astype(np.float32)
        lanes = -(-n_big // 8) * 8
        dense_big = np.zeros((1, n_big, lanes), dtype=np.float32)
        assert symmetric.coupling_operand(dense_big, c[None], np.float32)[4].tolist() == expected


def test_switch(monkeypatch):
    """RWW_SYMMETRIC_COUPLING=off keeps the dense product; a wrong value is an error."""
    c = _symmetric(8, 3)
    dense = np.zeros((1, 8, 8))
    monkeypatch.setenv(symmetric.SWITCH, "off")
    assert symmetric.coupling_operand(dense, c[None], np.float64, min_bytes=0)[4].tolist() == [0]
    monkeypatch.setenv(symmetric.SWITCH, "Auto")
    assert symmetric.coupling_operand(dense, c[None], np.float64, min_bytes=0)[4].tolist() == [1]
    monkeypatch.setenv(symmetric.SWITCH, "on")
    with pytest.raises(ValueError, match="RWW_SYMMETRIC_COUPLING must be auto or off"):
        symmetric.coupling_operand(dense, c[None], np.float64, min_bytes=0)


@pytest.fixture
def packed_path(monkeypatch):
    """Lower the size threshold to 0 and record the symmetric flags of every operand built."""
    flags = []
    original = symmetric.coupling_operand

    def spy(dense, coupling, dtype, min_bytes=None):
        op = original(dense, coupling, dtype, min_bytes=0)
        flags.append(op[4].tolist())
        return op

    monkeypatch.setattr(symmetric, "coupling_operand", spy)
    return flags


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scan_on_packed_path_matches_reference(packed_path, preset, dtype):
    """Forward outputs and every gradient (parameters, coupling, initial state) of a scan whose
    coupling products run on the packed triangle, at the backend tests' tolerances; N = 37
    (not a multiple of 4 or 16)."""
    from rww.ops.numba.backend import last_recompute_mismatches

    compare_with_reference("numba", preset=preset, dtype=dtype, n_nodes=37, batch=2,
                           checkpoint_every=7, symmetric_coupling=True)
    assert packed_path and all(f == [1] for f in packed_path)
    # the backward's recomputation from checkpoints reproduced the forward bit for bit
    assert last_recompute_mismatches() == 0


def test_mixed_per_simulation_couplings(packed_path):
    """Per-simulation couplings, one symmetric and one not: each simulation takes its own path
    and both match the reference."""
    leaves, build, spec = make_problem(batch=2, n_nodes=21, per_sim_coupling=True,
                                       dtype=torch.float64, symmetric_coupling=True)
    c = leaves["coupling"].detach().clone()
    c[1, 3, 4] += 0.01
    leaves["coupling"] = c.requires_grad_(True)
    def scan(table, coupling, state, spec):
        return rww_scan(table, coupling, state, spec, backend="numba")

    runs = {"numba": run_with_grads(scan, leaves, build, spec)}
    runs["reference"] = run_with_grads(reference_scan, leaves, build, spec, runs["numba"][1])
    assert packed_path[0] == [1, 0]
    (out, _, grads), (ref, _, ref_grads) = runs["numba"], runs["reference"]
    assert relative_error(out.bold, ref.bold) < 1e-12
    for name in ref_grads:
        assert relative_error(grads[name], ref_grads[name]) < 1e-10, name


def test_packed_and_dense_paths_agree_at_large_n(monkeypatch):
    """At N = 400 (float32, above MIN_BYTES: the default takes the packed path) the packed and
    dense products give the same simulation to float32 rounding."""
    leaves, build, spec = make_problem(batch=1, n_nodes=400, dtype=torch.float32, n_trs=2,
                                       steps_per_tr=20, symmetric_coupling=True)
    table, coupling, state = build()
    with torch.no_grad():
        packed = rww_scan(table, coupling, state, spec, backend="numba")
        monkeypatch.setattr(symmetric, "MIN_BYTES", 2**62)
        dense = rww_scan(table, coupling, state, spec, backend="numba")
    assert not torch.equal(packed.state, dense.state)       # the two paths did run
    assert relative_error(packed.state, dense.state) < 1e-5
    assert relative_error(packed.bold, dense.bold) < 1e-4
