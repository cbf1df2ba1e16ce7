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
from rww.explore import (SweepEvaluator, SweepSettingsError, column_name, heatmaps,
                         score_batch_streamed, scoring_bytes_per_simulation, sweep)
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
    for bad in ({"chunk": 0}, {"max_bytes": 0}, {"chunk": 2, "max_bytes": 0},
                {"chunk": True}, {"max_bytes": True}, {"chunk": 2, "max_bytes": -1},
                {"chunk": 2.0}):
        with pytest.raises(ValueError, match="positive integer"):
            score_batch_streamed(bold, target, **bad)
    with pytest.raises(ValueError, match="empty batch"):
        score_batch_streamed(bold[:0], target, chunk=2)


def test_scoring_bytes_default_step_is_the_upper_bound():
    """fcd_step=None means a window at every TR (documented): the most windows, so the
    estimate bounds any step's."""
    assert scoring_bytes_per_simulation(40, N, 10) == scoring_bytes_per_simulation(40, N, 10, 1)
    assert scoring_bytes_per_simulation(40, N, 10) > scoring_bytes_per_simulation(40, N, 10, 3)
    assert scoring_bytes_per_simulation(40, N) < scoring_bytes_per_simulation(40, N, 10, 3)
    for bad in ({"fcd_window": 10, "fcd_step": 0}, {"fcd_window": 1}, {"fcd_window": True}):
        with pytest.raises(ValueError):
            scoring_bytes_per_simulation(40, N, **bad)


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
    assert summary["seconds"] == result.seconds > 0          # the final value, recorded once
    with pytest.raises(ValueError, match="x and y are both"):
        heatmaps(result, str(tmp_path / "same.png"), x="w_EE", y="w_EE")
    with pytest.raises(TypeError, match="SweepEvaluator"):
        sweep(SPACE, object(), "grid", points=2, progress=False)
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


def _strict_json(path):
    """Parse as standard JSON (what jq and JavaScript accept): no Infinity, -Infinity, NaN."""
    def refuse(name):
        raise ValueError(f"{path}: non-standard JSON constant {name}")
    with open(path) as fh:
        return json.load(fh, parse_constant=refuse)


def test_fic_failures_are_counted_not_scored(problem, tmp_path):
    """With a low input I_0 and no coupling, FIC finds no w_IE (every rate is below the target
    even without inhibition): the row says in how many regions, and is not scored. Its loss
    (not a finite number) is None in the rows, null in standard-JSON files and empty in the
    CSV; a resume reads back the same table."""
    sc, _, target = problem
    ev = SweepEvaluator(sc, target, batch_size=4, fixed={"I_0": 0.30}, **SIM)
    out = tmp_path / "fic"
    space = SearchSpace({"G": (0.0, 10.0)})
    result = sweep(space, ev, "grid", points=2, progress=False, out=str(out), figures=False)
    first, second = result.rows
    assert first["status"].startswith("FIC failed") and first["fic_failed_regions"] >= 1
    assert first["loss"] is None and "fc_r" not in first
    assert second["fic_failed_regions"] == 0 and second["status"] == "ok"
    assert math.isfinite(second["loss"]) and result.best(2) == [second]
    batch = _strict_json(out / "batches" / "batch_000000.json")
    assert batch["rows"][0]["loss"] is None
    for name in ("settings.json", "sweep.json"):
        _strict_json(out / name)
    header, rows = _read(out / "sweep.csv")
    assert rows[0][header.index("loss")] == ""
    again = SweepEvaluator(sc, target, batch_size=4, fixed={"I_0": 0.30}, **SIM)
    resumed = sweep(space, again, "grid", points=2, progress=False, out=str(out), figures=False)
    assert resumed.reused_batches == [0] and again.simulations_run == 0
    assert resumed.rows == result.rows
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


