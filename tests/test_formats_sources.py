"""One reader for a structural connectome in every format the loaders accept
(:func:`rww.data.load_connectome_source`): detection from the path, dispatch to the loader, the
options that apply to each format, and errors that list the accepted formats."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import scipy.io

from rww import data
from rww.data import DataError
from test_data import _aal2_94, _neurolib_subject, _tvb_zip

ACCEPTED = (r"matrix: a matrix file .*; tvb: a TVB connectivity \.zip .*; "
            r"neurolib: a neurolib subject folder .*; cubnm: a cuBNM SC file")


@pytest.fixture
def w():
    rng = np.random.default_rng(3)
    m = rng.random((5, 5))
    m = m + m.T
    np.fill_diagonal(m, 0.0)
    return m


@pytest.fixture
def sources(tmp_path, w):
    """One connectome of each format, written as the toolboxes lay them out."""
    labels = [f"r{i}" for i in range(5)]
    paths = {"npy": tmp_path / "w.npy", "csv": tmp_path / "w.csv", "npz": tmp_path / "two.npz",
             "zip": tmp_path / "connectivity_5.zip", "tvb_folder": tmp_path / "unpacked",
             "neurolib": tmp_path / "subjects" / "100307",
             "cubnm": tmp_path / "ctx_parc-schaefer-5_desc-strength.npz",
             "cubnm_fc": tmp_path / "ctx_parc-schaefer-5_desc-fc.npz"}
    np.save(paths["npy"], w)
    np.savetxt(paths["csv"], w, delimiter=",")
    np.savez(paths["npz"], sc=w, other=2 * w)
    _tvb_zip(paths["zip"], w, 10 * w, labels)
    with zipfile.ZipFile(paths["zip"]) as archive:
        archive.extractall(paths["tvb_folder"])                # unpacks to unpacked/conn/...
    _neurolib_subject(paths["neurolib"], w, 7 * w)
    np.savez(paths["cubnm"], w)
    np.savez(paths["cubnm_fc"], np.corrcoef(np.random.default_rng(0).standard_normal((5, 40))))
    return paths, labels


def test_the_format_is_detected_from_the_path(sources):
    paths, _ = sources
    expected = {"npy": "matrix", "csv": "matrix", "npz": "matrix", "zip": "tvb",
                "tvb_folder": "tvb", "neurolib": "neurolib", "cubnm": "cubnm"}
    for name, fmt in expected.items():
        assert data.detect_connectome_format(paths[name]) == fmt, name
    assert data.detect_connectome_format(f"{paths['npz']}:sc") == "matrix"


def test_every_format_loads_the_same_weights_through_its_loader(sources, w):
    paths, labels = sources
    for name in ("npy", "csv", "zip", "tvb_folder", "neurolib", "cubnm"):
        kwargs = {"neurolib_regions": "all"} if name == "neurolib" else {}
        loaded = data.load_connectome_source(paths[name], normalise="max", **kwargs)
        np.testing.assert_allclose(loaded.sc.numpy(), w / w.max(), rtol=1e-15, err_msg=name)
        assert loaded.metadata["preprocessing"][0]["method"] == "max", name
        assert loaded.metadata["n_regions"] == 5 and loaded.metadata["warnings"] == [], name
    tvb = data.load_connectome_source(paths["zip"])
    assert tvb.labels == labels and tvb.metadata["format"] == "tvb"
    np.testing.assert_allclose(tvb.tract_lengths.numpy(), 10 * w, rtol=1e-15)
    neurolib = data.load_connectome_source(paths["neurolib"], neurolib_regions="all")
    assert neurolib.metadata["format"] == "neurolib" and neurolib.labels is None
    np.testing.assert_allclose(neurolib.tract_lengths.numpy(), 7 * w)
    cubnm = data.load_connectome_source(paths["cubnm"])
    assert cubnm.metadata["format"] == "cubnm" and cubnm.metadata["parc"] == "schaefer-5"
    named = data.load_connectome_source(f"{paths['npz']}:other")
    np.testing.assert_array_equal(named.sc.numpy(), 2 * w)
    # format= overrides the name: a cuBNM-named file read as a plain matrix.
    plain = data.load_connectome_source(paths["cubnm"], "matrix")
    assert plain.metadata["format"] == "npz" and plain.metadata["key"] == "arr_0"


def test_neurolib_folders_default_to_neurolibs_80_cortical_regions(tmp_path):
    sc, _ = _aal2_94()
    tc = np.random.default_rng(2).standard_normal((94, 30))
    tc[3] = 1.0                               # a constant region: this run cannot be used
    subject = _neurolib_subject(tmp_path / "101309", sc, runs={"REST1_LR": tc})
    default = data.load_connectome_source(subject)
    assert default.sc.shape == (80, 80) and default.metadata["regions"] == "cortical"
    assert len(default.labels) == 80 and "Thalamus_L" not in default.labels
    full = data.load_connectome_source(subject, neurolib_regions="all")
    assert full.sc.shape == (94, 94) and full.labels[80] == "Thalamus_L"
    # Only the connectome is read: a BOLD run the subject loader refuses does not matter.
    assert full.metadata["runs"] == []
    with pytest.raises(DataError, match=r"TC_rsfMRI_REST1_LR\.mat.*constant series \(regions 3\)"):
        data.load_neurolib_subject(subject)


def test_errors_name_the_accepted_formats_and_the_options_that_do_not_apply(sources, tmp_path):
    paths, _ = sources
    (tmp_path / "w.xlsx").write_bytes(b"")
    with pytest.raises(DataError, match=r"w\.xlsx: unsupported connectome format '\.xlsx'; "
                                        r"give one of: " + ACCEPTED):
        data.load_connectome_source(tmp_path / "w.xlsx")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=r"empty_dir: is a directory, but neither a neurolib subject "
                                        r"folder \(no structural/DTI_CM.mat\) nor an unpacked TVB "
                                        r"connectivity \(no weights.txt\); give one of: " + ACCEPTED):
        data.load_connectome_source(tmp_path / "empty_dir")
    with pytest.raises(DataError, match=r"unknown connectome format 'hdf5'; choose auto or one of: " + ACCEPTED):
        data.load_connectome_source(paths["npy"], "hdf5")
    with pytest.raises(FileNotFoundError, match=r"connectome file not found: .*absent\.zip"):
        data.load_connectome_source(tmp_path / "absent.zip")
    with pytest.raises(DataError, match=r"an array name \(key='sc', FILE:NAME\) applies to \.npz/\.mat "
                                        r"matrix files, not to a TVB connectivity"):
        data.load_connectome_source(paths["zip"], key="sc")
    with pytest.raises(DataError, match=r"neurolib_regions='all': applies to neurolib subject folders"):
        data.load_connectome_source(paths["npy"], neurolib_regions="all")
    with pytest.raises(DataError, match=r"unknown selection 'cortex'"):
        data.load_connectome_source(paths["neurolib"], neurolib_regions="cortex")
    with pytest.raises(DataError, match=r"desc-fc\.npz: a cuBNM fc file, not a structural connectome; "
                                        r"give the \*_desc-strength\.npz file"):
        data.load_connectome_source(paths["cubnm_fc"])
    # A neurolib folder of another size has no "cortical 80": the default asks for a choice.
    with pytest.raises(DataError, match=r"has 5 regions; use regions='all' \(CLI: --neurolib-regions all\)"):
        data.load_connectome_source(paths["neurolib"])


def test_mat_connectome_in_a_neurolib_folder_is_not_mistaken_for_a_matrix(sources, w):
    # The folder, not the DTI_CM.mat inside it, is the neurolib source; the file alone is a matrix.
    paths, _ = sources
    cm = paths["neurolib"] / "structural" / "DTI_CM.mat"
    assert data.detect_connectome_format(cm) == "matrix"
    np.testing.assert_array_equal(data.load_connectome_source(cm).sc.numpy(), w)
    scipy.io.savemat(cm, {"sc": w, "len": 7 * w})             # two candidates: key needed
    np.testing.assert_array_equal(data.load_connectome_source(cm, key="len").sc.numpy(), 7 * w)


# ------------------------------------------------------------------------------------------------
# rww fit on a neurolib subject folder with its own runs (--bold, --held-out-bold, --fc): the
# connectome defaults to neurolib's 80 cortical regions while the files hold 94
# ------------------------------------------------------------------------------------------------

FIT_TINY = ["--tr", "0.01", "--dt", "1", "--backend", "torch", "--burn-in", "2", "--epochs", "1",
            "--n-trs", "24", "--no-progress", "--no-figures"]


def _fit(capsys, *argv):
    import json

    from rww import cli
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    summary = None
    if code == 0:
        out_dir = argv[list(argv).index("--out") + 1]
        with open(f"{out_dir}/summary.json") as fh:
            summary = json.load(fh)
    return code, out, err, summary


@pytest.fixture
def neurolib_runs(tmp_path):
    """A 94-region neurolib subject with two runs (regions x time, as neurolib stores them), and
    the same data cut to neurolib's 80 cortical regions by hand (time x regions)."""
    sc, lengths = _aal2_94()
    rng = np.random.default_rng(5)
    runs = {"REST1_LR": rng.standard_normal((94, 40)), "REST2_LR": rng.standard_normal((94, 40))}
    subject = _neurolib_subject(tmp_path / "100307", sc, lengths, runs=runs)
    keep = [i for i in range(94) if i not in data.NEUROLIB_SUBCORTICAL]
    assert len(keep) == 80
    cut = {}
    for name, tc in runs.items():
        cut[name] = tmp_path / f"{name}_80.npy"
        np.save(cut[name], tc[keep].T)
    np.save(tmp_path / "fc94.npy", np.corrcoef(runs["REST1_LR"]))
    np.save(tmp_path / "fc80.npy", np.corrcoef(runs["REST1_LR"][keep]))
    functional = subject / "functional"
    return subject, {k: functional / f"TC_rsfMRI_{k}.mat" for k in runs}, cut, tmp_path


