"""RWWBold: shapes, parameters, learnable flags, repr, continuation, backends."""

import pytest
import torch

from rww import RWWBold
from rww.ops.reference import reference_scan

N = 6


def connectome(seed=0):
    g = torch.Generator().manual_seed(seed)
    sc = torch.rand(N, N, generator=g)
    sc = (sc + sc.T) / 2
    return sc / sc.sum(1).mean()


def test_quick_start_shapes_and_gradients():
    # BOLD starts at rest and moves on the haemodynamic time scale: simulate 0.3 s so that it
    # (and its gradient) is well above float32 rounding.
    model = RWWBold(connectome(), preset="deco2014", dt=0.1, tr=0.1, batch=4, G=0.5,
                    w_IE=torch.ones(N), learn=["G", "w_IE"])
    bold, state = model(n_trs=3, seed=0)
    assert bold.shape == (4, 3, N) and state.shape == (6, 4, N)
    assert torch.isfinite(bold).all()
    assert sorted(n for n, _ in model.named_parameters()) == ["learned.G.raw", "learned.w_IE.raw"]
    assert model.G.item() == pytest.approx(0.5) and model.learnable == ["G", "w_IE"]
    (bold.square().sum() * 1e4).backward()
    g_grad, w_grad = model.learned["G"].raw.grad, model.learned["w_IE"].raw.grad
    assert g_grad.shape == () and w_grad.shape == (N,)
    assert g_grad.abs() > 0 and (w_grad.abs() > 0).all()


def test_forward_equals_reference_on_the_model_pieces():
    model = RWWBold(connectome(), tr=0.005, batch=2, G=torch.tensor([0.2, 0.9]), dtype=torch.float64,
                    backend="torch")
    result = model.simulate(4, seed=3, record=("S_E", "r_E"))
    direct = reference_scan(model.parameter_table(), model.coupling(), model.initial_state(),
                            model.spec(4, seed=3, record=("S_E", "r_E")))
    assert torch.equal(result.bold, direct.bold)
    assert torch.equal(result.records["r_E"], direct.records["r_E"])
    # per-simulation G really differs between the two simulations
    assert ((result.bold[0] - result.bold[1]).abs() > 1e-3 * result.bold.abs().max()).any()


def test_per_simulation_connectomes():
    sc = torch.stack([connectome(0), connectome(1), connectome(2)])
    model = RWWBold(sc, batch=3, tr=0.005, G=1.0, dtype=torch.float64, backend="torch")
    bold, _ = model(2, seed=1)
    for b in range(3):
        single = RWWBold(sc[b], batch=1, tr=0.005, G=1.0, dtype=torch.float64)
        # simulation b of the batch uses noise counter b; rebuild it by simulating b+1 copies
        many = RWWBold(sc[b], batch=b + 1, tr=0.005, G=1.0, dtype=torch.float64, backend="torch")
        ref, _ = many(2, seed=1)
        assert torch.equal(bold[b], ref[b])
        assert single.n_nodes == N


def test_continuation_through_the_model():
    model = RWWBold(connectome(), tr=0.005, batch=2, dtype=torch.float64)
    whole, _ = model(6, seed=8)
    first, state = model(3, seed=8)
    second, _ = model(3, state=state, seed=8, t0=3 * model.steps_per_tr)
    assert torch.equal(whole, torch.cat([first, second], 1))


def test_repr_is_informative():
    text = repr(RWWBold(connectome(), batch=2, G=0.5, learn=["G"]))
    for piece in ("preset=deco2014", "n_nodes=6", "batch=2", "dt=0.1", "tr=0.72 s (7200 steps)",
                  "learn=['G']", "backend=auto -> ", "float32"):
        assert piece in text, piece


@pytest.mark.parametrize("backend", ["torch", "torch-checkpoint"])
def test_backends_agree_through_the_model(backend):
    kwargs = dict(tr=0.005, batch=2, G=0.7, learn=["G", "w_EE"], dtype=torch.float64)
    ref = RWWBold(connectome(), backend="torch", **kwargs)
    other = RWWBold(connectome(), backend=backend, checkpoint_every=13, **kwargs)
    b_ref, _ = ref(3, seed=2)
    b_other, _ = other(3, seed=2)
    torch.testing.assert_close(b_other, b_ref, rtol=1e-13, atol=0)
    (b_ref.sum()).backward()
    (b_other.sum()).backward()
    for name in ("G", "w_EE"):
        torch.testing.assert_close(other.learned[name].raw.grad, ref.learned[name].raw.grad,
                                   rtol=1e-10, atol=0)
