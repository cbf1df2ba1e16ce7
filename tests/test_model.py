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


def test_state_dict_round_trips_on_the_same_connectome(tmp_path):
    model = RWWBold(connectome(), tr=0.005, learn=["G"], G=0.5, w_EE=torch.full((N,), 1.3))
    with torch.no_grad():
        model.learned["G"].raw.add_(0.3)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = RWWBold(connectome(), tr=0.005, learn=["G"], G=0.5, w_EE=torch.ones(N))
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert torch.equal(fresh.G, model.G) and torch.equal(fresh.w_EE, model.w_EE)
    # A float32 state into a float64 model of the same connectome (and back) is the same SC.
    double = RWWBold(connectome().double(), tr=0.005, learn=["G"], G=0.5, w_EE=torch.ones(N),
                     dtype=torch.float64)
    double.load_state_dict(model.state_dict())
    assert double.G.item() == pytest.approx(model.G.item(), rel=1e-7)
    model.load_state_dict(double.state_dict())
    # griffiths2022 stores its normalised SC, computed in either precision: still the same.
    g32 = RWWBold(connectome(), preset="griffiths2022", learn=["G"], G=0.3)
    g64 = RWWBold(connectome().double(), preset="griffiths2022", learn=["G"], G=0.3,
                  dtype=torch.float64)
    g32.load_state_dict(g64.state_dict())
    g64.load_state_dict(g32.state_dict())


def test_a_state_fitted_on_another_connectome_does_not_replace_it_silently():
    fitted = RWWBold(connectome(0), learn=["G"], G=0.8, w_EE=torch.full((N,), 1.3))
    state = fitted.state_dict()
    other = connectome(1)
    model = RWWBold(other, learn=["G"], G=0.5, w_EE=torch.full((N,), 1.4))
    with pytest.raises(ValueError, match=r"the saved connectome 'sc' differs from this model's "
                                         r"\(largest difference .* at \[\d, \d\], relative to the "
                                         r"largest weight .*\), and loading it would replace this "
                                         r"model's SC\. .*sc='keep'.*sc='replace'"):
        model.load_state_dict(state)
    # Refused before anything was loaded.
    assert torch.equal(model.sc, other) and model.G.item() == pytest.approx(0.5)
    assert torch.equal(model.w_EE, torch.full((N,), 1.4))
    # Opting in: the fitted parameters on this model's connectome...
    model.load_state_dict(state, sc="keep")
    assert torch.equal(model.sc, other) and torch.equal(model.G, fitted.G)
    assert torch.equal(model.w_EE, fitted.w_EE)
    # ... and the choice lasts one call.
    with pytest.raises(ValueError, match="differs"):
        model.load_state_dict(state)
    # Or the saved connectome, as nn.Module does.
    model.load_state_dict(state, sc="replace")
    assert torch.equal(model.sc, fitted.sc)
    with pytest.raises(ValueError, match=r"sc='ignore' is not one of \('check', 'keep', 'replace'\)"):
        model.load_state_dict(state, sc="ignore")


def test_connectome_check_applies_to_other_shapes_and_inside_larger_modules():
    state = RWWBold(connectome(0), batch=2).state_dict()
    bigger = torch.rand(N + 1, N + 1)
    with pytest.raises(ValueError, match=r"differs from this model's \(shape \(6, 6\), this "
                                         r"model's \(7, 7\)\)"):
        RWWBold((bigger + bigger.T) / 2, batch=2).load_state_dict(state)
    stacked = torch.stack([connectome(0), connectome(0)])
    with pytest.raises(ValueError, match=r"shape \(6, 6\), this model's \(2, 6, 6\)"):
        RWWBold(stacked, batch=2).load_state_dict(state)
    wrapper = torch.nn.ModuleDict({"rww": RWWBold(connectome(1), batch=2)})
    with pytest.raises(ValueError, match=r"the saved connectome 'rww\.sc' differs"):
        wrapper.load_state_dict({f"rww.{k}": v for k, v in state.items()})
    same = torch.nn.ModuleDict({"rww": RWWBold(connectome(0), batch=2)})
    same.load_state_dict({f"rww.{k}": v for k, v in state.items()})


def test_float32_warns_where_it_cannot_resolve_the_step():
    """float32 at dt = 1e-4 ms (dt/tau_E = 1e-6): S_E's per-step change is a few roundings; a
    RuntimeWarning names the cause and the remedy. None at 1e-3 ms or the default 0.1 ms (the
    Balloon, held as deviations from rest, resolves those), none in float64."""
    import warnings

    sc = torch.rand(4, 4, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"too small for float32.*dtype=torch\.float64.*dt >= 0\.001 ms"):
        RWWBold(sc, dt=1e-4, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match=r"tau = 1000 ms.*dt >= 0\.01 ms"):
        RWWBold(sc, dt=5e-3, tau_E=1000.0, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RWWBold(sc, dt=0.1, dtype=torch.float32)
        RWWBold(sc, dt=1e-3, dtype=torch.float32)
        RWWBold(sc, dt=1e-4, dtype=torch.float64)
