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
