"""The fitting recipe (rww.recipe: global search, gradient refinement, evaluation at 0.1 ms) on the
embedded HCP Schaefer-100 data: homogeneous, map-based and per-region fits to the group and a subject.

Experiments (``--only NAME`` runs one):

- ``homogeneous_group``: at most 4 free global parameters (G/G_c, w_EE, J_NMDA, FIC target) by
  CMA-ES, then G/G_c and w_EE refined by gradient; target the group FC and pooled FCD of the
  embedded training group (group-train706);
- ``maps_group``: regional heterogeneity through maps: w_EE_i = softplus(softplus^-1(w_EE) +
  c_myelin myelin_i + c_grad gradient_i) with the T1w/T2w myelin map and the principal FC
  gradient (z-scored, shipped with cuBNM); CMA-ES over G/G_c, w_EE and the two coefficients, then
  all of them refined by gradient; same target;
- ``homogeneous_subject``: as the first, fitted to subject 100206's first half of REST1_LR (600
  TRs, its FC and FCD in both window-pair conventions);
- ``regional_group``: free per-region w_EE (100 values, graph-smoothness penalty on the
  connectome) refined by gradient from a search over G/G_c, w_EE and sigma; group target;
- ``lna_group``: the recipe with its LNA stage (the setting of ``rww fit --demo``: a search over
  G/G_c, w_EE and sigma, G/G_c and w_EE refined by gradient, then per-region w_EE, w_EI and
  J_NMDA fitted through the linear noise approximation and G, sigma re-screened by simulation;
  :mod:`rww.linear_fit`), with 300 LNA steps; group target;
- ``lna_subject``: the same fitted to subject 100206's first half of REST1_LR.

Every fit is then scored with one protocol (:func:`rww.evaluate.evaluate`, dt = 0.1 ms, fresh
noise, simulations as long as each target): on the training target, on the subject's held-out
scans (REST1_LR second half, REST2_LR), and on the group. FC r over all edges and within
hemispheres, from one simulation and realisation-averaged; FCD KS over all window pairs (and over
non-overlapping pairs where the target has its own BOLD). The held-out group (group-test303) is not
embedded: the group fits are scored on the training group and on the subject's scans.

Outputs in ``--out``: ``<experiment>/`` (the recipe's files: search.csv/json, fit.json,
params.json, and refine.ckpt / fit.npz, which the recorded results leave out for size),
``summary.json`` (all scores, settings, timings, machine) and ``summary.md`` (a table).

    python examples/fit_recipe.py                 # the recorded run (about an hour on 2 busy cores)
    python examples/fit_recipe.py --quick         # a few minutes, smaller search and refinement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from rww.data import load_demo
from rww.evaluate import evaluate
from rww.fit import FitTarget
from rww.recipe import RecipeConfig, fit_recipe

from _common import git_revision  # noqa: E402  (examples/ is on the path)

FCD_WINDOW, FCD_STEP = 43, 7             # cuBNM's 30 s / 5 s windows at TR 0.72 s


def experiments(demo, quick: bool) -> dict:
    maps = {"myelin": demo.maps["myelin"], "fc_gradient": demo.maps["fc_gradient"]}
    homogeneous = {"G_rel": (0.6, 1.0), "w_EE": (0.4, 1.4), "J_NMDA": (0.12, 0.2),
                   "fic_target": (2.5, 4.0)}
    heterogeneous = {"G_rel": (0.7, 0.95), "w_EE": (0.4, 1.0), "w_EE:myelin": (-1.0, 1.0),
                     "w_EE:fc_gradient": (-1.0, 1.0)}
    search = dict(method="cma", n_candidates=8 if quick else 24, generations=2 if quick else 5)
    refine = dict(epochs=2 if quick else 8, realisations=2 if quick else 4,
                  eval_realisations=2 if quick else 4)
    lna = dict(bounds={"G_rel": (0.7, 1.0), "w_EE": (0.4, 1.4), "sigma": (0.004, 0.012)},
               learn=("G", "w_EE"), n_candidates=16 if quick else 48, epochs=2 if quick else 6,
               realisations=2 if quick else 4, eval_realisations=2 if quick else 4,
               lna_regional=("w_EE", "w_EI", "J_NMDA"), lna_iterations=30 if quick else 300)
    return {
        "homogeneous_group": ("group", RecipeConfig(bounds=homogeneous, learn=("G", "w_EE"),
                                                    **search, **refine)),
        "maps_group": ("group", RecipeConfig(bounds=heterogeneous, learn=("G", "w_EE"),
                                             maps=maps, map_params=("w_EE",), **search,
                                             **refine)),
        "homogeneous_subject": ("subject", RecipeConfig(bounds=homogeneous, learn=("G", "w_EE"),
                                                        **search, **refine)),
        # free per-region w_EE (100 values) refined by gradient from the homogeneous search,
        # with graph smoothness on the connectome
        "regional_group": ("group", RecipeConfig(
            bounds={"G_rel": (0.7, 0.95), "w_EE": (0.4, 1.0), "sigma": (0.004, 0.012)},
            learn=("G", "w_EE"), regional=("w_EE",),
            weights={"fc_corr": 1.0, "fc_level": 1.0, "fcd_ks": 1.0, "rate_band": 0.01,
                     "smoothness": 1.0},
            **search, **dict(refine, epochs=4 if quick else 30))),
        # the demo's recipe with its LNA stage (rww fit --demo), longer LNA fit
        "lna_group": ("group", RecipeConfig(**lna)),
        "lna_subject": ("subject", RecipeConfig(**lna)),
    }


def targets(demo) -> dict:
    run1 = demo.subject_bold["100206_REST1_LR"]
    run2 = demo.subject_bold["100206_REST2_LR"]
    half = run1.shape[0] // 2
    group = FitTarget(fc=demo.fc, fcd_values=demo.fcd_values, fcd_window=FCD_WINDOW,
                      fcd_step=FCD_STEP, fcd_exclude_overlapping=False)

    def scan(bold):
        return FitTarget(bold=bold, fcd_window=FCD_WINDOW, fcd_step=FCD_STEP,
                         fcd_exclude_overlapping=False)
    return {"group": group, "subject": scan(run1[:half]),
            "held-out REST1_LR second half": scan(run1[half:]),
            "held-out REST2_LR": scan(run2)}


def scores_line(name: str, ev: dict) -> str:
    def f(key):
        value = ev.get(key)
        return "–" if value is None else f"{value:.3f}"
    return (f"| {name} | {f('fc_r_single')} ± {f('fc_r_single_std')} | {f('fc_r')} | "
            f"{f('fc_r_intra_single')} | {f('fc_level_sim')} vs {f('fc_level_target')} | "
            f"{f('fcd_ks_all')} | {f('fcd_ks_nonoverlap')} | {f('rate_mean')} / {f('rate_max')} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="examples/results/fit_recipe")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="run one experiment")
    parser.add_argument("--backend", default="numba")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite summary.md from the recorded summary.json")
    args = parser.parse_args()
    if args.report:
        write_report(args.out)
        return
    torch.set_num_threads(1)          # small torch ops contend for busy cores (README: threads)
    demo = load_demo(include_bold=True, normalise="mean_row_sum")
    assert (demo.fcd_window_trs, demo.fcd_step_trs) == (FCD_WINDOW, FCD_STEP)
    data = targets(demo)
    runs = experiments(demo, args.quick)
    if args.only:
        if args.only not in runs:
            parser.error(f"--only: choose one of {sorted(runs)}")
        runs = {args.only: runs[args.only]}
    os.makedirs(args.out, exist_ok=True)
    summary_path = os.path.join(args.out, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    summary["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch": torch.__version__}
    summary["revision"] = git_revision()
    summary.setdefault("experiments", {})
    for name, (which, config) in runs.items():
        tick = time.perf_counter()
        target = data[which]
        result = fit_recipe(demo.sc, target, config, n_trs=(1200 if which == "group" else None),
                            hemispheres=demo.hemispheres, backend=args.backend,
                            out=os.path.join(args.out, name), progress=False,
                            log=lambda line, n=name: print(f"[{n}] {line}", flush=True))
        scored = {"training target": result.evaluations["final"]}
        for i, (tname, t) in enumerate(data.items()):
            if tname == which or (which == "subject" and tname == "subject"):
                continue
            n_trs = 1200 if tname == "group" else None
            ev = evaluate(result.model, t, n_trs=n_trs, n_realisations=config.eval_realisations,
                          seed=30_000 + i, hemispheres=demo.hemispheres)
            scored[tname] = ev.to_dict()
        summary["experiments"][name] = {
            "target": which, "chosen": result.chosen, "params": result.params,
            "search_best": result.search.best(1)[0], "screening": result.evaluations["screening"],
            "lna": result.evaluations.get("lna"),
            "scores": scored, "timings": dict(result.timings, total_s=time.perf_counter() - tick),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                       config.__dict__.items() if k != "maps"},
            "maps": list(config.maps)}
        with open(summary_path, "w") as fh:
            json.dump(summary, fh, indent=1, default=str)
        print(f"[{name}] done in {time.perf_counter() - tick:.0f} s", flush=True)
    write_report(args.out)


def _short(params: dict) -> str:
    """Parameters for a table: per-region lists as mean, range."""
    parts = []
    for k, v in params.items():
        if isinstance(v, list):
            parts.append(f"{k} = {sum(v) / len(v):.3f} (per region, {min(v):.3f}-{max(v):.3f})")
        elif isinstance(v, float):
            parts.append(f"{k} = {v:.4g}")
        elif k == "record":
            parts.append(f"G/G_c = {v.get('G_over_Gc', float('nan')):.3f}")
        else:
            parts.append(f"{k} = {v}")
    return "; ".join(parts)


def write_report(out: str):
    with open(os.path.join(out, "summary.json")) as fh:
        summary = json.load(fh)
    lines = ["# Fitting recipe on the embedded HCP data", "",
             "Scores at dt = 0.1 ms, fresh noise; FC r single = mean ± SD over realisations of "
             "one simulation's r; averaged = r of the realisation-averaged FC; intra = within "
             "hemispheres; FCD KS over all pairs of distinct windows (43 TRs every 7) and over "
             "non-overlapping pairs (where the target has its own BOLD).", ""]
    for name, exp in summary["experiments"].items():
        lines += [f"## {name} (target: {exp['target']}; chosen: {exp['chosen']} point)", "",
                  f"params: {_short(exp['params'])}", "",
                  "| scored on | FC r single | FC r averaged | FC r intra (single) | FC level sim vs "
                  "target | FCD KS all pairs | FCD KS non-overlapping | r_E mean / max [Hz] |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [scores_line(t, ev) for t, ev in exp["scores"].items()]
        t = exp["timings"]
        lna = exp.get("lna") or {}
        if "fit" in lna:
            best = lna["screen"][lna["best"]]
            lines += ["", f"LNA stage: LNA FC r {lna['fit']['fc_r_start']:.3f} -> "
                          f"{lna['fit']['fc_r']:.3f} in {lna['fit']['seconds']:.0f} s; re-screen of "
                          f"{len(lna['screen'])} points at dt {lna['screen_dt']} ms chose G "
                          f"{best['G']:.4g}, sigma {best['sigma']:.4g} (FC r {best['fc_r']:.3f}, "
                          f"FCD KS {best['fcd_ks'] if best['fcd_ks'] is None else round(best['fcd_ks'], 3)})"]
        elif "skipped" in lna:
            lines += ["", f"LNA stage skipped: {lna['skipped']}"]
        lna_s = f"LNA stage {t['lna_s']:.0f} s, " if "lna_s" in t else ""
        lines += ["", f"time: search {t['search_s']:.0f} s, refinement {t['refine_s']:.0f} s, "
                      f"{lna_s}evaluation {t['evaluate_s']:.0f} s; total {t['total_s']:.0f} s", ""]
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
