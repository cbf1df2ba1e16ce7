"""The embedded HCP Schaefer-100 demo dataset (:func:`load_demo`): cuBNM example data shipped in
``rww/datasets/cubnm_hcp`` (licence and attribution in its README.md and LICENSE), read with
:func:`rww.data.toolboxes.load_cubnm_file` and checked against the SHA-256 sums of its
``MANIFEST.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .connectome import preprocess_connectome
from .formats import DataError
from .toolboxes import DEMO_TR, load_cubnm_file

# The package data live in rww/datasets/, next to this package (rww/data/).
_DATASETS = Path(__file__).resolve().parent.parent / "datasets"
DEMO_DIR = _DATASETS / "cubnm_hcp"
#: Parameters of the demo's fitted working point (written by ``rww fit --demo``; see the README
#: next to it), used by ``rww simulate --demo`` when no parameters are given.
DEMO_FITTED_PARAMS = _DATASETS / "demo_fit" / "params.json"
YEO7_NAMES = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")


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
        (:func:`rww.scoring.split_hemispheres`)."""
        from ..scoring import split_hemispheres
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
