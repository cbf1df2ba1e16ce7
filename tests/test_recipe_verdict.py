"""The recipe's refinement reports a convergence verdict (:func:`rww.recipe.refinement_verdict`,
the verdict of :func:`rww.fit_control.convergence` that plain fits report): in
:class:`rww.recipe.RecipeResult`, in ``rww fit --recipe``'s summary.json and printed summary, with
a warning (and advice) when the refinement has not converged or could not be judged."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from rww import cli
from rww.fit_control import convergence
from rww.recipe import RecipeConfig, refinement_verdict


def _history(g, loss):
    return {"epoch": list(range(len(g))), "loss": list(loss), "params/G": list(g),
            "params/w_EE": [1.0] * len(g)}


def test_the_default_window_fits_the_refinements_epochs():
    assert RecipeConfig().verdict_settings() == {"convergence_window": 6, "param_rtol": 0.02,
                                                 "loss_rtol": 0.01}
    assert RecipeConfig(epochs=40).verdict_settings()["convergence_window"] == 10
    assert RecipeConfig(epochs=1).verdict_settings()["convergence_window"] == 3
    assert RecipeConfig(epochs=40, convergence_window=5, param_rtol=0.1).verdict_settings() == {
        "convergence_window": 5, "param_rtol": 0.1, "loss_rtol": 0.01}


def test_refinement_verdict_is_the_fit_verdict_on_the_refinement_history():
    config = RecipeConfig(epochs=6)
    settled = SimpleNamespace(history=_history([0.9] * 6, [1.0, 0.99, 1.01, 1.0, 0.99, 1.0]))
    climbing = SimpleNamespace(history=_history([0.80, 0.82, 0.84, 0.86, 0.88, 0.90],
                                                [1.0, 0.99, 1.01, 1.0, 0.99, 1.0]))
    for result, converged in ((settled, True), (climbing, False)):
        verdict = refinement_verdict(result, config)
        expected = convergence(result.history, convergence_window=6)
        assert verdict["converged"] is converged
        assert {k: verdict[k] for k in expected} == expected
        assert verdict["epochs_run"] == 6 and verdict["settings"]["convergence_window"] == 6
    assert re.match(r"not converged: over the last 6 epochs G drifted \+12% \(tolerance 2%\)",
                    refinement_verdict(climbing, config)["reason"])
    # Too few epochs for the window: not judged (converged False), and no refinement at all: None.
    short = SimpleNamespace(history=_history([0.9, 0.91], [1.0, 0.9]))
    assert refinement_verdict(short, RecipeConfig(epochs=2))["reason"].startswith(
        "not judged: 2 epoch(s) run, the verdict needs the last 3")
    none = refinement_verdict(None, RecipeConfig(epochs=0))
    assert none["converged"] is None and "no refinement ran (epochs = 0)" in none["reason"]


@pytest.fixture
def fc_problem(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.random((4, 4))
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    bold = rng.standard_normal((40, 4)) @ np.array([[1, .5, 0, 0], [0, 1, .5, 0], [0, 0, 1, .5],
                                                   [0, 0, 0, 1.0]])
    np.savetxt(tmp_path / "sc.csv", w, delimiter=",")
    np.save(tmp_path / "fc.npy", np.corrcoef(bold.T))
    return tmp_path


def _recipe(capsys, tmp, *extra):
    argv = ["fit", tmp / "sc.csv", "--fc", tmp / "fc.npy", "--recipe", "--tr", "0.01",
            "--candidates", 3, "--n-trs", 30, "--realisations", 1, "--eval-dt", 1,
            "--eval-realisations", 1, "--backend", "numba", "--no-progress", "--no-figures",
            "--out", tmp / "recipe", *extra]
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((tmp / "recipe" / "summary.json").read_text())
    history = json.loads((tmp / "recipe" / "fit.json").read_text())["history"]
    return summary, history, out, err


def test_recipe_summary_and_output_carry_the_refinement_verdict(capsys, fc_problem):
    # 2 epochs: too few for a verdict; the warning says how many are needed.
    summary, history, out, err = _recipe(capsys, fc_problem, "--epochs", 2)
    verdict = summary["convergence"]
    assert verdict["converged"] is False and verdict["epochs_run"] == 2 == len(history["loss"])
    assert verdict["reason"].startswith("not judged: 2 epoch(s) run, the verdict needs the last 3")
    assert f"refinement (2 of 2 epochs): {verdict['reason']}" in out
    assert re.search(r"rww fit: warning: refinement not judged: .*; rerun with at least 3 --epochs: "
                     r"the same command into the same --out reuses the search and resumes the "
                     r"refinement", err), err
    # 4 epochs into the same folder: the refinement resumes, and its 4 epochs are judged with
    # the default window min(10, epochs), exactly as the plain fit's verdict would judge them.
    summary, history, out, err = _recipe(capsys, fc_problem, "--epochs", 4)
    assert "search: reusing the finished search" in err and len(history["loss"]) == 4
    verdict = summary["convergence"]
    expected = convergence(history, convergence_window=4)
    assert {k: verdict[k] for k in expected} == expected
    assert verdict["settings"] == {"convergence_window": 4, "param_rtol": 0.02, "loss_rtol": 0.01}
    assert verdict["judged"].startswith("the gradient refinement (fit.json), not the search")
    assert f"refinement (4 of 4 epochs): {verdict['reason']}" in out
    assert ("rww fit: warning: refinement not converged" in err) is (not verdict["converged"])
    # The verdict's settings from the command line: generous tolerances pass the same history.
    summary, history2, out, err = _recipe(capsys, fc_problem, "--epochs", 4,
                                          "--convergence-window", 3, "--param-rtol", 10,
                                          "--loss-rtol", 10)
    assert history2["loss"] == history["loss"]                 # resumed a finished refinement
    verdict = summary["convergence"]
    assert verdict["converged"] is True and verdict["window"] == 3
    assert verdict["reason"].startswith("converged: over the last 3 epochs every parameter")
    assert "refinement (4 of 4 epochs): converged" in out and "warning: refinement" not in err


def test_recipe_refuses_early_stop_with_advice(capsys, fc_problem):
    code = cli.main([str(a) for a in ["fit", fc_problem / "sc.csv", "--fc", fc_problem / "fc.npy",
                                      "--recipe", "--early-stop", "--out", fc_problem / "o"]])
    _, err = capsys.readouterr()
    assert code == 1
    assert re.search(r"--early-stop: the recipe \(--demo, --recipe\) runs its refinement epochs "
                     r"as set \(--epochs\) and reports their convergence verdict in summary\.json; "
                     r"drop --early-stop, or fit without the recipe", err), err
