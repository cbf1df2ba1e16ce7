"""The evaluation protocol (rww.evaluate): scores against independent numpy/scipy computations,
the evaluation model copy, and errors for bad inputs. 6 regions (hemispheres 3 + 3), short runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp, wasserstein_distance

import rww
from rww import fit as fit_module
from rww.evaluate import (CONTRACT_DT_MS, SCORE_NAMES, demo_hemispheres, evaluate,
                          evaluation_model, prepare_target, score_batch, score_bold,
                          split_hemispheres)
from rww.fit import FitTarget
from rww.params import PARAM_NAMES

from helpers import seeded_connectome  # noqa: E402

N = 6
HEMI = torch.tensor([0, 0, 0, 1, 1, 1])
W, S = 5, 2                     # FCD window and step [TRs]: windows >= 3 apart share no TR


def connectome(n=N, seed=0):
    return seeded_connectome(n, seed)


def series(shape, seed):
    """Correlated random series (..., T, N): a shared component makes FC levels non-zero."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    mix = torch.eye(N, dtype=torch.float64) + 0.4 * torch.rand(N, N, generator=g, dtype=torch.float64)
    return x @ mix


# ---------------------------------------------------------------- independent numpy references
def np_fc(bold):
    return np.corrcoef(np.asarray(bold).T)


def np_r(a, b):
    return np.corrcoef(a, b)[0, 1]


def np_fcd_values(bold, window, step):
    """FCD values of one (T, N) series with numpy: (all pairs, non-overlapping pairs)."""
    bold = np.asarray(bold)
    t, n = bold.shape
    il = np.tril_indices(n, -1)
    vectors = [np.corrcoef(bold[s:s + window].T)[il] for s in range(0, t - window + 1, step)]
    fcd = np.corrcoef(np.array(vectors))
    k = len(vectors)
    all_pairs = [fcd[i, j] for i in range(k) for j in range(i + 1, k)]
    gap = math.ceil(window / step)
    nonoverlap = [fcd[i, j] for i in range(k) for j in range(i + 1, k) if j - i >= gap]
    return np.array(all_pairs), np.array(nonoverlap)


# ---------------------------------------------------------------- scoring given BOLD
def test_fc_scores_match_numpy():
    sim = series((3, 60, N), seed=1)                          # R = 3 realisations
    target_bold = series((60, N), seed=2)
    scores = score_bold(sim, FitTarget(bold=target_bold, fcd_window=W, fcd_step=S), HEMI)
    tfc = np_fc(target_bold)
    fcs = [np_fc(b) for b in sim]
    lower = np.tril_indices(N, -1)
    intra = tuple(np.array([(i, j) for i, j in zip(*lower) if (i < 3) == (j < 3)]).T)
    assert len(intra[0]) == 6                                 # 3 + 3 edges within hemispheres
    single = [np_r(f[lower], tfc[lower]) for f in fcs]
    single_intra = [np_r(f[intra], tfc[intra]) for f in fcs]
    avg = np.mean(fcs, axis=0)
    expected = {
        "fc_r": np_r(avg[lower], tfc[lower]),
        "fc_r_single": np.mean(single), "fc_r_single_std": np.std(single),
        "fc_r_intra": np_r(avg[intra], tfc[intra]),
        "fc_r_intra_single": np.mean(single_intra),
        "fc_r_intra_single_std": np.std(single_intra),
        "fc_mse": np.mean((avg[lower] - tfc[lower]) ** 2),
        "fc_level_sim": avg[~np.eye(N, dtype=bool)].mean(),
        "fc_level_sim_std": np.std([f[~np.eye(N, dtype=bool)].mean() for f in fcs]),
        "fc_level_target": tfc[~np.eye(N, dtype=bool)].mean(),
    }
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, abs=1e-12), name
    # The variants really differ (a test that could not tell them apart would pass vacuously).
    assert abs(scores["fc_r_intra"] - scores["fc_r"]) > 1e-3
    assert abs(scores["fc_r"] - scores["fc_r_single"]) > 1e-3
    assert scores["fc_level_diff"] == pytest.approx(expected["fc_level_sim"] - expected["fc_level_target"])
    # Without hemisphere labels the intra-hemispheric scores are absent, and every key is there.
    plain = score_bold(sim, FitTarget(bold=target_bold, fcd_window=W, fcd_step=S))
    assert set(plain) == set(SCORE_NAMES) and plain["fc_r_intra"] is None
    assert plain["fc_r"] == scores["fc_r"]


