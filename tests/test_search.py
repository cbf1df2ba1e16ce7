"""Global search (rww.search) and the fitting recipe (rww.recipe) on small networks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rww import RWWBold, cli
from rww.evaluate import score_batch
from rww.fit import FitTarget
from rww.params import PARAM_INDEX, get_preset, pack_parameters
from rww.recipe import RecipeConfig, fit_recipe, model_from_row
from rww.search import (CandidateEvaluator, SearchSpace, candidate_loss, cma_search, grid_design,
                        latin_hypercube, search)
from rww.stability import critical_coupling

from helpers import seeded_connectome

N = 6
# 1-ms steps and TR = 0.1 s (100 steps per TR): a 120-TR simulation of 6 regions is quick.
FAST = dict(dt=1.0, tr=0.1, backend="numba")


def _sc(seed=3):
    return seeded_connectome(N, seed)


def _target(sc, g_rel=0.85, w_ee=0.8, n_trs=120, seed=11):
    """A synthetic target: BOLD of the model itself at a known point."""
    model = RWWBold(sc.float(), fic=True, g_relative=True, G=g_rel, w_EE=w_ee, **FAST)
    bold = model.simulate(20 + n_trs, seed=seed).bold[0, 20:].double()
    return FitTarget(bold=bold, fcd_window=20, fcd_step=5)


def test_designs_cover_the_bounds():
    space = SearchSpace({"G_rel": (0.5, 1.0), "sigma": (0.001, 0.1)}, log=("sigma",))
    lhs = latin_hypercube(space, 20, seed=0)
    assert lhs.shape == (20, 2)
    assert (lhs[:, 0] >= 0.5).all() and (lhs[:, 0] <= 1.0).all()
    # Latin hypercube: one point in each of the 20 strata of every dimension (log strata for sigma)
    unit = space.to_unit(lhs)
    for k in range(2):
        assert sorted(np.floor(unit[:, k] * 20).astype(int).tolist()) == list(range(20))
    np.testing.assert_allclose(space.from_unit(unit), lhs, rtol=1e-12)
    grid = grid_design(space, {"G_rel": 3, "sigma": 2})
    assert grid.shape == (6, 2)
    assert sorted(set(grid[:, 0].round(12))) == [0.5, 0.75, 1.0]
    assert sorted(set(grid[:, 1].round(12))) == [0.001, 0.1]


@pytest.mark.parametrize("bounds, log, message", [
    ({"w_IE": (0.5, 1)}, (), "w_IE is set by FIC"),
    ({"nope": (0, 1)}, (), "unknown parameter 'nope'"),
    ({"G": (1, 0.5)}, (), "low < high"),
    ({"sigma": (0, 1)}, ("sigma",), r"lower bound must be > 0"),
    ({"w_EE": (-1, 2)}, (), r"w_EE is a positive physical quantity"),
    ({"G": (0, 1), "G_rel": (0.5, 1)}, (), "G or G_rel, not both"),
    ({"w_EE:": (0, 1)}, (), "names no map"),
])
def test_search_space_errors(bounds, log, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(bounds, log=log)


def test_candidate_rows_equal_a_direct_simulation():
    """A candidate's G is G_rel * G_c of its own parameters, its w_IE the analytic FIC, and its
    scores those of the same model simulated and scored by hand (same seed, same batch)."""
    sc = _sc()
    target = _target(sc)
    ev = CandidateEvaluator(sc, target, n_trs=120, burn_in_trs=20, seed=5, batch_size=4,
                            progress=False, **FAST)
    values = np.array([[0.7, 0.6], [0.9, 1.0]])
    rows = ev(["G_rel", "w_EE"], values)
    table = pack_parameters({"w_EE": torch.tensor([[0.6], [1.0]], dtype=torch.float64)},
                            get_preset("deco2014"), 2, N, torch.float64)
    g_c = critical_coupling(table, sc)
    for i in range(2):
        assert rows[i]["status"] == "ok"
        assert rows[i]["G_c"] == pytest.approx(float(g_c[i]), rel=1e-9)
        assert rows[i]["G"] == pytest.approx(values[i, 0] * float(g_c[i]), rel=1e-9)
    model = RWWBold(sc.float(), fic=True, batch=2, **FAST,
                    G=torch.tensor([[rows[0]["G"]], [rows[1]["G"]]]),
                    w_EE=torch.tensor([[0.6], [1.0]]))
    bold = model.simulate(140, seed=5).bold[:, 20:]
    scores = score_batch(bold, target)
    for i in range(2):
        assert rows[i]["fc_r"] == pytest.approx(float(scores["fc_r"][i]), abs=1e-5)
        assert rows[i]["fcd_ks"] == pytest.approx(float(scores["fcd_ks"][i]), abs=1e-9)
    expected = candidate_loss({k: [r[k] for r in rows] for k in
                               ("fc_r", "fc_level_diff", "fcd_ks", "rate_excess")})
    np.testing.assert_allclose([r["loss"] for r in rows], expected, rtol=1e-12)


def test_critical_coupling_solved_once_per_parameter_set(monkeypatch):
    """A G/G_c x w_EE grid: G_c depends on w_EE only, so 3 x 2 candidates (two calls) need two
    solves, and each candidate's G_c equals the solve of its own parameters alone."""
    import rww.stability as stability

    sc = _sc()
    ev = CandidateEvaluator(sc, _target(sc), n_trs=40, burn_in_trs=5, progress=False, **FAST)
    solved = []
    real = stability.critical_coupling

    def counting(table, *args, **kwargs):
        solved.append(table.shape[1])
        return real(table, *args, **kwargs)

    monkeypatch.setattr(stability, "critical_coupling", counting)
    grid = np.array([[g, w] for w in (0.6, 1.0) for g in (0.5, 0.7, 0.9)])
    rows = ev(["G_rel", "w_EE"], grid[:4]) + ev(["G_rel", "w_EE"], grid[4:])
    assert solved == [2]                  # the first call solves both w_EE values, the second none
    for w in (0.6, 1.0):
        alone = real(pack_parameters({"w_EE": w}, get_preset("deco2014"), 1, N, torch.float64), sc)
        assert {r["G_c"] for r in rows if r["w_EE"] == w} == {float(alone[0])}


