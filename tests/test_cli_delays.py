"""Conduction delays from the command line: ``--lengths FILE`` and ``--velocity V`` (one, or one
per simulation) on ``rww simulate`` and ``rww fit``, recorded in summary.json, equal to the
Python API, and refused with advice where they cannot apply."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rww.model import RWWBold
from helpers import run_cli as run

TINY = ["--tr", "0.005", "--dt", "0.5", "--backend", "torch-checkpoint", "--dtype", "float64",
        "--no-progress"]




@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.random((4, 4))
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    lengths = rng.uniform(2.0, 12.0, (4, 4))
    lengths = (lengths + lengths.T) / 2
    np.fill_diagonal(lengths, 0.0)
    np.savetxt(tmp_path / "sc.csv", w, delimiter=",")
    np.save(tmp_path / "lengths.npy", lengths)
    return tmp_path / "sc.csv", tmp_path / "lengths.npy", w, lengths


def test_simulate_with_delays_equals_the_api(tmp_path, capsys, files):
    sc_path, len_path, w, lengths = files
    out = tmp_path / "run"
    code, _, err = run(capsys, "simulate", sc_path, *TINY, "--trs", 4, "--burn-in", 0,
                       "--seed", 3, "--param", "G=1.5", "--lengths", len_path,
                       "--velocity", "2,4", "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    record = summary["connectome"]["delays"]
    assert summary["batch_figures"]["swept"] == ["velocity"]          # a velocity sweep
    assert summary["batch_figures"]["x"] == [2.0, 4.0]
    # lags rint(L / (v dt)): up to 12 mm / (2 mm/ms * 0.5 ms) = 12 steps at the slower velocity
    expected_lags = np.rint(lengths / (np.array([2.0, 4.0])[:, None, None] * 0.5))
    assert record["max_delay_steps"] == int(expected_lags.max()) > 0
    assert record["velocity_m_per_s"] == [2.0, 4.0] and record["tract_lengths"] == str(len_path)
    bold = np.load(out / "bold.npz")["bold"]
    sc = torch.tensor(w / w.sum(1).mean())
    model = RWWBold(sc, G=1.5, dt=0.5, tr=0.005, batch=2, dtype=torch.float64,
                    backend="torch-checkpoint", lengths=torch.tensor(lengths),
                    velocity=torch.tensor([2.0, 4.0], dtype=torch.float64))
    with torch.no_grad():
        direct = model.simulate(4, seed=3).bold.numpy()
    np.testing.assert_allclose(bold, direct, rtol=1e-12, atol=1e-15)
    plain = RWWBold(sc, G=1.5, dt=0.5, tr=0.005, batch=2, dtype=torch.float64, backend="torch")
    with torch.no_grad():
        undelayed = plain.simulate(4, seed=3).bold.numpy()
    assert np.abs(undelayed - bold).max() > 1e-3 * np.abs(bold).max()      # the delays matter


@pytest.mark.parametrize("extra, message", [
    (["--velocity", "3"], r"--velocity: this connectome comes without tract lengths; give them "
                          r"with --lengths FILE"),
    (["--velocity", "0"], r"--velocity: must be positive"),
    (["--velocity", "fast"], r"is not a number of m/s"),
])
def test_simulate_delay_errors(tmp_path, capsys, files, extra, message):
    sc_path = files[0]
    code, _, err = run(capsys, "simulate", sc_path, *TINY, "--trs", 1, *extra,
                       *(["--lengths", files[1]] if extra[1] != "3" else []),
                       "--out", tmp_path / "x")
    assert code == 1 and err.count("\n") == 1
    assert __import__("re").search(message, err), err


def test_lengths_of_the_wrong_shape_are_refused(tmp_path, capsys, files):
    np.save(tmp_path / "short.npy", np.ones((3, 3)))
    code, _, err = run(capsys, "simulate", files[0], *TINY, "--trs", 1, "--lengths",
                       tmp_path / "short.npy", "--out", tmp_path / "x")
    assert code == 1 and "does not match the connectome's 4 regions" in err


def test_fit_with_delays_records_them_and_the_recipe_refuses(tmp_path, capsys, files):
    sc_path, len_path, w, _ = files
    rng = np.random.default_rng(1)
    fc = np.corrcoef(rng.standard_normal((4, 50)))
    np.save(tmp_path / "fc.npy", fc)
    out = tmp_path / "fit"
    fit_options = [o for o in TINY if o not in ("--dtype", "float64")]
    code, _, err = run(capsys, "fit", sc_path, "--fc", tmp_path / "fc.npy", *fit_options,
                       "--epochs", 1, "--n-trs", 3, "--window-trs", 0, "--burn-in", 0,
                       "--lengths", len_path,
                       "--velocity", 3, "--out", out, "--no-figures")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["connectome"]["delays"]["max_delay_steps"] > 0
    code, _, err = run(capsys, "fit", "--demo", "--velocity", 5, "--out", tmp_path / "demo")
    assert code == 1 and "the recipe (--demo, --recipe) searches and refines without" in err


def test_lengths_with_a_bad_entry_and_velocity_lists_in_fit_name_the_fix(tmp_path, capsys, files):
    sc_path, len_path, _, lengths = files
    bad = lengths.copy()
    bad[1, 2] = -3.0
    np.save(tmp_path / "bad.npy", bad)
    code, _, err = run(capsys, "simulate", sc_path, *TINY, "--trs", 1, "--lengths",
                       tmp_path / "bad.npy", "--out", tmp_path / "x")
    assert code == 1 and "entry (1, 2) is -3.0" in err and "bad.npy" in err
    np.save(tmp_path / "fc.npy", np.eye(4))
    fit_options = [o for o in TINY if o not in ("--dtype", "float64")]
    code, _, err = run(capsys, "fit", sc_path, "--fc", tmp_path / "fc.npy", *fit_options,
                       "--lengths", len_path, "--velocity", "3,5", "--out", tmp_path / "f")
    assert code == 1 and "as many as --realisations" in err
