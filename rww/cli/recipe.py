"""``rww fit --recipe`` (the default of ``rww fit --demo``): global search, gradient refinement,
the optional LNA stage (per-region values through the linear noise approximation, then G and
sigma re-screened by simulation; on by default with ``--demo``) and evaluation
(:mod:`rww.recipe`), with its options, outputs and figures.

Writes, into ``--out``: ``search.csv`` / ``search.json`` (every candidate with its scores),
``fit.json`` / ``fit.npz`` and ``refine.ckpt`` (the refinement), ``params.json`` (the chosen
parameters, accepted unchanged by ``rww simulate --params``), ``summary.json`` (evaluations of the
search point and the refined point at 0.1 ms on the training target and on held-out data, with
their conventions; the refinement's convergence verdict, ``convergence``, with a warning when it
has not converged; the LNA stage's record, ``train.lna``; timings) and figures (``fc.png``,
``fcd.png``, ``search.png``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

def _defaults() -> dict:
    """The recipe's defaults on the command line: :class:`rww.recipe.RecipeConfig`'s (sized, with
    the demo's LNA stage, for about four minutes on two idle cores, see README: 48 candidates
    over G/G_c, w_EE and the noise amplitude, 1200-TR simulations at dt = 1 ms, 6 refinement
    epochs of 4 realisations, 100 LNA steps and 8 re-screen simulations at dt = 0.1 ms, an
    evaluation of 2 realisations at dt = 0.1 ms)."""
    from ..recipe import RecipeConfig
    c = RecipeConfig()
    return dict(bounds=",".join(f"{k}={lo:g}:{hi:g}" for k, (lo, hi) in c.bounds.items()),
                candidates=c.n_candidates, search_dt=c.search_dt, epochs=c.epochs,
                learn=",".join(c.learn), realisations=c.realisations,
                eval_realisations=c.eval_realisations, lr=c.lr)


def add_recipe_arguments(p):
    """The recipe's options, added to the ``rww fit`` parser."""
    grp = p.add_argument_group("recipe (global search, then gradient refinement; the default "
                               "with --demo)")
    grp.add_argument("--recipe", action="store_true",
                     help="fit by the recipe (deco2014 with FIC): search, refine, evaluate at "
                          "dt 0.1 ms")
    grp.add_argument("--paper", action="store_true",
                     help="with --demo: the seed paper's setting instead (griffiths2022, 20-TR "
                          "windows, learnable connection gains w_bb)")
    grp.add_argument("--search", default="lhs", choices=("lhs", "grid", "cma"),
                     help="search design: Latin hypercube, grid or CMA-ES (default lhs)")
    grp.add_argument("--candidates", type=int, metavar="N",
                     help="candidates (lhs), points per dimension (grid) or population (cma); "
                          "default 48")
    grp.add_argument("--generations", type=int, default=6, metavar="N",
                     help="CMA-ES generations (default 6)")
    grp.add_argument("--bounds", metavar="NAME=LO:HI,...",
                     help="search bounds, replacing the default G_rel=0.7:1.0,w_EE=0.4:1.4,"
                          "sigma=0.004:0.012 (G_rel is G/G_c; "
                          "also fic_target, J_NMDA, sigma, ..., and PARAM:MAP map coefficients)")
    grp.add_argument("--search-dt", type=float, metavar="MS",
                     help="step of the search and refinement [ms] (default 1.0; the evaluation "
                          "uses 0.1)")
    grp.add_argument("--maps", metavar="NAME,...",
                     help="regional maps for heterogeneity (demo: myelin, fc_gradient)")
    grp.add_argument("--map-params", metavar="NAME,...",
                     help="learned parameters given the --maps as regional maps (e.g. w_EE)")
    grp.add_argument("--eval-realisations", type=int, metavar="N",
                     help="noise realisations of the final evaluation (default 2)")
    grp.add_argument("--lna-regional", metavar="NAME,...",
                     help="after the refinement, fit these parameters per region (e.g. "
                          "w_EE,w_EI) to the target FC through the linear noise approximation, "
                          "then re-screen G and sigma by simulation at dt 0.1 ms; kept only if "
                          "it screens better (rww.linear_fit; about 2 minutes at N = 100). "
                          f"Default: {DEMO_LNA_REGIONAL} with --demo, off otherwise; 'none' "
                          "switches it off")
    grp.add_argument("--lna-iterations", type=int, metavar="N",
                     help="Adam steps of the LNA fit (default 100)")
    grp.add_argument("--eval-dt", type=float, default=0.1, metavar="MS",
                     help="step of the final evaluation [ms] (default 0.1, the contract's step; "
                          "coarser only for quick checks)")


