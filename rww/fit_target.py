"""The target of a fit (:class:`FitTarget`: empirical FC, and the FCD values of the BOLD or given
ones) and how many FCD windows and pairs a length of BOLD holds."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import objectives as obj

MIN_FCD_PAIRS = 2
"""FCD values a target (or a simulated piece) must hold for the FCD terms: a distribution needs
at least two."""


def _pair_kind(exclude_overlapping: bool) -> str:
    return "windows sharing no TR" if exclude_overlapping else "distinct windows"


def fcd_counts(n_trs: int, window: int, step: int, exclude_overlapping: bool = True) -> tuple[int, int]:
    """``(windows, pairs)``: FCD windows of ``window`` TRs every ``step`` TRs in ``n_trs`` TRs,
    and the pairs of them that give FCD values (those sharing no TR, ``ceil(window / step)`` or
    more steps apart, with ``exclude_overlapping``; else every pair of distinct windows)."""
    n_win = (n_trs - window) // step + 1 if n_trs >= window else 0
    gap = max(1, -(-window // step)) if exclude_overlapping else 1
    return n_win, sum(n_win - d for d in range(gap, n_win))


def fcd_min_trs(window: int, step: int, exclude_overlapping: bool = True,
                min_pairs: int = MIN_FCD_PAIRS) -> int:
    """The fewest TRs holding ``min_pairs`` pairs of FCD windows (see :func:`fcd_counts`)."""
    n_win = 1
    while fcd_counts(window + (n_win - 1) * step, window, step, exclude_overlapping)[1] < min_pairs:
        n_win += 1
    return window + (n_win - 1) * step


@dataclass
class FitTarget:
    """What the model is fitted to.

    Attributes:
        fc: ``(N, N)`` target FC (computed from ``bold`` when not given).
        bold: optional ``(T, N)`` BOLD; windowed fits then compare each window with the same
            window of the data (the paper's scheme), and its length sets the scan length.
        fcd_values: optional ``(M,)`` FCD values (above the diagonal) for the FCD term;
            computed from ``bold`` when not given (if it spans two windows).
        fcd_window, fcd_step: FCD convention of ``fcd_values``, in TRs.
        fcd_exclude_overlapping: whether ``fcd_values`` leave out pairs of overlapping windows
            (rww's :func:`rww.objectives.fcd_values` with window and step); ``False`` for values
            over every pair of distinct windows (cuBNM's pooled values, the embedded demo's).
            The simulated FCD is reduced the same way.
        fcd_unavailable: set by :meth:`validate` when it leaves ``fcd_values`` ``None``: why
            (no BOLD, or a BOLD too short for two pairs of FCD windows, with the numbers and the
            length that would do); ``None`` otherwise.
    """

    fc: torch.Tensor | None = None
    bold: torch.Tensor | None = None
    fcd_values: torch.Tensor | None = None
    fcd_window: int = 30
    fcd_step: int = 5
    fcd_exclude_overlapping: bool = True
    fcd_unavailable: str | None = field(default=None, init=False, compare=False)

    def validate(self, n_nodes: int, dtype, device) -> "FitTarget":
        """Check shapes and values; returns a copy with tensors of ``dtype`` on ``device``.

        ``fcd_values`` of the copy: the given ones, else those of ``bold`` when it holds at least
        2 pairs of FCD windows in this target's convention, else ``None`` with the reason in
        ``fcd_unavailable`` (a fit with an FCD term reports it).

        Raises:
            ValueError: naming the field (``target bold``, ``target fc``, ``target fcd_values``)
                and what is wrong with it.
        """
        bold = self.bold
        if bold is not None:
            bold = torch.as_tensor(bold).to(dtype=dtype, device=device)
            if bold.dim() != 2 or bold.shape[1] != n_nodes:
                raise ValueError(f"target bold: expected shape (T, {n_nodes}) (time x regions), "
                                 f"got {tuple(bold.shape)}")
            if not torch.isfinite(bold).all():
                raise ValueError("target bold: contains NaN or infinite values")
            if bold.shape[0] < 3:
                raise ValueError(f"target bold: needs at least 3 time points, got {bold.shape[0]}")
            constant = torch.nonzero(bold.std(0) == 0).flatten().tolist()
            if constant:
                raise ValueError(f"target bold: regions {constant[:10]} have constant time series; "
                                 "their FC is undefined (remove or fix them)")
        fc = self.fc
        if fc is None:
            if bold is None:
                raise ValueError("target: give an FC matrix (fc=) or BOLD time series (bold=)")
            fc = obj.fc(bold)
        fc = torch.as_tensor(fc).to(dtype=dtype, device=device)
        if fc.shape != (n_nodes, n_nodes):
            stack = (" (a stack of subjects' FC: fit a cohort with rww.cohort.fit_cohort and a "
                     "rww.cohort.CohortTarget)" if fc.dim() == 3 else "")
            raise ValueError(f"target fc: expected shape ({n_nodes}, {n_nodes}), got "
                             f"{tuple(fc.shape)}{stack}")
        if not torch.isfinite(fc).all():
            raise ValueError("target fc: contains NaN or infinite values")
        if (fc.abs() > 1 + 1e-6).any():
            raise ValueError("target fc: values outside [-1, 1]; expected a correlation matrix")
        fcd_vals = self.fcd_values
        if fcd_vals is not None:
            fcd_vals = torch.as_tensor(fcd_vals).to(dtype=dtype, device=device).flatten()
            if not torch.isfinite(fcd_vals).all() or fcd_vals.numel() < 2:
                raise ValueError("target fcd_values: expected at least 2 finite values")
        unavailable = None
        if fcd_vals is None and bold is None:
            unavailable = "the target has no fcd_values and no BOLD to compute them from"
        elif fcd_vals is None:
            w, s, exclude = self.fcd_window, self.fcd_step, self.fcd_exclude_overlapping
            n_win, n_pairs = fcd_counts(bold.shape[0], w, s, exclude)
            if n_pairs >= MIN_FCD_PAIRS:
                # The data's own FCD, in the convention the simulated FCD is reduced with.
                fcd_vals = FitTarget(fcd_window=w, fcd_step=s, fcd_exclude_overlapping=exclude
                                     ).simulated_fcd_values(bold.unsqueeze(0))[0]
            else:
                unavailable = (
                    f"the target BOLD's {bold.shape[0]} TRs hold {n_win} FCD window(s) of {w} TRs "
                    f"every {s} TRs and {n_pairs} pair(s) of {_pair_kind(exclude)}; FCD values "
                    f"need at least {MIN_FCD_PAIRS} pairs, i.e. a BOLD of at least "
                    f"{fcd_min_trs(w, s, exclude)} TRs: give a longer BOLD, a shorter FCD window "
                    "or step (fcd_window, fcd_step; rww fit: --fcd-window, --fcd-step), or the "
                    "FCD values themselves (fcd_values; rww fit: --fcd)")
        out = FitTarget(fc, bold, fcd_vals, self.fcd_window, self.fcd_step,
                        self.fcd_exclude_overlapping)
        out.fcd_unavailable = unavailable
        return out

    def simulated_fcd_values(self, bold: torch.Tensor) -> torch.Tensor:
        """FCD values of simulated ``bold (B, T, N)`` -> ``(B, M)``, in this target's convention."""
        matrix = obj.fcd(bold, self.fcd_window, self.fcd_step)
        if self.fcd_exclude_overlapping:
            return obj.fcd_values(matrix, self.fcd_window, self.fcd_step)
        return obj.fcd_values(matrix)
