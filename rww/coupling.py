"""Structural connectivity: validation and the effective coupling matrix each preset uses."""

from __future__ import annotations

import torch


def validate_connectome(sc, name: str = "sc", allow_negative: bool = False) -> torch.Tensor:
    """Check a structural connectome and return it as a floating tensor.

    Args:
        sc: ``(N, N)`` shared or ``(B, N, N)`` per-simulation weights (tensor or array).
        name: argument name used in error messages.
        allow_negative: accept negative weights (off by default: SC weights are streamline
            counts or densities).

    Returns:
        The connectome as a float tensor (float64 kept, anything else float32).
    """
    if not torch.is_tensor(sc):
        try:
            sc = torch.as_tensor(sc)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name}: expected a tensor or array, got {type(sc).__name__}") from err
    if not sc.is_floating_point():
        sc = sc.to(torch.float32)
    if sc.dim() not in (2, 3) or sc.shape[-1] != sc.shape[-2] or sc.shape[-1] == 0:
        raise ValueError(
            f"{name}: expected a square matrix (N, N) or a stack (B, N, N), got shape "
            f"{tuple(sc.shape)}"
        )
    if not torch.isfinite(sc).all():
        bad = torch.nonzero(~torch.isfinite(sc))[0].tolist()
        raise ValueError(f"{name}: contains NaN or infinite values (first at index {bad})")
    if not allow_negative and (sc < 0).any():
        bad = torch.nonzero(sc < 0)[0].tolist()
        raise ValueError(
            f"{name}: contains negative weights (first at index {bad}, value "
            f"{sc[tuple(bad)].item():.4g}); structural weights must be >= 0"
        )
    return sc


def griffiths_normalise_sc(sc: torch.Tensor) -> torch.Tensor:
    """The paper's SC pre-normalisation: ``log1p((SC + SC^T)/2) / ||.||_F`` (per matrix)."""
    sym = torch.log1p(0.5 * (sc + sc.transpose(-1, -2)))
    return sym / torch.linalg.matrix_norm(sym, keepdim=True)


def griffiths_laplacian(sc: torch.Tensor, w_bb: torch.Tensor | None = None) -> torch.Tensor:
    """The paper code's coupling operator: ``w = (1 + tanh(w_bb)) * SC``, symmetrised, divided by
    its Frobenius norm, ``L = w - diag(rowsum(w))``.

    Args:
        sc: ``(N, N)`` or ``(B, N, N)`` (already pre-normalised, see :func:`griffiths_normalise_sc`).
        w_bb: optional learnable gain ``(N, N)`` (the paper's init is 0.05 everywhere); ``None``
            means no gain (``w = SC``).

    Returns:
        ``L`` with the shape of ``sc`` (differentiable in ``sc`` and ``w_bb``).
    """
    w = sc if w_bb is None else (1.0 + torch.tanh(w_bb)) * sc
    w = 0.5 * (w + w.transpose(-1, -2))
    w = w / torch.linalg.matrix_norm(w, keepdim=True)
    return w - torch.diag_embed(w.sum(-1))
