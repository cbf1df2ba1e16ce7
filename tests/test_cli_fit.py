"""``rww fit`` end to end on tiny problems (4 regions, plain torch backend, 10 steps per TR):
outputs checked for content, interruption and exact resume, one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from rww import fit as fit_module
from rww.fit import FitResult
from rww.objectives import fc, fc_correlation, fcd, fcd_values, ks_statistic
from helpers import run_cli as run

# deco2014 with 1 ms steps and 10-ms TRs (10 steps per TR): a fit epoch of 16 TRs takes
# milliseconds with the reference backend.
TINY = ["--tr", "0.01", "--dt", "1", "--backend", "torch", "--burn-in", "4", "--no-progress"]




@pytest.fixture
def problem(tmp_path):
    """A 4-region connectome, a target FC and BOLD (time x regions) written to files."""
    rng = np.random.default_rng(1)
    w = rng.random((4, 4))
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    bold = rng.standard_normal((40, 4)) @ np.array([[1, .5, 0, 0], [0, 1, .5, 0], [0, 0, 1, .5],
                                                   [0, 0, 0, 1.0]])
    target = np.corrcoef(bold.T)
    paths = {"sc": tmp_path / "sc.csv", "fc": tmp_path / "fc.npy", "bold": tmp_path / "bold.npy"}
    np.savetxt(paths["sc"], w, delimiter=",")
    np.save(paths["fc"], target)
    np.save(paths["bold"], bold)
    return paths, target, bold


def test_fit_to_an_fc_file_writes_consistent_outputs(tmp_path, capsys, problem):
    paths, target, _ = problem
    out = tmp_path / "fit"
    code, stdout, err = run(capsys, "fit", paths["sc"], "--fc", paths["fc"], *TINY, "--epochs", 3,
                            "--n-trs", 16, "--window-trs", 8, "--learn", "G,w_IE", "--lr", 0.05,
                            "--param", "G=0.4", "--prior", "G=0.5,1", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    result = FitResult.load(str(out / "fit"))
    # The summary, the saved result and the history agree with each other and with the target.
    assert set(summary["learned"]) == {"G", "w_IE"}
    assert summary["learned"]["G"] == pytest.approx(result.params["G"].item(), rel=1e-12)
    assert summary["learned"]["G"] != pytest.approx(0.4, rel=1e-6)          # it moved
    assert result.history["epoch"] == [0, 1, 2] and len(result.history["terms/fc_corr"]) == 3
    assert result.history["params/G"][-1] == pytest.approx(summary["learned"]["G"], rel=1e-6)
    assert "terms/prior_G" in result.history
    assert result.bold.shape == (1, 16, 4)
    expected_r = fc_correlation(result.fc.double(), torch.tensor(target))
    assert summary["fc_r_train"] == pytest.approx(expected_r.item(), abs=1e-12)
    # The saved FC is the float32 FC of the saved BOLD (float32 rounding of tiny BOLD values).
    assert torch.allclose(result.fc.double(), fc(result.bold[0].double()), atol=2e-4)
    assert summary["config"]["window_trs"] == 8 and summary["config"]["priors"] == {"G": [0.5, 1.0]}
    assert summary["connectome"]["preprocessing"][0]["method"] == "mean_row_sum"
    assert f"FC r train {summary['fc_r_train']:.3f}" in stdout
    for name in ("fc.png", "history.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_bold_target_with_fcd_term_and_held_out_scan(tmp_path, capsys, problem):
    paths, _, bold = problem
    held = tmp_path / "held.npy"
    np.save(held, bold[::-1].T.copy())                                      # regions x time
    out = tmp_path / "fit"
    code, stdout, err = run(capsys, "fit", paths["sc"], "--bold", paths["bold"], *TINY,
                            "--epochs", 1, "--window-trs", 0, "--n-trs", 24,
                            "--weights", "fc_corr=1,fcd=0.5", "--fcd-window", 6, "--fcd-step", 2,
                            "--held-out-bold", held, "--no-figures", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    result = FitResult.load(str(out / "fit"))
    assert "terms/fcd" in result.history and summary["config"]["window_trs"] is None
    sim = fcd_values(fcd(result.bold.double(), 6, 2), 6, 2).flatten()
    emp = fcd_values(fcd(torch.tensor(bold), 6, 2), 6, 2)
    assert summary["fcd_train"]["ks"] == pytest.approx(ks_statistic(sim, emp), abs=1e-6)
    scores = summary["held_out"]["held-out"]
    assert set(scores) == {"fc_r", "fc_mse", "fcd_ks", "fcd_w1"}
    assert -1 <= scores["fc_r"] <= 1 and 0 <= scores["fcd_ks"] <= 1
    assert "held-out held-out: FC r" in stdout


def test_interrupted_fit_resumes_exactly(tmp_path, capsys, problem, monkeypatch):
    paths, _, _ = problem
    argv = ["fit", paths["sc"], "--fc", paths["fc"], *TINY, "--epochs", 3, "--n-trs", 16,
            "--window-trs", 8, "--lr", 0.05, "--param", "G=0.4", "--no-figures"]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "straight")
    assert code == 0, err
    straight = FitResult.load(str(tmp_path / "straight" / "fit"))

    saves = []
    real_save = fit_module._atomic_torch_save

    def save_then_interrupt(obj, path):                 # Ctrl-C right after epoch 1's checkpoint
        real_save(obj, path)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "_atomic_torch_save", save_then_interrupt)
    code, _, err = run(capsys, *argv, "--out", tmp_path / "cut")
    assert code == 130
    assert "rerun the same command with --resume" in err and "interrupted" in err
    monkeypatch.setattr(fit_module, "_atomic_torch_save", real_save)
    code, _, err = run(capsys, *argv, "--out", tmp_path / "cut", "--resume")
    assert code == 0, err
    resumed = FitResult.load(str(tmp_path / "cut" / "fit"))
    assert resumed.history["epoch"] == [0, 1, 2]
    assert torch.equal(resumed.params["G"], straight.params["G"])
    assert resumed.history["loss"] == straight.history["loss"]
    # A finished fit can be extended by more epochs; other changed settings are refused.
    code, _, err = run(capsys, *argv, "--epochs", 4, "--out", tmp_path / "cut", "--resume")
    assert code == 0, err
    assert FitResult.load(str(tmp_path / "cut" / "fit")).history["epoch"] == [0, 1, 2, 3]
    code, _, err = run(capsys, *argv, "--lr", 0.1, "--out", tmp_path / "cut", "--resume")
    assert code == 1 and "lr differ" in err


@pytest.mark.parametrize("setup, extra, message", [
    ("fc_shape", [], r"--fc .*fc\.npy: shape \(3, 3\) does not match the connectome's 4 regions"),
    ("fc_nan", [], r"NaN"),
    ("bold_constant", [], r"bold\.npy: 1 region\(s\) have a constant series \(regions 2\)"),
    ("none", [], r"target: give --fc FILE or --bold FILE"),
    ("good", ["--resume"], r"--resume: no checkpoint at"),
    ("good", ["--weights", "fc_corr=1,fcd=1"], r"--weights fcd: needs --fcd FILE or --bold FILE"),
    ("good", ["--weights", "nonsense=1"], r"unknown loss terms \['nonsense'\]"),
    ("good", ["--learn", "Q"], r"unknown parameter 'Q'"),
    ("good", ["--prior", "G=1"], r"--prior: expected NAME=MEAN,STD"),
    ("good", ["--epochs", "0"], r"--epochs: must be >= 1"),
    ("fcd_rect", ["--weights", "fc_corr=1,fcd=1"], r"fcd\.npy: expected a square FCD matrix"),
    ("good", ["--demo"], r"give a connectome file or --demo, not both"),
])
def test_fit_errors_are_one_line(tmp_path, capsys, problem, setup, extra, message):
    paths, target, bold = problem
    target_args = ["--fc", paths["fc"]]
    if setup == "fc_shape":
        np.save(paths["fc"], np.eye(3))
    elif setup == "fc_nan":
        target[0, 1] = target[1, 0] = np.nan
        np.save(paths["fc"], target)
    elif setup == "bold_constant":
        bold[:, 2] = 1.0
        np.save(paths["bold"], bold)
        target_args = ["--bold", paths["bold"]]
    elif setup == "none":
        target_args = []
    elif setup == "fcd_rect":
        np.save(tmp_path / "fcd.npy", np.zeros((3, 4)))
        target_args += ["--fcd", tmp_path / "fcd.npy"]
    code, _, err = run(capsys, "fit", paths["sc"], *target_args, *TINY, "--epochs", 1,
                       "--n-trs", 8, "--window-trs", 4, "--out", tmp_path / "o", *extra)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rww fit: error: "), err
    assert re.search(message, lines[0]), lines[0]


def test_demo_paper_setting_fits_the_embedded_data_and_scores_the_held_out_scans(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "fit", "--demo", "--paper", "--epochs", 1, "--n-trs", 60,
                            "--no-progress", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "griffiths2022" and summary["n_regions"] == 100
    assert set(summary["learned"]) == {"G", "w_EE", "w_IE", "w_EI", "w_bb"}
    assert torch.tensor(summary["learned"]["w_bb"]).shape == (100, 100)
    assert summary["config"]["window_trs"] == 20 and summary["config"]["weights"] == {
        "fc_log": 1.0, "bifurcation": 1.0, "entropy": 1.0}
    # Held out: subject 100206, never seen by the group fit; FCD in cuBNM's 30 s / 5 s windows.
    assert set(summary["held_out"]) == {"100206_REST1_LR second half", "100206_REST2_LR"}
    for scores in summary["held_out"].values():
        assert -1 <= scores["fc_r"] <= 1 and 0 <= scores["fcd_ks"] <= 1 and scores["fcd_w1"] >= 0
    # The training FCD uses every pair of distinct windows, the pooled target's convention.
    result = FitResult.load(str(out / "fit"))
    sim = fcd(result.bold.double(), 43, 7)
    n = sim.shape[-1]
    values = sim[0][tuple(torch.triu_indices(n, n, 1))]
    from rww.data import load_demo
    assert summary["fcd_train"]["ks"] == pytest.approx(ks_statistic(values, load_demo(False).fcd_values), abs=1e-6)
    assert "held-out 100206_REST1_LR second half: FC r" in stdout and "w_bb=(100x100 values" in stdout
    # The N x N gains enter the history as their mean and spread, not 10^4 numbers an epoch.
    assert len(result.history["params/w_bb/mean"]) == 1 and "params/w_bb" not in result.history
    for name in ("fc.png", "history.png", "fcd.png"):
        assert (out / name).stat().st_size > 5000


def test_fc_and_fcd_files_as_targets(tmp_path, capsys, problem):
    paths, _, bold = problem
    values = fcd_values(fcd(torch.tensor(bold), 6, 2), 6, 2)
    np.savetxt(tmp_path / "fcd.csv", values.numpy()[None, :], delimiter=",")
    out = tmp_path / "fit"
    code, _, err = run(capsys, "fit", paths["sc"], "--fc", paths["fc"], "--fcd", tmp_path / "fcd.csv",
                       "--fcd-window", 6, "--fcd-step", 2, "--weights", "fc_corr=1,fcd=1", *TINY,
                       "--epochs", 1, "--window-trs", 0, "--n-trs", 24, "--no-figures", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    result = FitResult.load(str(out / "fit"))
    sim = fcd_values(fcd(result.bold.double(), 6, 2), 6, 2).flatten()
    assert summary["fcd_train"]["ks"] == pytest.approx(ks_statistic(sim, values), abs=1e-6)
    assert "terms/fcd" in result.history


def test_demo_recipe_searches_refines_and_evaluates(tmp_path, capsys):
    """``rww fit --demo`` (the recipe with its LNA stage, on by default for the demo), shrunk: 4
    candidates, 60 TRs, 1 refinement epoch, 3 LNA steps, the evaluation at 1 ms to keep the test
    short (the default is 0.1 ms)."""
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "fit", "--demo", "--candidates", 4, "--epochs", 1, "--n-trs", 60,
                            "--eval-dt", 1, "--eval-realisations", 1, "--lna-iterations", 3,
                            "--no-progress", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "deco2014" and summary["chosen"] in ("search", "refined", "lna")
    assert summary["config"]["lna_regional"] == ["w_EE", "w_EI", "J_NMDA"]
    lna = summary["train"]["lna"]
    assert lna["fit"]["settings"]["iterations"] == 3
    assert len(lna["screen"]) == 9 and lna["screen"][0]["lna_values"] is False
    rows = json.loads((out / "search.json").read_text())["rows"]
    assert len(rows) == 4 and all(0.6 <= r["G_over_Gc"] <= 1.0 for r in rows)
    best = min((r for r in rows if r["loss"] is not None), key=lambda r: r["loss"])
    assert summary["search_best"]["loss"] == pytest.approx(best["loss"], rel=1e-12)
    train = summary["train"]["final"]
    assert train["settings"]["dt"] == 1.0 and train["settings"]["n_trs"] == 60
    assert 0 <= train["fcd_ks"] <= 1 and -1 <= train["fc_r_single"] <= 1
    assert set(summary["held_out"]) == {"100206_REST1_LR second half", "100206_REST2_LR"}
    params = json.loads((out / "params.json").read_text())
    assert params["fic"] == 3.0 and "G" in params and "w_EE" in params
    assert "G/G_c" in stdout and "held-out 100206_REST2_LR" in stdout
    for name in ("fc.png", "fcd.png", "search.png"):
        assert (out / name).stat().st_size > 5000


def test_recipe_on_an_fc_file_uses_fc_terms_only(tmp_path, capsys, problem):
    """A recipe fit to an FC alone (no FCD to compare with) ranks and refines on FC terms, and a
    given --realisations (even 1) is used."""
    paths, _, _ = problem
    out = tmp_path / "fc-only"
    code, stdout, err = run(capsys, "fit", paths["sc"], "--fc", paths["fc"], "--recipe", "--tr", "0.01",
                            "--candidates", 3, "--epochs", 1, "--n-trs", 30, "--realisations", 1,
                            "--eval-dt", 1, "--eval-realisations", 1, "--backend", "numba",
                            "--no-progress", "--no-figures", "--out", out)
    assert code == 0, err
    assert "FC terms only" in err and "FCD KS n/a" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["realisations"] == 1
    assert "fcd_ks" not in json.loads((out / "fit.json").read_text())["config"]["weights"]


@pytest.mark.parametrize("extra, message", [
    (["--bounds", "w_EE=0.5:1.0"], r"--bounds: include G_rel"),
    (["--bounds", "G_rel=0.5:1.0,w_EE=-1:2"], r"--bounds: w_EE is a positive physical quantity"),
    (["--bounds", "G_rel=1.0:0.5"], r"--bounds: bounds of G_rel must be finite with low < high"),
    (["--search", "cma", "--candidates", "1"], r"--candidates: CMA-ES needs a population of at least 2"),
    (["--early-stop", "--loss-rtol", "0"], r"--early-stop: the recipe \(--demo, --recipe\) runs "
                                           r"its refinement epochs as set"),
])
def test_recipe_option_errors(tmp_path, capsys, problem, extra, message):
    paths, _, _ = problem
    code, _, err = run(capsys, "fit", paths["sc"], "--fc", paths["fc"], "--recipe", "--tr", "0.01",
                       "--no-progress", "--out", tmp_path / "o", *extra)
    assert code == 1 and re.search(message, err), err


def test_g_relative_refuses_an_absolute_g_from_a_parameter_file(tmp_path, capsys):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"G": 1.5, "fic": 3.0, "record": {"G_over_Gc": 0.84}}))
    code, _, err = run(capsys, "simulate", "--demo", "--params", params, "--g-relative", "--trs", 3,
                       "--no-progress", "--out", tmp_path / "s")
    assert code == 1 and "the parameter file's G is absolute" in err, err


# ---------------------------------------------------------------- after the fit (issue 16)
@pytest.mark.parametrize("trs", [35, 40, 59])
def test_a_bold_too_short_for_fcd_fits_and_writes_every_output(tmp_path, capsys, problem, trs):
    """A 4-region BOLD of 35-59 TRs holds no pair of 30-TR FCD windows sharing no TR: the
    scoring after the fit skips FCD, saying why, instead of failing in torch.quantile after
    fit.json was written (and losing summary.json and the figures)."""
    paths, _, _ = problem
    bold = np.random.default_rng(trs).standard_normal((trs, 4))
    np.save(tmp_path / "b.npy", bold)
    out = tmp_path / "fit"
    code, stdout, err = run(capsys, "fit", paths["sc"], "--bold", tmp_path / "b.npy", *TINY,
                            "--epochs", 1, "--window-trs", 0, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fcd_train"].startswith("not computed: target FCD values unavailable: "
                                           f"target.bold ({trs} TRs")
    assert summary["errors"] == {}
    for name in ("fit.json", "fit.npz", "fit.ckpt", "fc.png", "history.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "fcd.png").exists()


def test_a_failure_after_the_fit_keeps_its_outputs(tmp_path, capsys, problem, monkeypatch):
    from rww import figures

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(figures, "fc_comparison", broken)
    paths, _, _ = problem
    out = tmp_path / "fit"
    code, stdout, err = run(capsys, "fit", paths["sc"], "--fc", paths["fc"], *TINY, "--epochs", 1,
                            "--n-trs", 16, "--window-trs", 8, "--out", out)
    assert code == 1
    assert "rww fit: warning: figure fc.png failed after the fit: RuntimeError: no display" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rww fit: error: the fit finished and its outputs are written (")
    assert "1 step(s) after it failed: figure fc.png: RuntimeError: no display" in last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == {"figure fc.png": "RuntimeError: no display"}
    assert -1 <= summary["fc_r_train"] <= 1 and (out / "history.png").stat().st_size > 5000
    assert FitResult.load(str(out / "fit")).history["epoch"] == [0]
    assert str(out / "fc.png") not in summary["outputs"]


@pytest.mark.parametrize("trs, extra, message", [
    (25, [], r"the target BOLD's 25 TRs hold 0 FCD window\(s\) of 30 TRs every 5 TRs and 0 "
             r"pair\(s\) of windows sharing no TR; FCD values need at least 2 pairs, i.e. a BOLD "
             r"of at least 65 TRs"),
    (40, ["--n-trs", 80, "--window-trs", 0], r"the target BOLD's 40 TRs hold 3 FCD window\(s\) .* "
                                             r"a BOLD of at least 65 TRs"),
    # The target is long enough for these windows; the 20-TR pieces of a windowed fit are not.
    (40, ["--fcd-window", 10, "--fcd-step", 4], r"fcd: a simulated piece of 20 TRs has 3 FCD "
                                                r"windows \(10 TRs every 4\) and 0 pairs of windows "
                                                r"sharing no TR; the fcd term needs at least 2, i.e. "
                                                r"pieces of at least 26 TRs"),
])
def test_fcd_errors_say_the_real_cause(tmp_path, capsys, problem, trs, extra, message):
    paths, _, _ = problem
    np.save(tmp_path / "b.npy", np.random.default_rng(trs).standard_normal((trs, 4)))
    code, _, err = run(capsys, "fit", paths["sc"], "--bold", tmp_path / "b.npy", *TINY,
                       "--epochs", 1, "--weights", "fc_corr=1,fcd=1", "--out", tmp_path / "o",
                       *extra)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rww fit: error: "), err
    assert re.search(message, lines[0]), lines[0]
    code, _, err = run(capsys, "fit", paths["sc"], "--fc", paths["fc"], *TINY, "--epochs", 1,
                       "--weights", "fc_corr=1,fcd_ks=1", "--out", tmp_path / "o")
    assert code == 1 and "--weights fcd_ks: needs --fcd FILE or --bold FILE" in err, err


def test_summary_reports_the_fitted_firing_rate(tmp_path, capsys, problem):
    """The mean r_E of the fitted parameters on the last epoch's noise, recomputed here from the
    saved parameters with the library."""
    import rww
    from rww.fit import FitConfig, _burn_in
    paths, _, _ = problem
    out = tmp_path / "fit"
    code, stdout, err = run(capsys, "fit", paths["sc"], "--fc", paths["fc"], *TINY, "--epochs", 2,
                            "--n-trs", 16, "--window-trs", 8, "--lr", 0.05, "--param", "G=0.4",
                            "--no-figures", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    sc = torch.tensor(np.loadtxt(paths["sc"], delimiter=","), dtype=torch.float32)
    model = rww.RWWBold(sc / sc.sum(1).mean(), G=summary["learned"]["G"], tr=0.01, dt=1.0,
                        backend="torch")
    config = FitConfig(burn_in_trs=4, seed=0)
    with torch.no_grad():
        state, t0 = _burn_in(model, config, 1)                           # epoch 1's noise
        rates = model.simulate(16, state=state, seed=1, t0=t0, record=("r_E",)).records["r_E"]
    regional = rates.double().mean(dim=(0, 1))
    rate = summary["firing_rate"]
    assert rate["r_E_mean_hz"] == pytest.approx(regional.mean().item(), rel=1e-5)
    assert rate["r_E_min_hz"] == pytest.approx(regional.min().item(), rel=1e-5)
    assert rate["r_E_max_hz"] == pytest.approx(regional.max().item(), rel=1e-5)
    assert f"mean r_E {rate['r_E_mean_hz']:.2f} Hz" in stdout


def test_convergence_verdict_and_early_stop(tmp_path, capsys, problem):
    paths, _, _ = problem
    common = ["fit", paths["sc"], "--fc", paths["fc"], *TINY, "--n-trs", 16, "--window-trs", 8,
              "--param", "G=0.4", "--no-figures", "--convergence-window", 3]
    code, stdout, err = run(capsys, *common, "--epochs", 4, "--lr", 0.5, "--out", tmp_path / "a")
    assert code == 0, err
    verdict = json.loads((tmp_path / "a" / "summary.json").read_text())["convergence"]
    assert verdict["converged"] is False and verdict["epochs_run"] == 4
    assert verdict["reason"].startswith("not converged: over the last 3 epochs G drifted")
    assert f"rww fit: warning: {verdict['reason']}; the fitted parameters may still change" in err
    # Parameters that do not move (lr 1e-9) and a loosely judged loss: stopped after 3 epochs.
    code, stdout, err = run(capsys, *common, "--epochs", 10, "--lr", 1e-9, "--early-stop",
                            "--loss-rtol", 1, "--out", tmp_path / "b")
    assert code == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["convergence"]["converged"] is True
    assert summary["convergence"]["stopped"] == "early_stop"
    assert "in 3 epochs (stopped early: converged)" in stdout and "warning" not in err
    code, _, err = run(capsys, *common, "--epochs", 4, "--convergence-window", 2,
                       "--out", tmp_path / "c")
    assert code == 1 and "--convergence-window: must be >= 3, got 2" in err