def test_fcd_scores_match_scipy_on_numpy_windows():
    sim = series((3, 40, N), seed=3)
    target_bold = series((40, N), seed=4)
    target = FitTarget(bold=target_bold, fcd_window=W, fcd_step=S)     # rww's non-overlapping
    scores = score_bold(sim, target)
    per = score_batch(sim, target)
    t_all, t_non = np_fcd_values(target_bold, W, S)
    sims = [np_fcd_values(b, W, S) for b in sim]
    assert len(t_all) == 153 and len(t_non) == 120            # 18 windows
    for i, variant in enumerate(("all", "nonoverlap")):
        reference = (t_all, t_non)[i]
        pooled = np.concatenate([v[i] for v in sims])
        assert scores[f"fcd_ks_{variant}"] == pytest.approx(ks_2samp(pooled, reference).statistic, abs=1e-12)
        assert scores[f"fcd_w1_{variant}"] == pytest.approx(wasserstein_distance(pooled, reference), abs=1e-12)
        singles = [ks_2samp(v[i], reference).statistic for v in sims]
        assert scores[f"fcd_ks_{variant}_single"] == pytest.approx(np.mean(singles), abs=1e-12)
        assert scores[f"fcd_ks_{variant}_single_std"] == pytest.approx(np.std(singles), abs=1e-12)
        np.testing.assert_allclose(per[f"fcd_ks_{variant}"].numpy(), singles, atol=1e-12)
        np.testing.assert_allclose(per[f"fcd_w1_{variant}"].numpy(),
                                   [wasserstein_distance(v[i], reference) for v in sims], atol=1e-12)
    assert scores["fcd_ks_all"] != pytest.approx(scores["fcd_ks_nonoverlap"], abs=1e-6)
    # fcd_ks repeats the target's own convention.
    assert scores["fcd_ks"] == scores["fcd_ks_nonoverlap"] and scores["fcd_w1"] == scores["fcd_w1_nonoverlap"]
    pooled_target = FitTarget(bold=target_bold, fcd_window=W, fcd_step=S, fcd_exclude_overlapping=False)
    assert score_bold(sim, pooled_target)["fcd_ks"] == scores["fcd_ks_all"]


def test_pooled_all_pair_values_leave_the_non_overlapping_variant_unavailable():
    sim = series((2, 40, N), seed=5)
    t_all, _ = np_fcd_values(series((40, N), seed=6), W, S)
    target = FitTarget(fc=np_fc(series((40, N), seed=6)), fcd_values=torch.tensor(t_all),
                       fcd_window=W, fcd_step=S, fcd_exclude_overlapping=False)
    scores = score_bold(sim, target)
    pooled = np.concatenate([np_fcd_values(b, W, S)[0] for b in sim])
    assert scores["fcd_ks_all"] == pytest.approx(ks_2samp(pooled, t_all).statistic, abs=1e-12)
    assert scores["fcd_ks"] == scores["fcd_ks_all"]
    assert scores["fcd_ks_nonoverlap"] is None and scores["fcd_w1_nonoverlap"] is None
    prepared = prepare_target(target, N)
    assert prepared.fcd_nonoverlap is None and "unavailable" in prepared.sources["fcd_nonoverlap"]
    assert "fcd_ks_nonoverlap" not in score_batch(sim, prepared)


def test_score_batch_scores_each_simulation_like_a_single_realisation():
    bold = series((4, 40, N), seed=7)
    target = prepare_target(FitTarget(bold=series((40, N), seed=8), fcd_window=W, fcd_step=S), N)
    batch = score_batch(bold, target, HEMI)
    for b in range(4):
        one = score_bold(bold[b:b + 1], target, HEMI)
        for name in ("fc_r", "fc_r_intra", "fc_mse", "fcd_ks_all", "fcd_w1_nonoverlap"):
            assert batch[name][b].item() == pytest.approx(one[name], abs=1e-12), name
        assert batch["fc_level"][b].item() == pytest.approx(one["fc_level_sim"], abs=1e-12)
    assert all(v.shape == (4,) for v in batch.values())


def test_demo_hemispheres_follow_the_demo_labels():
    from rww.data import load_demo
    labels = load_demo(include_bold=False).labels
    hemi = demo_hemispheres()
    assert hemi.shape == (100,) and int(hemi.sum()) == 50
    assert [h == 0 for h in hemi.tolist()] == [name.startswith("LH") for name in labels]
    assert torch.equal(split_hemispheres(6), HEMI)


