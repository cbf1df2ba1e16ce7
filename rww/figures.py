"""Figures for simulations and fits, written as PNG files.

Headless and side-effect free: figures are drawn on matplotlib's Agg canvas through the object
API, never through ``pyplot``, so importing this module does not change the matplotlib backend of
a notebook or script. Every function takes arrays or tensors and a path, writes one PNG (creating
its folder) and returns the path as a string.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi: int) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _array(x, name: str) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array or tensor, got {type(x).__name__}") from err


def _square(x, name: str) -> np.ndarray:
    a = _array(x, name)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name}: expected a square matrix (N, N), got shape {a.shape}")
    return a


def _lower(a: np.ndarray) -> np.ndarray:
    return a[np.tril_indices(a.shape[0], -1)]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def fc_comparison(empirical, simulated, path, title: str | None = None, dpi: int = 110) -> str:
    """Empirical and simulated FC side by side, and a scatter of their lower triangles with
    Pearson r (the value :func:`rww.objectives.fc_correlation` computes).

    Args:
        empirical: ``(N, N)`` FC.
        simulated: ``(N, N)`` FC.
        path: PNG file to write.
        title: figure title (default: none besides the panels').

    Returns:
        ``path``.
    """
    emp, sim = _square(empirical, "empirical"), _square(simulated, "simulated")
    if emp.shape != sim.shape:
        raise ValueError(f"fc_comparison: shapes {emp.shape} and {sim.shape} differ")
    e, s = _lower(emp), _lower(sim)
    r = _pearson(e, s)
    fig = _figure(14.5, 4.4)
    axes = fig.subplots(1, 3)
    # Each matrix on its own symmetric scale (a weak simulated FC on the empirical scale would
    # look blank); the scatter compares the values themselves.
    for ax, mat, low, name in ((axes[0], emp, e, "empirical FC"), (axes[1], sim, s, "simulated FC")):
        limit = float(np.nanmax(np.abs(low))) if low.size else 1.0
        limit = limit if np.isfinite(limit) and limit > 0 else 1.0
        shown = mat.copy()
        np.fill_diagonal(shown, np.nan)
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(f"{name} (mean {np.nanmean(low):.3f})")
        ax.set_xlabel("region")
        ax.set_ylabel("region")
        fig.colorbar(image, ax=ax, shrink=0.85, label="Pearson r (own scale)")
    ax = axes[2]
    ax.scatter(e, s, s=4, alpha=0.35, color="tab:blue", linewidths=0)
    lo = float(np.nanmin(np.concatenate([e, s]))) if e.size else -1.0
    hi = float(np.nanmax(np.concatenate([e, s]))) if e.size else 1.0
    ax.plot([lo, hi], [lo, hi], "--", color="0.5", lw=1, label="identity")
    ax.set_xlabel("empirical FC (lower triangle)")
    ax.set_ylabel("simulated FC (lower triangle)")
    ax.set_title(f"r = {r:.3f}  ({e.size} pairs)")
    ax.legend(loc="upper left", frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def fc_matrix(fc, path, title: str = "FC", labels=None, dpi: int = 110) -> str:
    """One FC matrix ``(N, N)`` (diagonal blanked), with a symmetric colour scale.

    Args:
        fc: ``(N, N)`` FC (Pearson r).
        path: PNG file to write.
        title: panel title.
        labels: N region names, used as tick labels when N <= 40.

    Returns:
        ``path``.
    """
    mat = _square(fc, "fc").copy()
    np.fill_diagonal(mat, np.nan)
    finite = mat[np.isfinite(mat)]
    limit = float(np.abs(finite).max()) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    fig = _figure(6.2, 5.2)
    ax = fig.subplots()
    image = ax.imshow(mat, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    n = mat.shape[0]
    if labels is not None and n <= 40:
        ax.set_xticks(range(n), labels, rotation=90, fontsize="x-small")
        ax.set_yticks(range(n), labels, fontsize="x-small")
    else:
        ax.set_xlabel("region")
        ax.set_ylabel("region")
    off = _lower(_square(fc, "fc"))
    ax.set_title(f"{title}\nmean off-diagonal r = {np.nanmean(off):.3f}" if off.size else title)
    fig.colorbar(image, ax=ax, shrink=0.85, label="Pearson r")
    return _save(fig, path, dpi)


def _fcd_entries(fcd, name: str, window, step, exclude_overlapping: bool):
    """``(matrix or None, values)``: values above the diagonal of a matrix (without the pairs of
    overlapping windows if ``exclude_overlapping``), or a 1-d array as given."""
    a = _array(fcd, name)
    if a.ndim == 1:
        return None, a[np.isfinite(a)]
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name}: expected an FCD matrix (W, W) or a 1-d array of FCD values, "
                         f"got shape {a.shape}")
    offset = 1
    if exclude_overlapping:
        if window is None or step is None:
            raise ValueError("fcd_comparison: exclude_overlapping needs window and step")
        offset = max(1, -(-int(window) // int(step)))
    values = a[np.triu_indices(a.shape[0], offset)]
    return a, values[np.isfinite(values)]


def fcd_comparison(empirical, simulated=None, path="fcd.png", window: int | None = None,
                   step: int | None = None, tr: float | None = None,
                   names=("empirical", "simulated"), exclude_overlapping: bool = False,
                   dpi: int = 110) -> str:
    """FCD matrices and the distributions of their values.

    Args:
        empirical: ``(W, W)`` FCD matrix, or a 1-d array of FCD values (e.g. the demo's pooled
            ``fcd_values``, drawn as a distribution only).
        simulated: the same for the model, or ``None``.
        path: PNG file to write.
        window, step: the FCD's window and step in TRs (with ``tr``, the matrix axes show
            window-start times).
        tr: repetition time [s], for the axes.
        names: labels of the two inputs.
        exclude_overlapping: leave pairs of overlapping windows out of the matrices'
            distributions (as :func:`rww.objectives.fcd_values` with ``window``/``step``).
            Default: every pair of distinct windows, the convention of cuBNM's pooled values,
            which cannot be filtered afterwards.

    Returns:
        ``path``.
    """
    entries = [(names[0], *_fcd_entries(empirical, names[0], window, step, exclude_overlapping))]
    if simulated is not None:
        entries.append((names[1], *_fcd_entries(simulated, names[1], window, step,
                                                exclude_overlapping)))
    matrices = [(n, m) for n, m, _ in entries if m is not None]
    fig = _figure(4.6 * (len(matrices) + 1) + 0.6, 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(matrices) + 1))
    for ax, (name, mat) in zip(axes, matrices):
        extent = None
        label = "window"
        if tr is not None and step is not None:
            span = mat.shape[0] * step * tr
            extent = (0, span, span, 0)
            label = "window start [s]"
        image = ax.imshow(mat, cmap="viridis", vmin=-1 if mat.min() < 0 else 0, vmax=1,
                          extent=extent, interpolation="nearest")
        ax.set_title(f"{name} FCD ({mat.shape[0]} windows)")
        ax.set_xlabel(label)
        ax.set_ylabel(label)
        fig.colorbar(image, ax=ax, shrink=0.8, label="r between window FCs")
    ax = axes[-1]
    pooled = np.concatenate([values for _, _, values in entries])
    lo = max(-1.0, float(pooled.min()) - 0.05) if pooled.size else -1.0
    hi = min(1.0, float(pooled.max()) + 0.05) if pooled.size else 1.0
    bins = np.linspace(lo, hi, 61)
    colours = ("black", "tab:orange")
    for (name, _, values), colour in zip(entries, colours):
        if values.size:
            ax.hist(values, bins=bins, density=True, histtype="step", lw=1.8, color=colour,
                    label=f"{name} (n={values.size}, mean {values.mean():.2f})")
    if len(entries) == 2 and entries[0][2].size and entries[1][2].size:
        from scipy.stats import ks_2samp
        ks = ks_2samp(entries[0][2], entries[1][2]).statistic
        ax.set_title(f"FCD values, KS = {ks:.3f}")
    else:
        ax.set_title("FCD values")
    ax.set_xlabel("FCD value")
    ax.set_ylabel("density")
    ax.set_xlim(lo, hi)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.25)         # room for the legend
    ax.legend(loc="upper left", frameon=False, fontsize="small")
    return _save(fig, path, dpi)


def bold_traces(bold, path, tr: float | None = None, regions=None, max_regions: int = 10,
                labels=None, title: str | None = None, dpi: int = 110,
                unit: str = "BOLD units") -> str:
    """BOLD time series of a few regions, stacked with offsets, with a scale bar.

    Args:
        bold: ``(T, N)`` or ``(B, T, N)`` (the first simulation is drawn).
        path: PNG file to write.
        tr: repetition time [s] (x axis in seconds; TR index otherwise).
        regions: indices of the regions to draw (default: up to ``max_regions`` spread evenly).
        labels: N region names for the legend.
        unit: what one unit of ``bold`` is (the scale bar's label), e.g. ``"% signal change"``.

    Returns:
        ``path``.
    """
    a = _array(bold, "bold")
    if a.ndim == 3:
        a = a[0]
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"bold: expected (T, N) or (B, T, N), got shape {_array(bold, 'bold').shape}")
    n_time, n_regions = a.shape
    if regions is None:
        regions = np.unique(np.linspace(0, n_regions - 1, min(max_regions, n_regions)).round().astype(int))
    regions = [int(r) for r in regions]
    bad = [r for r in regions if not 0 <= r < n_regions]
    if bad:
        raise ValueError(f"regions: indices {bad} out of range for {n_regions} regions")
    x = np.arange(1, n_time + 1) * tr if tr is not None else np.arange(n_time)
    centred = a[:, regions] - a[:, regions].mean(0)
    spread = float(np.nanmax(np.abs(centred))) if centred.size else 0.0
    offset = 2.0 * spread if spread > 0 else 1.0
    fig = _figure(10, 1.0 + 0.55 * len(regions) + 1.5)
    ax = fig.subplots()
    for k, r in enumerate(regions):
        name = labels[r] if labels is not None else f"region {r}"
        ax.plot(x, centred[:, k] - k * offset, lw=0.9, label=name)
    ax.set_yticks([-k * offset for k in range(len(regions))],
                  [labels[r] if labels is not None else str(r) for r in regions])
    ax.set_xlabel("time [s]" if tr is not None else "TR")
    ax.set_ylabel("region (each trace centred, offset)")
    if spread > 0:
        # A vertical scale bar of one trace offset, labelled in the signal's unit.
        bar = offset / 2
        x_bar = x[-1] + 0.01 * (x[-1] - x[0] if len(x) > 1 else 1.0)
        ax.plot([x_bar, x_bar], [0, bar], color="k", lw=2, clip_on=False)
        ax.text(x_bar, bar / 2, f" {bar:.2g} {unit}", va="center", ha="left", fontsize="small")
    scale = f"; offset between traces {offset:.3g} {unit}" if spread > 0 else ""
    ax.set_title((title + "\n" if title else "") + f"BOLD, {len(regions)} of {n_regions} regions{scale}")
    ax.margins(x=0)
    return _save(fig, path, dpi)


def _decades(ax) -> float:
    """How many decades the positive data drawn on ``ax`` span (0 when none)."""
    values = [line.get_ydata() for line in ax.get_lines()]
    values = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if values else []
    values = np.asarray(values)[np.isfinite(values) & (np.asarray(values) > 0)] if len(values) else []
    return float(np.log10(values.max() / values.min())) if len(values) else 0.0


def _plain_formatter():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda v, _: f"{v:g}")


def _integer_locator():
    from matplotlib.ticker import MaxNLocator
    return MaxNLocator(integer=True)


def history(history: dict, path, title: str | None = None, dpi: int = 110) -> str:
    """Loss terms and parameters across epochs.

    Args:
        history: name -> list of per-epoch values (floats, or lists of floats for per-region
            parameters, or nested lists such as an N x N matrix, drawn as their mean with a
            min-max band). ``"epoch"`` gives the x axis if
            present; ``"loss"`` has a panel, and the ``"terms/<name>"`` share one, each divided
            by its first value (log scales only where values span more than 1.5 decades);
            ``"seconds"`` is ignored; every other key (``"fc_r"``, ``"params/<name>"``,
            ...) gets a panel of its own.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    if not isinstance(history, dict) or not history:
        raise ValueError("history: expected a non-empty dict of name -> list of per-epoch values")
    series = {k: v for k, v in history.items() if k not in ("epoch", "seconds")}
    if not series:
        raise ValueError("history: no series to draw besides 'epoch'/'seconds'")
    lengths = {k: len(v) for k, v in series.items()}
    n = max(lengths.values())
    x = np.asarray(history.get("epoch", range(n)), dtype=float)
    terms = [k for k in series if k.startswith("terms/")]
    # The total on its own panel; the terms together, each divided by its first finite value so
    # that one large term (the bifurcation penalty, say) does not flatten the others.
    panels = ([("loss", ["loss"])] if "loss" in series else []) + \
        ([("loss terms (relative to their first value)", terms)] if terms else []) + \
        [(k, [k]) for k in series if k != "loss" and k not in terms]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(4.6 * ncols, 3.3 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, (name, keys) in zip(axes, panels):
        positive, legend = True, len(keys) > 1
        for key in keys:
            values = [np.nan if v is None else v for v in series[key]]
            xs = x[:len(values)] if len(x) >= len(values) else np.arange(len(values))
            arr = np.asarray(values, dtype=float)
            if arr.ndim > 2:                      # e.g. an N x N gain matrix per epoch
                arr = arr.reshape(arr.shape[0], -1)
            if arr.ndim == 2:
                mean = arr.mean(1)
                ax.plot(xs, mean, label=f"mean of {arr.shape[1]} values")
                ax.fill_between(xs, arr.min(1), arr.max(1), alpha=0.25, label="min-max")
                positive = positive and bool(np.all(arr[np.isfinite(arr)] > 0))
                legend = True
            else:
                label = key.split("/", 1)[-1] if len(keys) > 1 else key
                if name.startswith("loss terms"):
                    finite = arr[np.isfinite(arr) & (arr != 0)]
                    first = float(finite[0]) if finite.size else 1.0
                    arr = arr / first
                    label = f"{label} (/ {first:.3g})"
                ax.plot(xs, arr, marker="o" if len(arr) < 30 else None, ms=3, label=label)
                positive = positive and bool(np.all(arr[np.isfinite(arr)] > 0))
        spread = _decades(ax)
        if name in ("loss", ) or name.startswith("loss terms"):
            if positive and spread > 1.5:       # log only where values span decades
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(_plain_formatter())
        ax.set_title(name.replace("params/", "parameter "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_locator())
        if legend:
            ax.legend(frameon=False, fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


__all__ = ["fc_comparison", "fc_matrix", "fcd_comparison", "bold_traces", "history",
           "batch_summary", "fc_batch", "search_landscape"]

# Colours and markers of the simulations a batch figure picks out (by role, in order): ranked
# roles (best, median, worst) in green, orange, red; others (along a sweep) in neutral colours.
_ROLE_STYLES = (("tab:green", "^"), ("tab:orange", "s"), ("tab:red", "v"), ("tab:purple", "D"))
_NEUTRAL_STYLES = (("tab:purple", "o"), ("tab:brown", "s"), ("tab:pink", "D"), ("tab:gray", "^"))


def batch_summary(x, scores: dict, path, x_label: str = "simulation", chosen: dict | None = None,
                  bands: dict | None = None, marks: dict | None = None, title: str | None = None,
                  ranked: bool = True, dpi: int = 110) -> str:
    """Per-simulation scores of a batch of simulations against the swept quantity (or the
    simulation index), one panel per score, the chosen simulations marked on every panel.

    Args:
        x: ``(B,)`` the swept parameter's value of each simulation (or its index).
        scores: panel title -> ``(B,)`` per-simulation values, or ``(B, N)`` per-region values
            (drawn as their mean over regions, with the min-max range across regions as a band).
            NaN values are left out of a panel.
        path: PNG file to write.
        x_label: the x axis' label (e.g. ``"G"``, ``"G / G_c"``, ``"simulation"``).
        chosen: role -> simulation index (e.g. ``{"best FC r": 3, "worst FC r": 0}``), marked
            and named in the legend.
        bands: panel title -> ``(low, high)`` or ``(low, high, label)``: a shaded reference
            range (e.g. the 1-10 Hz of spontaneous cortical rates).
        marks: label -> x position: a dashed vertical line on every panel (e.g. G_c).
        title: the figure's title.
        ranked: the roles of ``chosen`` rank the simulations (best first, worst last: green to
            red); ``False`` marks them in neutral colours (e.g. picked along a sweep).

    Returns:
        ``path``.
    """
    xs = _array(x, "x").ravel()
    b = xs.size
    if b < 1 or not scores:
        raise ValueError("batch_summary: expected x of B >= 1 simulations and at least one score")
    arrays = {}
    for name, values in scores.items():
        a = _array(values, name)
        if a.shape[:1] != (b,) or a.ndim > 2:
            raise ValueError(f"batch_summary: score {name!r} has shape {a.shape}; expected ({b},) "
                             f"or ({b}, N) for {b} simulations")
        arrays[name] = a
    chosen = dict(chosen or {})
    bad = {role: i for role, i in chosen.items() if not 0 <= int(i) < b}
    if bad:
        raise ValueError(f"batch_summary: chosen simulations {bad} out of range for {b}")
    order = np.argsort(xs, kind="stable")
    integer_x = bool(np.all(xs == np.round(xs)))
    ncols = 2 if len(arrays) == 4 else min(3, len(arrays))
    nrows = math.ceil(len(arrays) / ncols)
    fig = _figure(4.8 * ncols, 3.5 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, (name, a) in zip(axes, arrays.items()):
        mean = a.mean(-1) if a.ndim == 2 else a
        if name in (bands or {}):
            low, high, *text = bands[name]
            ax.axhspan(low, high, color="0.88", zorder=0,
                       label=text[0] if text else f"reference range {low:g}-{high:g}")
        if a.ndim == 2:
            ax.fill_between(xs[order], a.min(-1)[order], a.max(-1)[order], color="tab:blue",
                            alpha=0.18, lw=0, label="min-max over regions")
        ok = np.isfinite(mean[order])
        ax.plot(xs[order][ok], mean[order][ok], "-o" if b <= 40 else "-", color="tab:blue",
                ms=3.5, lw=1.2, label="mean over regions" if a.ndim == 2 else None)
        styles = _ROLE_STYLES if ranked else _NEUTRAL_STYLES
        for (role, i), (colour, marker) in zip(chosen.items(), styles):
            if np.isfinite(mean[i]):
                ax.plot([xs[i]], [mean[i]], marker, color=colour, ms=10, mec="k", mew=0.6,
                        ls="none", label=f"{role} (sim {i})", zorder=5)
        for label, pos in (marks or {}).items():
            ax.axvline(pos, ls="--", color="0.4", lw=1, label=label)
        missing = int((~np.isfinite(mean)).sum())
        ax.set_title(name + (f" ({missing} not computed)" if missing else ""))
        ax.set_xlabel(x_label)
        if integer_x:
            ax.xaxis.set_major_locator(_integer_locator())
        ax.grid(alpha=0.3)
    handles, names = {}, []
    for ax in axes[:len(arrays)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                names.append(label)
    for ax in axes[len(arrays):]:
        ax.set_visible(False)
    if handles:
        fig.legend([handles[n] for n in names], names, loc="outside lower center",
                   ncols=min(len(names), 4), frameon=False, fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def fc_batch(fcs, path, indices, titles=None, empirical=None, empirical_title: str = "empirical FC",
             title: str | None = None, dpi: int = 110) -> str:
    """FC matrices of a few simulations of a batch side by side (each on its own symmetric
    colour scale, diagonal blanked), after the empirical FC when given; each panel's title ends
    with its mean off-diagonal r and, with ``empirical``, the Pearson r of its lower triangle
    with the empirical one (:func:`rww.objectives.fc_correlation`).

    Args:
        fcs: ``(B, N, N)`` FC of every simulation.
        path: PNG file to write.
        indices: the simulations to draw (a few: one panel each).
        titles: one title per index (default ``"simulation i"``).
        empirical: ``(N, N)`` FC drawn first and compared with, or ``None``.

    Returns:
        ``path``.
    """
    a = _array(fcs, "fcs")
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"fcs: expected (B, N, N) FC matrices, got shape {a.shape}")
    indices = [int(i) for i in indices]
    if not indices or any(not 0 <= i < a.shape[0] for i in indices):
        raise ValueError(f"indices: expected simulations in 0..{a.shape[0] - 1}, got {indices}")
    titles = list(titles) if titles is not None else [f"simulation {i}" for i in indices]
    if len(titles) != len(indices):
        raise ValueError(f"titles: {len(titles)} for {len(indices)} simulations")
    emp = None
    panels = []
    if empirical is not None:
        emp = _square(empirical, "empirical")
        if emp.shape != a.shape[1:]:
            raise ValueError(f"fc_batch: empirical FC {emp.shape} and simulated {a.shape[1:]} "
                             "differ; give the FC of the same parcellation")
        panels.append((emp, f"{empirical_title}\nmean r {np.nanmean(_lower(emp)):.3f}"))
    for i, name in zip(indices, titles):
        low = _lower(a[i])
        text = f"{name}\nmean r {np.nanmean(low):.3f}"
        if emp is not None:
            text += f", r with empirical {_pearson(_lower(emp), low):.3f}"
        panels.append((a[i], text))
    fig = _figure(4.3 * len(panels) + 0.4, 4.5)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (mat, text) in zip(axes, panels):
        shown = mat.copy()
        np.fill_diagonal(shown, np.nan)
        finite = _lower(mat)[np.isfinite(_lower(mat))]
        limit = float(np.abs(finite).max()) if finite.size else 1.0
        limit = limit if limit > 0 else 1.0
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(text, fontsize="medium")
        ax.set_xlabel("region")
        ax.set_ylabel("region")
        ax.xaxis.set_major_locator(_integer_locator())
        ax.yaxis.set_major_locator(_integer_locator())
        fig.colorbar(image, ax=ax, shrink=0.8, label="Pearson r (own scale)")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def search_landscape(result, path, dpi: int = 110) -> str:
    """A global search's candidates (:class:`rww.search.SearchResult`): FC r, FCD KS and mean
    firing rate against G/G_c (or G), coloured by the second searched parameter, the best
    candidate marked.

    Returns:
        ``path``.
    """
    rows = [r for r in result.rows if r.get("status") == "ok"]
    if not rows:
        raise ValueError("search_landscape: no scored candidate to draw")
    x_name = "G_over_Gc" if all("G_over_Gc" in r for r in rows) else "G"
    x = np.array([r[x_name] for r in rows])
    other = [n for n in result.names if n not in ("G", "G_rel")]
    colour_name = other[0] if other else None
    colour = np.array([r[colour_name] for r in rows]) if colour_name else None
    best = result.best(1)[0]
    panels = [("fc_r", "FC r (one simulation)"), ("fcd_ks", "FCD KS (lower is better)"),
              ("rate_mean", "mean r_E [Hz]")]
    panels = [(k, t) for k, t in panels if all(k in r for r in rows)]
    fig = _figure(4.2 * len(panels) + 0.8, 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (key, title) in zip(axes, panels):
        y = np.array([r[key] for r in rows])
        points = ax.scatter(x, y, c=colour, cmap="viridis", s=22, edgecolors="none")
        ax.scatter([best[x_name]], [best[key]], s=120, facecolors="none", edgecolors="red",
                   linewidths=1.5, label="best (lowest loss)")
        ax.set_xlabel("G / G_c" if x_name == "G_over_Gc" else "G")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", frameon=False, fontsize="small")
    if colour_name:
        fig.colorbar(points, ax=list(axes), shrink=0.85, label=colour_name)
    fig.suptitle(f"search: {len(rows)} scored candidates "
                 f"({len(result.rows) - len(rows)} failed)")
    return _save(fig, path, dpi)
