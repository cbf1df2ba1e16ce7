"""Parameter sweeps (rww.explore): the table, its agreement with a direct simulation, streamed
scoring, FIC failures, resume after a kill, settings checks and the ``rww explore`` command."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from rww import RWWBold, cli
from rww.explore import (SweepEvaluator, SweepSettingsError, column_name, score_batch_streamed,
                         scoring_bytes_per_simulation, sweep)
from rww.fit import FitTarget
from rww.scoring import score_batch, split_hemispheres
from rww.search import SearchSpace

from helpers import seeded_connectome

N = 6
# 1-ms steps and TR = 0.1 s (100 steps per TR): 70-TR simulations of 6 regions are quick.
FAST = dict(dt=1.0, tr=0.1, backend="numba")
SIM = dict(n_trs=60, burn_in_trs=10, seed=5, **FAST)


@pytest.fixture(scope="module")
def problem():
    sc = seeded_connectome(N, 3)
    model = RWWBold(sc.float(), fic=True, g_relative=True, G=0.85, **FAST)
    bold = model.simulate(80, seed=11).bold[0, 20:].double()
    target = FitTarget(bold=bold, fcd_window=10, fcd_step=3)
    return sc, bold, target


def _evaluator(problem, batch_size=4, **kw):
    sc, _, target = problem
    return SweepEvaluator(sc, target, batch_size=batch_size, hemispheres=split_hemispheres(N),
                          **{**SIM, **kw})


SPACE = SearchSpace({"G_rel": (0.5, 1.0), "w_EE": (0.6, 1.2)})
EXPECTED_HEADER = [
    "candidate", "batch", "G_rel", "w_EE", "G", "G_c", "G_over_Gc", "fic_failed_regions",
    "status", "loss", "fc_r", "fc_r_intra", "fc_mse", "fc_level", "fc_level_diff", "fcd_ks",
    "fcd_ks_all", "fcd_ks_nonoverlap", "fcd_w1", "fcd_w1_all", "fcd_w1_nonoverlap",
    "rate_mean_Hz", "rate_max_Hz", "rate_excess_Hz"]


def _read(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_streamed_scoring_equals_the_whole_batch():
    gen = torch.Generator().manual_seed(0)
    bold = torch.randn(7, 40, N, generator=gen, dtype=torch.float64).cumsum(1)
    target = FitTarget(bold=torch.randn(40, N, generator=gen, dtype=torch.float64).cumsum(0),
                       fcd_window=10, fcd_step=3)
    whole = score_batch(bold, target, split_hemispheres(N))
    for kwargs in ({"chunk": 3}, {"chunk": 1}, {"max_bytes": 1}, {}):
        parts = score_batch_streamed(bold, target, split_hemispheres(N), **kwargs)
        assert set(parts) == set(whole)
        for key in whole:
            if key.startswith("fcd_w1"):    # torch's sum rounds by batch size (documented)
                torch.testing.assert_close(parts[key], whole[key], rtol=1e-13, atol=0)
            else:
                assert torch.equal(parts[key], whole[key]), (kwargs, key)
    per = scoring_bytes_per_simulation(40, N, 10, 3)
    assert per > 8 * 40 * N
    for bad in ({"chunk": 0}, {"max_bytes": 0}):
        with pytest.raises(ValueError, match="positive integer"):
            score_batch_streamed(bold, target, **bad)


def test_sweep_table_columns_and_a_direct_simulation(problem, tmp_path):
    """3 x 2 grid in batches of 4 (the second batch is partial): the CSV has one row per
    candidate with units in the header, and candidate 5's scores are those of the same model
    simulated alone with noise index 5 (and not with noise index 0)."""
    sc, _, target = problem
    ev = _evaluator(problem)
    result = sweep(SPACE, ev, "grid", points={"G_rel": 3, "w_EE": 2}, out=str(tmp_path / "s"),
                   progress=False)
    assert result.complete and result.simulated_batches == [0, 1] and ev.simulations_run == 2
    header, rows = _read(result.paths["csv"])
    assert header == EXPECTED_HEADER
    assert [int(r[0]) for r in rows] == list(range(6))
    assert [int(r[1]) for r in rows] == [0, 0, 0, 0, 1, 1]
    assert all(r[header.index("status")] == "ok" for r in rows)
    assert (tmp_path / "s" / "sweep_heatmaps.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert summary["columns"]["rate_mean_Hz"].endswith("[Hz]")
    row = result.rows[5]
    assert float(rows[5][header.index("fc_r")]) == row["fc_r"]           # full precision
    assert row["G"] == pytest.approx(row["G_rel"] * row["G_c"], rel=1e-12)
    scores = {}
    for offset in (5, 0):
        model = RWWBold(sc.float(), fic=True, batch=1, G=row["G"], w_EE=row["w_EE"], **FAST)
        out = model.simulate(70, seed=5, sim_offset=offset, record=("r_E",))
        scores[offset] = score_batch(out.bold[:, 10:], target, split_hemispheres(N))
        scores[offset]["rate_mean"] = out.records["r_E"][:, 10:].double().mean()
    for key in ("fc_r", "fc_r_intra", "fcd_ks_nonoverlap", "fcd_ks_all", "rate_mean"):
        assert row[key] == pytest.approx(float(scores[5][key].reshape(-1)[0]), abs=2e-5), key
    assert abs(row["fc_r"] - float(scores[0]["fc_r"][0])) > 1e-3      # the noise index matters


def test_fic_failures_are_counted_not_scored(problem):
    """With a low input I_0 and no coupling, FIC finds no w_IE (every rate is below the target
    even without inhibition): the row says in how many regions, and is not scored."""
    sc, _, target = problem
    ev = SweepEvaluator(sc, target, batch_size=4, fixed={"I_0": 0.30}, **SIM)
    result = sweep(SearchSpace({"G": (0.0, 10.0)}), ev, "grid", points=2, progress=False)
    first, second = result.rows
    assert first["status"].startswith("FIC failed") and first["fic_failed_regions"] >= 1
    assert math.isinf(first["loss"]) and "fc_r" not in first
    assert second["fic_failed_regions"] == 0 and second["status"] == "ok"
    nofic = SweepEvaluator(sc, target, batch_size=4, fic=None, **SIM)
    rows = sweep(SearchSpace({"G": (0.1, 0.3)}), nofic, "grid", points=2, progress=False).rows
    assert all(r["fic_failed_regions"] is None and r["status"] == "ok" for r in rows)


class Killed(Exception):
    pass


def test_a_killed_sweep_resumes_without_redoing_batches(problem, tmp_path):
    """Raise after the first written batch (a kill); the rerun simulates only the other
    batches and gives the table of an uninterrupted sweep, byte for byte."""
    reference = sweep(SPACE, _evaluator(problem, batch_size=2), "lhs", n=7, seed=3,
                      out=str(tmp_path / "ref"), figures=False, progress=False)
    out = str(tmp_path / "killed")

    def kill(batch, rows):
        raise Killed(batch)

    first = _evaluator(problem, batch_size=2)
    with pytest.raises(Killed):
        sweep(SPACE, first, "lhs", n=7, seed=3, out=out, figures=False, progress=False,
              on_batch=kill)
    assert first.simulations_run == 1
    assert not (tmp_path / "killed" / "sweep.csv").exists()
    again = _evaluator(problem, batch_size=2)
    result = sweep(SPACE, again, "lhs", n=7, seed=3, out=out, figures=False, progress=False)
    assert result.reused_batches == [0] and result.simulated_batches == [1, 2, 3]
    assert again.simulations_run == 3
    assert open(result.paths["csv"]).read() == open(reference.paths["csv"]).read()
    # a third run simulates nothing
    third = _evaluator(problem, batch_size=2)
    done = sweep(SPACE, third, "lhs", n=7, seed=3, out=out, figures=False, progress=False)
    assert third.simulations_run == 0 and done.reused_batches == [0, 1, 2, 3]


def test_other_settings_are_refused_by_name(problem, tmp_path):
    out = str(tmp_path / "s")
    sweep(SPACE, _evaluator(problem), "grid", points=2, out=out, figures=False, progress=False,
          max_batches=1)
    with pytest.raises(SweepSettingsError, match=r"batch_size \(4 there, 2 now\)") as err:
        sweep(SPACE, _evaluator(problem, batch_size=2), "grid", points=2, out=out,
              progress=False)
    assert "noise_seed" not in str(err.value)
    with pytest.raises(SweepSettingsError, match=r"noise_seed \(5 there, 6 now\)"):
        sweep(SPACE, _evaluator(problem, seed=6), "grid", points=2, out=out, progress=False)
    with pytest.raises(SweepSettingsError, match="points"):
        sweep(SPACE, _evaluator(problem), "grid", points=3, out=out, progress=False)
    result = sweep(SPACE, _evaluator(problem, seed=6), "grid", points=2, out=out,
                   overwrite=True, figures=False, progress=False)
    assert result.reused_batches == [] and result.complete


def test_column_names_carry_units():
    assert column_name("rate_mean") == "rate_mean_Hz"
    assert column_name("J_NMDA") == "J_NMDA_nA"
    assert column_name("tau_E") == "tau_E_ms"
    assert column_name("a_E") == "a_E_per_nC"
    assert column_name("fic_target") == "fic_target_Hz"
    assert column_name("G_rel") == "G_rel"


def test_cli_explore_stops_and_resumes(problem, tmp_path, capsys):
    sc, bold, _ = problem
    np.save(tmp_path / "sc.npy", sc.numpy())
    np.save(tmp_path / "bold.npy", bold.numpy())
    argv = ["explore", str(tmp_path / "sc.npy"), "--normalise", "none", "--bold",
            str(tmp_path / "bold.npy"), "--fcd-window", "10", "--fcd-step", "3", "--tr", "0.1",
            "--dt", "1", "--n-trs", "60", "--burn-in", "10", "--seed", "5", "--bounds",
            "G_rel=0.5:1,w_EE=0.6:1.2", "--points", "G_rel=3,w_EE=2", "--batch-size", "4",
            "--hemispheres", "halves", "--backend", "numba", "--no-progress", "--no-figures",
            "--out", str(tmp_path / "cli")]
    assert cli.main(argv + ["--max-batches", "1"]) == 0
    out, _ = capsys.readouterr()
    assert "1 batch(es) simulated" in out and "stopped early" in out
    assert cli.main(argv) == 0
    out, _ = capsys.readouterr()
    assert "1 batch(es) simulated on 1 rank(s), 1 reused, of 2" in out
    header, rows = _read(tmp_path / "cli" / "sweep.csv")
    assert header == EXPECTED_HEADER and len(rows) == 6
    api = sweep(SPACE, _evaluator(problem), "grid", points={"G_rel": 3, "w_EE": 2},
                out=str(tmp_path / "api"), figures=False, progress=False)
    assert (tmp_path / "cli" / "sweep.csv").read_text() == open(api.paths["csv"]).read()
    assert cli.main(argv[:-1] + [str(tmp_path / "cli"), "--dt", "0.5"]) == 1
    _, err = capsys.readouterr()
    assert "dt_ms (1.0 there, 0.5 now)" in err
    assert cli.main(argv + ["--no-fic"]) == 1
    _, err = capsys.readouterr()
    assert "G_rel: G relative to G_c needs FIC" in err


def test_cli_explore_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explore", "--help"])
    assert exit_.value.code == 0
    out, _ = capsys.readouterr()
    assert "--bounds" in out and "torchrun" in out
