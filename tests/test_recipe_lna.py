"""The recipe's optional LNA stage (rww.recipe.lna_stage, rww fit --lna-regional) on a small
network: per-region values fitted through the LNA, the re-screen on shared noise, and a choice
that follows the screen's losses."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from rww import RWWBold
from rww.fit import FitTarget
from rww.recipe import RecipeConfig, fit_recipe

from helpers import run_cli, seeded_connectome

N = 6


def _target(sc):
    """BOLD of a heterogeneous model (per-region w_EE), the pattern a homogeneous one misses."""
    w_ee = torch.tensor([0.4, 1.1, 0.6, 0.9, 0.5, 1.0])
    model = RWWBold(sc.float(), fic=True, G=1.0, w_EE=w_ee, dt=1.0, tr=0.1, backend="numba")
    bold = model.simulate(20 + 150, seed=5).bold[0, 20:].double()
    return FitTarget(bold=bold, fcd_window=20, fcd_step=5)


def test_lna_stage_fits_screens_and_chooses_by_the_screen(tmp_path):
    sc = seeded_connectome(N, 4)
    config = RecipeConfig(n_candidates=3, epochs=0, eval_realisations=1, search_dt=1.0,
                          batch_size=3, burn_in_trs=20, eval_dt=1.0,
                          bounds={"G_rel": (0.6, 0.9), "w_EE": (0.6, 1.0)},
                          lna_regional=("w_EE",), lna_iterations=25, lna_g_scales=(0.97, 1.0),
                          lna_sigma_scales=(1.0,), lna_screen_dt=1.0)
    out = tmp_path / "recipe"
    result = fit_recipe(sc, _target(sc), config, tr=0.1, n_trs=150, backend="numba",
                        out=str(out), progress=False, log=None)
    record = result.evaluations["lna"]
    assert record["fit"]["fc_r"] > record["fit"]["fc_r_start"]
    assert len(record["values"]["w_EE"]) == N
    rows = record["screen"]
    assert [r["lna_values"] for r in rows] == [False, True, True]
    assert record["best"] == int(np.argmin([r["loss"] for r in rows]))
    assert rows[0]["G"] == pytest.approx(rows[2]["G"]) == pytest.approx(rows[1]["G"] / 0.97)
    params = json.loads((out / "params.json").read_text())
    if record["best"] == 0:
        assert result.chosen == "search"
        assert not isinstance(params["w_EE"], list)
    else:
        assert result.chosen == "lna"
        assert params["w_EE"] == pytest.approx(record["values"]["w_EE"], rel=1e-6)
        assert params["G"] == pytest.approx(rows[record["best"]]["G"], rel=1e-6)
    assert result.timings["lna_s"] > 0


def test_cli_lna_options_are_checked(capsys, tmp_path):
    sc = seeded_connectome(4, 1).numpy()
    np.savetxt(tmp_path / "sc.csv", sc, delimiter=",")
    np.save(tmp_path / "fc.npy", 0.9 * np.eye(4) + 0.1)
    base = ["fit", tmp_path / "sc.csv", "--fc", tmp_path / "fc.npy", "--recipe", "--out",
            tmp_path / "o"]
    code, _, err = run_cli(capsys, *base, "--lna-regional", "w_EE,tau_E")
    assert code == 1 and "--lna-regional: ['tau_E'] cannot be fitted per region from the " \
        "command line" in err
    code, _, err = run_cli(capsys, *base, "--lna-regional", "w_EE,w_IE")
    assert code == 1 and "--lna-regional: w_IE cannot be fitted per region (it is set by FIC)" in err
    code, _, err = run_cli(capsys, *base, "--lna-regional", "w_EE,w_EE")
    assert code == 1 and "names a parameter twice" in err
    code, _, err = run_cli(capsys, *base, "--lna-regional", ",")
    assert code == 1 and "--lna-regional: give parameter names" in err
    code, _, err = run_cli(capsys, *[a for a in base if a != "--recipe"], "--lna-regional", "w_EE")
    assert code == 1 and "the LNA stage is part of the recipe; add --recipe" in err
    code, _, err = run_cli(capsys, "fit", "--demo", "--paper", "--lna-regional", "w_EE",
                           "--out", tmp_path / "p")
    assert code == 1 and "the LNA stage is part of the recipe; drop --paper" in err
    code, _, err = run_cli(capsys, *[a for a in base if a != "--recipe"], "--candidates", "8",
                           "--search", "cma", "--eval-dt", "0.5")
    assert code == 1 and ("--search, --candidates, --eval-dt: option(s) of the fitting recipe, "
                          "which this fit does not run; add --recipe") in err
    code, _, err = run_cli(capsys, "fit", "--demo", "--paper", "--maps", "myelin",
                           "--out", tmp_path / "p")
    assert code == 1 and "--maps: option(s) of the fitting recipe, which this fit does not run; " \
        "drop --paper" in err
    code, _, err = run_cli(capsys, *base, "--lna-iterations", "5")
    assert code == 1 and "--lna-iterations: the LNA stage is off (give --lna-regional" in err
    code, _, err = run_cli(capsys, *base, "--lna-regional", "none", "--lna-iterations", "5")
    assert code == 1 and "--lna-iterations: the LNA stage is off (--lna-regional none)" in err
    code, _, err = run_cli(capsys, *base, "--lna-regional", "w_EE", "--lna-iterations", "0")
    assert code == 1 and "--lna-iterations: must be at least 1, got 0" in err


def test_lna_options_default_on_for_the_demo_only():
    """``--lna-regional``: the demo's default turns the stage on, ``none`` (any case) turns it off,
    and without the demo it is off unless given; an empty list is an error, not "off"."""
    from rww.cli.recipe import DEMO_LNA_REGIONAL, lna_options
    assert lna_options(None, None, demo=True) == (DEMO_LNA_REGIONAL.split(","), None)
    assert lna_options(None, 40, demo=True) == (["w_EE", "w_EI", "J_NMDA"], 40)
    assert lna_options("none", None, demo=True) == ([], None)
    assert lna_options(" None ", None, demo=False) == ([], None)
    assert lna_options(None, None, demo=False) == ([], None)
    assert lna_options("w_EE", 7, demo=False) == (["w_EE"], 7)
    for text in ("", " ", ","):
        with pytest.raises(ValueError, match="--lna-regional: give parameter names"):
            lna_options(text, None, demo=True)
    with pytest.raises(ValueError, match=r"the LNA stage is off \(--lna-regional none\)"):
        lna_options("none", 5, demo=True)
    with pytest.raises(ValueError, match=r"the LNA stage is off \(give --lna-regional"):
        lna_options(None, 5, demo=False)
    with pytest.raises(ValueError, match="must be at least 1, got 0"):
        lna_options(None, 0, demo=True)
    with pytest.raises(ValueError, match="'none' switches the stage off and goes alone"):
        lna_options("none,w_EE", None, demo=True)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['W_EE'\]; choose from "
                                         r"\['I_0', 'J_NMDA', 'w_EE', 'w_EI'\]"):
        lna_options("W_EE", None, demo=True)


def _recipe_config(**kw):
    base = dict(n_candidates=3, epochs=0, eval_realisations=1, search_dt=1.0, batch_size=3,
                burn_in_trs=20, eval_dt=1.0, bounds={"G_rel": (0.6, 0.9), "w_EE": (0.6, 1.0)},
                lna_regional=("w_EE",), lna_iterations=5, lna_g_scales=(1.0,),
                lna_sigma_scales=(1.0,), lna_screen_dt=1.0)
    return RecipeConfig(**{**base, **kw})


def test_lna_stage_with_an_fc_only_target_ranks_by_finite_losses():
    """Without FCD every row counts KS 1 (as the search does), so the losses stay comparable."""
    sc = seeded_connectome(N, 4)
    fc = _target(sc).bold.T.corrcoef()
    result = fit_recipe(sc, FitTarget(fc=fc), _recipe_config(), tr=0.1, n_trs=60,
                        backend="numba", progress=False, log=None)
    rows = result.evaluations["lna"]["screen"]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert all(r.get("fcd_ks") is None for r in rows)


def test_lna_stage_that_cannot_run_is_skipped_and_the_point_kept(tmp_path):
    """A start beyond the bifurcation: the stage is skipped with its reason, the recipe ends."""
    sc = seeded_connectome(N, 4)
    lines = []
    result = fit_recipe(sc, _target(sc), _recipe_config(bounds={"G_rel": (1.1, 1.2)}), tr=0.1,
                        n_trs=60, backend="numba", out=str(tmp_path / "r"), progress=False,
                        log=lines.append)
    assert result.chosen == "search"
    assert "not stable" in result.evaluations["lna"]["skipped"]
    assert any(line.startswith("lna: skipped, the search point is kept") for line in lines)
    assert (tmp_path / "r" / "params.json").exists()


@pytest.mark.parametrize("change, message", [
    (dict(lna_regional="w_EE"), "lna_regional/lna_bounds: learn: a sequence of parameter names"),
    (dict(lna_regional=("w_XX",)), "unknown parameter"),
    (dict(lna_iterations=0), "lna_iterations: a whole number >= 1"),
    (dict(lna_g_scales=()), "lna_g_scales: a non-empty sequence"),
    (dict(lna_regional=("I_0",), lna_bounds={"I_0": 0.3}), "I_0 needs a pair (lo, hi)"),
    (dict(lna_regional=(), lna_iterations=0), "lna_iterations: a whole number >= 1"),
    (dict(lna_regional=("w_EE",), lna_bounds={"w_EI": (0.5, 2.0)}),
     "RecipeConfig.lna_bounds: ['w_EI'] are not in lna_regional"),
])
def test_lna_settings_are_checked_before_the_search(change, message):
    sc = seeded_connectome(N, 4)
    with pytest.raises(ValueError, match=re.escape(message)):
        fit_recipe(sc, FitTarget(fc=torch.eye(N, dtype=torch.float64)), _recipe_config(**change),
                   tr=0.1, n_trs=60, backend="numba", progress=False, log=None)
