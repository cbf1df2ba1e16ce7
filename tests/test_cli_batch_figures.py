"""Figures of a batch of simulations (``rww simulate`` with a sweep or ``--batch``): a summary
across the simulations against the swept parameter (or the simulation index) and the FC of the
chosen ones (best / median / worst FC r with an empirical FC, else along the sweep), checked for
what they draw (the figure objects, captured as they are saved), not only that files exist."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from rww import figures
from rww.objectives import fc, fc_correlation, lower_triangle
from helpers import run_cli as run
from test_figures import check_png

TINY = ["--tr", "0.005", "--dt", "0.5", "--backend", "torch", "--dtype", "float64", "--no-progress"]


@pytest.fixture
def saved(monkeypatch):
    """Every figure saved, by file name: the matplotlib Figure as drawn."""
    drawn = {}
    original = figures._save

    def capture(fig, path, dpi):
        drawn[str(path).rsplit("/", 1)[-1]] = fig
        return original(fig, path, dpi)

    monkeypatch.setattr(figures, "_save", capture)
    return drawn


@pytest.fixture
def sc_path(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.random((4, 4))
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    path = tmp_path / "sc.csv"
    np.savetxt(path, w, delimiter=",")
    return path




def _main_line(ax):
    """The per-simulation curve of a batch_summary panel: (x, y)."""
    line = ax.get_lines()[0]
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def _marked(ax):
    """Legend label -> (x, y) of the chosen simulations' markers on a panel."""
    out = {}
    for line in ax.get_lines()[1:]:
        if line.get_linestyle() == "None" and line.get_label().endswith(")"):
            out[line.get_label()] = (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
    return out


# ------------------------------------------------------------------------------------------------
# rww.figures.batch_summary / fc_batch
# ------------------------------------------------------------------------------------------------

def test_batch_summary_draws_each_score_against_x_with_the_chosen_marked(tmp_path, saved):
    x = np.array([0.9, 0.5, 0.7])                                 # unsorted: drawn in x order
    rates = np.array([[8.0, 9.0, 10.0], [2.0, 3.0, 4.0], [4.0, 5.0, 9.0]])
    fc_r = np.array([0.1, 0.4, np.nan])
    path = figures.batch_summary(x, {"rate [Hz]": rates, "FC r": fc_r}, tmp_path / "b.png",
                                 x_label="G", chosen={"best": 1, "worst": 0},
                                 bands={"rate [Hz]": (1, 10, "1-10 Hz")}, marks={"G_c": 0.8},
                                 title="sweep")
    check_png(path)
    fig = saved["b.png"]
    rate_ax, fc_ax = fig.axes[:2]
    xs, ys = _main_line(rate_ax)
    np.testing.assert_array_equal(xs, [0.5, 0.7, 0.9])
    np.testing.assert_array_equal(ys, [3.0, 6.0, 9.0])            # mean over regions
    band = rate_ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == 2.0 and band[:, 1].max() == 10.0   # min-max over regions
    assert _marked(rate_ax) == {"best (sim 1)": (0.5, 3.0), "worst (sim 0)": (0.9, 9.0)}
    xs, ys = _main_line(fc_ax)
    np.testing.assert_array_equal(xs, [0.5, 0.9])                 # the NaN left out
    assert fc_ax.get_title() == "FC r (1 not computed)" and rate_ax.get_xlabel() == "G"
    assert [l.get_xdata()[0] for l in rate_ax.get_lines() if l.get_label() == "G_c"] == [0.8]
    labels = fig.legends[0].get_texts()
    assert {"1-10 Hz", "min-max over regions", "best (sim 1)", "G_c"} <= {t.get_text() for t in labels}
    assert fig._suptitle.get_text() == "sweep"
    # Ranked roles are green to red; others neutral.
    colours = [l.get_color() for l in rate_ax.get_lines()[1:3]]
    assert colours == ["tab:green", "tab:orange"]
    figures.batch_summary(x, {"r": fc_r}, tmp_path / "n.png", chosen={"low": 1}, ranked=False)
    assert saved["n.png"].axes[0].get_lines()[1].get_color() == "tab:purple"


def test_batch_summary_and_fc_batch_refuse_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"score 'r' has shape \(2,\); expected \(3,\) or \(3, N\)"):
        figures.batch_summary([0, 1, 2], {"r": [1, 2]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"chosen simulations \{'best': 5\} out of range for 3"):
        figures.batch_summary([0, 1, 2], {"r": [1, 2, 3]}, tmp_path / "x.png", chosen={"best": 5})
    with pytest.raises(ValueError, match=r"fcs: expected \(B, N, N\) FC matrices"):
        figures.fc_batch(np.zeros((3, 4)), tmp_path / "x.png", [0])
    with pytest.raises(ValueError, match=r"indices: expected simulations in 0\.\.1, got \[2\]"):
        figures.fc_batch(np.zeros((2, 4, 4)), tmp_path / "x.png", [2])


def test_fc_batch_titles_carry_each_simulations_scores(tmp_path, saved):
    gen = torch.Generator().manual_seed(1)
    bold = torch.randn(3, 60, 6, generator=gen, dtype=torch.float64)
    bold[:, :, :3] += torch.randn(3, 60, 1, generator=gen, dtype=torch.float64)
    sims = fc(bold)
    emp = fc(torch.randn(60, 6, generator=gen, dtype=torch.float64) + bold[0])
    check_png(figures.fc_batch(sims, tmp_path / "f.png", [2, 0], titles=["best", "worst"],
                               empirical=emp, title="t"))
    axes = [ax for ax in saved["f.png"].axes if ax.get_images()]
    assert len(axes) == 3                                         # empirical + 2 simulations
    assert axes[0].get_title().startswith("empirical FC\nmean r ")
    for ax, i, name in zip(axes[1:], (2, 0), ("best", "worst")):
        r = float(fc_correlation(sims[i], emp))
        mean = float(lower_triangle(sims[i]).mean())
        assert ax.get_title() == f"{name}\nmean r {mean:.3f}, r with empirical {r:.3f}"
        image = ax.get_images()[0]
        limit = float(lower_triangle(sims[i]).abs().max())
        assert image.get_clim() == pytest.approx((-limit, limit))      # its own scale
        assert np.ma.is_masked(image.get_array()[0, 0])                # diagonal blanked


# ------------------------------------------------------------------------------------------------
# rww simulate with a batch
# ------------------------------------------------------------------------------------------------

def test_a_sweep_without_batch_runs_one_simulation_per_value_and_plots_across_them(
        tmp_path, capsys, sc_path, saved):
    out = tmp_path / "sweep"
    code, stdout, err = run(capsys, "simulate", sc_path, *TINY, "--trs", 12, "--burn-in", 2,
                            "--seed", 3, "--param", "G=0.6,0.2,0.4", "--out", out)
    assert code == 0, err
    assert "simulated 3 x 12 TRs x 4 regions" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch"] == 3 and summary["parameters"]["G"] == [0.6, 0.2, 0.4]
    names = sorted(p.rsplit("/", 1)[-1] for p in summary["outputs"]["figures"])
    assert names == ["batch_summary.png", "bold_traces.png", "fc_batch.png", "fc_simulated.png"]
    record = summary["batch_figures"]
    assert record["x"] == [0.6, 0.2, 0.4] and record["x_label"] == "G" and record["swept"] == ["G"]
    assert record["chosen"] == {"lowest G": 1, "middle G": 2, "highest G": 0}
    assert record["representative"] == 0
    # The summary panel draws the summary's numbers against G, in G's order.
    fig = saved["batch_summary.png"]
    assert fig._suptitle.get_text().startswith("batch of 3 simulations: sweep over G (deco2014")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["mean r_E [Hz]", "mean FC (off-diagonal r)"]
    xs, ys = _main_line(fig.axes[0])
    rates = summary["firing_rate_E_hz"]["per_simulation"]
    np.testing.assert_allclose(xs, [0.2, 0.4, 0.6])
    np.testing.assert_allclose(ys, [rates[1], rates[2], rates[0]], rtol=1e-12)
    xs, ys = _main_line(fig.axes[1])
    level = summary["fc"]["mean_off_diagonal"]
    np.testing.assert_allclose(ys, [level[1], level[2], level[0]], rtol=1e-12)
    assert set(_marked(fig.axes[0])) == {"lowest G (sim 1)", "middle G (sim 2)", "highest G (sim 0)"}
    # The FC of the three, titled with the simulation and its value.
    panels = [ax for ax in saved["fc_batch.png"].axes if ax.get_images()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == [
        "lowest G: simulation 1 of 3, G = 0.2", "middle G: simulation 2 of 3, G = 0.4",
        "highest G: simulation 0 of 3, G = 0.6"]
    saved_fc = np.load(out / "bold.npz")["fc"]
    np.testing.assert_allclose(panels[0].get_images()[0].get_array()[0, 1], saved_fc[1, 0, 1])
    check_png(out / "batch_summary.png")
    check_png(out / "fc_batch.png")
    assert saved["bold_traces.png"].axes[0].get_title().startswith(
        "simulation 0 of 3, G = 0.6 (deco2014)")


def test_demo_batch_picks_best_median_and_worst_fc_r(tmp_path, capsys, saved):
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "simulate", "--demo", *TINY, "--trs", 8, "--burn-in", 1,
                            "--batch", 3, "--seed", 2, "--param", "G=0.5", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    r = summary["fc_correlation_with_demo"]["per_simulation"]
    order = list(np.argsort(r)[::-1])
    record = summary["batch_figures"]
    assert record["chosen"] == {"best FC r": order[0], "median FC r": order[1],
                                "worst FC r": order[2]}
    assert record["representative"] == order[0] and record["swept"] == []
    assert record["x_label"] == "simulation (noise realisations of one parameter set)"
    fig = saved["batch_summary.png"]
    assert "noise realisations" in fig._suptitle.get_text()
    panel = [ax for ax in fig.axes if ax.get_title().startswith("FC r with the empirical FC")][0]
    np.testing.assert_allclose(_main_line(panel)[1], r, rtol=1e-12)
    assert _marked(panel)[f"best FC r (sim {order[0]})"] == (order[0], pytest.approx(max(r)))
    panels = [ax for ax in saved["fc_batch.png"].axes if ax.get_images()]
    assert panels[0].get_title().startswith("HCP group FC (group-train706)")
    for ax, role, i in zip(panels[1:], ("best", "median", "worst"), order):
        assert ax.get_title().startswith(f"{role} FC r: simulation {i} of 3\n")
        assert ax.get_title().endswith(f"r with empirical {r[i]:.3f}")
    # The single-simulation figures show the best one, and say so.
    title = saved["fc_vs_empirical.png"]._suptitle.get_text()
    assert title == f"HCP Schaefer-100 group FC (group-train706) vs simulation {order[0]} of 3, best FC r"
    bold = np.load(out / "bold.npz")["bold"]
    traces = saved["bold_traces.png"].axes[0].get_lines()[0].get_ydata()
    first = bold[order[0], :, 0]
    np.testing.assert_allclose(traces, first - first.mean(), rtol=1e-12)


def test_a_relative_g_sweep_is_drawn_against_g_over_gc(tmp_path, capsys, sc_path, saved):
    out = tmp_path / "rel"
    code, _, err = run(capsys, "simulate", sc_path, *TINY, "--trs", 6, "--burn-in", 1, "--fic",
                       "--g-relative", "--param", "G=0.5,0.8", "--out", out)
    assert code == 0, err
    record = json.loads((out / "summary.json").read_text())["batch_figures"]
    assert record["x_label"] == "G / G_c" and record["x"] == pytest.approx([0.5, 0.8], rel=1e-9)
    ax = saved["batch_summary.png"].axes[0]
    assert ax.get_xlabel() == "G / G_c"
    assert [l.get_xdata()[0] for l in ax.get_lines() if l.get_label() == "G_c"] == [1.0]


def test_a_single_simulation_has_no_batch_figures(tmp_path, capsys, sc_path):
    out = tmp_path / "one"
    code, _, err = run(capsys, "simulate", sc_path, *TINY, "--trs", 6, "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch"] == 1 and summary["batch_figures"] is None
    assert not (out / "batch_summary.png").exists() and not (out / "fc_batch.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--param", "G=0.1,0.2,0.3", "--param", "w_EE=1,2"],
     r"--param: per-simulation lists of different lengths \(G: 3, w_EE: 2\); give each list one "
     r"value per simulation \(the same length\), or 4 values \(one per region\)"),
    (["--param", "G=0.1,0.2,0.3", "--batch", "2"],
     r"parameter G: length 3 matches neither n_nodes=4 nor batch=2; give 2 values \(one per "
     r"simulation of --batch 2\) or 4 \(one per region\), or drop --batch"),
    (["--param", "G=0.1,0.2,0.3,0.4", "--batch", "4"],
     r"with --batch 4 \(as many as the regions\) a list of 4 cannot be told apart: sweep over "
     r"another number of values"),
])
def test_batch_errors_say_what_to_give(tmp_path, capsys, sc_path, argv, message):
    code, _, err = run(capsys, "simulate", sc_path, *TINY, "--trs", 4, *argv, "--out", tmp_path / "o")
    assert code == 1 and re.search(message, err), err
    assert len(err.strip().splitlines()) == 1