# ---------------------------------------------------------------- the evaluation model
def trained_model(batch=2, **kw):
    """deco2014 trained at a coarse 1 ms step, learnable G and per-region w_IE; 10-ms TRs keep
    the 0.1-ms evaluation short (100 steps per TR)."""
    params = dict(G=0.8, w_IE=torch.linspace(0.9, 1.1, N, dtype=torch.float64), I_0=0.37)
    params.update(kw)
    model = rww.RWWBold(connectome(), dtype=torch.float64, dt=1.0, tr=0.01, batch=batch,
                        backend="torch", learn=["G", "w_IE"], sigma_out=0.001, **params)
    with torch.no_grad():                     # move away from the initial values
        model.learned["G"].raw.add_(0.1)
        model.learned["w_IE"].raw.add_(torch.linspace(-0.1, 0.1, N, dtype=torch.float64))
    return model


def test_evaluation_model_has_the_trained_parameters_at_the_reference_step():
    model = trained_model()
    copy = evaluation_model(model, batch=N)          # batch == N: per-region values stay per region
    assert copy.dt == CONTRACT_DT_MS == 0.1 and model.dt == 1.0
    assert copy.steps_per_tr == 100 and model.steps_per_tr == 10 and copy.tr == model.tr
    assert copy.batch == N and copy.learnable == [] and not any(p.requires_grad for p in copy.parameters())
    for name in PARAM_NAMES:
        mine, theirs = getattr(copy, name), getattr(model, name).detach()
        assert torch.equal(mine.reshape(-1), theirs.reshape(-1)), name
    assert torch.equal(copy.sc, model.sc) and copy.haemo == model.haemo
    assert float(copy.sigma_out) == float(model.sigma_out)
    # The copy shares nothing with the model.
    with torch.no_grad():
        model.learned["G"].raw.add_(1.0)
    assert float(copy.G) != float(model.G.detach())
    # At the model's own step and batch it reproduces the model's simulation exactly.
    model = trained_model()
    same = evaluation_model(model, dt=model.dt, batch=model.batch)
    with torch.no_grad():
        assert torch.equal(same(5, seed=3)[0], model(5, seed=3)[0])


def test_evaluation_model_copies_griffiths_connectome_and_gains_as_used():
    model = rww.RWWBold(connectome() * 7, preset="griffiths2022", dtype=torch.float64, batch=1,
                        backend="torch", learn=["G", "w_bb"])
    with torch.no_grad():
        model.learned["w_bb"].raw.add_(torch.rand(N, N, dtype=torch.float64))
    copy = evaluation_model(model, batch=3)
    assert copy.dt == model.dt                        # griffiths2022 keeps its own step
    assert torch.equal(copy.sc, model.sc)             # not normalised twice
    assert torch.equal(copy.w_bb, model.w_bb.detach()) and torch.equal(copy.G, model.G.detach())


