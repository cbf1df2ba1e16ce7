"""Parameter recovery with the fitting recipe (FIC, G as G/G_c), plus an identifiability table.

Ground truth: the deco2014 model with feedback inhibition control (FIC, 3 Hz), G/G_c = 0.85,
w_EE = 0.6, sigma = 0.007 (every other parameter at its default) on the embedded HCP
Schaefer-100 group connectome (mean-row-sum normalised), TR 0.72 s. The synthetic target is the
BOLD of one noise realisation at the truth (``--target-seed``, used by nothing else): 1200 TRs
after a 42-TR burn-in, ``FitTarget(bold=..., fcd_window=43, fcd_step=7,
fcd_exclude_overlapping=False)`` (the demo's pooled FCD convention).

dt = 1 ms everywhere (truth, search, refinement, profiles): the contract's 0.1 ms costs 10x more
than the CPU budget of this run allows. The model is the same at any step; the truth and the fits
use the same step, so recovery is not confounded by discretisation.

Recovery (``--fits`` fits): fit k starts from a point 30-40% off the truth in *every* fitted
parameter (G/G_c, w_EE, sigma), the direction of each offset fixed per fit (different sign
patterns), and fits with Gaussian priors that are NOT centred on the truth (mean 1.2 x truth,
SD = truth, the same for every fit). Each fit is the recipe's two stages, with its pieces:

1. search: CMA-ES (:func:`rww.search.cma_search`) started at the start point, over bounds around
   it (start / 2 to start x 1.6 per parameter, G/G_c clipped to [0.4, 1.1], sigma searched in log
   space), ``--popsize`` x ``--generations`` candidates simulated for the full 1200 TRs with
   common noise and ranked by :func:`rww.search.candidate_loss` ((1 - FC r) + |FC level diff| +
   FCD KS + rate penalty);
2. refinement: :func:`rww.fit.fit` from the best candidate, full 1200-TR horizon back-propagated,
   ``--realisations`` noise realisations per epoch, ``--epochs`` Adam steps, the recipe's loss
   weights (fc_corr 1, fc_level 1, fcd_ks 1, rate_band 0.01) plus the priors.

The recipe's screening (search point vs refined point on fresh noise, the better one kept) is run
too and reported as ``recipe_choice``; the recovered value reported per fit is the refined one.

Identifiability: for each parameter, a slice of the expected loss at truth x (0.8, 0.9, 0.95, 1,
1.05, 1.1, 1.2) with the others at truth: ``--profile-realisations`` realisations, common random
numbers (the same noise seed at every point), against the same target. Two losses per
realisation: the refinement's (the fit's data terms) and the search's ranking loss. The table
gives the mean loss change from the truth, its standard error (paired, CRN), the z-score, and the
single-realisation SD of the loss (the noise an unpaired comparison faces). A parameter is
*identifiable* when the refinement loss rises by >= 3 paired SEs at both 0.9x and 1.1x.

    python examples/recovery_fic.py --quick    # ~3 min: 2 fits, 400 TRs, tiny search
    python examples/recovery_fic.py            # the recorded run (~14 min on one busy core)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np
import torch

from rww import RWWBold
from rww import objectives as obj
from rww.data import load_demo
from rww.evaluate import prepare_target, score_batch
from rww.fit import FitConfig, FitTarget, fit
from rww.recipe import RecipeConfig, model_from_row
from rww.search import CandidateEvaluator, SearchSpace, candidate_loss, cma_search

from _common import git_revision, replot  # noqa: E402  (examples/ is on the path)

PARAMS = ("G", "w_EE", "sigma")                 # G is G/G_c throughout (g_relative)
SEARCH_NAMES = {"G": "G_rel", "w_EE": "w_EE", "sigma": "sigma"}
TRUTH = {"G": 0.85, "w_EE": 0.6, "sigma": 0.007}
FACTORS = (0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2)
WEIGHTS = {"fc_corr": 1.0, "fc_level": 1.0, "fcd_ks": 1.0, "rate_band": 0.01}
# offset signs of (G/G_c, w_EE, sigma) per fit: different directions
SIGNS = ((-1, +1, +1), (+1, -1, +1), (-1, -1, -1), (+1, +1, -1), (-1, +1, -1),
         (+1, -1, -1), (-1, -1, +1), (+1, +1, +1))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~3 min: 2 fits, 400 TRs, tiny search")
    ap.add_argument("--fits", type=int, default=5)
    ap.add_argument("--n-trs", type=int, default=1200)
    ap.add_argument("--burn-in", type=int, default=42)
    ap.add_argument("--dt", type=float, default=1.0, help="integration step [ms]")
    ap.add_argument("--popsize", type=int, default=8)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=0.04)
    ap.add_argument("--realisations", type=int, default=2, help="per refinement epoch")
    ap.add_argument("--profile-realisations", type=int, default=6)
    ap.add_argument("--prior-mean", type=float, default=1.2, help="x truth")
    ap.add_argument("--prior-sd", type=float, default=1.0, help="x truth")
    ap.add_argument("--target-seed", type=int, default=987_654)
    ap.add_argument("--seed", type=int, default=0, help="base seed of starts, searches, noise")
    ap.add_argument("--no-profiles", action="store_true")
    ap.add_argument("--no-recovery", action="store_true")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "recovery_fic"))
    ap.add_argument("--replot", metavar="JSON", help="only redraw the figure of a results file")
    args = ap.parse_args(argv)
    if args.quick:
        args.fits, args.n_trs, args.popsize, args.generations = 2, 400, 4, 2
        args.epochs, args.profile_realisations = 2, 4
    return args


# ------------------------------------------------------------------------------------ target
def truth_model(sc, args, batch: int = 1, **override) -> RWWBold:
    values = dict(TRUTH, **override)
    return RWWBold(sc, dt=args.dt, tr=0.72, batch=batch, fic=3.0, g_relative=True,
                   backend=args.backend, G=values["G"], w_EE=values["w_EE"],
                   sigma=values["sigma"])


def simulate(model: RWWBold, args, seed: int, record=()):
    with torch.no_grad():
        return model.simulate(args.burn_in + args.n_trs, seed=seed, record=record)


def make_target(sc, args) -> tuple[FitTarget, dict]:
    res = simulate(truth_model(sc, args), args, args.target_seed, record=("r_E",))
    bold = res.bold[0, args.burn_in:]
    target = FitTarget(bold=bold, fcd_window=43, fcd_step=7, fcd_exclude_overlapping=False)
    rate = res.records["r_E"][0, args.burn_in:].mean(0)
    fc = obj.fc(bold)
    info = {"seed": args.target_seed, "n_trs": args.n_trs, "burn_in_trs": args.burn_in,
            "fc_level": float(obj.offdiagonal_mean(fc)), "rate_mean_hz": float(rate.mean()),
            "rate_max_hz": float(rate.max())}
    return target, info


# ------------------------------------------------------------------------------ profiles
def per_realisation_losses(bold, rate_e, target: FitTarget, scoring) -> dict:
    """``(R,)`` refinement loss (the fit's weighted data terms) and search ranking loss."""
    sim_fc = obj.pearson_matrix(bold, eps=1e-20)
    fc_corr = obj.fc_corr_loss(sim_fc, target.fc)
    fc_level = obj.fc_level_loss(sim_fc, target.fc)
    fcd_ks = obj.smooth_ks_statistic(target.simulated_fcd_values(bold), target.fcd_values)
    band = obj.rate_band_loss(rate_e, *obj.RATE_BAND_HZ)
    refine = (WEIGHTS["fc_corr"] * fc_corr + WEIGHTS["fc_level"] * fc_level
              + WEIGHTS["fcd_ks"] * fcd_ks + WEIGHTS["rate_band"] * band)
    scores = score_batch(bold, scoring)
    low, high = obj.RATE_BAND_HZ
    rate = rate_e.to(torch.float64).mean(1)
    scores["rate_excess"] = (torch.relu(rate - high) + torch.relu(low - rate)).mean(-1)
    search_loss = candidate_loss({k: scores[k].numpy() for k in
                                  ("fc_r", "fc_level_diff", "fcd_ks", "rate_excess")})
    return {"refine": refine.double().numpy(), "search": np.asarray(search_loss),
            "fc_corr": fc_corr.double().numpy(), "fc_level": fc_level.double().numpy(),
            "fcd_ks_smooth": fcd_ks.double().numpy(), "fcd_ks": scores["fcd_ks"].numpy(),
            "rate_mean": rate.mean(-1).numpy()}


def profiles(sc, target: FitTarget, args, log) -> dict:
    """Slices of the expected loss through the truth, common random numbers."""
    r = args.profile_realisations
    seed = args.seed + 50_000
    scoring = prepare_target(target, sc.shape[0])
    valid = target.validate(sc.shape[0], torch.float32, "cpu")     # fc and fcd_values filled
    factors = FACTORS if not args.quick else (0.9, 1.0, 1.1)
    cache = {}

    def losses(values: dict) -> dict:
        key = tuple(round(values[p], 12) for p in PARAMS)
        if key not in cache:
            res = simulate(truth_model(sc, args, batch=r, **values), args, seed, record=("r_E",))
            cache[key] = per_realisation_losses(res.bold[:, args.burn_in:],
                                                res.records["r_E"][:, args.burn_in:], valid,
                                                scoring)
        return cache[key]

    base = losses(dict(TRUTH))
    out = {"realisations": r, "noise_seed": seed, "factors": list(factors), "params": {}}
    for name in PARAMS:
        rows = []
        for f in factors:
            tick = time.perf_counter()
            lv = losses(dict(TRUTH, **{name: TRUTH[name] * f}))
            row = {"factor": f, "value": TRUTH[name] * f}
            for kind in ("refine", "search"):
                d = lv[kind] - base[kind]
                se = float(d.std(ddof=1) / math.sqrt(r)) if f != 1.0 else 0.0
                row[kind] = {"mean": float(lv[kind].mean()),
                             "sd_single": float(lv[kind].std(ddof=1)),
                             "delta": float(d.mean()), "delta_se": se,
                             "z": float(d.mean() / se) if se > 0 else None,
                             "per_realisation": lv[kind].tolist()}
            for k in ("fc_corr", "fc_level", "fcd_ks_smooth", "fcd_ks", "rate_mean"):
                row[k] = float(lv[k].mean())
            rows.append(row)
            log(f"  profile {name} x{f}: refine {row['refine']['mean']:.4f} "
                f"(delta {row['refine']['delta']:+.4f} +- {row['refine']['delta_se']:.4f}), "
                f"search {row['search']['mean']:.4f} (delta {row['search']['delta']:+.4f} +- "
                f"{row['search']['delta_se']:.4f}), rate {row['rate_mean']:.2f} Hz "
                f"[{time.perf_counter() - tick:.0f} s]")
        out["params"][name] = {"rows": rows, "classification": classify(rows)}
    return out


def classify(rows: list) -> dict:
    """Identifiable: the refinement loss rises by >= 3 paired SEs at both 0.9x and 1.1x."""
    by = {r["factor"]: r for r in rows}
    out = {}
    for kind in ("refine", "search"):
        z_lo = by[0.9][kind]["z"] if 0.9 in by else None
        z_hi = by[1.1][kind]["z"] if 1.1 in by else None
        sd = by[1.0][kind]["sd_single"]
        d_lo, d_hi = by[0.9][kind]["delta"], by[1.1][kind]["delta"]
        both = z_lo is not None and z_hi is not None and z_lo >= 3 and z_hi >= 3
        one = (z_lo is not None and z_lo >= 3) or (z_hi is not None and z_hi >= 3)
        label = "identifiable" if both else ("one-sided" if one else "not identifiable")
        out[kind] = {"label": label, "z_0.9": z_lo, "z_1.1": z_hi, "delta_0.9": d_lo,
                     "delta_1.1": d_hi, "sd_single_at_truth": sd,
                     "delta_over_sd_single": [d_lo / sd if sd > 0 else None,
                                              d_hi / sd if sd > 0 else None]}
    return out


# ------------------------------------------------------------------------------ recovery
def start_point(k: int, args) -> dict:
    rng = np.random.default_rng(args.seed + 1000 + k)
    signs = SIGNS[k % len(SIGNS)]
    return {p: TRUTH[p] * (1.0 + s * float(rng.uniform(0.30, 0.40)))
            for p, s in zip(PARAMS, signs)}


def search_bounds(start: dict) -> dict:
    b = {}
    for p in PARAMS:
        lo, hi = start[p] / 2.0, start[p] * 1.6
        if p == "G":
            lo, hi = max(lo, 0.4), min(hi, 1.1)
        b[SEARCH_NAMES[p]] = (lo, hi)
    return b


def one_fit(k: int, sc, target: FitTarget, args, log) -> dict:
    tick0 = time.perf_counter()
    start = start_point(k, args)
    bounds = search_bounds(start)
    space = SearchSpace(bounds, log=("sigma",))
    seeds = {"search_noise": args.seed + 100 + k, "search_design": args.seed + k,
             "refine_noise": args.seed + 10_000 + 100 * k, "screen_noise": args.seed + 20_000 + k}
    evaluator = CandidateEvaluator(sc, target, n_trs=args.n_trs, burn_in_trs=args.burn_in,
                                   dt=args.dt, tr=0.72, fic=3.0, batch_size=args.popsize,
                                   seed=seeds["search_noise"], backend=args.backend,
                                   progress=False)
    # a start outside the search box (G/G_c past the clip) enters CMA-ES at the nearest point
    # just inside it
    x0 = np.array([start[p] for p in PARAMS])
    lo = np.array([bounds[SEARCH_NAMES[p]][0] for p in PARAMS])
    hi = np.array([bounds[SEARCH_NAMES[p]][1] for p in PARAMS])
    x0 = np.clip(x0, lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo))
    result = cma_search(space, evaluator, popsize=args.popsize, generations=args.generations,
                        sigma0=0.3, seed=seeds["search_design"], x0=x0)
    t_search = time.perf_counter() - tick0
    best = result.best(1)[0]
    found = {"G": best["G_over_Gc"], "w_EE": best["w_EE"], "sigma": best["sigma"]}
    log(f"fit {k}: start " + ", ".join(f"{p} {start[p]:.4g}" for p in PARAMS)
        + "; search best " + ", ".join(f"{p} {found[p]:.4g}" for p in PARAMS)
        + f" (loss {best['loss']:.3f}, {len(result.rows)} candidates, {t_search:.0f} s)")

    config = RecipeConfig(search_dt=args.dt, fic=3.0, learn=PARAMS, realisations=args.realisations,
                          burn_in_trs=args.burn_in)
    refined = model_from_row(sc, best, config, batch=args.realisations, learn=PARAMS,
                             backend=args.backend)
    priors = {p: (args.prior_mean * TRUTH[p], args.prior_sd * TRUTH[p]) for p in PARAMS}
    fit_config = FitConfig(epochs=args.epochs, lr=args.lr, window_trs=None, n_trs=args.n_trs,
                           burn_in_trs=args.burn_in, seed=seeds["refine_noise"],
                           weights=dict(WEIGHTS), priors=priors)
    tick = time.perf_counter()
    error = None
    try:
        fit_result = fit(refined, target, fit_config, progress=False,
                         callback=lambda e, h: log(
                             f"  fit {k} epoch {e}: loss {h['loss'][-1]:.4f}, FC r "
                             f"{h['fc_r'][-1]:.3f}, " + ", ".join(
                                 f"{p} {h['params/' + p][-1]:.4g}" for p in PARAMS)))
        history = fit_result.history
    except Exception as exc:                            # noqa: BLE001 (reported, not hidden)
        error, history = f"{type(exc).__name__}: {exc}", {}
        log(f"  fit {k}: refinement failed: {error}")
    t_refine = time.perf_counter() - tick
    with torch.no_grad():
        rec = {p: float(getattr(refined, p).detach().flatten()[0]) for p in PARAMS}

    # The recipe's screening: search point vs refined point on fresh noise (common to both).
    from rww.evaluate import evaluate
    from rww.recipe import _as_loss
    start_model = model_from_row(sc, best, config, backend=args.backend)
    screen = {}
    for name, model in (("search", start_model), ("refined", refined)):
        ev = evaluate(model, target, n_trs=args.n_trs, burn_in_trs=args.burn_in,
                      n_realisations=2, seed=seeds["screen_noise"], dt=args.dt)
        screen[name] = {"loss": _as_loss(ev.to_dict()), "fc_r_single": ev["fc_r_single"],
                        "fcd_ks": ev["fcd_ks"], "rate_mean": ev["rate_mean"]}
    choice = min(screen, key=lambda n: screen[n]["loss"])
    chosen = rec if choice == "refined" else found
    rel = {p: (rec[p] - TRUTH[p]) / TRUTH[p] for p in PARAMS}
    log(f"fit {k}: refined " + ", ".join(f"{p} {rec[p]:.4g} ({100 * rel[p]:+.1f}%)"
                                         for p in PARAMS)
        + f"; screening search {screen['search']['loss']:.3f} vs refined "
          f"{screen['refined']['loss']:.3f} -> {choice} [{time.perf_counter() - tick0:.0f} s]")
    return {"fit": k, "start": start, "start_rel": {p: (start[p] - TRUTH[p]) / TRUTH[p]
                                                   for p in PARAMS},
            "search_bounds": bounds, "seeds": seeds, "priors": priors,
            "search_best": found, "search_best_rel": {p: (found[p] - TRUTH[p]) / TRUTH[p]
                                                      for p in PARAMS},
            "search_best_row": {k2: v for k2, v in best.items()
                                if isinstance(v, (int, float, str))},
            "search_candidates": [{"G_over_Gc": r.get("G_over_Gc"), "w_EE": r.get("w_EE"),
                                   "sigma": r.get("sigma"), "loss": r.get("loss"),
                                   "status": r.get("status")} for r in result.rows],
            "refined": rec, "refined_rel": rel, "refine_error": error,
            "history": history, "screening": screen, "recipe_choice": choice,
            "recipe_choice_values": chosen,
            "recipe_choice_rel": {p: (chosen[p] - TRUTH[p]) / TRUTH[p] for p in PARAMS},
            "seconds": {"search": t_search, "refine": t_refine,
                        "total": time.perf_counter() - tick0}}


