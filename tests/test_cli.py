"""The ``rww`` command line end to end on tiny problems (plain torch backend, 10 steps per TR),
with outputs checked for content, and one-line errors with a non-zero exit status."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from rww import cli
from rww.data import load_connectome, load_demo
from rww.model import RWWBold
from rww.objectives import fc, fc_correlation
from helpers import run_cli as run

# 0.5 ms steps, 5 ms TRs: 10 steps per TR, so every run takes a fraction of a second. float64:
# in the first tens of ms the BOLD response from rest is ~1e-9, which rounds to 0 in float32.
TINY = ["--tr", "0.005", "--dt", "0.5", "--backend", "torch", "--dtype", "float64", "--no-progress"]




def png_ok(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert 300 <= width <= 4000 and 200 <= height <= 4000, (path, width, height)
    assert os.path.getsize(path) > 5000, path


def finite_numbers(obj):
    """Every number in a JSON structure is finite (JSON cannot carry NaN, so check for None)."""
    if isinstance(obj, dict):
        return all(finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(finite_numbers(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


@pytest.fixture
def connectome(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.random((4, 4))
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    path = tmp_path / "sc.csv"
    np.savetxt(path, w, delimiter=",")
    return path, w


def test_simulate_outputs_match_a_direct_simulation(tmp_path, capsys, connectome):
    path, w = connectome
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "simulate", path, *TINY, "--trs", 6, "--burn-in", 2,
                            "--batch", 2, "--chunk-trs", 3, "--seed", 5, "--param", "G=0.3",
                            "--param", "I_0=0.38,0.37,0.36,0.39", "--out", out)
    assert code == 0, err
    assert "simulated 2 x 6 TRs x 4 regions" in stdout
    saved = np.load(out / "bold.npz", allow_pickle=False)
    assert saved["bold"].shape == (2, 6, 4)
    assert float(saved["tr"]) == 0.005
    np.testing.assert_allclose(saved["time_s"], 0.005 * np.arange(1, 7))
    # The chunked run (chunks of 3 TRs continuing state and step index, 2 burn-in TRs dropped)
    # reproduces one uninterrupted simulation bit for bit.
    sc = load_connectome(path, normalise="mean_row_sum")
    np.testing.assert_allclose(sc.numpy(), w / w.sum(1).mean(), rtol=1e-14)
    model = RWWBold(sc, tr=0.005, dt=0.5, batch=2, backend="torch", G=0.3, dtype=torch.float64,
                    I_0=torch.tensor([0.38, 0.37, 0.36, 0.39], dtype=torch.float64))
    direct = model.simulate(8, seed=5, record=("r_E",))
    np.testing.assert_array_equal(saved["bold"], direct.bold[:, 2:].numpy())
    rate = direct.records["r_E"][:, 2:].double().mean(1)
    np.testing.assert_allclose(saved["rate_E_mean"], rate.numpy(), rtol=1e-12)
    np.testing.assert_allclose(saved["fc"], fc(torch.tensor(saved["bold"]).double()).numpy(), rtol=1e-12)
    meta = json.loads(str(saved["metadata"]))
    assert meta["connectome"]["preprocessing"][0]["method"] == "mean_row_sum"

    summary = json.loads((out / "summary.json").read_text())
    assert finite_numbers(summary)
    assert (summary["n_trs"], summary["burn_in_trs"], summary["batch"], summary["steps_per_tr"]) == (6, 2, 2, 10)
    assert summary["duration_s"] == pytest.approx(0.03) and summary["simulated_s"] == pytest.approx(0.04)
    assert summary["parameters"]["G"] == 0.3 and summary["parameters"]["I_0"] == [0.38, 0.37, 0.36, 0.39]
    assert summary["parameters"]["w_EE"] == 1.4 and summary["backend"] == {"requested": "torch", "used": "torch"}
    assert summary["firing_rate_E_hz"]["per_simulation"] == pytest.approx(rate.mean(1).tolist(), rel=1e-12)
    assert summary["bold"]["shape"] == [2, 6, 4]
    assert summary["fc_correlation_with_demo"] is None
    assert summary["timings"]["simulate_s"] > 0 and summary["timings"]["total_s"] >= summary["timings"]["simulate_s"]
    assert summary["command"].startswith("rww simulate ")
    # A batch of 2 (noise realisations): the batch figures too (tests/test_cli_batch_figures.py).
    assert sorted(os.path.basename(f) for f in summary["outputs"]["figures"]) == [
        "batch_summary.png", "bold_traces.png", "fc_batch.png", "fc_simulated.png"]
    for name in ("bold_traces.png", "fc_simulated.png", "batch_summary.png", "fc_batch.png"):
        png_ok(out / name)


def test_simulate_demo_without_parameters_runs_the_packaged_fitted_point(tmp_path, capsys):
    """``rww simulate --demo`` with no --param/--params simulates rww/datasets/demo_fit/params.json
    (per-region w_EE, w_EI and J_NMDA lists, FIC on) unchanged."""
    from rww.data import DEMO_FITTED_PARAMS
    packaged = json.loads(DEMO_FITTED_PARAMS.read_text())
    out = tmp_path / "fitted"
    code, _, err = run(capsys, "simulate", "--demo", *TINY, "--trs", 3, "--burn-in", 1,
                       "--out", out)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    params = summary["parameters"]
    for name in ("w_EE", "w_EI", "J_NMDA"):
        assert isinstance(packaged[name], list) and len(packaged[name]) == 100
        assert params[name] == pytest.approx(packaged[name], rel=1e-6), name
    assert params["G"] == pytest.approx([packaged["G"]], rel=1e-6)
    assert params["sigma"] == pytest.approx(packaged["sigma"], rel=1e-6)
    assert summary["fic"]


def test_simulate_demo_compares_with_the_empirical_fc(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "simulate", "--demo", *TINY, "--trs", 8, "--burn-in", 1,
                            "--param", "G=0.5", "--out", out)
    assert code == 0, err
    saved = np.load(out / "bold.npz")
    assert saved["bold"].shape == (1, 8, 100) and saved["labels"][0] == "LH_Vis_1"
    summary = json.loads((out / "summary.json").read_text())
    demo = load_demo(include_bold=False)
    expected = fc_correlation(fc(torch.tensor(saved["bold"]).double()), demo.fc)
    assert summary["fc_correlation_with_demo"]["per_simulation"] == pytest.approx(expected.tolist(), abs=1e-12)
    assert f"FC r with the demo FC {expected.item():.3f}" in stdout
    assert "HCP" in summary["connectome"]["licence"]
    png_ok(out / "fc_vs_empirical.png")


def test_duration_rounds_up_to_whole_trs_and_params_file(tmp_path, capsys, connectome):
    path, _ = connectome
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"G": 0.2, "sigma": 0.02, "w_EE": [1.3, 1.4, 1.5, 1.4]}))
    code, _, err = run(capsys, "simulate", path, *TINY, "--duration", 0.012, "--burn-in", 0,
                       "--params", params, "--param", "G=0.4", "--no-figures", "--out", tmp_path / "o")
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_trs"] == 3 and summary["duration_s"] == pytest.approx(0.015)   # ceil(2.4)
    assert summary["parameters"]["G"] == 0.4 and summary["parameters"]["sigma"] == 0.02
    assert summary["parameters"]["w_EE"] == [1.3, 1.4, 1.5, 1.4]
    assert summary["outputs"]["figures"] == []


def test_progress_bar_advances_per_chunk(tmp_path, capsys, connectome):
    path, _ = connectome
    code, _, err = run(capsys, "simulate", path, *TINY[:-1], "--trs", 6, "--burn-in", 0,
                       "--chunk-trs", 2, "--no-figures", "--out", tmp_path / "o")
    assert code == 0
    for done in ("0/6", "2/6", "4/6", "6/6"):
        assert f"rww simulate: " in err and f"| {done} [" in err, err


@pytest.mark.parametrize("setup, argv, message", [
    ("nonsquare", [], r"square matrix \(N, N\), got shape \(3, 4\)"),
    ("nan", [], r"NaN or infinite value\(s\), first at \[0, 1\]"),
    ("truncated", [], r"cannot read as \.npy"),
    ("corrupt_npz", [], r"cannot read as \.npz"),
    ("ambiguous_npz", [], r"several arrays \(a \(3, 3\), b \(3, 3\)\)"),
    ("missing", [], r"connectome file not found"),
    ("good", ["--param", "Q=1"], r"unknown parameter 'Q'"),
    ("good", ["--param", "G"], r"--param: expected NAME=VALUE"),
    ("good", ["--device", "cuda:7"], r"--device cuda:7: CUDA is not available"),
    ("good", ["--dt", "0.3", "--tr", "0.005"], r"not a whole number of steps"),
    ("good", ["--params", "nofile.json"], r"parameter file not found"),
    ("good", ["--demo"], r"give a connectome file or --demo, not both"),
    ("good", ["--dt", "1000", "--tr", "3", "--trs", "5"], r"diverged at step .*try a smaller --dt"),
])
def test_simulate_errors_are_one_line(tmp_path, capsys, setup, argv, message):
    path = tmp_path / "sc.npy"
    if setup == "nonsquare":
        np.save(path, np.ones((3, 4)))
    elif setup == "nan":
        np.save(path, np.array([[0, np.nan, 1], [1, 0, 1], [1, 1, 0]]))
    elif setup == "truncated":
        np.save(path, np.ones((30, 30)))
        path.write_bytes(path.read_bytes()[:300])
    elif setup == "corrupt_npz":
        path = tmp_path / "sc.npz"
        path.write_bytes(b"PK\x03\x04 broken")
    elif setup == "ambiguous_npz":
        path = tmp_path / "sc.npz"
        np.savez(path, a=np.ones((3, 3)), b=np.ones((3, 3)))
    elif setup == "good":
        np.save(path, np.ones((3, 3)) - np.eye(3))
    argv = list(argv)
    if "--trs" not in argv:
        argv += ["--trs", "3"]
    if "--dt" not in argv:
        argv += ["--dt", "0.5", "--tr", "0.005"]
    code, out, err = run(capsys, "simulate", path, "--backend", "torch", "--no-progress",
                         "--burn-in", "0", "--out", tmp_path / "o", *argv)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rww simulate: error: ")
    import re
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err


def test_missing_connectome_and_usage_errors(capsys):
    code, _, err = run(capsys, "simulate", "--trs", 2)
    assert code == 1 and "give a structural connectivity file, or --demo" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["simulate", "--trs", "3", "--duration", "1"])       # mutually exclusive
    assert exit_info.value.code == 2
    capsys.readouterr()
    assert cli.main([]) == 2


def test_debug_prints_the_traceback(tmp_path, capsys):
    code, _, err = run(capsys, "simulate", tmp_path / "absent.npy", "--debug")
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("rww simulate: error:")


def test_info_text_and_json(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert out.startswith("rww ") and "backends:" in out and "devices:" in out
    assert f"torch {torch.__version__}" in out
    code, out, _ = run(capsys, "info", "--json")
    info = json.loads(out)
    assert info["versions"]["torch"] == torch.__version__
    assert info["backends"]["torch"]["available"] and info["backends"]["torch"]["cpu"]["supported"]
    assert info["devices"]["cuda_available"] == torch.cuda.is_available()
    assert info["auto_backend"]["cpu"] in ("torch", "numba")
    assert set(info["backends"]) == {"torch", "torch-checkpoint", "numba", "triton"}


def test_info_warmup_reports_the_compile_time(capsys, monkeypatch):
    import types
    fake = types.ModuleType("rww.ops.numba.backend")
    fake.warmup = lambda: 1.25
    monkeypatch.setitem(sys.modules, "rww.ops.numba.backend", fake)
    code, out, err = run(capsys, "info", "--warmup")
    assert code == 0, err
    assert "warm-up (compile or load every kernel variant): 1.25 s" in out
    del fake.warmup
    from rww.cli.info import collect_info
    info = collect_info(warmup=True)
    assert info["numba_cache"]["warmup_s"] is None and "no warmup()" in info["numba_cache"]["warmup"]
    monkeypatch.setitem(sys.modules, "rww.ops.numba.backend", None)       # import now fails
    code, out, _ = run(capsys, "info")
    assert code == 0 and "CPU (numba) backend not installed" in out


def test_commands_registered_from_other_modules(tmp_path, capsys, monkeypatch):
    (tmp_path / "rww_test_hello_cmd.py").write_text(textwrap.dedent("""
        def add_parser(subparsers):
            p = subparsers.add_parser("hello", help="say hello")
            p.add_argument("--name", default="world")
            p.set_defaults(handler=lambda args: print(f"hello {args.name}") or 0)
            return p
    """))
    (tmp_path / "rww_test_broken_cmd.py").write_text("raise ImportError('needs a missing thing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMANDS", {"hello": "rww_test_hello_cmd", "broken": "rww_test_broken_cmd"})
    code, out, _ = run(capsys, "hello", "--name", "rww")
    assert code == 0 and out.strip() == "hello rww"
    code, _, err = run(capsys, "broken")
    assert code == 1 and err.strip() == ("rww broken: error: rww broken is unavailable: "
                                        "rww_test_broken_cmd failed to import (ImportError: needs a missing thing)")
    code, out, _ = run(capsys, "info", "--json")                       # others unaffected
    assert code == 0 and json.loads(out)["versions"]["rww"]


def test_entry_point_in_a_subprocess(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1\n1,nan\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-m", "rww", "simulate", str(bad), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"rww simulate: error: {bad}: 1 NaN or infinite value(s), first at [1, 1]; a connectome "
        "must be finite (replace missing connections by 0)"]


# ------------------------------------------------------------------------------------------------
# The connectome argument in every format the loaders read
# ------------------------------------------------------------------------------------------------

def _weights(n=5, seed=7):
    rng = np.random.default_rng(seed)
    w = rng.random((n, n))
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    return w


def _simulate(capsys, source, out, *extra):
    code, _, err = run(capsys, "simulate", source, *extra, *TINY, "--trs", 3, "--burn-in", 0,
                       "--seed", 2, "--no-figures", "--out", out)
    assert code == 0, err
    saved = np.load(out / "bold.npz")
    summary = json.loads((out / "summary.json").read_text())
    return saved, summary, err


def test_simulate_reads_every_connectome_format(tmp_path, capsys):
    from test_data import _neurolib_subject, _tvb_zip
    w = _weights()
    labels = [f"region{i}" for i in range(5)]
    np.save(tmp_path / "w.npy", w)
    _tvb_zip(tmp_path / "connectivity_5.zip", w, 10 * w, labels)
    np.savez(tmp_path / "ctx_parc-schaefer-5_desc-strength.npz", w)
    _neurolib_subject(tmp_path / "100307", w, 7 * w)
    reference, _, _ = _simulate(capsys, tmp_path / "w.npy", tmp_path / "matrix")
    for source, extra, fmt in (("connectivity_5.zip", [], "tvb"),
                               ("ctx_parc-schaefer-5_desc-strength.npz", [], "cubnm"),
                               ("100307", ["--neurolib-regions", "all"], "neurolib")):
        saved, summary, _ = _simulate(capsys, tmp_path / source, tmp_path / fmt, *extra)
        # The same weights, the same preprocessing: the same BOLD, bit for bit.
        np.testing.assert_array_equal(saved["bold"], reference["bold"])
        assert summary["connectome"]["format"] == fmt
        assert summary["connectome"]["preprocessing"][0]["method"] == "mean_row_sum"
        assert summary["connectome"]["source"] == str(tmp_path / source)
    tvb = np.load(tmp_path / "tvb" / "bold.npz")
    assert tvb["labels"].tolist() == labels


def test_simulate_on_a_neurolib_folder_uses_neurolibs_80_regions_unless_told(tmp_path, capsys):
    from test_data import _aal2_94, _neurolib_subject
    sc, lengths = _aal2_94()
    subject = _neurolib_subject(tmp_path / "101309", sc, lengths)
    saved, summary, _ = _simulate(capsys, subject, tmp_path / "cortical")
    assert saved["bold"].shape == (1, 3, 80) and summary["n_regions"] == 80
    assert summary["connectome"]["regions"] == "cortical"
    assert "Thalamus_L" not in saved["labels"].tolist() and saved["labels"][40] == "Calcarine_L"
    saved, summary, _ = _simulate(capsys, subject, tmp_path / "all", "--neurolib-regions", "all")
    assert saved["bold"].shape == (1, 3, 94) and saved["labels"][80] == "Thalamus_L"


def test_simulate_on_a_tvb_zip_with_empty_tract_lengths_warns_and_runs(tmp_path, capsys):
    from test_data import _tvb_zip
    w = _weights()
    _tvb_zip(tmp_path / "c.zip", w, w, [f"r{i}" for i in range(5)],
             replace={"tract_lengths.txt": ""})
    saved, summary, err = _simulate(capsys, tmp_path / "c.zip", tmp_path / "o")
    assert saved["bold"].shape == (1, 3, 5)
    line = (f"rww simulate: warning: {tmp_path / 'c.zip'}!conn/tract_lengths.txt: empty (no data "
            "rows), skipped: tract_lengths is None")
    assert line in err and len([x for x in err.splitlines() if "tract_lengths" in x]) == 1
    assert summary["connectome"]["empty"] == ["conn/tract_lengths.txt"]
    assert summary["connectome"]["warnings"][0] in err


@pytest.mark.parametrize("setup, argv, message", [
    ("xlsx", [], r"w\.xlsx: unsupported connectome format '\.xlsx'; give one of: matrix: a matrix "
                 r"file .*; tvb: a TVB connectivity \.zip .*; neurolib: a neurolib subject folder "
                 r".*; cubnm: a cuBNM SC file \(\*_desc-strength\.npz\)$"),
    ("folder", [], r"folder: is a directory, but neither a neurolib subject folder \(no "
                   r"structural/DTI_CM\.mat\) nor an unpacked TVB connectivity .*; give one of: "
                   r"matrix: .*; tvb: .*; neurolib: .*; cubnm: "),
    ("npy", ["--neurolib-regions", "all"], r"--neurolib-regions: applies to neurolib subject "
                                           r"folders, and .*w\.npy is read as a matrix file"),
    ("zip", ["--key", "sc"], r"--key: names an array in an \.npz/\.mat matrix file, and "
                             r".*c\.zip is read as a TVB connectivity \.zip"),
    ("npy", ["--sc-format", "tvb"], r"w\.npy: not a readable zip archive"),
    ("fc", [], r"desc-fc\.npz: a cuBNM fc file, not a structural connectome; give the "
               r"\*_desc-strength\.npz file"),
    ("neurolib5", [], r"DTI_CM\.mat: regions='cortical' selects neurolib's 80 cortical regions of "
                      r"its 94-region AAL2 connectome, but this one has 5 regions; use "
                      r"regions='all' \(CLI: --neurolib-regions all\)"),
    ("demo", ["--sc-format", "tvb"], r"--sc-format: describes a connectome path; --demo is the "
                                     r"embedded HCP Schaefer-100 SC"),
])
def test_connectome_format_errors_are_one_line(tmp_path, capsys, setup, argv, message):
    from test_data import _neurolib_subject, _tvb_zip
    w = _weights()
    source = {"xlsx": tmp_path / "w.xlsx", "folder": tmp_path / "folder",
              "npy": tmp_path / "w.npy", "zip": tmp_path / "c.zip",
              "fc": tmp_path / "ctx_parc-schaefer-5_desc-fc.npz",
              "neurolib5": tmp_path / "sub", "demo": "--demo"}[setup]
    if setup == "xlsx":
        source.write_bytes(b"")
    elif setup == "folder":
        source.mkdir()
        (source / "notes.txt").write_text("not a connectome")
    elif setup == "npy":
        np.save(source, w)
    elif setup == "zip":
        _tvb_zip(source, w, w, [f"r{i}" for i in range(5)])
    elif setup == "fc":
        np.savez(source, np.corrcoef(np.random.default_rng(0).standard_normal((5, 30))))
    elif setup == "neurolib5":
        _neurolib_subject(source, w)
    code, _, err = run(capsys, "simulate", source, *argv, *TINY, "--trs", 2, "--out", tmp_path / "o")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rww simulate: error: "), err
    import re
    assert re.search(message, lines[0]), lines[0]


def test_fit_reads_a_tvb_zip_and_its_resume_refuses_another_connectome(tmp_path, capsys):
    from test_data import _tvb_zip
    w = _weights()
    _tvb_zip(tmp_path / "c.zip", w, w, [f"r{i}" for i in range(5)])
    np.savetxt(tmp_path / "other.csv", _weights(seed=8), delimiter=",")
    bold = np.random.default_rng(1).standard_normal((40, 5))
    np.save(tmp_path / "fc.npy", np.corrcoef(bold.T))
    fit_args = ["--fc", tmp_path / "fc.npy", "--tr", "0.01", "--dt", "1", "--backend", "torch",
                "--burn-in", "2", "--no-progress", "--no-figures", "--n-trs", 8, "--window-trs", 8, "--learn", "G",
                "--param", "G=0.4", "--out", tmp_path / "fit"]
    code, _, err = run(capsys, "fit", tmp_path / "c.zip", *fit_args, "--epochs", 1)
    assert code == 0, err
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert summary["connectome"]["format"] == "tvb" and summary["n_regions"] == 5
    # Resuming onto another subject's connectome would replace it by the checkpoint's: refused.
    code, _, err = run(capsys, "fit", tmp_path / "other.csv", *fit_args, "--epochs", 2, "--resume")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "the saved connectome 'sc' differs from this model's" in lines[0]
    assert "rww fit --resume: the same connectome and preprocessing options" in lines[0]
    code, _, err = run(capsys, "fit", tmp_path / "c.zip", *fit_args, "--epochs", 2, "--resume")
    assert code == 0, err