def test_grid_search_ranks_the_true_point_first():
    """On a target simulated at G/G_c = 0.7, w_EE = 0.8 (same noise seed: common random
    numbers), the grid point at the truth scores best on the data terms (rate term off)."""
    sc = _sc()
    target = _target(sc, g_rel=0.7, seed=5)
    ev = CandidateEvaluator(sc, target, n_trs=120, burn_in_trs=20, seed=5, batch_size=1,
                            progress=False, rate_weight=0.0, **FAST)
    space = SearchSpace({"G_rel": (0.4, 0.85)})
    result = search(space, ev, "grid", points=4)
    best = result.best(1)[0]
    assert best["G_rel"] == pytest.approx(0.7)
    assert best["fc_r"] > 0.99


def test_failed_candidates_are_reported_not_scored():
    sc = _sc()
    ev = CandidateEvaluator(sc, _target(sc), n_trs=120, burn_in_trs=20, progress=False,
                            fixed={"I_0": 0.30}, **FAST)
    rows = ev(["G"], np.array([[0.0], [0.3]]))
    assert rows[0]["status"].startswith("FIC failed") and math.isinf(rows[0]["loss"])
    assert "fc_r" not in rows[0]


def test_cma_search_records_generations(tmp_path):
    sc = _sc()
    ev = CandidateEvaluator(sc, _target(sc), n_trs=120, burn_in_trs=20, progress=False,
                            batch_size=8, **FAST)
    result = cma_search(SearchSpace({"G_rel": (0.5, 0.95), "w_EE": (0.5, 1.2)}), ev, popsize=6,
                        generations=2, seed=1)
    assert [r["generation"] for r in result.rows] == [0] * 6 + [1] * 6
    csv_path, json_path = result.save(str(tmp_path / "search"))
    saved = json.loads(open(json_path).read())
    assert len(saved["rows"]) == 12 and saved["settings"]["method"] == "cma"
    assert open(csv_path).read().count("\n") == 13