def summarise(fits: list) -> dict:
    out = {}
    for key in ("refined_rel", "search_best_rel", "recipe_choice_rel"):
        out[key] = {}
        for p in PARAMS:
            errs = np.array([abs(f[key][p]) for f in fits])
            signed = np.array([f[key][p] for f in fits])
            out[key][p] = {"median_abs": float(np.median(errs)), "max_abs": float(errs.max()),
                           "median_signed": float(np.median(signed)),
                           "within_5pct": int((errs <= 0.05).sum())}
    return out


# --------------------------------------------------------------------------------- figure
def plot(results: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fits = results.get("fits", [])
    prof = results.get("identifiability")
    fig, axes = plt.subplots(2, len(PARAMS), figsize=(4.6 * len(PARAMS), 8.2))
    for j, p in enumerate(PARAMS):
        ax = axes[0, j]
        ax.axhspan(0.95, 1.05, color="green", alpha=0.12, label="truth +-5%")
        ax.axhline(1.0, color="k", lw=1)
        if "priors" in results["settings"]:
            ax.axhline(results["settings"]["prior_mean_x_truth"], color="purple", ls=":",
                       lw=1, label="prior mean")
        for f in fits:
            k = f["fit"]
            xs = [0, 1, 2]
            ys = [f["start"][p] / TRUTH[p], f["search_best"][p] / TRUTH[p],
                  f["refined"][p] / TRUTH[p]]
            ax.plot(xs, ys, "o-", alpha=0.8, label=f"fit {k}")
        if fits:
            med = np.median([f["refined"][p] / TRUTH[p] for f in fits])
            ax.plot([2], [med], "k*", ms=14, label="median (refined)")
        ax.set_xticks([0, 1, 2])
        ax.set_xticklabels(["start", "search best", "refined"])
        name = "G/G_c" if p == "G" else p
        ax.set_ylabel(f"{name} / truth")
        ax.set_title(f"{name} (truth {TRUTH[p]:g})")
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7, loc="upper right")
        ax = axes[1, j]
        if prof:
            rows = prof["params"][p]["rows"]
            fx = [r["factor"] for r in rows]
            for kind, colour in (("refine", "C0"), ("search", "C1")):
                d = np.array([r[kind]["delta"] for r in rows])
                se = np.array([r[kind]["delta_se"] for r in rows])
                sd = rows[fx.index(1.0)][kind]["sd_single"]
                ax.errorbar(fx, d, yerr=se, fmt="o-", color=colour, capsize=3,
                            label=f"{kind} loss (+-paired SE)")
                ax.axhspan(-sd, sd, color=colour, alpha=0.08)
            cls = prof["params"][p]["classification"]["refine"]
            ax.set_title(f"{name}: {cls['label']} (z at 0.9x/1.1x: "
                         f"{_f(cls['z_0.9'])}/{_f(cls['z_1.1'])})", fontsize=9)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xlabel(f"{name} / truth (others at truth)")
            ax.set_ylabel("loss - loss(truth), mean over realisations")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=7, title=f"CRN, R={prof['realisations']}; band: +-1 SD of "
                          "one realisation", title_fontsize=7)
        else:
            ax.axis("off")
    s = results["settings"]
    fig.suptitle(f"Recovery with the recipe (FIC 3 Hz, dt {s['dt_ms']} ms, {s['n_trs']} TRs): "
                 f"{len(fits)} fits from starts 30-40% off, priors {s['prior_mean_x_truth']}x "
                 f"truth +- {s['prior_sd_x_truth']}x truth", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(x):
    return "n/a" if x is None else f"{x:.1f}"


# ----------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        return replot(args.replot, plot)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    stem = "recovery_fic_quick" if args.quick else "recovery_fic"
    log_path = os.path.join(args.out, stem + ".log")
    log_fh = open(log_path, "w")

    def log(line: str):
        print(line, flush=True)
        log_fh.write(line + "\n")
        log_fh.flush()

    start = time.perf_counter()
    load0 = os.getloadavg()
    data = load_demo(include_bold=False, normalise="mean_row_sum")
    sc = data.sc.to(torch.float32)
    target, target_info = make_target(sc, args)
    log(f"target: {args.n_trs} TRs at the truth (seed {args.target_seed}), FC level "
        f"{target_info['fc_level']:.3f}, mean r_E {target_info['rate_mean_hz']:.2f} Hz "
        f"[{time.perf_counter() - start:.0f} s]")
    with torch.no_grad():
        g_c = float(truth_model(sc, args).critical_coupling()[0])
    settings = {"quick": args.quick, "truth": TRUTH, "truth_note": "G is G/G_c (g_relative); "
                "FIC 3 Hz; other parameters at deco2014 defaults", "G_c_at_truth": g_c,
                "G_abs_at_truth": TRUTH["G"] * g_c, "dt_ms": args.dt,
                "dt_note": "1 ms for truth, search, refinement and profiles; the contract's 0.1 ms "
                           "is 10x the CPU budget", "tr_s": 0.72, "n_trs": args.n_trs,
                "burn_in_trs": args.burn_in, "target": target_info,
                "fcd": {"window_trs": 43, "step_trs": 7, "exclude_overlapping": False},
                "connectome": "load_demo(include_bold=False, normalise='mean_row_sum')",
                "fits": args.fits, "start_offset": "30-40% off truth in every parameter, "
                "sign pattern per fit", "search": {"method": "cma", "popsize": args.popsize,
                                                   "generations": args.generations,
                                                   "sigma0_unit": 0.3,
                                                   "bounds": "start/2 .. start*1.6, G/G_c "
                                                             "clipped to [0.4, 1.1], sigma log"},
                "refine": {"epochs": args.epochs, "lr": args.lr,
                           "realisations": args.realisations, "weights": WEIGHTS,
                           "horizon_trs": args.n_trs},
                "priors": "Gaussian NLL on physical values, mean prior_mean x truth, SD "
                          "prior_sd x truth", "prior_mean_x_truth": args.prior_mean,
                "prior_sd_x_truth": args.prior_sd,
                "profile_realisations": args.profile_realisations,
                "identifiable_rule": "refinement loss rises by >= 3 paired (CRN) standard errors "
                                     "at both 0.9x and 1.1x truth",
                "backend": args.backend, "threads": args.threads, "seed": args.seed}
    results = {"settings": settings, "git": git_revision(),
               "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "python": platform.python_version(), "torch": torch.__version__,
                           "loadavg_start": load0}}
    json_path = os.path.join(args.out, stem + ".json")
    fig_path = os.path.join(args.out, stem + ".png")

    def save():
        results["machine"]["loadavg_now"] = os.getloadavg()
        results["total_seconds"] = time.perf_counter() - start
        with open(json_path + ".tmp", "w") as fh:
            json.dump(results, fh, indent=1)
        os.replace(json_path + ".tmp", json_path)

    if not args.no_profiles:
        tick = time.perf_counter()
        log("identifiability: loss slices through the truth (common random numbers)")
        results["identifiability"] = profiles(sc, target, args, log)
        results["identifiability"]["seconds"] = time.perf_counter() - tick
        for p in PARAMS:
            c = results["identifiability"]["params"][p]["classification"]
            log(f"  {p}: refine {c['refine']['label']} (z {_f(c['refine']['z_0.9'])} / "
                f"{_f(c['refine']['z_1.1'])}), search {c['search']['label']} (z "
                f"{_f(c['search']['z_0.9'])} / {_f(c['search']['z_1.1'])})")
        save()
    if not args.no_recovery:
        results["fits"] = []
        for k in range(args.fits):
            results["fits"].append(one_fit(k, sc, target, args, log))
            results["summary"] = summarise(results["fits"])
            save()
        for key in ("refined_rel", "search_best_rel", "recipe_choice_rel"):
            log(f"median |relative error| ({key}): " + ", ".join(
                f"{p} {100 * results['summary'][key][p]['median_abs']:.1f}%" for p in PARAMS))
    save()
    plot(results, fig_path)
    log(f"wrote {json_path} and {fig_path} ({time.perf_counter() - start:.0f} s)")
    log_fh.close()
    return results


if __name__ == "__main__":
    main()
