"""Empirical HCP fits on the embedded Schaefer-100 data (the paper's empirical experiment).

Two targets, each fitted in three settings side by side:

- targets: (1) the group FC of the embedded training group (cuBNM ``group-train706``, with its
  pooled FCD values), (2) a single subject, 100206: the first half of REST1_LR (600 TRs) is fitted,
  the second half of REST1_LR and the whole REST2_LR run are held out;
- settings: ``rww`` (preset deco2014 with Deco et al. 2014's feedback inhibition learnable per
  region: G, w_EE, w_EI global and w_IE an N-vector; full-length BPTT through the checkpointed
  scan on ``--fit-trs``-TR epochs; loss ``1 - r(FC)`` + 1-Wasserstein FCD distance + every
  region's mean r_E pulled to 3 Hz), ``paper`` (preset griffiths2022 with the paper's fit as
  ``rww fit --demo`` runs it: G, w_EE, w_IE, w_EI; 20-TR windows, state detached between
  windows, ``-log(0.5 + 0.5 r)`` + bifurcation + entropy terms, Adam lr 0.01, TR 0.75 s and dt
  0.05 as in the paper code) and ``paper_wbb`` (the same plus the paper's learnable N x N
  connection gain ``w_bb``).

After fitting, fresh simulations with the fitted parameters (new noise, 1200 TRs, 2 realisations)
are compared with every empirical target: FC r (lower triangles, realisation-averaged simulated
FC), FC MSE, and the FCD distance (KS statistic and 1-Wasserstein between the FCD value
distributions, cuBNM's 30 s / 5 s windows = 43 / 7 TRs; pairs of overlapping windows left out,
except against the group's embedded values, which keep every pair, as the simulation then does). The
same numbers for the unfitted starting model, and empirical baselines (REST1 first half vs its
second half and vs REST2, SC vs FC), frame them. The held-out group (``group-test303``) is not
embedded, so the group fit has no held-out group; REST2 and the held-out half serve as held-out
data for the subject.

Outputs in ``--out``: ``summary.json``, ``summary.md``, ``fc_<setting>_<target>.png``,
``fcd_<setting>_<target>.png``, ``history_<setting>_<target>.png``.

    python examples/empirical_hcp.py            # the recorded run (~20 min on 2 busy CPU cores)
    python examples/empirical_hcp.py --quick    # a few minutes

deco2014 runs at dt = 0.5 ms here (``--dt``; the contract default 0.1 ms costs 5x more on the
CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

import rww
from rww import objectives as obj
from rww.data import load_demo
from rww.fit import FitConfig, FitTarget, fit

LEARN = ["G", "w_EE", "w_IE", "w_EI"]
FCD_WINDOW, FCD_STEP = 43, 7           # = demo.fcd_window_trs, demo.fcd_step_trs (checked in main)


def settings(args) -> dict:
    return {
        # deco2014 with Deco et al. 2014's feedback-inhibition control made learnable: w_IE per
        # region, every region's mean r_E pulled towards 3 Hz. Start: G = 0.6, w_IE = 1.5, the best
        # point of a coarse G x w_IE sweep against the group FC (see results/empirical/README.md).
        "rww": dict(preset="deco2014", dt=args.dt, tr=0.72, init=dict(G=0.6, w_IE=1.5), regional=["w_IE"],
                    learn=LEARN, lr=args.lr, epochs=args.epochs, window_trs=None, n_trs=args.fit_trs,
                    weights={"fc_corr": 1.0, "fcd": 1.0, "firing_rate": 0.01}),
        # the paper's setting as `rww fit --demo` runs it (4 global parameters)
        "paper": dict(preset="griffiths2022", dt=0.05, tr=0.75, init={}, regional=[], learn=LEARN, lr=0.01,
                      epochs=args.paper_epochs, window_trs=20, n_trs=None,
                      weights={"fc_log": 1.0, "bifurcation": 1.0, "entropy": 1.0}),
        # ... and with the paper's learnable N x N connection gain w_bb, as in its own fits
        "paper_wbb": dict(preset="griffiths2022", dt=0.05, tr=0.75, init={}, regional=[],
                          learn=LEARN + ["w_bb"], lr=0.01, epochs=args.paper_epochs, window_trs=20,
                          n_trs=None, weights={"fc_log": 1.0, "bifurcation": 1.0, "entropy": 1.0}),
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few minutes: short fits")
    ap.add_argument("--epochs", type=int, default=40, help="epochs of the rww (deco2014) fits")
    ap.add_argument("--paper-epochs", type=int, default=100, help="epochs of the paper-setting fits")
    ap.add_argument("--fit-trs", type=int, default=300, help="TRs per rww epoch (full-length BPTT)")
    ap.add_argument("--lr", type=float, default=0.03, help="Adam lr of the rww fits")
    ap.add_argument("--dt", type=float, default=0.5, help="deco2014 step [ms]")
    ap.add_argument("--realisations", type=int, default=2)
    ap.add_argument("--eval-trs", type=int, default=1200)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--settings", default="rww,paper,paper_wbb", help="comma-separated settings to run")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "empirical"))
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.paper_epochs, args.fit_trs, args.eval_trs = 6, 3, 150, 600
    return args


def fcd_vals(bold: torch.Tensor, exclude_overlapping: bool = True) -> torch.Tensor:
    """FCD values, pooled over leading dimensions: rww's convention leaves out pairs of
    overlapping windows; the embedded group values (cuBNM's) keep every pair of distinct windows,
    so comparisons with the group use ``exclude_overlapping=False`` on both sides."""
    matrix = obj.fcd(bold, FCD_WINDOW, FCD_STEP)
    if exclude_overlapping:
        return obj.fcd_values(matrix, FCD_WINDOW, FCD_STEP).flatten()
    return obj.fcd_values(matrix).flatten()


def empirical_targets(demo) -> dict:
    """name -> (FC, FCD values) of every empirical target."""
    rest1 = torch.as_tensor(demo.subject_bold["100206_REST1_LR"], dtype=torch.float64)
    rest2 = torch.as_tensor(demo.subject_bold["100206_REST2_LR"], dtype=torch.float64)
    half = rest1.shape[0] // 2
    out = {"group": (demo.fc, demo.fcd_values)}
    for name, series in (("rest1_first_half", rest1[:half]), ("rest1_second_half", rest1[half:]),
                         ("rest2", rest2)):
        out[name] = (obj.fc(series), fcd_vals(series))
    return out


def build(setting: dict, sc, args):
    sc = sc.to(torch.float32)
    n = sc.shape[0]
    if setting["preset"] == "deco2014":
        sc = sc / sc.sum(1).mean()
    init = {k: (torch.full((n,), float(v)) if k in setting["regional"] else v)
            for k, v in setting["init"].items()}
    return rww.RWWBold(sc, preset=setting["preset"], dt=setting["dt"], tr=setting["tr"],
                       batch=args.realisations, backend=args.backend, learn=setting["learn"], **init)


def _summarise(value: torch.Tensor):
    value = value.detach().cpu()
    if value.numel() <= 1:
        return float(value)
    return {"mean": float(value.mean()), "std": float(value.std()), "min": float(value.min()),
            "max": float(value.max()), "n": value.numel()}


def evaluate_all(model, targets: dict, n_trs: int, seed: int) -> dict:
    """One fresh simulation compared with every target."""
    with torch.no_grad():
        _, state = model(20, seed=seed)
        bold, _ = model(n_trs, state=state, seed=seed, t0=20 * model.steps_per_tr)
    bold = bold.double()
    sim_fc = obj.pearson_matrix(bold, eps=1e-20).mean(0)
    sim_fcd = fcd_vals(bold)
    sim_fcd_all_pairs = fcd_vals(bold, exclude_overlapping=False)
    out = {}
    for name, (fc, fcd) in targets.items():
        sim = sim_fcd_all_pairs if name == "group" else sim_fcd
        fc = torch.as_tensor(fc, dtype=torch.float64)
        fcd = torch.as_tensor(fcd, dtype=torch.float64)
        out[name] = {"fc_r": float(obj.fc_correlation(sim_fc, fc)),
                     "fc_mse": float(obj.fc_mse(sim_fc, fc)),
                     "fcd_ks": obj.ks_statistic(sim, fcd),
                     "fcd_w1": float(obj.wasserstein1(sim, fcd))}
    out["_sim"] = {"mean_fc": float(obj.lower_triangle(sim_fc).mean()),
                   "fcd_median": float(sim_fcd.median()), "bold_std": float(bold.std(1).mean())}
    return out, sim_fc.numpy(), {"excluding_overlapping": sim_fcd.numpy(), "all_pairs": sim_fcd_all_pairs.numpy()}


def run_job(job: dict) -> dict:
    torch.set_num_threads(1)
    args, name, target_name = job["args"], job["setting"], job["target"]
    setting = settings(args)[name]
    demo = load_demo()
    targets = empirical_targets(demo)
    model = build(setting, demo.sc, args)
    before, _, _ = evaluate_all(model, targets, args.eval_trs, seed=777)
    if target_name == "group":
        target = FitTarget(fc=demo.fc, fcd_values=demo.fcd_values, fcd_window=FCD_WINDOW, fcd_step=FCD_STEP,
                           fcd_exclude_overlapping=False)
    else:
        rest1 = torch.as_tensor(demo.subject_bold["100206_REST1_LR"], dtype=torch.float64)
        train = rest1[: rest1.shape[0] // 2]
        target = FitTarget(bold=train, fcd_values=fcd_vals(train), fcd_window=FCD_WINDOW, fcd_step=FCD_STEP)
    weights = dict(setting["weights"])
    n_trs = setting["n_trs"] or (600 if target_name == "subject" else 1200)
    config = FitConfig(epochs=setting["epochs"], lr=setting["lr"], window_trs=setting["window_trs"],
                       n_trs=n_trs, burn_in_trs=20, seed=100, weights=weights)
    tick = time.perf_counter()
    ckpt = os.path.join(args.out, f"{name}_{target_name}.ckpt")
    result = fit(model, target, config, checkpoint=ckpt, resume=True, progress=False)
    seconds = time.perf_counter() - tick
    after, sim_fc, sim_fcd = evaluate_all(model, targets, args.eval_trs, seed=4242)
    return {"setting": name, "target": target_name, "preset": setting["preset"],
            "fit_config": dict(setting, n_trs=n_trs),
            "params": {k: _summarise(v) for k, v in result.params.items()}, "fit_seconds": seconds,
            "seconds_per_epoch": float(np.mean(result.history["seconds"])) if result.history["seconds"] else None,
            "train_fc_r_last_epoch": result.history["fc_r"][-1] if result.history["fc_r"] else None,
            "before_fit": before, "after_fit": after, "history": result.history,
            "sim_fc": sim_fc.tolist(), "sim_fcd": {k: v.tolist() for k, v in sim_fcd.items()}}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    demo = load_demo()
    assert (demo.fcd_window_trs, demo.fcd_step_trs) == (FCD_WINDOW, FCD_STEP)
    targets = empirical_targets(demo)
    fc = {k: torch.as_tensor(v[0], dtype=torch.float64) for k, v in targets.items()}
    baselines = {
        "fc_r_rest1_first_vs_second_half": float(obj.fc_correlation(fc["rest1_first_half"], fc["rest1_second_half"])),
        "fc_r_rest1_first_half_vs_rest2": float(obj.fc_correlation(fc["rest1_first_half"], fc["rest2"])),
        "fc_r_group_vs_rest1_second_half": float(obj.fc_correlation(fc["group"], fc["rest1_second_half"])),
        "fc_r_group_vs_rest2": float(obj.fc_correlation(fc["group"], fc["rest2"])),
        "fc_r_sc_vs_group_fc": float(obj.fc_correlation(demo.sc.double(), fc["group"])),
        "fc_r_log1p_sc_vs_group_fc": float(obj.fc_correlation(torch.log1p(demo.sc.double()), fc["group"])),
        "fcd_ks_rest1_first_vs_second_half": obj.ks_statistic(targets["rest1_first_half"][1], targets["rest1_second_half"][1]),
        "fcd_ks_rest1_first_half_vs_rest2": obj.ks_statistic(targets["rest1_first_half"][1], targets["rest2"][1]),
        "fcd_ks_group_vs_rest2_all_pairs": obj.ks_statistic(targets["group"][1], fcd_vals(
            torch.as_tensor(demo.subject_bold["100206_REST2_LR"], dtype=torch.float64), exclude_overlapping=False)),
    }
    jobs = [{"args": args, "setting": s, "target": t} for s in args.settings.split(",") for t in ("group", "subject")]
    if args.jobs > 1:
        # spawn, not fork: a forked child of a process whose OpenMP pool is up can deadlock
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(run_job, jobs))
    else:
        runs = [run_job(j) for j in jobs]
    summary = {"settings": vars(args), "baselines": baselines,
               "runs": [{k: v for k, v in r.items() if k not in ("history", "sim_fc", "sim_fcd")} for r in runs],
               "total_seconds": time.perf_counter() - started,
               "machine": {"cpu_count": os.cpu_count(), "load_average_end": os.getloadavg(),
                           "python": platform.python_version(), "torch": torch.__version__},
               "notes": ["group-test303 (held-out group) is not embedded: the group fit is scored on the "
                         "training group FC/FCD and on the subject's runs",
                         "paper setting: TR 0.75 s and dt 0.05 as in the paper code, although the HCP "
                         "data are sampled at 0.72 s (the paper did the same)"]}
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    write_table(summary, os.path.join(args.out, "summary.md"))
    figures(runs, targets, args.out)
    for r in runs:
        path = os.path.join(args.out, f"{r['setting']}_{r['target']}.ckpt")
        if os.path.exists(path):
            os.remove(path)
    print(open(os.path.join(args.out, "summary.md")).read())


def write_table(summary: dict, path: str):
    s = summary["settings"]
    lines = [f"# Empirical HCP fits ({'quick' if s['quick'] else 'full'} run)", "",
             "Fresh simulations (new noise, "
             f"{s['eval_trs']} TRs x {s['realisations']} realisations) with the fitted parameters, compared "
             "with each empirical target. FC r: Pearson r of the lower triangles (simulated FC averaged "
             "over realisations). FCD: KS statistic / 1-Wasserstein between FCD value distributions "
             "(43-TR windows, step 7; pairs of overlapping windows left out, except against the group, whose embedded "
             "values keep every pair). Held out: REST1 second half and REST2 (the subject fit sees only "
             "REST1's first half; the group fit sees only the group FC/FCD).", "",
             "| setting | fitted to | G, w_EE, w_IE, w_EI | s/epoch | FC r: group | FC r: REST1 1st half | "
             "FC r: REST1 2nd half (held out) | FC r: REST2 (held out) | FCD KS / W1: group | "
             "FCD KS / W1: REST1 2nd half | FCD KS / W1: REST2 |", "|---" * 11 + "|"]
    for r in summary["runs"]:
        a = r["after_fit"]
        p = ", ".join(_fmt(r["params"][k]) for k in LEARN)
        spe = f"{r['seconds_per_epoch']:.1f}" if r["seconds_per_epoch"] else "-"
        lines.append(f"| {r['setting']} ({r['preset']}) | {r['target']} | {p} | {spe} | "
                     f"{a['group']['fc_r']:.3f} | {a['rest1_first_half']['fc_r']:.3f} | "
                     f"{a['rest1_second_half']['fc_r']:.3f} | {a['rest2']['fc_r']:.3f} | "
                     f"{a['group']['fcd_ks']:.2f} / {a['group']['fcd_w1']:.3f} | "
                     f"{a['rest1_second_half']['fcd_ks']:.2f} / {a['rest1_second_half']['fcd_w1']:.3f} | "
                     f"{a['rest2']['fcd_ks']:.2f} / {a['rest2']['fcd_w1']:.3f} |")
    lines += ["", "Before fitting (the starting parameters, same evaluation):", "",
              "| setting | FC r: group | FC r: REST1 2nd half | FC r: REST2 | FCD KS: group | FCD KS: REST2 |",
              "|---" * 6 + "|"]
    seen = set()
    for r in summary["runs"]:
        if r["setting"] in seen:
            continue
        seen.add(r["setting"])
        b = r["before_fit"]
        lines.append(f"| {r['setting']} ({r['preset']}) | {b['group']['fc_r']:.3f} | "
                     f"{b['rest1_second_half']['fc_r']:.3f} | {b['rest2']['fc_r']:.3f} | "
                     f"{b['group']['fcd_ks']:.2f} | {b['rest2']['fcd_ks']:.2f} |")
    b = summary["baselines"]
    lines += ["", "Empirical baselines: " + "; ".join(f"{k} = {v:.3f}" for k, v in b.items()) + ".", "",
              f"Total wall time {summary['total_seconds'] / 60:.1f} min on {summary['machine']['cpu_count']} CPU "
              f"cores (load average at the end {summary['machine']['load_average_end'][0]:.1f})."]
    for note in summary["notes"]:
        lines.append(f"- {note}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _fmt(value) -> str:
    if isinstance(value, dict):
        return f"{value['mean']:.3g}±{value['std']:.2g}"
    return f"{value:.3g}"


def figures(runs, targets, out):
    from rww import figures as rfig
    for r in runs:
        tag = f"{r['setting']}_{r['target']}"
        emp_name = "group" if r["target"] == "group" else "rest1_second_half"
        emp_fc = targets[emp_name][0]
        rfig.fc_comparison(np.asarray(emp_fc), np.asarray(r["sim_fc"]), os.path.join(out, f"fc_{tag}.png"),
                           title=f"{r['setting']} fit to {r['target']}: vs {emp_name}")
        rfig.history(r["history"], os.path.join(out, f"history_{tag}.png"), title=f"{r['setting']} / {r['target']}")
        sim_fcd = r["sim_fcd"]["all_pairs" if emp_name == "group" else "excluding_overlapping"]
        _fcd_hist(np.asarray(targets[emp_name][1]), np.asarray(sim_fcd), os.path.join(out, f"fcd_{tag}.png"),
                  f"{r['setting']} fit to {r['target']}: FCD vs {emp_name}")


def _fcd_hist(emp, sim, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    bins = np.linspace(-0.2, 1.0, 49)
    ax.hist(emp, bins=bins, density=True, alpha=0.5, label="empirical")
    ax.hist(sim, bins=bins, density=True, alpha=0.5, label="simulated")
    ax.set_xlabel("FCD value")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