def test_per_simulation_parameters_need_a_choice():
    model = rww.RWWBold(connectome(), dtype=torch.float64, dt=1.0, tr=0.01, batch=3,
                        backend="torch", G=torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"G differ across its 3 simulations.*simulation=i"):
        evaluation_model(model)
    copy = evaluation_model(model, simulation=2, batch=2)
    assert float(copy.G) == pytest.approx(0.7)
    # Identical per-simulation values are one parameter set.
    same = rww.RWWBold(connectome(), dtype=torch.float64, dt=1.0, tr=0.01, batch=2,
                       backend="torch", G=torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert float(evaluation_model(same).G) == 0.5


# ---------------------------------------------------------------- the protocol end to end
def test_evaluate_simulates_at_the_reference_step_and_scores_what_it_simulated():
    model = trained_model()
    target = FitTarget(bold=series((24, N), seed=9) * 1e-3, fcd_window=W, fcd_step=S)
    ev = evaluate(model, target, burn_in_trs=5, n_realisations=3, hemispheres=HEMI, seed=4)
    assert ev.bold.shape == (3, 24, N)                # n_trs from the target
    assert ev.settings["dt"] == 0.1 and ev.settings["trained_dt"] == 1.0
    assert ev.settings["steps_per_tr"] == 100
    rescored = score_bold(ev.bold, target, HEMI)
    for name in SCORE_NAMES:
        if not name.startswith("rate_"):
            assert ev[name] == rescored[name], name
    assert 0 < ev["rate_min"] <= ev["rate_mean"] <= ev["rate_max"] < 100
    d = json.loads(json.dumps(ev.to_dict()))
    assert set(SCORE_NAMES) <= set(d) and "fcd_all" in d["conventions"]
    assert "dt = 0.1" in d["conventions"]["simulation"]
    # The same burn-in, seed and batch at the model's own step give another simulation.
    coarse = evaluate(model, target, burn_in_trs=5, n_realisations=3, seed=4, dt=1.0)
    assert coarse.settings["steps_per_tr"] == 10 and not torch.equal(coarse.bold, ev.bold)
    # ... and the reference step's simulation is the evaluation model's, continued exactly.
    copy = evaluation_model(model, batch=3)
    with torch.no_grad():
        bold = copy(29, seed=4)[0][:, 5:]
    assert torch.equal(bold, ev.bold)


def test_fit_evaluate_wrapper_keeps_its_keys_and_uses_the_protocol():
    model = trained_model()
    target_fc = torch.tensor(np_fc(series((40, N), seed=10)))
    t_all, t_non = np_fcd_values(series((40, N), seed=10), W, S)
    old = fit_module.evaluate(model, target_fc, n_trs=24, burn_in_trs=3, seed=11,
                              target_fcd_values=torch.tensor(t_non), fcd_window=W, fcd_step=S)
    assert set(old) == {"fc_r", "fc_mse", "fcd_ks", "fcd_w1"}
    new = evaluate(model, FitTarget(fc=target_fc, fcd_values=torch.tensor(t_non), fcd_window=W,
                                    fcd_step=S), n_trs=24, burn_in_trs=3, seed=11,
                   n_realisations=model.batch)
    assert old == {"fc_r": new["fc_r"], "fc_mse": new["fc_mse"], "fcd_ks": new["fcd_ks_nonoverlap"],
                   "fcd_w1": new["fcd_w1_nonoverlap"]}
    assert set(fit_module.evaluate(model, target_fc, n_trs=10, burn_in_trs=0)) == {"fc_r", "fc_mse"}


# ---------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    target = FitTarget(bold=series((40, N), seed=12), fcd_window=W, fcd_step=S)
    bold = series((2, 40, N), seed=13)
    with pytest.raises(ValueError, match=r"sim_bold: expected shape \(B, T, N\)"):
        score_bold(bold[0], target)
    with pytest.raises(ValueError, match=r"target bold: expected shape \(T, 5\) \(time x regions\), got \(40, 6\)"):
        score_bold(bold[..., :5], target)
    with pytest.raises(ValueError, match=r"hemispheres: expected 6 labels \(one per region\), got shape \(5,\)"):
        score_bold(bold, target, torch.tensor([0, 0, 0, 1, 1]))
    with pytest.raises(TypeError, match=r"hemispheres: expected integer or boolean labels"):
        score_bold(bold, target, torch.tensor([0.0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"sim_bold: contains NaN"):
        score_bold(torch.full((1, 40, N), float("nan"), dtype=torch.float64), target)
    # A target too short for two FCD windows (one window is no FCD value).
    short = FitTarget(bold=series((6, N), seed=14), fcd_window=W, fcd_step=S)
    with pytest.raises(ValueError, match=r"target bold: 6 TRs hold 1 FCD window\(s\) of 5 TRs every 2; FCD needs at least 2 \(>= 7 TRs\)"):
        score_bold(bold, short)
    assert score_bold(bold, short, fcd=False)["fcd_ks"] is None        # FC only, on request
    with pytest.raises(ValueError, match=r"sim_bold: 6 TRs hold 1 FCD window"):
        score_batch(bold[:, :6], target)
    model = trained_model()
    with pytest.raises(ValueError, match=r"n_trs: 6 TRs hold 1 FCD window"):
        evaluate(model, target, n_trs=6)
    with pytest.raises(ValueError, match=r"n_trs: the target has no BOLD"):
        evaluate(model, FitTarget(fc=torch.eye(N)))
    with pytest.raises(ValueError, match=r"target fc: expected shape \(6, 6\)"):
        evaluate(model, FitTarget(fc=torch.eye(4)), n_trs=10)
    with pytest.raises(ValueError, match=r"hemispheres: expected 6 labels"):
        evaluate(model, target, hemispheres=split_hemispheres(4))
    with pytest.raises(ValueError, match=r"tr=0.01 s is not a whole number of steps"):
        evaluate(model, target, dt=0.3)
    with pytest.raises(TypeError, match=r"target: expected a rww.fit.FitTarget"):
        evaluate(model, torch.eye(N), n_trs=10)