# The recipe's options (destination, flag, parser default) that no other fit reads.
RECIPE_ONLY = (("search", "--search", "lhs"), ("candidates", "--candidates", None),
               ("generations", "--generations", 6), ("bounds", "--bounds", None),
               ("search_dt", "--search-dt", None), ("maps", "--maps", None),
               ("map_params", "--map-params", None), ("eval_realisations", "--eval-realisations", None),
               ("eval_dt", "--eval-dt", 0.1))


def recipe_only_given(args) -> list:
    """The flags of :data:`RECIPE_ONLY` given a value other than their default (a fit without
    the recipe would ignore them)."""
    return [flag for dest, flag, default in RECIPE_ONLY if getattr(args, dest) != default]


def _parse_bounds(text: str) -> dict:
    bounds = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, rng = item.partition("=")
        low, colon, high = rng.partition(":")
        try:
            if not (sep and colon):
                raise ValueError
            bounds[name.strip()] = (float(low), float(high))
        except ValueError:
            raise ValueError(f"--bounds: expected NAME=LO:HI, got {item!r}") from None
    if not bounds:
        raise ValueError("--bounds: give at least one NAME=LO:HI")
    return bounds


# rww fit --demo adds the LNA stage with these per-region parameters unless --lna-regional says
# otherwise (measured in the README's demo section).
DEMO_LNA_REGIONAL = "w_EE,w_EI,J_NMDA"


def lna_off(text: str | None) -> bool:
    """Whether ``--lna-regional`` says ``none`` (any case): the LNA stage switched off."""
    return text is not None and text.strip().lower() == "none"


def lna_options(text: str | None, iterations: int | None, demo: bool) -> tuple[list, int | None]:
    """``--lna-regional`` and ``--lna-iterations`` -> ``(names, iterations)``: the per-region
    parameters of the LNA stage (empty: no stage) and its Adam steps (``None``: the recipe's
    default). ``text`` ``None`` means the option was not given: the demo's default
    (:data:`DEMO_LNA_REGIONAL`) with ``demo``, no stage otherwise; ``"none"`` switches it off.

    Raises:
        ValueError: an empty or malformed list, a parameter that cannot be fitted per region from
            the command line, iterations below 1 or given while the stage is off.
    """
    if text is None and demo:
        text = DEMO_LNA_REGIONAL
    off = text is None or lna_off(text)
    if iterations is not None and iterations < 1:
        raise ValueError(f"--lna-iterations: must be at least 1, got {iterations}")
    if off:
        if iterations is not None:
            raise ValueError("--lna-iterations: the LNA stage is off ("
                             + ("--lna-regional none" if text is not None else
                                "give --lna-regional, e.g. w_EE,w_EI,J_NMDA")
                             + ")")
        return [], None
    names = _names(text)
    if not names:
        raise ValueError("--lna-regional: give parameter names, e.g. w_EE,w_EI,J_NMDA (or none)")
    if any(n.lower() == "none" for n in names):
        raise ValueError(f"--lna-regional: 'none' switches the stage off and goes alone, got "
                         f"{text!r}")
    from ..linear_fit import DEFAULT_BOUNDS, check_learn
    from ..params import PARAM_NAMES
    unknown = [p for p in names if p not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"--lna-regional: unknown parameter(s) {unknown}; choose from "
                         f"{sorted(DEFAULT_BOUNDS)} (names are case-sensitive)")
    try:              # names, repeats and parameters that are never regional
        check_learn(names, {k: (0.0, 1.0) for k in names})
    except ValueError as err:
        raise ValueError(f"--lna-regional: {str(err).replace('learn: ', '')}") from None
    unknown = [p for p in names if p not in DEFAULT_BOUNDS]
    if unknown:
        raise ValueError(f"--lna-regional: {unknown} cannot be fitted per region from the "
                         f"command line; choose from {sorted(DEFAULT_BOUNDS)} (others need "
                         "bounds: RecipeConfig(lna_bounds=...) in Python)")
    return names, iterations


