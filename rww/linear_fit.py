"""Regional heterogeneity fitted to an FC pattern through the linear noise approximation
(:mod:`rww.linear`): deterministic gradients in seconds instead of noisy ones from simulations.

The loss, minimised by Adam over per-region values (each kept inside its bounds by a logistic
transform started at the given value):

    -r(FC_LNA, FC_target)                                 (all edges, rww.objectives.fc_correlation)
    + margin_weight * relu(lambda_max + margin)^2         (stay `margin` [1/s] inside stability)
    + level_weight * (mean FC_LNA - level)^2              (optional FC level)
    + smoothness * sum_v smoothness_penalty(v, SC)        (optional, rww.objectives)

``lambda_max`` is the leading eigenvalue of the neural Jacobian at the FIC fixed point
[1/s]. The LNA sees only that fixed point: with noise, simulations can leave it for high-rate
states it cannot see. Measured on the demo (``examples/fit_lna.py``, margin 1.0/s): the fitted
points simulated at the start's G ran at mean rates of 7.3-7.5 Hz (the largest region 19-23 Hz)
instead of the FIC target's 3 Hz, and only 0.39 of the LNA's 0.45 FC r survived; lowering G by
10% (chosen by simulation) gave FC r 0.45-0.46 with the target's FC level and FCD. So always
check and re-screen by simulation: the recipe's LNA stage (:func:`rww.recipe.lna_stage`) does
both.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from .fic import FICFailed
from .params import get_preset, pack_parameters

__all__ = ["RegionalLNAFit", "fit_regional_lna", "check_learn", "DEFAULT_BOUNDS"]

# Default bounds of the per-region values (dimensionless): wide around the deco2014 defaults
# (w_EE 1.4, w_EI 1.0), kept positive.
DEFAULT_BOUNDS = {"w_EE": (0.05, 2.0), "w_EI": (0.2, 5.0), "J_NMDA": (0.05, 0.5),
                  "I_0": (0.2, 0.5)}


@dataclass
class RegionalLNAFit:
    """Outcome of :func:`fit_regional_lna`.

    Attributes:
        values: name -> ``(N,)`` float64 fitted per-region values.
        fc_r: LNA FC correlation with the target at the returned (lowest-loss) iterate, all
            edges.
        fc_level: mean off-diagonal LNA FC there.
        leading_eigenvalue: there [1/s].
        history: one dict per Adam step, evaluated before that step (``loss``, ``fc_r``,
            ``fc_level``, ``leading_eigenvalue``); the values after the last step are not in it.
        settings: the arguments that shaped the fit (JSON-ready).
        seconds: wall time.
    """

    values: dict
    fc_r: float
    fc_level: float
    leading_eigenvalue: float
    history: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0


# Parameters that cannot be fitted per region here: w_IE is set by FIC, G is one global
# coupling, sigma does not change the LNA's FC (the noise scales the whole covariance).
NOT_REGIONAL = {"w_IE": "it is set by FIC", "G": "it is one global coupling",
                "sigma": "a uniform noise does not change the LNA's FC"}


def check_learn(learn, bounds: dict | None = None) -> tuple:
    """``learn`` as a tuple of distinct parameter names that can be fitted per region, with
    bounds (default or given); ``ValueError`` saying what is wrong otherwise."""
    from .params import PARAM_NAMES
    if isinstance(learn, str) or not all(isinstance(k, str) for k in learn):
        raise ValueError(f"learn: a sequence of parameter names, e.g. ('w_EE', 'w_EI'), got "
                         f"{learn!r}")
    learn = tuple(learn)
    if not learn:
        raise ValueError("learn: name at least one parameter")
    if len(set(learn)) != len(learn):
        raise ValueError(f"learn: {list(learn)} names a parameter twice")
    unknown = [k for k in learn if k not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"learn: unknown parameter(s) {unknown}; names are {PARAM_NAMES}")
    for name, why in NOT_REGIONAL.items():
        if name in learn:
            raise ValueError(f"learn: {name} cannot be fitted per region ({why})")
    bounds = {**DEFAULT_BOUNDS, **(bounds or {})}
    missing = [k for k in learn if k not in bounds]
    if missing:
        raise ValueError(f"bounds: give (lo, hi) for {missing} (defaults exist for "
                         f"{sorted(DEFAULT_BOUNDS)})")
    for name in learn:
        b = bounds[name]
        try:
            lo, hi = (float(x) for x in b)
        except (TypeError, ValueError):
            raise ValueError(f"bounds: {name} needs a pair (lo, hi) of numbers, got {b!r}") \
                from None
        if not (lo < hi):
            raise ValueError(f"bounds: {name} needs lo < hi, got ({lo}, {hi})")
    return learn


def _check_bounds(name, start, bounds):
    lo, hi = bounds
    bad = ~((start > lo) & (start < hi))
    if bool(bad.any()):
        raise ValueError(f"fit_regional_lna: the starting {name} ({start[bad][0].item():.4g} in "
                         f"region {int(torch.nonzero(bad)[0])}) is not strictly inside its "
                         f"bounds ({lo}, {hi}); widen bounds[{name!r}] (in the recipe: "
                         "RecipeConfig(lna_bounds=...)) or start inside them")


def fit_regional_lna(sc: torch.Tensor, target_fc: torch.Tensor, params: dict, *,
                     learn=("w_EE", "w_EI"), bounds: dict | None = None,
                     haemo="deco2014", fic_target: float = 3.0, iterations: int = 200,
                     lr: float = 0.05, margin: float = 1.0, margin_weight: float = 10.0,
                     level: float | None = None, level_weight: float = 0.0,
                     smoothness: float = 0.0, progress: bool = True) -> RegionalLNAFit:
    """Fit per-region parameters so that the LNA's FC matches ``target_fc`` (module docstring).

    Args:
        sc: ``(N, N)`` coupling as simulated (e.g. the demo SC divided by its mean row sum).
        target_fc: ``(N, N)`` empirical FC.
        params: the other deco2014 parameters by name (numbers or ``(N,)``; at least ``G``,
            absolute, not relative to G_c); the starting values of ``learn`` come from here
            (or the preset defaults).
        learn: per-region parameters to fit (a sequence of names of
            :data:`rww.params.PARAM_NAMES`, not ``w_IE``, ``G`` or ``sigma``: see
            :data:`NOT_REGIONAL`).
        bounds: name -> ``(lo, hi)``; default :data:`DEFAULT_BOUNDS`. Each start must lie
            strictly inside.
        haemo: haemodynamic model; fic_target: FIC target rate [Hz].
        iterations, lr: Adam steps and learning rate (on the logistic scale).
        margin: required distance of the leading eigenvalue from 0 [1/s]; margin_weight its
            penalty weight.
        level, level_weight: optional target for the LNA FC's mean (note the LNA underestimates
            the simulated FC level near the bifurcation, :mod:`rww.linear`).
        smoothness: weight of :func:`rww.objectives.smoothness_penalty` per learned map.
        progress: tqdm bar.

    Returns:
        :class:`RegionalLNAFit` at the iterate with the lowest loss (not necessarily the last);
        ``values`` plug into :class:`rww.RWWBold` as ``(N,)`` tensors. An iterate where the
        fixed point is lost (unstable, or FIC failing) ends the fit with a ``RuntimeWarning``;
        ``settings["stopped"]`` says why (``None`` when all iterations ran).

    Raises:
        ValueError: shapes, names, bounds, a target FC that is not finite or constant, a start
            outside its bounds, or a start where the FIC fixed point is not stable (move G below
            G_c first).
        rww.fic.FICFailed: analytic FIC fails at the start.
        FloatingPointError: a non-finite loss or gradient (e.g. sigma = 0).

    Warns:
        RuntimeWarning: the start lies within the stability margin (short fits then mostly move
            away from the bifurcation), or the fit stopped early.
    """
    from .linear import lna
    from .objectives import fc_correlation, lower_triangle, offdiagonal_mean, smoothness_penalty
    from .params import PARAM_NAMES
    preset = get_preset("deco2014")
    sc64 = torch.as_tensor(sc, dtype=torch.float64)
    n = sc64.shape[-1]
    if sc64.shape != (n, n):
        raise ValueError(f"sc: expected (N, N), got {tuple(sc64.shape)}")
    fc64 = torch.as_tensor(target_fc, dtype=torch.float64, device=sc64.device)
    if fc64.shape != (n, n):
        raise ValueError(f"target_fc: expected ({n}, {n}) like sc, got {tuple(fc64.shape)}")
    entries = torch.cat([lower_triangle(fc64), lower_triangle(fc64.T)])
    if not bool(torch.isfinite(entries).all()) or float(entries.std()) == 0.0:
        raise ValueError("target_fc: its upper triangle must be finite and not constant (a "
                         "correlation with a constant pattern is undefined); check the FC file")
    learn = check_learn(learn, bounds)
    unknown = [k for k in params if k not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"params: unknown parameter(s) {unknown}; names are {PARAM_NAMES}")
    if "G" not in params:
        raise ValueError("params: give G (absolute)")
    if not (isinstance(iterations, int) and iterations >= 1):
        raise ValueError(f"iterations: a whole number >= 1, got {iterations!r}")
    if not (lr > 0 and margin >= 0):
        raise ValueError(f"lr must be > 0 and margin >= 0, got lr={lr}, margin={margin}")
    bounds = {**DEFAULT_BOUNDS, **(bounds or {})}
    raw, lo_hi = {}, {}
    for name in learn:
        start = torch.as_tensor(params.get(name, preset.defaults[name]), dtype=torch.float64,
                                device=sc64.device)
        if start.dim() > 1 or (start.dim() == 1 and start.shape[0] != n):
            raise ValueError(f"params: {name} must be a number or ({n},) per region, got shape "
                             f"{tuple(start.shape)}")
        start = start.expand(n).clone()
        lo, hi = (float(b) for b in bounds[name])
        _check_bounds(name, start, (lo, hi))
        frac = (start - lo) / (hi - lo)
        raw[name] = torch.log(frac / (1.0 - frac)).requires_grad_(True)
        lo_hi[name] = (lo, hi)
    fixed = {k: v for k, v in params.items() if k not in learn}

    def values_now():
        return {k: lo_hi[k][0] + (lo_hi[k][1] - lo_hi[k][0]) * torch.sigmoid(raw[k])
                for k in learn}

    def evaluate_loss():
        vals = values_now()
        table = pack_parameters({**fixed, **vals}, preset, 1, n, torch.float64, sc64.device)
        out = lna(table, sc64, haemo, fic_target)
        r = fc_correlation(out.fc[0], fc64)
        lead = out.leading_eigenvalue[0]
        loss = -r + margin_weight * torch.relu(lead + margin) ** 2
        lvl = offdiagonal_mean(out.fc[0])
        if level is not None and level_weight:
            loss = loss + level_weight * (lvl - level) ** 2
        if smoothness:
            loss = loss + smoothness * sum(smoothness_penalty(v, sc64) for v in vals.values())
        return loss, r, lvl, lead

    opt = torch.optim.Adam(list(raw.values()), lr=lr)
    history = []
    best = None                    # (loss, raw values) of the best iterate so far
    stopped = None
    tick = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=iterations, desc="LNA fit", unit="it")
    try:
        for it in range(iterations):
            try:
                loss, r, lvl, lead = evaluate_loss()
            except (ValueError, FICFailed) as err:
                if it == 0:
                    raise
                stopped = (f"stopped at iteration {it}: {err} (the best earlier iterate is "
                           "returned; lower lr or raise margin)")
                warnings.warn(f"fit_regional_lna: {stopped}", RuntimeWarning, stacklevel=2)
                break
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"fit_regional_lna: the loss is not finite at iteration "
                                         f"{it}; check sigma > 0 and the inputs")
            if it == 0 and float(lead.detach()) > -margin:
                warnings.warn(f"fit_regional_lna: the start lies within the stability margin "
                              f"(leading eigenvalue {float(lead.detach()):.3g}/s > -{margin}/s): "
                              "the first steps move away from the bifurcation before they fit "
                              "the FC; give more iterations or a smaller margin",
                              RuntimeWarning, stacklevel=2)
            if best is None or float(loss.detach()) < best[0]:
                best = (float(loss.detach()), {k: v.detach().clone() for k, v in raw.items()},
                        float(r.detach()), float(lvl.detach()), float(lead.detach()))
            opt.zero_grad()
            loss.backward()
            if not all(torch.isfinite(p.grad).all() for p in raw.values()):
                raise FloatingPointError("fit_regional_lna: a non-finite gradient; lower lr or "
                                         "raise margin")
            opt.step()
            history.append({"loss": float(loss.detach()), "fc_r": float(r.detach()),
                            "fc_level": float(lvl.detach()),
                            "leading_eigenvalue": float(lead.detach())})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(fc_r=f"{history[-1]['fc_r']:.3f}",
                                lead=f"{history[-1]['leading_eigenvalue']:.2f}/s")
        if stopped is None:                       # the last step's result counts too
            try:
                with torch.no_grad():
                    loss, r, lvl, lead = evaluate_loss()
                if float(loss) < best[0]:
                    best = (float(loss), {k: v.detach().clone() for k, v in raw.items()},
                            float(r), float(lvl), float(lead))
            except (ValueError, FICFailed) as err:
                stopped = f"the last step left the valid region ({err}); the best earlier " \
                          "iterate is returned"
    finally:
        if bar is not None:
            bar.close()
    with torch.no_grad():                       # the best iterate's values and scores
        for k in raw:
            raw[k].copy_(best[1][k])
        vals = {k: v.detach().clone() for k, v in values_now().items()}
    r, lvl, lead = best[2:]
    settings = dict(learn=list(learn), bounds={k: list(lo_hi[k]) for k in learn},
                    fixed={k: (float(v) if not torch.is_tensor(v) or v.dim() == 0 else
                               torch.as_tensor(v).tolist()) for k, v in fixed.items()},
                    haemo=haemo if isinstance(haemo, str) else dict(haemo),
                    fic_target=float(fic_target), iterations=iterations, lr=lr, margin=margin,
                    margin_weight=margin_weight, level=level, level_weight=level_weight,
                    smoothness=smoothness, stopped=stopped)
    if not math.isfinite(float(r)):
        raise FloatingPointError("fit_regional_lna: the final FC correlation is not finite")
    return RegionalLNAFit(values=vals, fc_r=float(r), fc_level=float(lvl),
                          leading_eigenvalue=float(lead), history=history, settings=settings,
                          seconds=time.perf_counter() - tick)
