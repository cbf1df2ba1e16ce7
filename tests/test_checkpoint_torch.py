"""The checkpointed autograd.Function with the torch backend against the plain reference loop."""

import pytest
import torch
from helpers import compare_with_reference


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
@pytest.mark.parametrize("per_sim_coupling", [False, True])
def test_torch_checkpoint_matches_reference(preset, per_sim_coupling):
    # 3 TRs of 10 steps, K = 7: segments cross TR boundaries and the last one is partial.
    compare_with_reference("torch-checkpoint", checkpoint_every=7, preset=preset, batch=3,
                           n_nodes=5, per_sim_coupling=per_sim_coupling, dtype=torch.float64)


def test_forward_only_runs_keep_a_single_segment(monkeypatch):
    """Without a gradient to come, the scan asks the backend for one segment (no T/K
    checkpoints held: at B = 32768 that would be tens of GB); with one, about sqrt(T)."""
    from rww.model import RWWBold
    from rww.ops import scan

    seen = []
    real_apply = scan.RWWScanFunction.apply
    monkeypatch.setattr(scan.RWWScanFunction, "apply",
                        lambda *args: seen.append(args[5]) or real_apply(*args))   # K
    sc = torch.rand(4, 4, dtype=torch.float64)
    model = RWWBold(sc, tr=0.005, dt=0.5, backend="torch-checkpoint", G=0.3, learn=["G"],
                    dtype=torch.float64)
    with torch.no_grad():
        model(n_trs=10, seed=0)                            # 100 steps
    model(n_trs=10, seed=0)[0].sum().backward()
    assert seen == [100, 10]


@pytest.mark.parametrize("backend", ["torch-checkpoint", "numba"])
def test_second_derivatives_through_the_scan_raise(backend):
    """The scan's backward is not differentiable: a second derivative that reaches it raises,
    also when the scan is one term among others and the second derivative is taken with
    torch.autograd.grad(..., inputs) (torch's once_differentiable would let that drop the scan's
    part silently)."""
    if backend == "numba":
        pytest.importorskip("numba")
    from rww.model import RWWBold

    sc = torch.rand(4, 4, dtype=torch.float64)
    model = RWWBold(sc, tr=0.005, dt=0.5, backend=backend, G=0.3, learn=["G"],
                    dtype=torch.float64)
    g_param = next(p for p in model.parameters() if p.requires_grad)
    bold = model(n_trs=4, seed=0)[0]
    loss = bold.pow(2).mean() + g_param.pow(2).sum()          # the scan plus another term
    (first,) = torch.autograd.grad(loss, g_param, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives through the RWW scan"):
        torch.autograd.grad(first.sum(), g_param)
    (plain,) = torch.autograd.grad(model(n_trs=4, seed=0)[0].pow(2).mean() + g_param.pow(2).sum(),
                                   g_param)                 # first derivatives as before
    torch.testing.assert_close(plain, first.detach(), rtol=0, atol=0)


def test_second_derivatives_with_the_plain_loop():
    """backend='torch' (the reference loop, plain autograd) is differentiable twice."""
    from rww.model import RWWBold

    sc = torch.rand(4, 4, dtype=torch.float64)
    model = RWWBold(sc, tr=0.005, dt=0.5, backend="torch", G=0.3, learn=["G"],
                    dtype=torch.float64)
    g_param = next(p for p in model.parameters() if p.requires_grad)
    loss = model(n_trs=4, seed=0)[0].pow(2).mean()
    (grad,) = torch.autograd.grad(loss, g_param, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), g_param)
    assert torch.isfinite(second).all() and float(second.abs().sum()) > 0