def _names(text) -> list:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def run_recipe(args, sc, labels, connectome, demo, target, held_out: dict) -> int:
    """Run the recipe for ``rww fit`` (arguments already parsed and the target loaded)."""
    import torch

    from ..evaluate import evaluate
    from ..fit import FitTarget
    from ..params import get_preset
    from ..recipe import RecipeConfig, _fmt, fit_recipe

    tick_all = time.perf_counter()
    if args.preset not in (None, "deco2014"):
        raise ValueError("--recipe: the recipe fits the deco2014 preset (FIC is defined for it); "
                         "drop --preset or use --paper / a plain fit")
    get_preset("deco2014")
    d = _defaults()
    pick = lambda value, key: d[key] if value is None else value  # noqa: E731
    maps = {}
    for name in _names(args.maps):
        if demo is None or name not in demo.maps:
            known = sorted(demo.maps) if demo is not None else []
            raise ValueError(f"--maps: unknown map {name!r}; the embedded maps are {known} (only "
                             "with --demo)")
        maps[name] = demo.maps[name]
    map_params = _names(args.map_params)
    if map_params and not maps:
        raise ValueError("--map-params: needs --maps")
    learn = _names(pick(args.learn, "learn"))
    bad = [p for p in map_params if p not in learn]
    if bad:
        raise ValueError(f"--map-params: {bad} are not learned (--learn {','.join(learn)})")
    fic = args.fic if args.fic is not None else 3.0
    if args.no_fic:
        raise ValueError("--no-fic: the recipe needs FIC (G is searched relative to G_c)")
    weights = RecipeConfig().weights
    if args.weights:
        from .fit import _parse_pairs
        weights = _parse_pairs(args.weights, "--weights")
    bounds = _parse_bounds(pick(args.bounds, "bounds"))
    if not {"G", "G_rel"} & set(bounds):
        raise ValueError("--bounds: include G_rel (G as a fraction of G_c, e.g. G_rel=0.7:1.0) or "
                         "G; --bounds replaces the default search space, it does not add to it")
    try:
        from ..search import SearchSpace
        SearchSpace(bounds)
    except ValueError as err:
        raise ValueError(f"--bounds: {str(err).replace('SearchSpace: ', '')}") from None
    if args.search == "cma" and args.candidates is not None and args.candidates < 2:
        raise ValueError(f"--candidates: CMA-ES needs a population of at least 2, got "
                         f"{args.candidates}")
    lna_regional, lna_iterations = lna_options(getattr(args, "lna_regional", None),
                                               getattr(args, "lna_iterations", None),
                                               demo is not None)
    lna = {"lna_regional": tuple(lna_regional)}
    if lna_iterations is not None:
        lna["lna_iterations"] = lna_iterations
    config = RecipeConfig(
        bounds=bounds, method=args.search,
        n_candidates=pick(args.candidates, "candidates"), generations=args.generations,
        search_dt=pick(args.search_dt, "search_dt"), fic=fic, learn=tuple(learn), maps=maps,
        map_params=tuple(map_params), epochs=pick(args.epochs, "epochs"),
        lr=pick(args.lr, "lr"), realisations=pick(args.realisations, "realisations"),
        eval_realisations=pick(args.eval_realisations, "eval_realisations"),
        eval_dt=args.eval_dt, seed=args.seed, weights=weights, **lna,
        **{key: getattr(args, key) for key in ("convergence_window", "param_rtol", "loss_rtol")
           if getattr(args, key, None) is not None})
    hemispheres = demo.hemispheres if demo is not None else None
    n_trs = args.n_trs or (target.bold.shape[0] if target.bold is not None else 1200)
    print(f"rww fit (recipe): {config.method} search of {config.n_candidates} candidates over "
          f"{', '.join(config.bounds)} ({n_trs} TRs at dt {config.search_dt} ms), then "
          f"{config.epochs} refinement epochs of {', '.join(learn)}"
          + (f", then per-region {', '.join(lna_regional)} through the LNA"
             if lna_regional else ""), file=sys.stderr)
    try:
        result = fit_recipe(sc, target, config, tr=args.tr or 0.72, n_trs=n_trs,
                            hemispheres=hemispheres, backend=args.backend, out=args.out,
                            progress=not args.no_progress,
                            log=lambda line: print(line, file=sys.stderr))
    except KeyboardInterrupt:
        print(f"rww fit: interrupted; the finished search and refinement epochs are in "
              f"{args.out}: rerun the same command to continue", file=sys.stderr)
        raise

    tick = time.perf_counter()
    held_scores = {}
    for i, (name, data) in enumerate(held_out.items()):
        data = torch.as_tensor(data, dtype=torch.float64)
        ht = FitTarget(bold=data, fcd_window=target.fcd_window, fcd_step=target.fcd_step,
                       fcd_exclude_overlapping=target.fcd_exclude_overlapping)
        ev = evaluate(result.model, ht, n_trs=data.shape[0], burn_in_trs=config.burn_in_trs,
                      n_realisations=config.eval_realisations, seed=20_000 + args.seed + i,
                      dt=config.eval_dt, hemispheres=hemispheres)
        held_scores[name] = ev.to_dict()
    held_s = time.perf_counter() - tick
    chosen = result.evaluations["final"]
    summary = {
        "command": "rww " + shlex.join(getattr(args, "argv", [])),
        "method": f"recipe: global search, gradient refinement, evaluation at dt "
                  f"{config.eval_dt} ms (rww.recipe)",
        "preset": "deco2014", "connectome": connectome, "n_regions": int(sc.shape[0]),
        "params": result.params, "chosen": result.chosen,
        "convergence": dict(result.convergence, judged="the gradient refinement (fit.json), "
                            "not the search; the chosen point is the better of the two on "
                            "fresh noise (train.screening)"),
        "train": result.evaluations, "held_out": held_scores,
        "search_best": result.search.best(1)[0],
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in config.__dict__.items() if k != "maps"},
        "maps": list(maps),
        "timings": dict(result.timings, held_out_s=held_s,
                        total_s=time.perf_counter() - tick_all),
        "timings_note": "seconds of wall time of each stage on this machine; total_s covers the "
                        "whole command after start-up (imports and data loading excluded)",
    }
    outputs = [os.path.join(args.out, f) for f in ("params.json", "search.csv", "search.json")]
    outputs += [os.path.join(args.out, f) for f in ("fit.json", "fit.npz", "refine.ckpt")
                if os.path.exists(os.path.join(args.out, f))]
    if not args.no_figures:
        outputs += _figures(result, target, args.out, config.eval_dt)
    summary["outputs"] = outputs + [os.path.join(args.out, "summary.json")]
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1, default=_jsonable)
    line = (f"{result.chosen} point: G/G_c {_ratio(result)}, FC r {chosen['fc_r_single']:.3f} "
            f"(single simulation; {chosen['fc_r']:.3f} realisation-averaged), FCD KS "
            f"{_fmt(chosen['fcd_ks'])}, mean r_E {_fmt(chosen['rate_mean'], 2)} Hz "
            f"(evaluated at dt {chosen['settings']['dt']} ms)")
    for name, scores in held_scores.items():
        line += f"; held-out {name}: FC r {scores['fc_r_single']:.3f}, FCD KS {_fmt(scores['fcd_ks'])}"
    print(line)
    verdict = result.convergence
    print(f"refinement ({verdict['epochs_run']} of {verdict['epochs']} epochs): "
          f"{verdict['reason']}")
    print("wrote " + ", ".join(summary["outputs"]))
    resume = ("the same command into the same --out reuses the search and resumes the "
              "refinement (fit.json has its history)")
    if verdict["converged"] is False and verdict["reason"].startswith("not judged"):
        fewer = (f", or judge the last {verdict['epochs_run']} with --convergence-window "
                 f"{verdict['epochs_run']}" if verdict["epochs_run"] >= 3 else "")
        print(f"rww fit: warning: refinement {verdict['reason']}; rerun with at least "
              f"{verdict['window']} --epochs{fewer}: {resume}", file=sys.stderr)
    elif verdict["converged"] is False:
        kept = {"search": "the search point was kept (it screened better)",
                "lna": "the LNA point built on it screened best"}.get(
                    result.chosen, "the refined point may still change")
        print(f"rww fit: warning: refinement {verdict['reason']}; {kept}: rerun with more "
              f"--epochs to continue it: {resume}", file=sys.stderr)
    return 0


