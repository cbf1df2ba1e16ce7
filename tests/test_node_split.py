"""One simulation's forward on two threads (rww/ops/numba/split.py, RWW_NODE_SPLIT=auto): every
output bit for bit the single-threaded kernel's, the backward's recomputation from its
checkpoints exact, divergence stopped at the same step, and the switch."""

import pytest
import torch

from helpers import make_problem, run_with_grads
from rww.ops.scan import rww_scan

numba = pytest.importorskip("numba")

from rww.ops.numba import backend as numba_backend  # noqa: E402
from rww.ops.numba import split, symmetric  # noqa: E402


@pytest.fixture
def two_threads(monkeypatch):
    """Packed path at any size, two worker threads; returns a list that counts split runs."""
    monkeypatch.setattr(symmetric, "MIN_BYTES", 0)
    monkeypatch.setenv("RWW_NUM_THREADS", "2")
    calls = []
    original = split.forward

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(split, "forward", spy)
    return calls


def _outputs(out):
    return {"bold": out.bold, "state": out.state, **out.records}


def _assert_identical(a: dict, b: dict):
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("preset,dtype,n_nodes", [
    ("deco2014", torch.float32, 37), ("deco2014", torch.float64, 70),
    ("griffiths2022", torch.float32, 50)])
def test_split_forward_is_bitwise_single_threaded(two_threads, monkeypatch, preset, dtype,
                                                  n_nodes):
    """Forward outputs equal; the gradient after a split forward equals the one after a
    single-threaded forward, and the backward found every checkpoint reproduced exactly."""
    leaves, build, spec = make_problem(preset=preset, batch=1, n_nodes=n_nodes, dtype=dtype,
                                       n_trs=3, steps_per_tr=10, symmetric_coupling=True,
                                       shapes={"G": "region", "sigma": "scalar"})

    def scan(table, coupling, state, spec):
        return rww_scan(table, coupling, state, spec, backend="numba", checkpoint_every=7)

    runs = {}
    for mode in ("off", "auto"):
        monkeypatch.setenv("RWW_NODE_SPLIT", mode)
        out, upstream, grads = run_with_grads(scan, leaves, build, spec,
                                              runs["off"][1] if runs else None)
        assert numba_backend.last_recompute_mismatches() == 0
        runs[mode] = (out, upstream, grads)
    assert len(two_threads) == 1                # the split ran once, for mode auto
    _assert_identical(_outputs(runs["off"][0]), _outputs(runs["auto"][0]))
    _assert_identical(runs["off"][2], runs["auto"][2])


def test_split_stops_at_the_same_diverged_step(two_threads, monkeypatch):
    """A node driven below f = 0 (x = -400, f - 1 = -0.5) diverges at step 12 (of 20, TR 2,
    segment 2): both runs report that step and the same outputs, NaN from there on (BOLD,
    records, checkpoints, state)."""
    leaves, build, spec = make_problem(batch=1, n_nodes=40, dtype=torch.float32, n_trs=4,
                                       steps_per_tr=5, symmetric_coupling=True)
    table, coupling, state = (t.detach() for t in build())
    state = state.clone()
    state[2, 0, 33] = -400.0                    # x: f falls below 0 within 12 steps
    state[3, 0, 33] = -0.5
    outs = {}
    for mode in ("off", "auto"):
        monkeypatch.setenv("RWW_NODE_SPLIT", mode)
        outs[mode] = numba_backend.NumbaBackend().forward(table, coupling, state, spec, 6)
    assert len(two_threads) == 1
    a, b = outs["off"], outs["auto"]
    assert a.first_bad.tolist() == b.first_bad.tolist() == [12]
    assert torch.isnan(b.bold[0, 2:]).all() and not torch.isnan(b.bold[0, :2]).any()
    _assert_identical({"bold": a.bold, "state": a.state, "ckpt": a.checkpoints, **a.records},
                      {"bold": b.bold, "state": b.state, "ckpt": b.checkpoints, **b.records})


def test_when_the_split_runs(monkeypatch):
    """Only with RWW_NODE_SPLIT=auto, one simulation, a packed coupling, two threads, steps."""
    dense = torch.zeros(1, 64, 64).numpy()
    c = torch.rand(64, 64, dtype=torch.float64)
    c = (c + c.T).numpy()[None]
    packed = symmetric.coupling_operand(dense, c, dense.dtype, min_bytes=0)
    unpacked = symmetric.coupling_operand(dense, c, dense.dtype, min_bytes=2**62)
    monkeypatch.setenv("RWW_NODE_SPLIT", "auto")
    assert split.use_split(1, packed, 2, 10)
    assert not split.use_split(2, packed, 2, 10)
    assert not split.use_split(1, packed, 1, 10)
    assert not split.use_split(1, unpacked, 2, 10)
    assert not split.use_split(1, packed, 2, 0)
    monkeypatch.setenv("RWW_NODE_SPLIT", "off")
    assert not split.use_split(1, packed, 2, 10)
    monkeypatch.setenv("RWW_NODE_SPLIT", "yes")
    with pytest.raises(ValueError, match="RWW_NODE_SPLIT must be auto or off"):
        split.use_split(1, packed, 2, 10)


@pytest.mark.parametrize("n", [33, 37, 64, 100, 1000])
def test_block_edge(n):
    edge = split.block_edge(n)
    assert 0 < edge < n and edge % split.ALIGN == 0


@pytest.mark.parametrize("name", ["RWW_NODE_SPLIT", "RWW_SYMMETRIC_COUPLING"])
def test_invalid_switch_raises_with_delays_too(monkeypatch, name):
    """A typo in either switch is an error even when the kernels with conduction delays run,
    to which neither applies."""
    from rww.model import initial_state
    from rww.ops.spec import RECORDABLE, ScanSpec
    from rww.params import get_preset, pack_parameters, resolve_haemo

    preset = get_preset("deco2014")
    params = pack_parameters({}, preset, 1, 2, torch.float32)
    coupling = torch.full((2, 2), 0.5)
    spec = ScanSpec(preset, 0.1, 2, 4, haemo=resolve_haemo(preset, None), record=RECORDABLE,
                    max_delay=2)
    state = initial_state(1, 2, torch.float32, max_delay=2)
    lags = torch.tensor([[0, 2], [1, 0]], dtype=torch.int32)
    monkeypatch.setenv(name, "yes")
    with pytest.raises(ValueError, match=f"{name} must be auto or off"):
        numba_backend.NumbaBackend().forward(params, coupling, state, spec, 3, delays=lags)
