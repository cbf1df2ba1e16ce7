"""Fitting: loss-term gradients, target validation, exact resume, transforms."""

import math

import pytest
import torch

import rww
from rww import objectives as obj
from rww.fit import FitConfig, FitResult, FitTarget, fit
from rww.transforms import RegionalMap

from helpers import seeded_connectome  # noqa: E402

N = 5


def connectome(n=N, seed=0):
    return seeded_connectome(n, seed)


def random_fc(n=N, seed=1):
    g = torch.Generator().manual_seed(seed)
    return obj.fc(torch.randn(40, n, generator=g, dtype=torch.float64))


# ---------------------------------------------------------------- loss terms: gradients
def _check(fn, *inputs):
    inputs = tuple(x.detach().double().requires_grad_(True) for x in inputs)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_fc_loss_gradients():
    bold = torch.randn(2, 30, N, dtype=torch.float64)
    emp = random_fc()
    for fn in (obj.fc_corr_loss, obj.fc_log_loss, obj.fc_l1, obj.fc_mse):
        _check(lambda b: fn(obj.pearson_matrix(b), emp), bold)


def test_fcd_distance_gradient_and_ks_tracking():
    bold = torch.randn(1, 60, N, dtype=torch.float64)
    emp_vals = torch.rand(80, dtype=torch.float64) * 0.6
    _check(lambda b: obj.wasserstein1(obj.fcd_values(obj.fcd(b, 10, 5), 10, 5), emp_vals), bold)
    # W1 and KS move together: a sample shifted further from the target is worse in both
    base = torch.rand(500, dtype=torch.float64)
    w = [float(obj.wasserstein1(base + s, base)) for s in (0.05, 0.1, 0.2)]
    ks = [obj.ks_statistic(base + s, base) for s in (0.05, 0.1, 0.2)]
    assert w == sorted(w) and ks == sorted(ks)
    assert abs(w[1] - 0.1) < 1e-3


def test_other_term_gradients():
    bold = torch.randn(2, 20, N, dtype=torch.float64)
    _check(lambda b: obj.bold_std_loss(b, torch.full((N,), 0.7, dtype=torch.float64)), bold)
    _check(lambda b: obj.bold_mean_loss(b, torch.zeros(N, dtype=torch.float64), torch.full((N,), 0.5, dtype=torch.float64)), bold)
    _check(lambda r: obj.firing_rate_loss(r, 3.0), torch.rand(2, 10, N) * 6)
    _check(lambda x, m, s: obj.gaussian_nll(x, m, s), torch.rand(N), torch.rand(()), torch.rand(()) + 0.5)
    _check(lambda gie, gei, c: obj.bifurcation_penalty(gie, gei, c[0], c[1], c[2]),
           torch.rand(N) + 0.1, torch.rand(N) + 0.1, torch.tensor([0.5, 20.0, 10.0]))
    _check(lambda e, i: obj.entropy_term(e, i), torch.rand(2, 10, N) * 0.8 + 0.1, torch.rand(2, 10, N) * 0.8 + 0.1)
    _check(lambda v: obj.smoothness_penalty(v, connectome()), torch.rand(N))


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_every_fit_term_gradient_through_the_model(backend):
    """Each term of :data:`rww.fit.LOSS_TERMS` (and a prior) as :func:`rww.fit.loss_terms`
    computes it from a simulation, differentiated through the scan with respect to the raw
    (unconstrained) parameters, against central finite differences of the same deterministic
    (fixed-seed) simulation in float64: for the reference (autograd through the loop) and the
    fastest CPU backend (its adjoint). TR = 50 ms after a 0.5 s burn-in keeps BOLD's fluctuations
    well above round-off (at a few ms they are ~1e-8 and finite differences of FC are noise)."""
    from rww.fit import LOSS_TERMS, FitState, loss_terms
    n, trs = 4, 8
    g = torch.Generator().manual_seed(3)
    target = FitTarget(bold=torch.randn(trs, n, generator=g, dtype=torch.float64) * 1e-3,
                       fcd_values=torch.rand(30, generator=g, dtype=torch.float64) * 0.5,
                       fcd_window=3, fcd_step=1).validate(n, torch.float64, "cpu")
    model = rww.RWWBold(connectome(n), dtype=torch.float64, dt=1.0, tr=0.05, batch=2, G=0.8,
                        w_IE=torch.linspace(0.9, 1.1, n, dtype=torch.float64), backend=backend,
                        learn=["G", "w_EE", "w_IE", "w_EI"])
    with torch.no_grad():
        _, state0 = model(10, seed=5)
    config = FitConfig(weights={term: 1.0 for term in LOSS_TERMS}, priors={"w_EE": (1.2, 0.5)})
    extra = FitState(config, torch.float64, "cpu")
    params = list(model.parameters())

    def values() -> dict:
        result = model.simulate(trs, state=state0, seed=7, t0=10 * model.steps_per_tr,
                                record=("r_E", "S_E", "S_I"))
        terms = loss_terms(model, result, target, target.fc, config, extra)
        terms["prior"] = obj.gaussian_nll(model.w_EE, 1.2, 0.5)
        return terms

    terms = values()
    assert sorted(terms) == sorted(LOSS_TERMS + ("prior",))
    analytic = {k: torch.autograd.grad(v, params, allow_unused=True, retain_graph=True)
                for k, v in terms.items()}
    h = 1e-4
    for i, p in enumerate(params):
        for k in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[k] += h
                up = values()
                p.view(-1)[k] -= 2 * h
                down = values()
                p.view(-1)[k] += h
            for name in terms:
                fd = (up[name].item() - down[name].item()) / (2 * h)
                grad = analytic[name][i]
                got = 0.0 if grad is None else grad.reshape(-1)[k].item()
                assert got == pytest.approx(fd, rel=1e-3, abs=1e-7), (name, i, k, got, fd)