def test_fit_on_a_neurolib_folder_keeps_the_cortical_regions_of_its_94_region_runs(capsys,
                                                                                  neurolib_runs):
    import json
    subject, runs, cut, tmp = neurolib_runs
    code, _, err, auto = _fit(capsys, "fit", subject, "--bold", runs["REST1_LR"],
                              "--held-out-bold", runs["REST2_LR"], *FIT_TINY, "--out", tmp / "auto")
    assert code == 0, err
    assert auto["n_regions"] == 80 and auto["connectome"]["regions"] == "cortical"
    notes = auto["connectome"]["region_selection"]
    assert len(notes) == 2 and all("kept the 80 cortical ones" in n for n in notes)
    assert notes[0].startswith("--bold ") and notes[1].startswith("--held-out-bold ")
    assert err.count("rww fit: note: ") == 2 and "--neurolib-regions all fits all 94" in err
    # The same fit as with the 80 cortical columns cut by hand: the selection is neurolib's.
    code, _, err, by_hand = _fit(capsys, "fit", subject, "--bold", cut["REST1_LR"],
                                 "--held-out-bold", cut["REST2_LR"], *FIT_TINY,
                                 "--out", tmp / "by_hand")
    assert code == 0, err
    assert "region_selection" not in by_hand["connectome"] and "note:" not in err
    assert auto["fc_r_train"] == by_hand["fc_r_train"]
    assert auto["held_out"]["held-out"]["fc_r"] == by_hand["held_out"]["held-out"]["fc_r"]
    history = [json.loads((tmp / d / "fit.json").read_text())["history"]["loss"]
               for d in ("auto", "by_hand")]
    assert history[0] == history[1]
    # An FC of the files' 94 regions is cut the same way.
    code, _, err, fc94 = _fit(capsys, "fit", subject, "--fc", tmp / "fc94.npy", *FIT_TINY,
                              "--out", tmp / "fc94")
    assert code == 0, err
    code, _, err, fc80 = _fit(capsys, "fit", subject, "--fc", tmp / "fc80.npy", *FIT_TINY,
                              "--out", tmp / "fc80")
    assert code == 0, err
    assert fc94["fc_r_train"] == pytest.approx(fc80["fc_r_train"], abs=1e-12)
    assert fc94["connectome"]["region_selection"][0].startswith("--fc ")
    # --neurolib-regions all fits the runs as stored.
    code, _, err, full = _fit(capsys, "fit", subject, "--neurolib-regions", "all", "--bold",
                              runs["REST1_LR"], *FIT_TINY, "--out", tmp / "all")
    assert code == 0, err
    assert full["n_regions"] == 94 and "region_selection" not in full["connectome"]


