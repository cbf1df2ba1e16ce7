"""Reading one 2-d numeric array from a file, and :class:`DataError`, the error every loader of
:mod:`rww.data` raises.

Formats (see :func:`load_matrix`): ``.npy``; ``.npz`` (the named array or the only one);
``.csv`` / ``.tsv`` / ``.txt`` (comma, tab or whitespace separated, optional header row and label
column, ``#`` comments); ``.mat`` (MATLAB <= v7.2 through ``scipy.io.loadmat``; the named
variable or the only suitable one). An array inside a container can also be named in the path:
``"file.npz:sc"``, ``"file.mat:tc"``. Nothing here validates the values: that is the loaders' job
(:mod:`rww.data.connectome`, :mod:`rww.data.bold`).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

MATRIX_FORMATS = (".npy", ".npz", ".csv", ".tsv", ".txt", ".mat")


class DataError(ValueError):
    """A data file or array that cannot be used. The message is one line: what is wrong, where
    (file, array, index), and what to do about it."""


class DataWarning(UserWarning):
    """Something in a data set that a loader skipped because it is not needed (an empty optional
    file, for instance). The message is one line: what was skipped, where, and what follows from
    it. Loaders also record the message in their metadata (``metadata["warnings"]``)."""


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