def test_recipe_writes_params_that_simulate_accepts(tmp_path, capsys):
    sc = _sc()
    target = _target(sc)
    config = RecipeConfig(n_candidates=4, epochs=1, realisations=1, eval_realisations=1,
                          search_dt=1.0, batch_size=4, burn_in_trs=20,
                          bounds={"G_rel": (0.6, 0.9), "w_EE": (0.6, 1.0)})
    out = tmp_path / "recipe"
    result = fit_recipe(sc, target, config, tr=0.1, n_trs=120, backend="numba", out=str(out),
                        progress=False, log=None)
    assert result.chosen in ("search", "refined")
    # the refinement records the distance to the bifurcation every epoch (G is read as G/G_c)
    history = result.fit.history
    assert history["G_over_Gc"] == pytest.approx(history["params/G"], rel=1e-5)
    assert set(result.evaluations["screening"]) == {"search", "refined"}
    for ev in result.evaluations["screening"].values():
        assert ev["settings"]["dt"] == 1.0
    assert result.evaluations["final"]["settings"]["dt"] == 0.1
    assert result.evaluations["final"]["settings"]["trained_dt"] == 1.0
    params = json.loads((out / "params.json").read_text())
    assert params["fic"] == 3.0 and 0.6 <= params["record"]["G_over_Gc"] <= 1.0
    np.save(tmp_path / "sc.npy", sc.numpy())
    code = cli.main(["simulate", str(tmp_path / "sc.npy"), "--normalise", "none", "--params",
                     str(out / "params.json"), "--tr", "0.1", "--dt", "1", "--trs", "5",
                     "--no-figures", "--no-progress", "--out", str(tmp_path / "sim")])
    _, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert summary["bifurcation"]["G_over_Gc"][0] == pytest.approx(params["record"]["G_over_Gc"],
                                                                   rel=1e-4)
    assert summary["parameters"]["G"][0] == pytest.approx(params["G"], rel=1e-6)


def test_recipe_rerun_reuses_the_search_and_resumes(tmp_path):
    """A rerun into the same folder reuses a finished search with the same settings (no new
    simulation) and a changed search discards the old refinement checkpoint."""
    sc = _sc()
    target = _target(sc)
    config = RecipeConfig(n_candidates=3, epochs=1, realisations=1, eval_realisations=1,
                          batch_size=3, burn_in_trs=20, eval_dt=1.0,
                          bounds={"G_rel": (0.6, 0.9)})
    out = str(tmp_path / "r")
    first = fit_recipe(sc, target, config, tr=0.1, n_trs=120, backend="numba", out=out,
                       progress=False, log=None)
    lines = []
    second = fit_recipe(sc, target, config, tr=0.1, n_trs=120, backend="numba", out=out,
                        progress=False, log=lines.append)
    assert any("reusing the finished search" in line for line in lines)
    assert [r["loss"] for r in second.search.rows] == [r["loss"] for r in first.search.rows]
    assert second.params == first.params
    config.bounds = {"G_rel": (0.5, 0.8)}
    lines = []
    third = fit_recipe(sc, target, config, tr=0.1, n_trs=120, backend="numba", out=out,
                       progress=False, log=lines.append)
    assert not any("reusing" in line for line in lines)
    assert all(0.5 <= r["G_rel"] <= 0.8 for r in third.search.rows)


def test_model_from_row_reproduces_the_searched_heterogeneity():
    """A search row with a map coefficient gives the model the same regional values the search
    simulated, whether the parameter is learned as a map or fixed."""
    sc = _sc()
    myelin = torch.linspace(-1.5, 1.5, N, dtype=torch.float64)
    ev = CandidateEvaluator(sc, _target(sc), n_trs=120, burn_in_trs=20, progress=False,
                            maps={"myelin": myelin}, **FAST)
    names = ["G_rel", "w_EE", "w_EE:myelin"]
    params, _ = ev.parameter_values(names, np.array([[0.8, 0.7, 0.4]]))
    row = {"G_rel": 0.8, "G_over_Gc": 0.8, "w_EE": 0.7, "w_EE:myelin": 0.4}
    config = RecipeConfig(maps={"myelin": myelin}, map_params=("w_EE",))
    for learn in ((), ("w_EE",)):
        model = model_from_row(sc, row, config, learn=learn, tr=0.1, backend="numba",
                               dtype=torch.float64)
        torch.testing.assert_close(model.w_EE.expand(N), params["w_EE"][0], rtol=1e-12, atol=0)
    free = model_from_row(sc, row, RecipeConfig(maps={"myelin": myelin}, regional=("w_EE",)),
                          learn=("w_EE",), tr=0.1, backend="numba", dtype=torch.float64)
    assert free.learned["w_EE"].raw.shape == (N,)
    torch.testing.assert_close(free.w_EE, params["w_EE"][0], rtol=1e-12, atol=0)