def test_gaussian_nll_is_the_normal_density():
    from scipy.stats import norm
    x = torch.tensor([0.3, -1.2], dtype=torch.float64)
    got = obj.gaussian_nll(x, 0.5, 2.0).item()
    assert got == pytest.approx(-norm.logpdf(x.numpy(), 0.5, 2.0).sum(), rel=1e-12)


def test_bifurcation_penalty_matches_paper_formula():
    gie, gei = torch.tensor(0.3), torch.tensor(-0.2)
    expected = 5 * (0.501 * 0.301**2 - 20.001 * 0.301 + 10.001 - 0.001) ** 2
    assert obj.bifurcation_penalty(gie, gei, 0.5, 20.0, 10.0).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- targets and config
@pytest.mark.parametrize("target, match", [
    (FitTarget(fc=torch.eye(4)), r"target fc: expected shape \(5, 5\), got \(4, 4\)"),
    (FitTarget(fc=torch.full((N, N), float("nan"))), r"target fc: contains NaN"),
    (FitTarget(fc=2 * torch.eye(N)), r"target fc: values outside \[-1, 1\]"),
    (FitTarget(bold=torch.randn(N, 40)), r"target bold: expected shape \(T, 5\) \(time x regions\), got \(5, 40\)"),
    (FitTarget(bold=torch.cat([torch.randn(40, N - 1), torch.ones(40, 1)], 1)), r"target bold: regions \[4\] have constant"),
    (FitTarget(bold=torch.full((40, N), float("nan"))), r"target bold: contains NaN"),
    (FitTarget(), r"target: give an FC matrix"),
    (FitTarget(bold=torch.randn(40)), r"target bold: expected shape \(T, 5\)"),
    (FitTarget(bold=torch.randn(2, N)), r"target bold: needs at least 3 time points, got 2"),
    (FitTarget(bold=torch.cat([torch.randn(39, N), torch.full((1, N), float("inf"))])), r"target bold: contains NaN or infinite"),
    (FitTarget(fc=torch.eye(N), fcd_values=torch.tensor([0.1, float("nan"), 0.3])), r"target fcd_values: expected at least 2 finite"),
])
def test_bad_targets(target, match):
    model = rww.RWWBold(connectome(), G=0.5, learn=["G"], tr=0.01)
    with pytest.raises(ValueError, match=match):
        fit(model, target, FitConfig(epochs=1, window_trs=None, n_trs=4, burn_in_trs=0), progress=False)


