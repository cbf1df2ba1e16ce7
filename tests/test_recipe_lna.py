"""The recipe's optional LNA stage (rww.recipe.lna_stage, rww fit --lna-regional) on a small
network: per-region values fitted through the LNA, the re-screen on shared noise, and a choice
that follows the screen's losses."""

from __future__ import annotations

import json

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
    assert code == 1 and "--lna-regional: ['tau_E'] cannot be fitted per region here" in err
    code, _, err = run_cli(capsys, *base, "--lna-iterations", "5")
    assert code == 1 and "--lna-iterations: needs --lna-regional" in err
    code, _, err = run_cli(capsys, *base, "--lna-regional", "w_EE", "--lna-iterations", "0")
    assert code == 1 and "--lna-iterations: must be at least 1, got 0" in err