def test_auto_backend_is_pinned_in_the_settings(problem, tmp_path, monkeypatch):
    """The settings name the backend "auto" resolved to: a resume where "auto" would pick
    another backend is refused by name."""
    import rww.ops.scan as scan
    out = str(tmp_path / "s")
    ev = _evaluator(problem, backend="auto")
    picked = scan.auto_backend_name(torch.device("cpu"))
    assert ev.backend == picked != "auto"
    done = sweep(SPACE, ev, "grid", points=2, out=out, figures=False, progress=False,
                 max_batches=1)
    assert done.settings["backend"] == picked
    other = "torch" if picked != "torch" else "numba"
    monkeypatch.setattr(scan, "auto_backend_name", lambda device: other)
    with pytest.raises(SweepSettingsError, match=rf'backend \("{picked}" there, "{other}" now\)'):
        sweep(SPACE, _evaluator(problem, backend="auto"), "grid", points=2, out=out,
              progress=False)


def test_an_unusable_output_folder_raises_its_oserror(problem, tmp_path):
    """A folder that cannot be created is an OSError naming the path, not a settings error."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError, match="file") as err:
        sweep(SPACE, _evaluator(problem), "grid", points=2, out=str(tmp_path / "file" / "s"),
              progress=False)
    assert not isinstance(err.value, SweepSettingsError)


def test_overwrite_removes_every_output_of_the_old_sweep(problem, tmp_path):
    out = tmp_path / "s"
    sweep(SPACE, _evaluator(problem), "grid", points=2, out=str(out), progress=False)
    for name in ("sweep.csv", "sweep.json", "sweep_heatmaps.png"):
        assert (out / name).exists()
    again = sweep(SPACE, _evaluator(problem, batch_size=2), "grid", points=2, out=str(out),
                  overwrite=True, max_batches=1, progress=False)
    assert not again.complete
    for name in ("sweep.csv", "sweep.json", "sweep_heatmaps.png"):
        assert not (out / name).exists(), name          # nothing of the discarded sweep stays


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


def test_cli_explore_sweeps_a_map_coefficient(problem, tmp_path, capsys):
    """--maps NAME=FILE with a PARAM:MAP bound: the table equals the API's sweep with the same
    map; a bound naming a map that was not given is refused with the option to add."""
    sc, bold, _ = problem
    np.save(tmp_path / "sc.npy", sc.numpy())
    np.save(tmp_path / "bold.npy", bold.numpy())
    gradient = np.linspace(-1.0, 1.0, N)
    np.savetxt(tmp_path / "map.txt", gradient)
    argv = ["explore", str(tmp_path / "sc.npy"), "--normalise", "none", "--bold",
            str(tmp_path / "bold.npy"), "--fcd-window", "10", "--fcd-step", "3", "--tr", "0.1",
            "--dt", "1", "--n-trs", "60", "--burn-in", "10", "--seed", "5", "--bounds",
            "G_rel=0.6:0.9,w_EE:grad=-0.3:0.3", "--points", "2", "--batch-size", "4",
            "--backend", "numba", "--no-progress", "--no-figures", "--out", str(tmp_path / "m")]
    assert cli.main(argv[:-2] + ["--out", str(tmp_path / "x")]) == 1
    _, err = capsys.readouterr()
    assert "needs the regional map 'grad'; add --maps grad=FILE" in err
    assert cli.main(argv + ["--maps", f"grad={tmp_path / 'map.txt'}"]) == 0
    capsys.readouterr()
    sc_, _, target = problem
    ev = SweepEvaluator(sc_, target, batch_size=4, maps={"grad": torch.tensor(gradient)}, **SIM)
    api = sweep(SearchSpace({"G_rel": (0.6, 0.9), "w_EE:grad": (-0.3, 0.3)}), ev, "grid",
                points=2, out=str(tmp_path / "api"), figures=False, progress=False)
    assert (tmp_path / "m" / "sweep.csv").read_text() == open(api.paths["csv"]).read()


def test_cli_explore_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explore", "--help"])
    assert exit_.value.code == 0
    out, _ = capsys.readouterr()
    assert "--bounds" in out and "torchrun" in out