@pytest.mark.parametrize("argv, message", [
    (["--neurolib-regions", "all", "--bold", "{cut}"],
     r"--bold .*REST1_LR_80\.npy: shape \(40, 80\) has 80 regions, neurolib's cortical selection, "
     r"but the connectome holds all 94 regions of .*100307 \(--neurolib-regions all\); drop "
     r"--neurolib-regions all to fit neurolib's 80 cortical regions"),
    (["--bold", "{short}"],
     r"--bold .*short\.npy: shape \(40, 50\) has no dimension of 80, the 80 regions read from "
     r".*100307 \(neurolib cortical, the default\), nor 94, the regions in its files; give data in "
     r"the subject's parcellation \(its runs: .*100307/functional/\*\.mat\), with "
     r"--neurolib-regions all for all 94 regions or without it for neurolib's 80 cortical ones"),
    (["--neurolib-regions", "all", "--held-out-bold", "{short}", "--bold", "{run}"],
     r"--held-out-bold .*short\.npy: shape \(40, 50\) has no dimension of 94, the 94 regions "
     r"read from .*100307 \(--neurolib-regions all\); give data"),
    (["--neurolib-regions", "all", "--fc", "{fc80}"],
     r"--fc .*fc80\.npy: shape \(80, 80\) has 80 regions, neurolib's cortical selection"),
    (["--bold", "{run}", "--layout", "time-regions"],
     r"--bold .*TC_rsfMRI_REST1_LR\.mat:tc: 40 regions with --layout time-regions, but the "
     r"neurolib files have 94 \(the connectome keeps 80 of them\); check --layout"),
])
def test_fit_on_a_neurolib_folder_says_which_region_set_the_data_fits(capsys, neurolib_runs, argv,
                                                                     message):
    import re
    subject, runs, cut, tmp = neurolib_runs
    np.save(tmp / "short.npy", np.random.default_rng(0).standard_normal((40, 50)))
    values = {"cut": cut["REST1_LR"], "short": tmp / "short.npy", "run": runs["REST1_LR"],
              "fc80": tmp / "fc80.npy"}
    argv = [a.format(**{k: str(v) for k, v in values.items()}) for a in argv]
    code, _, err, _ = _fit(capsys, "fit", subject, *argv, *FIT_TINY, "--out", tmp / "o")
    assert code == 1 and re.search(message, err), err
    assert len(err.strip().splitlines()) == 1, err
