"""Region x region matrices: structural connectomes (validation, preprocessing, loading),
empirical FC, and empirical FCD values.

Orientation: rww couples ``C @ S_E``, i.e. ``C[i, j]`` is the weight from region j onto region i.
Files are returned as stored; a directed matrix stored source x target needs ``.T``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .formats import DataError, load_matrix

NORMALISATIONS = ("max", "frobenius", "mean_row_sum")


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
