"""BOLD time series: validation and orientation (time x regions), and loading from a file.

A BOLD layout is never guessed from which dimension is larger: it is given (``layout``) or
identified by the connectome's number of regions (see :func:`validate_bold`).
"""

from __future__ import annotations

import numpy as np
import torch

from .formats import DataError, load_matrix

LAYOUTS = ("time-regions", "regions-time")


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
