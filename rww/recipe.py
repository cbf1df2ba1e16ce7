"""The fitting recipe: global search, then gradient refinement, then one evaluation protocol.

1. **Search** (:mod:`rww.search`): candidates over a few global parameters (default G as a
   fraction of the critical coupling G_c, and w_EE), with feedback inhibition control (FIC),
   each simulated as long as the target scans at a coarse step and scored on FC correlation, FC
   level and FCD KS together.
2. **Refinement** (:func:`rww.fit.fit`): the best candidate's parameters, optionally with
   regional heterogeneity (a parameter as a function of cortical maps), fitted by Adam on
   full-length simulations (back-propagated through the whole scan by the checkpointed scan) with
   FC correlation, FC level, the FCD 1-Wasserstein distance and a firing-rate band.
3. **Evaluation** (:func:`rww.evaluate.evaluate`): the search's best point and the refined one
   are screened on fresh noise at the search step; the better of the two (lower
   :func:`rww.search.candidate_loss`) is the result, evaluated again at the contract's step
   (0.1 ms) with fresh realisations. Both screenings are reported: a refinement that did not help
   is said so, not hidden.
4. **Optional: regional heterogeneity through the linear noise approximation**
   (``RecipeConfig.lna_regional``, :mod:`rww.linear_fit`): from the chosen point, per-region
   values fitted to the target FC through the LNA, then G and sigma re-screened by simulation at
   ``lna_screen_dt`` (0.1 ms) with those values, beside the chosen point itself on the same
   noise; the LNA point replaces it only if it screens better.

:func:`fit_recipe` runs them and writes ``params.json`` (accepted unchanged by
``rww simulate --params``), ``search.csv``/``search.json``, ``summary.json`` and figures.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .evaluate import evaluate
from .fit import FitConfig, FitTarget, fit
from .model import RWWBold
from .params import PARAM_INDEX, PARAM_NAMES, get_preset
from .search import CandidateEvaluator, SearchResult, SearchSpace, candidate_loss, search
from .transforms import RegionalMap

__all__ = ["RecipeConfig", "RecipeResult", "fit_recipe", "model_from_row", "params_json",
           "refinement_verdict", "lna_stage", "check_lna_config"]


@dataclass
class RecipeConfig:
    """Settings of :func:`fit_recipe`.

    Attributes:
        bounds: search space (see :class:`rww.search.SearchSpace`), default G/G_c in (0.7, 1.0),
            w_EE in (0.4, 1.4) and sigma in (0.004, 0.012) nA (the command line's defaults too).
        method, n_candidates, generations: search design (``"lhs"``, ``"grid"``, ``"cma"``).
        search_dt: step of the search and the refinement [ms] (the evaluation uses 0.1 ms).
        fic: FIC target rate [Hz].
        learn: parameters refined by gradient (``G`` is the fraction G/G_c during refinement).
        maps: map name -> ``(N,)`` z-scored map; each learned parameter in ``map_params`` becomes
            a :class:`rww.transforms.RegionalMap` of them (heterogeneous fit).
        map_params: learned parameters given regional maps.
        regional: learned parameters given free per-region values (N of them, started at the
            search's value; add a ``smoothness`` weight to penalise rough maps).
        epochs, lr, realisations: refinement (Adam on full-length simulations, as long as the
            target scans; ``realisations`` noise realisations averaged per step, default 4 from
            the gradient's measured signal-to-noise ratio, ``examples/gradient_snr.py``).
        weights: loss weights of the refinement (terms of :data:`rww.fit.LOSS_TERMS`).
        eval_realisations: realisations of the final evaluation.
        eval_dt: step of the final evaluation [ms] (default 0.1, the contract's; a coarser one
            only for quick checks).
        seed: of the search design, the noise and the evaluation.
        batch_size: candidates simulated together in the search.
        burn_in_trs: TRs discarded before scoring (search and refinement).
        convergence_window, param_rtol, loss_rtol: the refinement's convergence verdict
            (:func:`rww.fit_control.convergence`, reported in :attr:`RecipeResult.convergence`);
            ``convergence_window`` ``None`` (the default) judges the last ``min(10, epochs)``
            epochs (at least 3: fewer epochs are reported as not judged).
        lna_regional: parameters given per-region values by the LNA stage (e.g.
            ``("w_EE", "w_EI", "J_NMDA")``, what ``rww fit --demo`` uses; empty, the default
            here: no LNA stage). ``lna_bounds``, ``lna_iterations``,
            ``lna_margin``: of :func:`rww.linear_fit.fit_regional_lna` (bounds over
            :data:`rww.linear_fit.DEFAULT_BOUNDS`; Adam steps; stability margin [1/s]). If the
            stage cannot run from the chosen point (beyond the bifurcation, a start outside the
            bounds, FIC failing), it is skipped with a logged reason and the chosen point is
            kept.
        lna_g_scales, lna_sigma_scales: the re-screen's grid, as factors of the chosen point's G
            and sigma; ``lna_screen_dt``: its step [ms] (one realisation per point, 1 + the grid's
            size simulations).
    """

    bounds: dict = field(default_factory=lambda: {"G_rel": (0.7, 1.0), "w_EE": (0.4, 1.4),
                                                  "sigma": (0.004, 0.012)})
    method: str = "lhs"
    n_candidates: int = 48
    generations: int = 6
    search_dt: float = 1.0
    fic: float = 3.0
    learn: tuple = ("G", "w_EE")
    maps: dict = field(default_factory=dict)
    map_params: tuple = ()
    regional: tuple = ()
    epochs: int = 6
    lr: float = 0.03
    # 4 realisations of the whole scan per step: examples/gradient_snr.py measured a
    # single-realisation SNR of ~2 near the bifurcation at 1200 TRs (and biased gradients at 100-300
    # TRs), so 4 give ~4.
    realisations: int = 4
    weights: dict = field(default_factory=lambda: {"fc_corr": 1.0, "fc_level": 1.0, "fcd_ks": 1.0,
                                                   "rate_band": 0.01})
    eval_realisations: int = 2
    eval_dt: float = 0.1
    seed: int = 0
    batch_size: int = 24
    burn_in_trs: int = 42
    convergence_window: int | None = None
    param_rtol: float = 0.02
    loss_rtol: float = 0.01
    lna_regional: tuple = ()
    lna_bounds: dict = field(default_factory=dict)
    lna_iterations: int = 100
    lna_margin: float = 1.0
    # Chosen from scratch screens on the demo (not recorded; G x 0.8-1.0, sigma x 0.5-1.0, one or
    # two noise seeds): with per-region w_EE and w_EI the good points lay on a ridge where a
    # lower G needs more noise (G x 0.925 with sigma x 0.5-0.6, G x 0.875 with sigma x 1.0: FCD
    # KS 0.11-0.21, 3.3-4.0 Hz) and at G x 0.95 regions escaped to high rates (6.4 Hz mean); with
    # J_NMDA too the best lay at G x 0.85-0.9 with sigma x 0.5-0.75 (KS 0.19-0.25, 3.2-3.4 Hz)
    # and the FCD was missed from G x 0.95 up. The recorded runs with this grid chose G x 0.9,
    # sigma x 0.5 (rww fit --demo) and G x 0.85, sigma x 0.75 (examples/fit_lna.py,
    # examples/fit_recipe.py lna_group). 8 simulations (+ the given point).
    lna_g_scales: tuple = (0.85, 0.875, 0.9, 0.925)
    lna_sigma_scales: tuple = (0.5, 0.75)
    lna_screen_dt: float = 0.1

    def verdict_settings(self) -> dict:
        """The refinement's :func:`rww.fit_control.convergence` settings (``convergence_window``
        resolved: ``min(10, epochs)``, at least 3, unless given)."""
        window = self.convergence_window
        if window is None:
            window = max(3, min(10, int(self.epochs)))
        return {"convergence_window": window, "param_rtol": self.param_rtol,
                "loss_rtol": self.loss_rtol}


@dataclass
class RecipeResult:
    """Outcome of :func:`fit_recipe`.

    Attributes:
        model: the chosen model (search point, refined, or the LNA stage's), at the search step.
        params: ``params.json`` content (:func:`params_json`).
        search: the :class:`rww.search.SearchResult`.
        fit: the refinement's :class:`rww.fit.FitResult` (``None`` with ``epochs = 0``).
        evaluations: ``{"screening": {"search": dict, "refined": dict}, "final": dict}`` of
            :meth:`rww.evaluate.Evaluation.to_dict`: the screening at the search step that chose
            the point (same noise for both), and the chosen point's evaluation at ``eval_dt``;
            with the LNA stage also ``"lna"`` (:func:`lna_stage`'s record: the LNA fit, its
            per-region values and the re-screen's rows; or ``{"skipped": reason}``).
        chosen: ``"search"``, ``"refined"`` or ``"lna"``.
        timings: seconds of each stage.
        final: the chosen point's :class:`rww.evaluate.Evaluation` (with its simulated BOLD and
            FC, for figures).
        convergence: the refinement's convergence verdict (:func:`rww.fit_control.convergence`
            on its history: ``converged`` (bool), ``reason`` (one sentence), the drifts, ...; see
            :func:`refinement_verdict`), with ``converged`` ``None`` when no refinement ran.
    """

    model: RWWBold
    params: dict
    search: SearchResult
    fit: object
    evaluations: dict
    chosen: str
    timings: dict
    final: object = None
    convergence: dict | None = None


def model_from_row(sc, row: dict, config: RecipeConfig, *, batch: int = 1, learn=(),
                   tr: float = 0.72, backend: str = "auto", dtype=torch.float32,
                   haemo=None) -> RWWBold:
    """An :class:`rww.RWWBold` at a search row's parameters (FIC on, G as the fraction G/G_c),
    at ``config.search_dt``; ``learn`` names parameters to make learnable (those in
    ``config.map_params`` as regional maps started at the row's map coefficients)."""
    sc = torch.as_tensor(sc)
    n_nodes = sc.shape[-1]
    values = {}
    for name in PARAM_NAMES:
        if name in row and name != "G":
            values[name] = float(row[name])
    g_rel = float(row["G_over_Gc"])
    fic = float(row.get("fic_target", config.fic))
    learn_spec = {}
    for name in learn:
        if name in config.map_params and config.maps:
            maps = torch.stack([torch.as_tensor(m, dtype=dtype) for m in config.maps.values()])
            learn_spec[name] = RegionalMap(maps, "positive")
        else:
            learn_spec[name] = "positive"
            if name in config.regional:           # free per-region values, started uniform
                start = values.get(name, get_preset("deco2014").defaults[name])
                values[name] = torch.full((n_nodes,), float(start), dtype=dtype)
    # Map coefficients of parameters that are not learned as maps: the regional values the
    # search simulated, param_i = softplus(softplus^-1(param) + sum_k c_k map_k,i).
    shifts = {}
    for key, value in row.items():
        if isinstance(key, str) and ":" in key:
            param, map_name = key.split(":")
            if param not in learn_spec or not isinstance(learn_spec[param], RegionalMap):
                if map_name not in config.maps:
                    raise ValueError(f"model_from_row: {key} needs the map {map_name!r} in "
                                     "config.maps")
                m = torch.as_tensor(config.maps[map_name], dtype=torch.float64)
                shifts[param] = shifts.get(param, 0.0) + float(value) * m
    for param, shift in shifts.items():
        base = torch.as_tensor(values.get(param, get_preset("deco2014").defaults[param]),
                               dtype=torch.float64)      # a number, or (N,) free values
        raw = base + torch.log(-torch.expm1(-base))
        values[param] = torch.nn.functional.softplus(raw + shift).to(dtype)
    model = RWWBold(sc, dt=config.search_dt, tr=tr, batch=batch, fic=fic, g_relative=True,
                    learn=learn_spec, backend=backend, dtype=dtype, haemo=haemo, G=g_rel,
                    **values)
    # Map coefficients found by the search start the regional maps where the search left them.
    for key, value in row.items():
        if isinstance(key, str) and ":" in key:
            param, map_name = key.split(":")
            if param in model.learned and isinstance(model.learned[param], RegionalMap):
                k = list(config.maps).index(map_name)
                with torch.no_grad():
                    model.learned[param].coefficients[k] = float(value)
    return model


def params_json(model: RWWBold, note: str = "") -> dict:
    """The model's parameters for ``rww simulate --params``: every parameter that differs from
    the preset default (numbers, or per-region lists), G as its absolute value, ``fic`` (the
    target rate), ``haemo``, and ``record`` (G/G_c, G_c and a note; ignored on input)."""
    with torch.no_grad():
        table = model.parameter_table()
    out = {}
    defaults = model.preset.defaults
    for name in PARAM_NAMES:
        if name == "w_IE" and model.fic_target is not None:
            continue                                  # set by FIC when simulated
        row = table[PARAM_INDEX[name]].to(torch.float64)
        values = row[0] if row.shape[0] >= 1 else row
        if bool((values == values[0]).all()):
            value = float(values[0])
            if name == "G" or not math.isclose(value, defaults[name], rel_tol=1e-6):
                out[name] = value
        else:
            out[name] = [float(v) for v in values]
    if model.fic_target is not None:
        out["fic"] = float(model.fic_target.flatten()[0])
    out["haemo"] = model.haemo["model"].split("+")[0]
    record = {"note": note} if note else {}
    if model.fic_target is not None:
        record.update(G_over_Gc=float(model.coupling_ratio()[0]),
                      G_c=float(model.critical_coupling()[0].detach()))
    out["record"] = record
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _as_loss(ev: dict) -> float:
    scores = {"fc_r": [ev.get("fc_r_single", ev.get("fc_r"))],
              "fc_level_diff": [ev.get("fc_level_diff") if ev.get("fc_level_diff") is not None
                                else np.nan],
              "fcd_ks": [ev.get("fcd_ks") if ev.get("fcd_ks") is not None else 1.0]}
    return float(candidate_loss(scores)[0])


def _search_key(config: RecipeConfig, evaluator: CandidateEvaluator, sc: torch.Tensor) -> str:
    """A fingerprint of everything a search result depends on (settings, connectome, target)."""
    import hashlib
    digest = hashlib.sha256()
    for tensor in (sc, evaluator.target.fc, evaluator.target.fcd_all, evaluator.target.fcd_nonoverlap,
                   *(evaluator.maps[k] for k in sorted(evaluator.maps))):
        if tensor is not None:
            digest.update(tensor.detach().to(torch.float64).cpu().numpy().tobytes())
    settings = dict(bounds={k: list(v) for k, v in config.bounds.items()}, method=config.method,
                    n=config.n_candidates, generations=config.generations, seed=config.seed,
                    dt=evaluator.dt, tr=evaluator.tr, n_trs=evaluator.n_trs,
                    burn_in=evaluator.burn_in_trs, fic=config.fic, batch=evaluator.batch_size,
                    data=digest.hexdigest())
    return json.dumps(settings, sort_keys=True)


def _load_search(out: str, key: str) -> SearchResult | None:
    """The search saved in ``out`` if it was run with the same settings (``key``), else None."""
    path = os.path.join(out, "search.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            saved = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None
    if saved.get("settings", {}).get("key") != key:
        return None
    rows = [{k: (math.inf if k == "loss" and v is None else v) for k, v in r.items()}
            for r in saved["rows"]]
    return SearchResult(rows, saved["names"], saved["settings"])


def fit_recipe(sc, target: FitTarget, config: RecipeConfig | None = None, *, tr: float = 0.72,
               n_trs: int | None = None, hemispheres=None, backend: str = "auto",
               out: str | None = None, progress: bool = True, log=print) -> RecipeResult:
    """Search, refine and evaluate (see the module docstring).

    Args:
        sc: ``(N, N)`` connectome, normalised (e.g. by its mean row sum).
        target: :class:`rww.fit.FitTarget` with FC and FCD values (and their window convention).
        config: :class:`RecipeConfig`.
        tr: [s]. n_trs: TRs per simulation (default the target BOLD's length, else 1200).
        hemispheres: ``(N,)`` labels for intra-hemispheric FC r.
        out: folder for ``params.json``, ``search.csv``, ``search.json``, ``fit.json``,
            ``refine.ckpt`` (created; ``None`` writes nothing). Rerunning into the same folder
            continues: a search finished with the same settings and data is reused, and the
            refinement resumes from its last finished epoch (a different search discards it).
        log: function taking one line of progress text (``None`` for silence).

    Returns:
        :class:`RecipeResult`.
    """
    config = config or RecipeConfig()
    log = log or (lambda *_: None)
    check_lna_config(config)
    timings = {}
    sc = torch.as_tensor(sc, dtype=torch.float32)
    if out:
        os.makedirs(out, exist_ok=True)

    tick = time.perf_counter()
    space = SearchSpace(dict(config.bounds))
    evaluator = CandidateEvaluator(sc, target, n_trs=n_trs, burn_in_trs=config.burn_in_trs,
                                   dt=config.search_dt, tr=tr, fic=config.fic, maps=config.maps,
                                   hemispheres=hemispheres, batch_size=config.batch_size,
                                   seed=config.seed, backend=backend, progress=progress)
    n_trs = evaluator.n_trs
    weights = dict(config.weights)
    if not evaluator.target.has_fcd and (weights.get("fcd") or weights.get("fcd_ks")):
        # FC only: the FCD terms have nothing to compare with (the search ranks FC alone).
        weights = {k: v for k, v in weights.items() if k not in ("fcd", "fcd_ks")}
        log("target has no FCD (give FCD values or BOLD long enough for two windows): the "
            "search and refinement use FC terms only")
    points = config.generations if config.method == "cma" else None
    key = _search_key(config, evaluator, sc)
    result = _load_search(out, key) if out else None
    if result is None:
        if out and os.path.exists(os.path.join(out, "refine.ckpt")):
            # A refinement checkpoint from another search would resume from the wrong start.
            os.remove(os.path.join(out, "refine.ckpt"))
        result = search(space, evaluator, config.method, config.n_candidates, config.seed, points)
        result.settings["key"] = key
        if out:
            result.save(os.path.join(out, "search"))
    else:
        log(f"search: reusing the finished search in {out} (same settings and target)")
    timings["search_s"] = time.perf_counter() - tick
    ranked = result.best(1)
    if not ranked:
        raise RuntimeError("search: no candidate could be scored (every one failed: see the "
                           "status column of search.csv); widen or move the bounds")
    best = ranked[0]
    log(f"search: {len(result.rows)} candidates in {timings['search_s']:.0f} s; best "
        f"G/G_c {best['G_over_Gc']:.3f}, FC r {best['fc_r']:.3f}, FCD KS "
        f"{_fmt(best.get('fcd_ks'))}, mean r_E {best['rate_mean']:.2f} Hz")

    start_model = model_from_row(sc, best, config, tr=tr, backend=backend)
    fit_result, refined = None, None
    tick = time.perf_counter()
    if config.epochs > 0 and config.learn:
        refined = model_from_row(sc, best, config, batch=config.realisations,
                                 learn=config.learn, tr=tr, backend=backend)
        fit_config = FitConfig(epochs=config.epochs, lr=config.lr, window_trs=None, n_trs=n_trs,
                               burn_in_trs=config.burn_in_trs, seed=config.seed + 1,
                               weights=weights, **config.verdict_settings())
        fit_result = fit(refined, target, fit_config, progress=progress,
                         checkpoint=os.path.join(out, "refine.ckpt") if out else None,
                         resume=bool(out))
        if out:
            fit_result.save(os.path.join(out, "fit"))
    timings["refine_s"] = time.perf_counter() - tick
    verdict = refinement_verdict(fit_result, config)
    if fit_result is not None:
        log(f"refine: {len(fit_result.history['epoch'])} epochs of {', '.join(config.learn)} in "
            f"{timings['refine_s']:.0f} s; {verdict['reason']}")

    tick = time.perf_counter()
    # Choose between the search point and the refined one on fresh noise at the search step
    # (cheap), then evaluate the chosen one at the contract's step with several realisations.
    screening = {}
    candidates = {"search": start_model}
    if refined is not None:
        candidates["refined"] = refined
    for name, model in candidates.items():
        ev = evaluate(model, target, n_trs=n_trs, burn_in_trs=config.burn_in_trs,
                      n_realisations=config.eval_realisations, seed=config.seed + 1000,
                      dt=config.search_dt, hemispheres=hemispheres)
        screening[name] = ev.to_dict()
        log(f"screen {name} (dt {config.search_dt} ms): FC r {ev['fc_r_single']:.3f}, FCD KS "
            f"{_fmt(ev['fcd_ks'])}, mean r_E {_fmt(ev['rate_mean'], 2)} Hz, loss "
            f"{_as_loss(screening[name]):.3f}")
    losses = {k: _as_loss(v) for k, v in screening.items()}
    chosen = min(losses, key=losses.get)
    model = candidates[chosen]
    lna_record = None
    if config.lna_regional:
        from .fic import FICFailed
        lna_tick = time.perf_counter()
        try:
            lna_model, lna_record = lna_stage(sc, target, model, config, n_trs=n_trs, tr=tr,
                                              hemispheres=hemispheres, backend=backend,
                                              progress=progress, log=log)
        except (ValueError, FICFailed, FloatingPointError) as err:
            lna_model, lna_record = None, {"skipped": str(err)}
            log(f"lna: skipped, the {chosen} point is kept: {err}")
        if lna_model is not None:
            model, chosen = lna_model, "lna"
        timings["lna_s"] = time.perf_counter() - lna_tick
    ev = evaluate(model, target, n_trs=n_trs, burn_in_trs=config.burn_in_trs,
                  n_realisations=config.eval_realisations, seed=config.seed + 2000,
                  dt=config.eval_dt, hemispheres=hemispheres, progress=progress)
    evaluations = {"screening": screening, "final": ev.to_dict()}
    if lna_record is not None:
        evaluations["lna"] = lna_record
    log(f"evaluate {chosen} (dt {ev.settings['dt']} ms, {config.eval_realisations} "
        f"realisations): FC r {ev['fc_r_single']:.3f} single / {ev['fc_r']:.3f} averaged, "
        f"FCD KS {_fmt(ev['fcd_ks'])}, mean r_E {_fmt(ev['rate_mean'], 2)} Hz")
    timings["evaluate_s"] = time.perf_counter() - tick - timings.get("lna_s", 0.0)
    params = params_json(model, note=f"rww fit recipe ({chosen} point)")
    if out:
        with open(os.path.join(out, "params.json"), "w") as fh:
            json.dump(params, fh, indent=1)
    return RecipeResult(model, params, result, fit_result, evaluations, chosen, timings, ev,
                        verdict)


def check_lna_config(config: RecipeConfig):
    """``ValueError`` naming the field when the LNA stage's settings cannot work (checked before
    the search, so a mistake does not surface after it; the settings are checked also when
    ``lna_regional`` is empty, so that a mistaken setting is not silently unused)."""
    from .linear_fit import check_learn
    if config.lna_regional:                     # a string is refused here, as not a sequence
        try:
            check_learn(config.lna_regional, config.lna_bounds)
        except ValueError as err:
            raise ValueError(f"RecipeConfig.lna_regional/lna_bounds: {err}") from None
    unused = sorted(set(config.lna_bounds) - set(config.lna_regional))
    if unused:
        raise ValueError(f"RecipeConfig.lna_bounds: {unused} are not in lna_regional "
                         f"{tuple(config.lna_regional)!r}, so their bounds would be unused; add "
                         "them to lna_regional or drop them")
    if not (isinstance(config.lna_iterations, int) and config.lna_iterations >= 1):
        raise ValueError(f"RecipeConfig.lna_iterations: a whole number >= 1, got "
                         f"{config.lna_iterations!r}")
    if not config.lna_margin >= 0:
        raise ValueError(f"RecipeConfig.lna_margin: must be >= 0 [1/s], got {config.lna_margin}")
    for name in ("lna_g_scales", "lna_sigma_scales"):
        values = tuple(getattr(config, name))
        if not values or not all(isinstance(v, (int, float)) and v > 0 for v in values):
            raise ValueError(f"RecipeConfig.{name}: a non-empty sequence of positive factors, got "
                             f"{values!r}")
    if not config.lna_screen_dt > 0:
        raise ValueError(f"RecipeConfig.lna_screen_dt: must be > 0 [ms], got "
                         f"{config.lna_screen_dt}")


def lna_stage(sc, target: FitTarget, model: RWWBold, config: RecipeConfig, *, n_trs: int,
              tr: float = 0.72, hemispheres=None, backend: str = "auto", progress: bool = True,
              log=print):
    """The recipe's optional fourth stage (module docstring): per-region ``config.lna_regional``
    fitted to the target FC through the LNA from ``model``'s point, then a re-screen of G and
    sigma by simulation with those values.

    The re-screen simulates, as one batch on the same noise at ``config.lna_screen_dt``, the
    point as given (row 0) and every G x sigma of ``config.lna_g_scales`` x
    ``config.lna_sigma_scales`` with the LNA's values, one realisation of ``n_trs`` TRs each, and
    ranks them by :func:`rww.search.candidate_loss` (FC r, FC level, FCD KS, rates outside the
    band; a target without FCD counts KS 1 for every row, as the search does).

    Returns:
        ``(lna_model, record)``: the best re-screened point as an :class:`rww.RWWBold` at
        ``config.search_dt`` (absolute G, FIC at ``config.fic``), or ``None`` when the given
        point screened best; ``record`` (JSON-ready): the LNA fit (``fc_r``, ``fc_level``,
        ``leading_eigenvalue``, ``seconds``, ``settings``), ``values`` (name -> N floats),
        ``screen`` (one row per point: G, sigma, scores, loss) and ``best`` (its row index).
    """
    import itertools

    from .linear_fit import fit_regional_lna
    from .scoring import prepare_target, score_bold
    from .search import rate_excess
    log = log or (lambda *_: None)
    sc = torch.as_tensor(sc, dtype=torch.float32)
    n = sc.shape[-1]
    start = {k: v for k, v in params_json(model).items() if k not in ("fic", "haemo", "record")}
    fic = float(model.fic_target.flatten()[0]) if model.fic_target is not None else config.fic
    scoring = prepare_target(target, n)
    fit_ = fit_regional_lna(sc, scoring.fc, start, learn=config.lna_regional,
                            bounds=config.lna_bounds, haemo=model.haemo, fic_target=fic,
                            iterations=config.lna_iterations, margin=config.lna_margin,
                            progress=progress)
    log(f"lna: {', '.join(config.lna_regional)} per region in {fit_.seconds:.0f} s; LNA FC r "
        f"{fit_.history[0]['fc_r']:.3f} -> {fit_.fc_r:.3f}, leading eigenvalue "
        f"{fit_.leading_eigenvalue:.2f}/s")
    sigma0 = float(torch.as_tensor(start.get("sigma", model.preset.defaults["sigma"])))
    g0 = float(start["G"])
    grid = [(g0, sigma0, False)] + [(g0 * gs, sigma0 * ss, True) for gs, ss in
                                    itertools.product(config.lna_g_scales,
                                                      config.lna_sigma_scales)]
    b = len(grid)

    def batch_values(use_lna: bool):
        source = {**{k: model.preset.defaults[k] for k in fit_.values}, **start}
        if use_lna:
            source.update({k: v.tolist() for k, v in fit_.values.items()})
        return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in source.items()
                if k not in ("G", "sigma")}
    per_row = [batch_values(use) for _, _, use in grid]
    stacked = {k: torch.stack([row[k].expand(n) for row in per_row]) for k in per_row[-1]}
    screen_model = RWWBold(sc, dt=config.lna_screen_dt, tr=tr, batch=b, fic=fic,
                           backend=backend, haemo=model.haemo,
                           G=torch.tensor([g for g, _, _ in grid]),
                           sigma=torch.tensor([s for _, s, _ in grid]), **stacked)
    burn = config.burn_in_trs
    with torch.no_grad():
        res = screen_model.simulate(burn + n_trs, seed=config.seed + 3000, record=("r_E",))
    rows = []
    for i, (g, s, use) in enumerate(grid):
        excess = float(rate_excess(res.records["r_E"][i, burn:].to(torch.float64).mean(0)))
        scores = score_bold(res.bold[i:i + 1, burn:], scoring, hemispheres=hemispheres,
                            rate_e=res.records["r_E"][i:i + 1, burn:])
        row = {"G": g, "sigma": s, "lna_values": use, "rate_excess": excess,
               **{k: (None if v is None else float(v)) for k, v in scores.items()}}
        # a missing FCD (a target with FC only) counts as KS 1 for every row, as in the search
        row["loss"] = float(candidate_loss(
            {k: [row[k] if row.get(k) is not None else (1.0 if k == "fcd_ks" else np.nan)]
             for k in ("fc_r", "fc_level_diff", "fcd_ks", "rate_excess")})[0])
        rows.append(row)
    best = min(range(b), key=lambda i: rows[i]["loss"])
    r0, rb = rows[0], rows[best]
    which = "the given point" if best == 0 else f"G {rb['G']:.4g}, sigma {rb['sigma']:.4g}"
    log(f"lna screen (dt {config.lna_screen_dt} ms, {b} points): given point FC r "
        f"{r0['fc_r']:.3f}, FCD KS {_fmt(r0.get('fcd_ks'))}, loss {r0['loss']:.3f}; best "
        f"{which}: FC r {rb['fc_r']:.3f}, FCD KS {_fmt(rb.get('fcd_ks'))}, loss "
        f"{rb['loss']:.3f}")
    record = {"fit": {"fc_r": fit_.fc_r, "fc_r_start": fit_.history[0]["fc_r"],
                      "fc_level": fit_.fc_level, "leading_eigenvalue": fit_.leading_eigenvalue,
                      "seconds": fit_.seconds, "settings": fit_.settings},
              "values": {k: v.tolist() for k, v in fit_.values.items()},
              "screen": rows, "best": best, "screen_dt": config.lna_screen_dt}
    if best == 0:
        return None, record
    values = batch_values(True)
    lna_model = RWWBold(sc, dt=config.search_dt, tr=tr, fic=fic, backend=backend,
                        haemo=model.haemo, G=rb["G"], sigma=rb["sigma"], **values)
    return lna_model, record


def refinement_verdict(fit_result, config: RecipeConfig) -> dict:
    """The convergence verdict of the recipe's refinement: :func:`rww.fit_control.convergence`
    on its history (the one :attr:`rww.fit.FitResult.convergence` holds), with the settings it
    used. Without a refinement (``epochs = 0`` or nothing learned) ``converged`` is ``None`` and
    the reason says why.

    Returns:
        dict: the verdict's entries (``converged``, ``reason``, ``window``, ``loss_drift``,
        ``param_drift``, ...), ``epochs_run``, ``epochs``, and ``settings`` (window and
        tolerances).
    """
    from .fit_control import convergence
    settings = config.verdict_settings()
    if fit_result is None:
        why = "epochs = 0" if config.epochs <= 0 else "no parameter to learn"
        return {"converged": None, "reason": f"not judged: no refinement ran ({why})",
                "window": None,
                "epochs_run": 0, "epochs": config.epochs, "settings": settings}
    verdict = convergence(fit_result.history, **settings)
    verdict.update(epochs_run=len(fit_result.history["epoch"]), epochs=config.epochs,
                   settings=settings)
    return verdict
