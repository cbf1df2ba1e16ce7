"""Regional heterogeneity through the linear noise approximation (rww.linear), on the embedded HCP
Schaefer-100 group data, checked by simulation.

1. **Fidelity.** At the homogeneous recipe's working point (:data:`START`, the demo's packaged
   point before the demo's fit gained the LNA stage) the LNA's FC is compared with simulated FCs
   (one simulation and the realisation average) and with the target.
2. **Fits.** Per-region parameters are fitted to the group FC by :func:`rww.linear_fit.
   fit_regional_lna` (Adam on the LNA's FC correlation, a stability margin, optional FC level),
   starting from :data:`START`'s G, w_EE and sigma. Variants (``--only NAME``):

   - ``w_EE``: per-region w_EE, margin 1.0/s;
   - ``w_EE_w_EI``: per-region w_EE and w_EI, margin 1.0/s (the main result);
   - ``w_EE_w_EI_level``: as above plus an LNA FC-level term held at the homogeneous start's LNA
     level (which simulated to near the target's level there);
   - ``w_EE_w_EI_J_NMDA``: per-region w_EE, w_EI and J_NMDA, margin 1.0/s (the best result).

3. **Scores.** Each fit is simulated with one protocol (:func:`rww.evaluate.evaluate`, dt 0.1 ms,
   4 fresh realisations, 1200 TRs after 42 TRs of burn-in) and scored on the group FC/FCD and on
   subject 100206's REST2_LR scan (held out: no fit saw it).
4. **FCD screen.** For the screened fits (:data:`SCREENED`), G and sigma are re-screened by
   simulation (dt 0.1 ms, one
   realisation each, the same noise for every point; the grids of :data:`SCREENED`) with the
   regional values fixed; the best by
   :func:`rww.search.candidate_loss` is evaluated like the others, on fresh noise.

Outputs in ``--out``: ``summary.json`` (scores, settings, LNA histories, timings),
``summary.md``, ``<variant>_params.json`` and ``<variant>_screened_params.json`` (the re-screen's
best point; all accepted by ``rww simulate --params``) and ``fit_lna.png``.

    python examples/fit_lna.py               # the recorded run (about 40 minutes on 2 cores)
    python examples/fit_lna.py --quick       # a few minutes
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time

import numpy as np
import torch

import rww
from rww.data import load_demo
from rww.evaluate import evaluate
from rww.fit import FitTarget
from rww.linear import lna_of_model
from rww.linear_fit import fit_regional_lna
from rww.recipe import RecipeConfig, params_json
from rww.scoring import prepare_target, score_bold
from rww.search import candidate_loss, rate_excess

from _common import git_revision  # noqa: E402  (examples/ is on the path)

FCD_WINDOW, FCD_STEP = 43, 7             # cuBNM's 30 s / 5 s windows at TR 0.72 s
# The start: the homogeneous recipe's working point, packaged as the demo's fitted point until
# the demo's fit gained the LNA stage (kept here so that the recorded runs stay reproducible).
START = {"G": 1.5288447141647339, "w_EE": 0.4507144093513489, "sigma": 0.0063090878538787365,
         "fic": 3.0}
# Fits whose G and sigma are re-screened by simulation with their regional values fixed, and the
# grids (factors of the start's G, of its sigma) they were recorded with: w_EE_w_EI with the
# recipe's grid of its time, w_EE_w_EI_J_NMDA with the recipe's current one (RecipeConfig).
SCREENED = {"w_EE_w_EI": ((0.8, 0.85, 0.9, 0.95, 1.0), (0.5, 0.7, 1.0)),
            "w_EE_w_EI_J_NMDA": (RecipeConfig().lna_g_scales, RecipeConfig().lna_sigma_scales)}


def variants(quick: bool, lna_level_homogeneous: float) -> dict:
    its = 30 if quick else 300
    return {
        "w_EE": dict(learn=("w_EE",), iterations=its, margin=1.0),
        "w_EE_w_EI": dict(learn=("w_EE", "w_EI"), iterations=its, margin=1.0),
        "w_EE_w_EI_level": dict(learn=("w_EE", "w_EI"), iterations=its, margin=1.0,
                                level=lna_level_homogeneous, level_weight=5.0),
        "w_EE_w_EI_J_NMDA": dict(learn=("w_EE", "w_EI", "J_NMDA"), iterations=its, margin=1.0),
    }


def upper(m):
    m = np.asarray(m)
    return m[np.triu_indices(m.shape[-1], 1)]


def corr(a, b):
    return float(np.corrcoef(upper(a), upper(b))[0, 1])


def model_at(sc, base: dict, values: dict, **kw):
    regional = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in values.items()}
    return rww.RWWBold(sc, fic=base.get("fic", 3.0),
                       **{**{k: base[k] for k in ("G", "w_EE", "sigma")}, **regional}, **kw)


def fidelity(demo, base, group, realisations, seed) -> dict:
    """LNA FC against simulated FC at one point."""
    model = model_at(demo.sc, base, {}, dtype=torch.float64)
    lna_fc = lna_of_model(model).fc[0].numpy()
    ev = evaluate(model_at(demo.sc, base, {}), group, n_trs=1200, n_realisations=realisations,
                  seed=seed, hemispheres=demo.hemispheres)
    singles = [np.corrcoef(b.numpy().T) for b in ev.bold]
    return {"r_lna_single": [corr(lna_fc, s) for s in singles],
            "r_lna_average": corr(lna_fc, ev.fc.numpy()),
            "r_lna_target": corr(lna_fc, demo.fc.numpy()),
            "lna_level": float(upper(lna_fc).mean()),
            "simulated": ev.to_dict()}


def fcd_screen(demo, base, values, group, grid, quick: bool, seed: int) -> list:
    """G x sigma with the regional values fixed (``grid``: factors of G, factors of sigma): one
    1200-TR simulation each at dt 0.1 ms."""
    g_scale = [0.92, 1.0] if quick else list(grid[0])
    sigmas = [base["sigma"] * f for f in ((1.0,) if quick else grid[1])]
    points = list(itertools.product(g_scale, sigmas))
    b = len(points)
    model = rww.RWWBold(demo.sc, dt=0.1, batch=b, fic=base.get("fic", 3.0),
                        G=torch.tensor([base["G"] * g for g, _ in points]),
                        sigma=torch.tensor([s for _, s in points]),
                        **{k: torch.as_tensor(v, dtype=torch.float32).expand(b, -1)
                           for k, v in values.items()})
    with torch.no_grad():
        res = model.simulate(1242, seed=seed, record=("r_E",))
    st = prepare_target(group, demo.n_regions)
    rows = []
    for i, (g, s) in enumerate(points):
        sc_ = score_bold(res.bold[i:i + 1, 42:], st, hemispheres=demo.hemispheres,
                         rate_e=res.records["r_E"][i:i + 1, 42:])
        excess = float(rate_excess(res.records["r_E"][i, 42:].to(torch.float64).mean(0)))
        row = {"G_scale": g, "G": base["G"] * g, "sigma": s, "rate_excess": excess,
               **{k: (None if v is None else float(v)) for k, v in sc_.items()}}
        row["loss"] = float(candidate_loss({k: [row.get(k) if row.get(k) is not None else np.nan]
                                            for k in ("fc_r", "fc_level_diff", "fcd_ks",
                                                      "rate_excess")})[0])
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="examples/results/fit_lna")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="run one fit variant")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite summary.md and the figure from summary.json")
    args = parser.parse_args()
    if args.report:
        write_report(args.out)
        return
    torch.set_num_threads(2)
    demo = load_demo(include_bold=True, normalise="mean_row_sum")
    assert (demo.fcd_window_trs, demo.fcd_step_trs) == (FCD_WINDOW, FCD_STEP)
    group = FitTarget(fc=demo.fc, fcd_values=demo.fcd_values, fcd_window=FCD_WINDOW,
                      fcd_step=FCD_STEP, fcd_exclude_overlapping=False)
    rest2 = FitTarget(bold=demo.subject_bold["100206_REST2_LR"], fcd_window=FCD_WINDOW,
                      fcd_step=FCD_STEP, fcd_exclude_overlapping=False)
    base = dict(START)
    realisations = 2 if args.quick else 4
    os.makedirs(args.out, exist_ok=True)
    summary_path = os.path.join(args.out, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    summary.update(machine={"platform": platform.platform(), "cpus": os.cpu_count(),
                            "torch": torch.__version__}, revision=git_revision(),
                   start={k: base[k] for k in ("G", "w_EE", "sigma", "fic")},
                   protocol={"dt_ms": 0.1, "realisations": realisations, "n_trs": 1200,
                             "burn_in_trs": 42, "fcd": f"{FCD_WINDOW} TRs every {FCD_STEP}, "
                                                      "all pairs of distinct windows"})
    tick = time.perf_counter()
    if "fidelity" not in summary or args.only is None:
        summary["fidelity"] = fidelity(demo, base, group, realisations, seed=40_000)
        print(f"fidelity: {json.dumps({k: v for k, v in summary['fidelity'].items() if k != 'simulated'})}",
              flush=True)
    runs = variants(args.quick, summary["fidelity"]["lna_level"])
    if args.only:
        if args.only not in runs:
            parser.error(f"--only: choose one of {sorted(runs)}")
        runs = {args.only: runs[args.only]}
    summary.setdefault("fits", {})
    for name, kw in runs.items():
        t0 = time.perf_counter()
        fit = fit_regional_lna(demo.sc, demo.fc, {k: base[k] for k in ("G", "w_EE", "sigma")},
                               fic_target=base.get("fic", 3.0), progress=False, **kw)
        t_fit = time.perf_counter() - t0
        values = {k: v.tolist() for k, v in fit.values.items()}
        model = model_at(demo.sc, base, values)
        scores = {}
        for i, (tname, target) in enumerate((("group", group), ("held-out REST2_LR", rest2))):
            ev = evaluate(model, target, n_trs=1200, n_realisations=realisations,
                          seed=41_000 + i, hemispheres=demo.hemispheres)
            scores[tname] = ev.to_dict()
        with open(os.path.join(args.out, f"{name}_params.json"), "w") as fh:
            json.dump(params_json(model, note=f"examples/fit_lna.py {name}"), fh, indent=1)
        entry = {"settings": fit.settings, "lna": {"fc_r": fit.fc_r, "fc_level": fit.fc_level,
                                                   "leading_eigenvalue": fit.leading_eigenvalue,
                                                   "history": fit.history},
                 "values": values, "scores": scores,
                 "timings": {"lna_fit_s": t_fit, "evaluate_s": time.perf_counter() - t0 - t_fit}}
        if name in SCREENED:
            t1 = time.perf_counter()
            rows = fcd_screen(demo, base, values, group, SCREENED[name], args.quick, seed=42_000)
            best = min(rows, key=lambda r: r["loss"])
            chosen = dict(base, G=best["G"], sigma=best["sigma"])
            ev = evaluate(model_at(demo.sc, chosen, values), group, n_trs=1200,
                          n_realisations=realisations, seed=43_000,
                          hemispheres=demo.hemispheres)
            entry["fcd_screen"] = {"rows": rows, "best": best, "scores": ev.to_dict(),
                                   "seconds": time.perf_counter() - t1}
            write_screened_params(args.out, name, base, values, best)
        summary["fits"][name] = entry
        with open(summary_path, "w") as fh:
            json.dump(summary, fh, indent=1, default=str)
        g = scores["group"]
        print(f"[{name}] LNA r {fit.fc_r:.3f} ({t_fit:.0f} s); simulated FC r "
              f"{g['fc_r_single']:.3f} (intra {g['fc_r_intra_single']:.3f}), FCD KS "
              f"{g['fcd_ks']:.3f}, rate {g['rate_mean']:.2f}/{g['rate_max']:.2f} Hz", flush=True)
    summary["total_s"] = time.perf_counter() - tick
    with open(summary_path, "w") as fh:
        json.dump(summary, fh, indent=1, default=str)
    write_report(args.out)


def write_screened_params(out: str, name: str, base: dict, values: dict, best: dict):
    """``<name>_screened_params.json``: the re-screen's best point (for ``rww simulate
    --params``)."""
    chosen = dict(base, G=best["G"], sigma=best["sigma"])
    model = model_at(load_demo(include_bold=False, normalise="mean_row_sum").sc, chosen, values)
    with open(os.path.join(out, f"{name}_screened_params.json"), "w") as fh:
        json.dump(params_json(model, note=f"examples/fit_lna.py {name}, re-screened G and sigma"),
                  fh, indent=1)


def _fmt(v, d=3):
    return "–" if v is None else f"{v:.{d}f}"


def _line(name, ev):
    return (f"| {name} | {_fmt(ev.get('fc_r_single'))} ± {_fmt(ev.get('fc_r_single_std'))} | "
            f"{_fmt(ev.get('fc_r'))} | {_fmt(ev.get('fc_r_intra_single'))} | "
            f"{_fmt(ev.get('fc_level_sim'))} vs {_fmt(ev.get('fc_level_target'))} | "
            f"{_fmt(ev.get('fcd_ks'))} | {_fmt(ev.get('rate_mean'), 2)} / "
            f"{_fmt(ev.get('rate_max'), 2)} |")


def write_report(out: str):
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    fid = s["fidelity"]
    head = ("| fit | FC r single | FC r averaged | FC r intra (single) | FC level sim vs target "
            "| FCD KS | r_E mean / max [Hz] |\n|---|---|---|---|---|---|---|")
    lines = ["# Regional heterogeneity through the linear noise approximation", "",
             f"Start: the homogeneous recipe's working point (G = {s['start']['G']:.4g}, w_EE = "
             f"{s['start']['w_EE']:.4g}, sigma = {s['start']['sigma']:.4g} nA, FIC "
             f"{s['start']['fic']} Hz). Scores: dt 0.1 ms, {s['protocol']['realisations']} fresh "
             "realisations of 1200 TRs; FCD KS over all pairs of distinct windows (43 TRs every "
             "7). Group = the embedded training group's FC/FCD; REST2_LR = subject 100206's "
             "second scan, held out.", "",
             "## LNA fidelity at the start point", "",
             f"- r(LNA FC, one simulation's FC): {', '.join(f'{r:.3f}' for r in fid['r_lna_single'])}",
             f"- r(LNA FC, realisation-averaged FC): {fid['r_lna_average']:.3f}",
             f"- r(LNA FC, target): {fid['r_lna_target']:.3f}; simulated: "
             f"{fid['simulated']['fc_r_single']:.3f} (one simulation), {fid['simulated']['fc_r']:.3f} "
             "(averaged)",
             f"- FC level: LNA {fid['lna_level']:.3f}, simulated "
             f"{fid['simulated']['fc_level_sim']:.3f}, target "
             f"{fid['simulated']['fc_level_target']:.3f}", "",
             "## Fits (group target)", "", head,
             _line("homogeneous start (no LNA fit)", fid["simulated"])]
    for name, f in s["fits"].items():
        lines.append(_line(f"{name} (LNA r {f['lna']['fc_r']:.3f}, lead "
                           f"{f['lna']['leading_eigenvalue']:.2f}/s)", f["scores"]["group"]))
    lines += ["", "## Held-out scan (subject 100206 REST2_LR)", "", head]
    for name, f in s["fits"].items():
        lines.append(_line(name, f["scores"]["held-out REST2_LR"]))
    for name in SCREENED:
        scr = s["fits"].get(name, {}).get("fcd_screen")
        if scr is None:
            continue
        lines += ["", f"## FCD screen of {name} (dt 0.1 ms, one realisation each)", "",
                  "| G | sigma [nA] | FC r | FC level | FCD KS | r_E mean [Hz] | loss |",
                  "|---|---|---|---|---|---|---|"]
        for r in scr["rows"]:
            lines.append(f"| {r['G']:.4g} | {r['sigma']:.4g} | {_fmt(r['fc_r'])} | "
                         f"{_fmt(r['fc_level_sim'])} | {_fmt(r['fcd_ks'])} | "
                         f"{_fmt(r.get('rate_mean'), 2)} | {r['loss']:.3f} |")
        lines += ["", "Best by loss, evaluated at 0.1 ms on fresh noise:", "", head,
                  _line(f"{name}: G {scr['best']['G']:.4g}, sigma {scr['best']['sigma']:.4g}",
                        scr["scores"])]
    times = ", ".join(f"{name} {f['timings']['lna_fit_s']:.0f} s" for name, f in s["fits"].items())
    lines += ["", f"LNA fits ({s['machine']['cpus']} CPUs): {times}. The last invocation took "
                  f"{s.get('total_s', float('nan')):.0f} s in all."]
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(s, os.path.join(out, "fit_lna.png"))


def plot(s: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    demo = load_demo(include_bold=False)
    fits = s["fits"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for name, f in fits.items():
        ax.plot([h["fc_r"] for h in f["lna"]["history"]], label=name)
    ax.set_xlabel("Adam iteration")
    ax.set_ylabel("FC r (LNA) with the group FC")
    ax.set_title("LNA fits")
    ax.legend(fontsize=8)
    ax = axes[1]
    names = ["start"] + list(fits)
    sim = [s["fidelity"]["simulated"]] + [f["scores"]["group"] for f in fits.values()]
    for name in SCREENED:
        if "fcd_screen" in fits.get(name, {}):
            names.append(f"{name}\n+ screen")
            sim.append(fits[name]["fcd_screen"]["scores"])
    x = np.arange(len(names))
    ax.bar(x - 0.2, [e["fc_r_single"] for e in sim], 0.4, label="FC r (one simulation)")
    ax.bar(x + 0.2, [e["fcd_ks"] for e in sim], 0.4, label="FCD KS")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set_title("Simulated at dt 0.1 ms, group target")
    ax.legend(fontsize=8)
    ax = axes[2]
    shown = next((n for n in reversed(SCREENED) if n in fits), None)
    if shown is not None:
        v = fits[shown]["values"]
        myelin = demo.maps["myelin"].numpy()
        for param, values in v.items():
            ax.scatter(myelin, values, s=12,
                       label=f"{param} (r = {np.corrcoef(myelin, values)[0, 1]:.2f})")
        ax.set_xlabel("T1w/T2w myelin (z-scored)")
        ax.set_ylabel("fitted value")
        ax.set_title(f"{shown}: regional values vs myelin")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