def _ratio(result) -> str:
    return f"{float(result.model.coupling_ratio()[0]):.3f}"


def _jsonable(value):
    import math
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _figures(result, target, out: str, eval_dt: float) -> list:
    """FC (target vs chosen), FCD distributions and the search landscape."""
    import torch

    from .. import figures
    from .. import objectives as obj
    paths = []
    ev = result.final                    # the chosen point's evaluation: reuse its simulation
    fc_target = torch.as_tensor(target.fc, dtype=torch.float64) if target.fc is not None \
        else obj.fc(torch.as_tensor(target.bold, dtype=torch.float64))
    paths.append(figures.fc_comparison(fc_target, ev.fc, os.path.join(out, "fc.png"),
                                       title=f"target vs fitted FC ({result.chosen} point, "
                                             f"{ev.bold.shape[0]} realisations at dt "
                                             f"{eval_dt} ms)"))
    if target.fcd_values is not None:
        sim_fcd = obj.fcd(ev.bold[0].to(torch.float64), target.fcd_window, target.fcd_step)
        paths.append(figures.fcd_comparison(
            torch.as_tensor(target.fcd_values), sim_fcd, os.path.join(out, "fcd.png"),
            window=target.fcd_window, step=target.fcd_step, tr=result.model.tr,
            names=("target", f"fitted ({result.chosen})"),
            exclude_overlapping=target.fcd_exclude_overlapping))
    paths.append(figures.search_landscape(result.search, os.path.join(out, "search.png")))
    return paths

