"""The noise counter's simulation offset: a batch split over calls, each part given the index of
its first member, draws the noise of the whole batch (forward and backward), and one member can
be rerun alone; on every backend."""

import pytest
import torch

from rww.model import RWWBold

BACKENDS = [("torch", torch.float64), ("torch-checkpoint", torch.float64),
            ("numba", torch.float64), ("numba", torch.float32), ("triton", torch.float32)]


def _model(batch, backend, dtype, sc):
    return RWWBold(sc, tr=0.005, dt=0.5, batch=batch, backend=backend, dtype=dtype, G=0.6,
                   sigma=0.02, learn=["G"], checkpoint_every=7)


def _run(batch, backend, dtype, sc, sim_offset):
    """BOLD ``(B, 3, N)`` and the final state ``(6, B, N)`` side by side as ``(B, 9, N)``, and
    dL/dG for L = sum(BOLD**2) + sum(S_E**2) over this call's members. (The state is compared
    too because float32 BOLD is still exactly 0 after these 30 steps.)"""
    model = _model(batch, backend, dtype, sc)
    bold, state = model(n_trs=3, seed=11, sim_offset=sim_offset)
    loss = bold.pow(2).sum() + state[0].pow(2).sum()
    (grad,) = torch.autograd.grad(loss, [model.learned["G"].raw])
    return torch.cat([bold, state.transpose(0, 1)], dim=1).detach(), grad


@pytest.mark.parametrize("backend,dtype", BACKENDS)
def test_split_batch_reproduces_the_whole_batch(backend, dtype):
    if backend == "numba":
        pytest.importorskip("numba")
    if backend == "triton":
        pytest.importorskip("triton")
    sc = torch.rand(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole, g_whole = _run(4, backend, dtype, sc, 0)
    first, g_first = _run(2, backend, dtype, sc, 0)
    rest, g_rest = _run(2, backend, dtype, sc, 2)
    alone, _ = _run(1, backend, dtype, sc, 3)
    # Each simulation's arithmetic does not depend on its batch neighbours: equal to the last bit
    # on the fused backends; the reference loop's batched matmul may block differently.
    exact = backend in ("numba", "triton")
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(torch.cat([first, rest]), whole, **tol)
    torch.testing.assert_close(alone, whole[3:], **tol)
    # Backward regenerates the same noise: the gradients of the parts add up to the whole's.
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(g_first + g_rest, g_whole, rtol=rtol, atol=0)
    # And the offset matters: member 3's noise is not member 0's.
    assert not torch.equal(alone, whole[:1])


def test_offset_is_validated():
    sc = torch.rand(3, 3, dtype=torch.float64)
    model = _model(2, "torch", torch.float64, sc)
    with pytest.raises(ValueError, match="sim_offset: must be a non-negative integer"):
        model(n_trs=1, sim_offset=-1)
    with pytest.raises(ValueError, match=r"exceeds 2\*\*32"):
        model(n_trs=1, sim_offset=2**32 - 1)
