"""Functional connectivity (FC), its dynamics (FCD), and comparisons between them.

All functions are batched over leading dimensions and differentiable.
"""

from __future__ import annotations

import torch


def _check_series(bold: torch.Tensor, name: str = "bold", min_length: int = 2) -> torch.Tensor:
    if not torch.is_tensor(bold) or bold.dim() < 2:
        raise ValueError(f"{name}: expected a tensor (..., T, N), got "
                         f"{tuple(bold.shape) if torch.is_tensor(bold) else type(bold).__name__}")
    if not bold.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor, got {bold.dtype}")
    if bold.shape[-2] < min_length:
        raise ValueError(f"{name}: needs at least {min_length} time points, got {bold.shape[-2]}")
    return bold


def pearson_matrix(series: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Pearson correlation between the columns of ``series`` ``(..., T, M)`` -> ``(..., M, M)``.

    A constant column has no defined correlation: the result is NaN there unless ``eps > 0`` is
    added to the variances.
    """
    centred = series - series.mean(dim=-2, keepdim=True)
    cov = centred.transpose(-1, -2) @ centred
    std = torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1) + eps)
    return cov / (std.unsqueeze(-1) * std.unsqueeze(-2))


def fc(bold: torch.Tensor) -> torch.Tensor:
    """Functional connectivity: Pearson correlation over time between regions.

    Args:
        bold: ``(..., T, N)`` time series (T >= 2).

    Returns:
        ``(..., N, N)``, ones on the diagonal. Raises if a region's series is constant.
    """
    bold = _check_series(bold)
    std = bold.detach().std(dim=-2)
    if (std == 0).any():
        idx = torch.nonzero(std == 0)[0].tolist()
        raise ValueError(f"bold: region series at index {idx} (leading dims..., region) is "
                         "constant; its correlation is undefined")
    return pearson_matrix(bold)


def lower_triangle(matrix: torch.Tensor, offset: int = -1) -> torch.Tensor:
    """Entries below the diagonal of ``(..., N, N)`` -> ``(..., N(N-1)/2)`` (row-major order)."""
    n = matrix.shape[-1]
    rows, cols = torch.tril_indices(n, n, offset=offset, device=matrix.device)
    return matrix[..., rows, cols]


def fcd_windows(n_time: int, window: int, step: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the FCD windows: starts 0, step, 2*step, ... while start+window <= T."""
    if window < 2 or step < 1:
        raise ValueError(f"fcd: window must be >= 2 and step >= 1, got window={window}, step={step}")
    if window > n_time:
        raise ValueError(f"fcd: window={window} is longer than the series ({n_time} time points)")
    return [(s, s + window) for s in range(0, n_time - window + 1, step)]


def fcd(bold: torch.Tensor, window: int = 30, step: int = 5) -> torch.Tensor:
    """Functional connectivity dynamics.

    For each window of ``window`` consecutive TRs (starting every ``step`` TRs, see
    :func:`fcd_windows`), the FC's entries below the diagonal form a vector; the FCD is the Pearson
    correlation matrix between those vectors.

    Args:
        bold: ``(..., T, N)``.
        window: window length in TRs (default 30, about 21.6 s at TR = 0.72 s).
        step: window step in TRs.

    Returns:
        ``(..., W, W)`` with W the number of windows.
    """
    bold = _check_series(bold)
    spans = fcd_windows(bold.shape[-2], window, step)
    starts = torch.tensor([s for s, _ in spans], device=bold.device)
    index = starts.view(-1, 1) + torch.arange(window, device=bold.device).view(1, -1)
    windows = bold[..., index, :]                               # (..., W, window, N)
    vectors = lower_triangle(pearson_matrix(windows, eps=1e-12))  # (..., W, M)
    return pearson_matrix(vectors.transpose(-1, -2), eps=1e-12)


def fc_correlation(fc_a: torch.Tensor, fc_b: torch.Tensor) -> torch.Tensor:
    """Pearson r between the lower triangles of two FC matrices ``(..., N, N)`` -> ``(...)``."""
    if fc_a.shape[-2:] != fc_b.shape[-2:]:
        raise ValueError(f"fc_correlation: shapes {tuple(fc_a.shape)} and {tuple(fc_b.shape)} "
                         "differ in their last two dimensions")
    a, b = lower_triangle(fc_a), lower_triangle(fc_b)
    a, b = torch.broadcast_tensors(a, b)
    both = torch.stack([a, b], dim=-1)                          # (..., M, 2)
    return pearson_matrix(both)[..., 0, 1]