def test_targets_that_do_not_fit_the_schedule():
    """A windowed fit compares each window with the same window of the data, and the FCD term
    needs two non-overlapping window pairs per simulated piece: both say so before simulating."""
    model = rww.RWWBold(connectome(), G=0.5, learn=["G"], tr=0.01)
    with pytest.raises(ValueError, match=r"n_trs=20 in windows of 4 TRs runs past the target bold \(12 TRs\)"):
        fit(model, FitTarget(bold=torch.randn(12, N)), FitConfig(epochs=1, window_trs=4, n_trs=20), progress=False)
    target = FitTarget(fc=random_fc(), fcd_values=torch.rand(10), fcd_window=10, fcd_step=5)
    with pytest.raises(ValueError, match=r"fcd: a simulated piece of 20 TRs has 3 FCD windows .* 1 pairs"):
        fit(model, target, FitConfig(epochs=1, window_trs=None, n_trs=20, weights={"fcd": 1.0}), progress=False)
    with pytest.raises(ValueError, match=r"the fcd term needs target fcd_values"):
        fit(model, FitTarget(fc=random_fc()), FitConfig(epochs=1, window_trs=None, n_trs=20,
                                                        weights={"fcd": 1.0}), progress=False)


def test_bad_config_and_model():
    model = rww.RWWBold(connectome(), G=0.5, tr=0.01)
    with pytest.raises(ValueError, match="model: no learnable parameters"):
        fit(model, FitTarget(fc=random_fc()), FitConfig(epochs=1, n_trs=4, window_trs=None), progress=False)
    with pytest.raises(ValueError, match=r"weights: unknown loss terms \['fc'\]"):
        FitConfig(weights={"fc": 1.0}).validate()
    with pytest.raises(ValueError, match="window_trs: must be an integer >= 3"):
        FitConfig(window_trs=2).validate()


# ---------------------------------------------------------------- the loop
def small_model(**kw):
    return rww.RWWBold(connectome(), preset="griffiths2022", batch=2, dtype=torch.float64,
                       learn=["G", "w_EE"], G=5.0, **kw)


def test_windowed_fit_runs_and_records_history(tmp_path):
    target = FitTarget(bold=torch.randn(12, N, dtype=torch.float64))
    config = FitConfig(epochs=2, window_trs=4, burn_in_trs=2, lr=0.05,
                       weights={"fc_log": 1.0, "bifurcation": 1.0, "entropy": 1.0})
    result = fit(small_model(), target, config, progress=False)
    h = result.history
    assert h["epoch"] == [0, 1] and len(h["loss"]) == 2 and len(h["fc_r"]) == 2
    for key in ("terms/fc_log", "terms/bifurcation", "terms/entropy", "params/G", "params/w_EE"):
        assert len(h[key]) == 2 and all(math.isfinite(v) for v in h[key]), key
    assert h["params/G"][0] != pytest.approx(5.0, abs=1e-9)       # it moved
    assert result.bold.shape == (2, 12, N) and result.fc.shape == (N, N)
    result.save(str(tmp_path / "res"))
    again = FitResult.load(str(tmp_path / "res"))
    assert again.history == result.history
    assert torch.equal(again.params["G"], result.params["G"].cpu())


