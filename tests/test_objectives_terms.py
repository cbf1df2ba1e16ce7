"""The FC-level and rate-band terms, the exact and smooth distribution distances, and their wiring
into rww.fit (a short fit with the new terms, resume of checkpoints written before them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp, wasserstein_distance

import rww
from rww import objectives as obj
from rww.fit import FitConfig, FitTarget, _records_needed, fit

N = 5


def _gradcheck(fn, *inputs):
    inputs = tuple(x.detach().double().requires_grad_(True) for x in inputs)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def _symmetric(n, seed, level=0.0):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(n, n, generator=g, dtype=torch.float64) * 0.4 - 0.2 + level
    m = (m + m.T) / 2
    m.fill_diagonal_(1.0)
    return m


# ---------------------------------------------------------------- fc_level
def test_fc_level_loss_values():
    sim = torch.full((4, 4), 0.3, dtype=torch.float64).fill_diagonal_(1.0)
    emp = torch.full((4, 4), 0.1, dtype=torch.float64).fill_diagonal_(1.0)
    assert obj.fc_level_loss(sim, emp).item() == pytest.approx(0.04, abs=1e-15)
    a, b = _symmetric(N, 0, level=0.2), _symmetric(N, 1)
    off = ~torch.eye(N, dtype=torch.bool)
    assert obj.offdiagonal_mean(a).item() == pytest.approx(a[off].mean().item(), abs=1e-15)
    expected = (a[off].mean() - b[off].mean()).square().item()
    assert obj.fc_level_loss(a, b).item() == pytest.approx(expected, rel=1e-12)
    # Blind to the diagonal, and to what correlation sees: a shifted copy has r = 1 but a level gap.
    shifted = b + 0.1
    shifted.fill_diagonal_(1.0)
    assert obj.fc_correlation(shifted, b).item() == pytest.approx(1.0, abs=1e-12)
    assert obj.fc_level_loss(shifted, b).item() == pytest.approx(0.01, rel=1e-9)
    # Batched over leading dimensions.
    both = obj.fc_level_loss(torch.stack([a, shifted]), b)
    assert both.shape == (2,) and both[1].item() == pytest.approx(0.01, rel=1e-9)
    with pytest.raises(ValueError, match="differ in their last two dimensions"):
        obj.fc_level_loss(a, torch.eye(3, dtype=torch.float64))


def test_fc_level_loss_gradient():
    emp = _symmetric(N, 2)
    bold = torch.randn(2, 30, N, dtype=torch.float64)
    _gradcheck(lambda b: obj.fc_level_loss(obj.pearson_matrix(b), emp), bold)
    # Closed form: d/dC_ij = 2 (level_sim - level_emp) / (N (N - 1)) off the diagonal, 0 on it.
    sim = _symmetric(N, 3, level=0.3).requires_grad_(True)
    loss = obj.fc_level_loss(sim, emp)
    loss.backward()
    off = ~torch.eye(N, dtype=torch.bool)
    gap = (sim[off].mean() - emp[off].mean()).item()
    assert torch.allclose(sim.grad[off], torch.full((N * (N - 1),), 2 * gap / (N * (N - 1)), dtype=torch.float64))
    assert torch.all(sim.grad.diagonal() == 0)


# ---------------------------------------------------------------- rate_band
def test_rate_band_loss_zero_inside_quadratic_outside():
    t = 7
    means = torch.tensor([1.0, 2.0, 3.0, 5.0, 7.5], dtype=torch.float64)   # Hz, per region
    noise = torch.randn(t, N, dtype=torch.float64)
    rates = means + (noise - noise.mean(0))                                  # same time means
    loss = obj.rate_band_loss(rates, 2.0, 5.0)
    assert loss.item() == pytest.approx(((2.0 - 1.0) ** 2 + (7.5 - 5.0) ** 2) / N, rel=1e-12)
    inside = torch.full((t, N), 3.0, dtype=torch.float64) + 0.5 * (noise - noise.mean(0))
    inside.requires_grad_(True)
    value = obj.rate_band_loss(inside)                                       # default band 1-10 Hz
    value.backward()
    assert value.item() == 0.0 and torch.all(inside.grad == 0)
    assert obj.RATE_BAND_HZ == (1.0, 10.0)
    # Batched: (B, T, N) -> (B,)
    batch = obj.rate_band_loss(torch.stack([rates, inside.detach()]))
    assert batch.shape == (2,) and batch[1].item() == 0.0
    for low, high in ((5.0, 2.0), (3.0, 3.0), (-1.0, 2.0), (1.0, float("inf"))):
        with pytest.raises(ValueError, match="rate_band_loss: need finite 0 <= low < high"):
            obj.rate_band_loss(rates, low, high)


def test_rate_band_loss_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(4)
    # regions below, inside and above the band (away from its edges, where the quadratic joins)
    means = torch.tensor([0.5, 1.2, 3.0, 6.0, 9.0], dtype=torch.float64)
    rates = means + 0.1 * torch.randn(2, 6, N, generator=g, dtype=torch.float64)
    _gradcheck(lambda r: obj.rate_band_loss(r, 2.0, 5.0), rates)
    # Analytic: d/dr_tn = 2 * (m_n - edge) / (T N) outside the band, 0 inside.
    r = rates[0].clone().requires_grad_(True)
    obj.rate_band_loss(r, 2.0, 5.0).backward()
    m = rates[0].mean(0)
    edge = torch.where(m < 2.0, torch.tensor(2.0, dtype=torch.float64), torch.where(m > 5.0, 5.0, m))
    expected = (2 * (m - edge) / (6 * N)).expand(6, N)
    assert torch.allclose(r.grad, expected, atol=1e-15)


# ---------------------------------------------------------------- distribution distances
def test_exact_ks_and_w1_equal_scipy_batched_with_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 40)).round(1)          # rounding makes ties within and across
    b = rng.normal(0.3, 1.2, size=55).round(1)
    ks = obj.ks_2samp_statistic(torch.tensor(a), torch.tensor(b))
    w1 = obj.wasserstein1_exact(torch.tensor(a), torch.tensor(b))
    assert ks.shape == w1.shape == (3,)
    for i in range(3):
        assert ks[i].item() == pytest.approx(ks_2samp(a[i], b).statistic, abs=1e-14)
        assert w1[i].item() == pytest.approx(wasserstein_distance(a[i], b), abs=1e-13)
    assert obj.ks_2samp_statistic(torch.tensor(b), torch.tensor(b)).item() == 0.0
    with pytest.raises(ValueError, match="non-empty samples"):
        obj.ks_2samp_statistic(torch.zeros(2, 0), torch.tensor(b))


def test_smooth_ks_tracks_ks_and_is_differentiable():
    rng = np.random.default_rng(1)
    a = torch.tensor(rng.normal(size=(2, 300)))
    b = torch.tensor(rng.normal(0.4, 1.0, size=400))
    exact = obj.ks_2samp_statistic(a, b)
    sharp = obj.smooth_ks_statistic(a, b, bandwidth=1e-3, n_points=4000)
    assert torch.allclose(sharp, exact, atol=0.01)
    assert (obj.smooth_ks_statistic(a, b) - exact).abs().max() < 0.05     # default bandwidth 0.02
    _gradcheck(lambda x: obj.smooth_ks_statistic(x, b[:50], bandwidth=0.3, n_points=64), a[:, :20])
    # A sample moved towards the target lowers it.
    assert obj.smooth_ks_statistic(a + 0.2, b).mean() < obj.smooth_ks_statistic(a, b).mean()


def test_fcd_distances_on_a_full_length_scan_are_differentiable():
    """1200 TRs in the HCP convention (43-TR windows every 7 TRs): 166 windows, 13,695 values."""
    target = FitTarget(fcd_window=43, fcd_step=7, fcd_exclude_overlapping=False)
    bold = torch.randn(2, 1200, 12, dtype=torch.float32, requires_grad=True)
    values = target.simulated_fcd_values(bold)
    assert values.shape == (2, 166 * 165 // 2)
    emp = torch.rand(1000) * 0.6
    loss = obj.wasserstein1(values, emp).mean() + obj.smooth_ks_statistic(values, emp).mean()
    (grad,) = torch.autograd.grad(loss, bold)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- wiring into rww.fit
def _model(n=4, **kw):
    g = torch.Generator().manual_seed(0)
    sc = torch.rand(n, n, generator=g, dtype=torch.float64)
    sc = (sc + sc.T) / 2
    sc.fill_diagonal_(0)
    return rww.RWWBold(sc / sc.sum(1).mean(), dtype=torch.float64, dt=1.0, tr=0.01, batch=2,
                       backend="torch", learn=["G", "w_IE"], G=0.6, **kw)


def _target(n=4):
    g = torch.Generator().manual_seed(1)
    bold = torch.randn(24, n, generator=g, dtype=torch.float64)
    return FitTarget(bold=bold, fcd_window=4, fcd_step=2)


def test_config_knows_the_new_terms_and_validates_the_band():
    assert _records_needed(FitConfig(weights={"rate_band": 1.0})) == ("r_E",)
    assert _records_needed(FitConfig(weights={"fc_level": 1.0})) == ()
    FitConfig(weights={"fc_level": 1.0, "rate_band": 1.0, "fcd_ks": 1.0}).validate()
    for band in ((5.0, 2.0), (1.0,), "ab", (-1.0, 3.0)):
        with pytest.raises(ValueError, match="rate_band_hz"):
            FitConfig(rate_band_hz=band).validate()


def test_short_fit_with_the_new_terms(tmp_path):
    # Band 8-10 Hz, above these rates: the term is on and pushes.
    config = FitConfig(epochs=2, lr=0.05, window_trs=None, n_trs=24, burn_in_trs=2,
                       weights={"fc_corr": 1.0, "fc_level": 1.0, "rate_band": 0.1, "fcd_ks": 0.5},
                       rate_band_hz=(8.0, 10.0))
    result = fit(_model(), _target(), config, checkpoint=str(tmp_path / "c.pt"), progress=False)
    h = result.history
    for term in ("fc_level", "rate_band", "fcd_ks", "fc_corr"):
        assert len(h[f"terms/{term}"]) == 2 and all(np.isfinite(h[f"terms/{term}"])), term
    assert all(v > 0 for v in h["terms/rate_band"])
    assert h["params/G"][0] != h["params/G"][1]
    assert result.config["rate_band_hz"] == [8.0, 10.0]


def test_resume_accepts_checkpoints_written_before_the_band_setting(tmp_path):
    path = str(tmp_path / "c.pt")
    base = dict(lr=0.05, window_trs=None, n_trs=24, burn_in_trs=2, weights={"fc_corr": 1.0})
    fit(_model(), _target(), FitConfig(epochs=1, **base), checkpoint=path, progress=False)
    saved = torch.load(path, weights_only=True)
    del saved["config"]["rate_band_hz"]                  # as an earlier rww wrote it
    torch.save(saved, path)
    resumed = fit(_model(), _target(), FitConfig(epochs=2, **base), checkpoint=path, resume=True,
                  progress=False)
    assert resumed.history["epoch"] == [0, 1]
    # A band other than the default is a different setting.
    with pytest.raises(ValueError, match=r"rate_band_hz differ"):
        fit(_model(), _target(), FitConfig(epochs=3, rate_band_hz=(1.0, 2.0), **base),
            checkpoint=path, resume=True, progress=False)
