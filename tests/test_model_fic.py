"""RWWBold with feedback inhibition control (fic=) and G relative to the critical coupling."""

import pytest
import torch

from rww import RWWBold
from rww.fic import FICFailed, analytic_fic
from rww.params import PARAM_INDEX, get_preset, pack_parameters
from rww.stability import critical_coupling

from helpers import seeded_connectome


def _sc(n=5, seed=0):
    return seeded_connectome(n, seed)


def test_fic_sets_w_ie_from_the_analytic_solve():
    sc = _sc()
    model = RWWBold(sc, fic=True, G=0.7, w_EE=1.2, dtype=torch.float64, backend="torch")
    table = model.parameter_table()
    expected = analytic_fic(pack_parameters({"G": 0.7, "w_EE": 1.2}, get_preset("deco2014"), 1, 5,
                                            torch.float64), sc).w_IE
    torch.testing.assert_close(table[PARAM_INDEX["w_IE"]], expected, rtol=0, atol=0)
    assert model.last_fic is not None and not model.last_fic.any_failed
    # a per-simulation target
    model = RWWBold(sc, fic=torch.tensor([3.0, 4.0]), batch=2, G=0.7, dtype=torch.float64,
                    backend="torch")
    w = model.parameter_table()[PARAM_INDEX["w_IE"]]
    assert w.shape == (2, 5) and not torch.allclose(w[0], w[1])


def test_g_relative_scales_g_by_the_critical_coupling():
    sc = _sc()
    model = RWWBold(sc, fic=True, g_relative=True, G=0.8, w_EE=1.0, dtype=torch.float64,
                    backend="torch")
    g_c = critical_coupling(pack_parameters({"w_EE": 1.0}, get_preset("deco2014"), 1, 5,
                                            torch.float64), sc)
    g = model.parameter_table()[PARAM_INDEX["G"]]
    torch.testing.assert_close(g, (0.8 * g_c).view(1, 1).expand_as(g), rtol=1e-12, atol=0)
    torch.testing.assert_close(model.coupling_ratio(), torch.tensor([0.8], dtype=torch.float64))


def test_gradient_through_fic_and_critical_coupling_matches_finite_differences():
    """d(loss)/d(w_EE) with G = 0.8 G_c(w_EE) and w_IE = FIC(G, w_EE): autograd through the
    model's table against central differences of the same function."""
    sc = _sc()

    def loss(w_ee, learn=()):
        model = RWWBold(sc, fic=True, g_relative=True, G=0.8, w_EE=w_ee, dtype=torch.float64,
                        backend="torch", learn=list(learn))
        table = model.parameter_table()
        return model, (table[PARAM_INDEX["w_IE"]].square().sum() + table[PARAM_INDEX["G"]].sum())

    model, value = loss(1.1, learn=["w_EE"])
    raw = model.learned["w_EE"].raw
    (grad_raw,) = torch.autograd.grad(value, raw)
    grad = (grad_raw / torch.sigmoid(raw)).detach()   # softplus'(raw) = sigmoid(raw)
    h = 1e-5
    fd = (loss(1.1 + h)[1] - loss(1.1 - h)[1]) / (2 * h)
    assert float(grad) == pytest.approx(float(fd.detach()), rel=1e-6)
    assert abs(float(grad)) > 1e-3


def test_learned_parameters_get_gradients_through_fic_in_a_simulation():
    sc = _sc()
    model = RWWBold(sc, fic=True, G=0.6, dt=1.0, batch=2, learn=["G", "w_EE", "J_NMDA"],
                    dtype=torch.float64, backend="torch")
    bold, _ = model(3)
    bold.square().sum().backward()
    for name in ("G", "w_EE", "J_NMDA"):
        grad = model.learned[name].raw.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(preset="griffiths2022", fic=True), ValueError, "only for the deco2014"),
    (dict(fic=True, learn=["w_IE"]), ValueError, "w_IE is set by FIC"),
    (dict(g_relative=True), ValueError, "needs fic=True"),
    (dict(fic=-1.0), ValueError, "positive and finite"),
    (dict(fic=torch.tensor([3.0, 3.0, 3.0]), batch=2), ValueError, r"a \(2,\) tensor"),
])
def test_fic_options_are_validated(kwargs, error, message):
    with pytest.raises(error, match=message):
        RWWBold(_sc(), **kwargs)


def test_failed_fic_names_the_regions():
    model = RWWBold(_sc(), fic=True, G=0.0, I_0=torch.tensor([0.382, 0.30, 0.382, 0.382, 0.382]),
                    dtype=torch.float64, backend="torch")
    with pytest.raises(FICFailed, match=r"region"):
        model.parameter_table()


def test_refine_fic_stores_a_correction_used_by_later_forwards():
    sc = _sc()
    model = RWWBold(sc, fic=True, G=0.5, dt=1.0, sigma=0.01, dtype=torch.float64, backend="torch")
    before = model.parameter_table()[PARAM_INDEX["w_IE"]].clone()
    result = model.refine_fic(duration_s=7.2, burn_in_s=1.44, max_iter=4, tol_hz=0.2)
    after = model.parameter_table()[PARAM_INDEX["w_IE"]]
    torch.testing.assert_close(after, result.w_IE, rtol=1e-12, atol=1e-12)
    assert not torch.equal(before, after)
    assert "fic_correction" in model.state_dict()


def test_critical_coupling_is_reused_while_the_parameters_are_unchanged(monkeypatch):
    """Without gradients, G_c is solved once per parameter set (a chunked simulation asks for it
    every chunk); a changed parameter solves again."""
    import rww.stability as stability
    calls = []
    real = stability.critical_coupling

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stability, "critical_coupling", counting)
    model = RWWBold(_sc(), fic=True, g_relative=True, G=0.8, dtype=torch.float64, backend="torch")
    with torch.no_grad():
        first = model.critical_coupling()
        again = model.critical_coupling()
        model.w_EE.fill_(1.2)                        # from the default 1.4
        changed = model.critical_coupling()
    assert len(calls) == 2
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert float(changed[0]) > float(first[0])      # less recurrent excitation: higher G_c