def test_resume_reproduces_uninterrupted_fit(tmp_path):
    target = FitTarget(fc=random_fc())
    config = FitConfig(epochs=4, window_trs=None, n_trs=6, burn_in_trs=2, lr=0.1,
                       weights={"fc_corr": 1.0, "fc_mse": 1.0}, priors={"G": (4.0, 2.0)})
    straight = fit(small_model(), target, config, progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_two(epoch, history):
        if epoch == 1:
            raise Interrupt

    path = str(tmp_path / "fit.ckpt")
    with pytest.raises(Interrupt):
        fit(small_model(), target, config, checkpoint=path, progress=False, callback=stop_after_two)
    resumed = fit(small_model(), target, config, checkpoint=path, resume=True, progress=False)
    for name in ("G", "w_EE"):
        assert torch.equal(resumed.params[name], straight.params[name]), name
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.history["epoch"] == [0, 1, 2, 3]
    assert torch.equal(resumed.bold, straight.bold)
    # Resuming the finished fit runs nothing and returns the same result again.
    again = fit(small_model(), target, config, checkpoint=path, resume=True, progress=False)
    assert torch.equal(again.bold, straight.bold) and torch.equal(again.fc, straight.fc)
    assert again.history["loss"] == straight.history["loss"]
    with pytest.raises(ValueError, match="resume: .* other settings"):
        fit(small_model(), target, FitConfig(epochs=5, window_trs=None, n_trs=6), checkpoint=path,
            resume=True, progress=False)


def test_transforms_keep_parameters_in_range():
    maps = torch.randn(2, N, dtype=torch.float64)
    model = rww.RWWBold(connectome(), dtype=torch.float64, tr=0.01, G=1.0, w_IE=torch.full((N,), 1.2),
                        learn={"G": ("interval", 0.0, 3.0), "w_IE": RegionalMap(maps, "positive")})
    assert model.G.item() == pytest.approx(1.0, rel=1e-12)
    torch.testing.assert_close(model.w_IE, torch.full((N,), 1.2, dtype=torch.float64))
    with torch.no_grad():
        model.learned["G"].raw.fill_(12.0)
        model.learned["w_IE"].coefficients.copy_(torch.tensor([-30.0, 5.0]))
    assert 0 < model.G.item() < 3
    assert (model.w_IE > 0).all()
    names = sorted(n for n, _ in model.named_parameters())
    assert names == ["learned.G.raw", "learned.w_IE.coefficients", "learned.w_IE.intercept"]
    with pytest.raises(ValueError, match=r"learn: G starts at 4, outside the open interval \(0.0, 3.0\)|outside the open interval"):
        rww.RWWBold(connectome(), G=4.0, learn={"G": ("interval", 0.0, 3.0)})
    with pytest.raises(ValueError, match=r"'positive' transform \(softplus\) needs a value > 0"):
        rww.RWWBold(connectome(), learn=["G"])                       # deco2014's default G is 0


# ---------------------------------------------------------------- recovery
@pytest.mark.slow
def test_small_recovery_of_G():
    """20 regions: G = 0.3 simulates the target; a fit starting 50% off (0.45) recovers it within
    10%. deco2014 at dt = 1 ms and TR = 0.5 s keeps this inside a CI budget (the estimator does
    not depend on the step); the loss pairs FC (1 - r) with the z-scored regional BOLD means,
    which carry the mean S_E and so identify G smoothly. Runs on the fastest CPU backend."""
    g = torch.Generator().manual_seed(0)
    n = 20
    sc = torch.rand(n, n, generator=g) ** 3
    sc = (sc + sc.T) / 2
    sc.fill_diagonal_(0)
    sc = sc / sc.sum(1).mean()
    settings = dict(dt=1.0, tr=0.5, backend="auto")
    truth = rww.RWWBold(sc, G=0.3, batch=1, **settings)
    with torch.no_grad():
        _, state = truth(10, seed=123)
        bold, _ = truth(16, state=state, seed=123, t0=10 * truth.steps_per_tr)
    model = rww.RWWBold(sc, G=0.45, batch=2, learn=["G"], **settings)
    config = FitConfig(epochs=14, lr=0.05, window_trs=None, n_trs=8, burn_in_trs=10,
                       weights={"bold_mean": 1.0, "fc_corr": 1.0})
    result = fit(model, FitTarget(bold=bold[0]), config, progress=False)
    fitted = result.params["G"].item()
    assert abs(fitted - 0.3) / 0.3 < 0.1, f"G fitted {fitted:.4f}, history {result.history['params/G']}"


def test_target_fcd_values_come_from_the_target_bold():
    bold = torch.randn(40, 5, dtype=torch.float64)
    target = FitTarget(bold=bold, fcd_window=6, fcd_step=2).validate(5, torch.float64, "cpu")
    expected = obj.fcd_values(obj.fcd(bold, 6, 2), 6, 2)
    assert torch.equal(target.fcd_values, expected)
    pooled = FitTarget(bold=bold, fcd_window=6, fcd_step=2, fcd_exclude_overlapping=False)
    assert torch.equal(pooled.validate(5, torch.float64, "cpu").fcd_values, obj.fcd_values(obj.fcd(bold, 6, 2)))
    short = FitTarget(bold=bold[:7], fcd_window=6, fcd_step=2).validate(5, torch.float64, "cpu")
    assert short.fcd_values is None                    # shorter than two windows: no FCD target


@pytest.mark.parametrize("exclude_overlapping", [True, False])
@pytest.mark.parametrize("window, step", [(6, 2), (5, 5), (4, 3), (30, 5)])
def test_fcd_counts_and_the_shortest_length_match_the_fcd_values(window, step, exclude_overlapping):
    from rww.fit import fcd_counts, fcd_min_trs
    g = torch.Generator().manual_seed(4)
    for n_trs in range(window - 1, window + 12 * step):
        n_win, n_pairs = fcd_counts(n_trs, window, step, exclude_overlapping)
        if n_trs < window:
            assert (n_win, n_pairs) == (0, 0)
            continue
        matrix = obj.fcd(torch.randn(n_trs, 3, generator=g, dtype=torch.float64), window, step)
        values = obj.fcd_values(matrix, window, step) if exclude_overlapping else obj.fcd_values(matrix)
        assert (n_win, n_pairs) == (matrix.shape[-1], values.numel()), n_trs
    shortest = fcd_min_trs(window, step, exclude_overlapping)
    assert fcd_counts(shortest, window, step, exclude_overlapping)[1] >= 2
    assert fcd_counts(shortest - 1, window, step, exclude_overlapping)[1] < 2


def test_a_bold_too_short_for_fcd_says_so_with_the_numbers():
    """The issue's cases: a 40-TR BOLD holds 3 windows of 30 TRs every 5 and no pair sharing no
    TR (its FCD target was an empty tensor, and torch.quantile failed on it); a 25-TR BOLD holds
    no window (its FCD target was dropped silently, and the fit blamed missing fcd_values)."""
    g = torch.Generator().manual_seed(5)
    bold40 = torch.randn(40, N, generator=g, dtype=torch.float64)
    target = FitTarget(bold=bold40).validate(N, torch.float64, "cpu")
    assert target.fcd_values is None
    assert ("the target BOLD's 40 TRs hold 3 FCD window(s) of 30 TRs every 5 TRs and 0 pair(s) of "
            "windows sharing no TR; FCD values need at least 2 pairs, i.e. a BOLD of at least 65 "
            "TRs") in target.fcd_unavailable
    pooled = FitTarget(bold=bold40, fcd_exclude_overlapping=False).validate(N, torch.float64, "cpu")
    assert pooled.fcd_values.numel() == 3 and pooled.fcd_unavailable is None
    model = rww.RWWBold(connectome(), G=0.5, learn=["G"], tr=0.01)
    for bold, n_trs, held in ((torch.randn(25, N, generator=g), None, r"25 TRs hold 0 FCD window\(s\)"),
                              (bold40, 80, r"40 TRs hold 3 FCD window\(s\)")):
        with pytest.raises(ValueError, match=rf"weights: the fcd term needs target fcd_values, and the "
                                             rf"target BOLD's {held} .* at least 65 TRs"):
            fit(model, FitTarget(bold=bold), FitConfig(epochs=1, window_trs=None, n_trs=n_trs,
                                                       weights={"fc_corr": 1.0, "fcd": 1.0}),
                progress=False)
