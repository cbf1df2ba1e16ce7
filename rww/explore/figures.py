"""Figures of a parameter sweep (:func:`rww.explore.sweep`): heat maps of FC r, FCD KS and rates
over G (or G/G_c) x another swept parameter.

Drawn like :mod:`rww.figures`: matplotlib's Agg canvas through the object API (no pyplot), one PNG
per call, the path returned.
"""

from __future__ import annotations

import os

import numpy as np

from ..figures import _figure, _save

__all__ = ["sweep_figures", "heatmaps", "DEFAULT_METRICS"]

#: The files :func:`sweep_figures` writes into a sweep's folder.
FIGURE_FILES = ("sweep_heatmaps.png",)

#: Panels drawn by default: (row key, title, colour map, better is higher).
DEFAULT_METRICS = (
    ("fc_r", "FC r (all edges)", "viridis", True),
    ("fc_r_intra", "FC r (within hemispheres)", "viridis", True),
    ("fcd_ks", "FCD KS (target's convention)", "magma_r", False),
    ("rate_mean", "mean r_E [Hz]", "cividis", None),
)


def _axes_names(names: list, x: str | None, y: str | None) -> tuple:
    if x is None:
        x = next((n for n in ("G_rel", "G") if n in names), names[0])
    if y is None:
        others = [n for n in names if n != x]
        y = others[0] if others else None
    for name in (x, y):
        if name is not None and name not in names:
            raise ValueError(f"heatmaps: {name!r} is not a swept parameter ({', '.join(names)})")
    if x == y:
        raise ValueError(f"heatmaps: x and y are both {x!r}; choose two different swept "
                         f"parameters ({', '.join(names)})")
    return x, y


def heatmaps(result, path, x: str | None = None, y: str | None = None, metrics=DEFAULT_METRICS,
             dpi: int = 110) -> str:
    """One PNG with a panel per metric over two swept parameters.

    A grid over ``x`` and ``y`` is drawn as a heat map (cells at the grid values; with more swept
    parameters each cell shows the best value over the others: the highest FC r, the lowest KS,
    the mean for rates, as the panel's title says); a sampled design as a scatter coloured by the
    metric; one swept parameter as lines. Unscored candidates are blank (grey).

    Args:
        result: a :class:`rww.explore.SweepResult` (rank 0's, with rows).
        path: the PNG to write.
        x, y: swept names on the axes (default: ``G_rel`` or ``G`` on x, the first other on y).
        metrics: ``(key, title, cmap, higher_is_better)`` tuples; metrics with no finite value
            are left out.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: ``x`` or ``y`` not swept, or ``x == y``; no rows.
    """
    if not result.rows:
        raise ValueError("heatmaps: the sweep has no rows")
    x, y = _axes_names(result.names, x, y)
    panels = [m for m in metrics if np.isfinite(result.column(m[0])).any()]
    if not panels:
        panels = [metrics[0]]
    fig = _figure(4.2 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    xs = result.column(x)
    ys = result.column(y) if y is not None else None
    others = [n for n in result.names if n not in (x, y)]
    for ax, (key, title, cmap, higher) in zip(axes, panels):
        vals = result.column(key)
        if ys is None:
            order = np.argsort(xs)
            ax.plot(xs[order], vals[order], marker="o")
            ax.set_xlabel(x)
            ax.set_ylabel(key)
            ax.set_title(title)
            continue
        ux, uy = np.unique(xs), np.unique(ys)
        is_grid = len(ux) * len(uy) * max(1, _n_other_cells(result, others)) == len(xs)
        if is_grid and len(ux) > 1 and len(uy) > 1:
            grid = np.full((len(uy), len(ux)), np.nan)
            for i, vx in enumerate(ux):
                for j, vy in enumerate(uy):
                    cell = vals[(xs == vx) & (ys == vy)]
                    cell = cell[np.isfinite(cell)]
                    if cell.size:
                        grid[j, i] = (cell.max() if higher else cell.min() if higher is False
                                      else cell.mean())
            cm = _cmap(cmap)
            image = ax.pcolormesh(_edges(ux), _edges(uy), np.ma.masked_invalid(grid), cmap=cm,
                                  shading="flat")
            fig.colorbar(image, ax=ax, shrink=0.85)
            if others:
                how = "best" if higher is not None else "mean"
                title += f"\n({how} over {', '.join(others)})"
        else:
            ok = np.isfinite(vals)
            ax.scatter(xs[~ok], ys[~ok], c="0.8", s=12, marker="x")
            image = ax.scatter(xs[ok], ys[ok], c=vals[ok], cmap=cmap, s=24)
            fig.colorbar(image, ax=ax, shrink=0.85)
        if y in result.settings.get("log", []):
            ax.set_yscale("log")
        if x in result.settings.get("log", []):
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi)


def _n_other_cells(result, others) -> int:
    count = 1
    for name in others:
        count *= len(np.unique(result.column(name)))
    return count


def _cmap(name):
    from matplotlib import colormaps
    return colormaps[name].with_extremes(bad="0.85")


def _edges(centres: np.ndarray) -> np.ndarray:
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def sweep_figures(result, out: str, dpi: int = 110) -> list:
    """The sweep's figures in folder ``out``: ``sweep_heatmaps.png`` (FC r in both conventions,
    FCD KS and the mean rate over G x the next swept parameter). Returns the paths written."""
    return [heatmaps(result, os.path.join(out, FIGURE_FILES[0]), dpi=dpi)]
