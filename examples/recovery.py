"""Parameter recovery on a real connectome (the paper's synthetic experiment, made harder).

A ground truth (G, w_EE, w_IE, w_EI) of the deco2014 model on the embedded HCP Schaefer-100 group
connectome (mean-row-sum normalised) simulates one 1200-TR scan (TR 0.72 s, 14.4 min). Each seed
then fits all four parameters from its own start, drawn far from the truth (every parameter
scaled by a random factor in [0.5, 0.7] or [1.3, 1.5]), with broad Gaussian priors that are NOT
centred on the truth (mean 1.25 x truth, standard deviation 1 x truth, the same for every seed),
and fresh noise (the fit never sees the truth's noise realisation). The paper's priors sat on the
truth; these do not.

Loss (per epoch, averaged over ``--realisations`` noise realisations): ``1 - r`` of the FC lower
triangles + ``w_mse`` x FC mean squared error + ``w_mean`` x z-scored regional BOLD means (a
statistic only meaningful for simulated data, see :func:`rww.objectives.bold_mean_loss`) + the
priors. Each epoch simulates ``--fit-trs`` TRs after a 20-TR burn-in, compares them with the whole
1200-TR target, back-propagates through the whole piece (full-length BPTT through the
checkpointed scan) and takes one Adam step. The estimate is the mean of the parameters over the
last ``--average`` epochs (Adam's noisy steps jitter around the optimum); the last epoch's
values are reported too.

Before fitting, a sensitivity table answers what FC alone can identify: each parameter is moved
by +-10% from the truth, one at a time, and the change of every loss term (against the truth's
scan) is compared with its noise floor (the truth re-simulated with other noise seeds).

Outputs in ``--out``: ``summary.md`` and ``summary.json`` (table of relative errors, settings,
timings), ``sensitivity.json``, ``trajectories.png`` (parameters / truth vs epoch, every seed),
``errors.png`` (relative errors per parameter and seed), ``fc_truth_vs_fit.png``.

    python examples/recovery.py                 # the recorded run (18 min on 2 busy CPU cores)
    python examples/recovery.py --quick         # a few minutes: 3 seeds, short epochs

dt is 0.5 ms by default, for the truth and the fits alike (the model is the same at any step; the
default 0.1 ms costs 5x more). Use ``--dt 0.1`` and a GPU backend for the contract's step.
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
from rww.fit import FitConfig, FitTarget, fit

PARAMS = ("G", "w_EE", "w_IE", "w_EI")
TRUTH = "G=0.65,w_EE=1.4,w_IE=1.5,w_EI=1.0"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few minutes: 3 seeds, 12 epochs of 100 TRs")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--n-trs", type=int, default=1200, help="TRs of the ground-truth scan")
    ap.add_argument("--fit-trs", type=int, default=150, help="TRs simulated per fit epoch")
    ap.add_argument("--realisations", type=int, default=2, help="noise realisations per epoch")
    ap.add_argument("--average", type=int, default=10, help="estimate = mean over the last epochs")
    ap.add_argument("--lr", type=float, default=0.04)
    ap.add_argument("--w-mse", type=float, default=10.0)
    ap.add_argument("--w-mean", type=float, default=0.1)
    ap.add_argument("--tr", type=float, default=0.72)
    ap.add_argument("--dt", type=float, default=0.5)
    ap.add_argument("--truth", default=TRUTH)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--jobs", type=int, default=3, help="seeds fitted in parallel processes")
    ap.add_argument("--no-sensitivity", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "recovery"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.fit_trs, args.average = 3, 12, 100, 4
    return args


def connectome() -> torch.Tensor:
    from rww.data import load_demo
    sc = load_demo(include_bold=False).sc.to(torch.float32)
    return sc / sc.sum(1).mean()


def simulate_truth(sc, truth: dict, args, seed: int, batch: int = 1) -> torch.Tensor:
    model = rww.RWWBold(sc, batch=batch, dt=args.dt, tr=args.tr, backend=args.backend, **truth)
    with torch.no_grad():
        _, state = model(20, seed=seed)
        bold, _ = model(args.n_trs, state=state, seed=seed, t0=20 * model.steps_per_tr)
    return bold


def loss_parts(bold: torch.Tensor, target_bold: torch.Tensor) -> dict:
    """The fit's data terms for one simulated scan ``(B, T, N)`` against the target ``(T, N)``."""
    target_fc = obj.fc(target_bold)
    sim_fc = obj.pearson_matrix(bold, eps=1e-20)
    return {"fc_corr": float(obj.fc_corr_loss(sim_fc, target_fc).mean()),
            "fc_mse": float(obj.fc_mse(sim_fc, target_fc).mean()),
            "bold_mean": float(obj.bold_mean_loss(bold, target_bold.mean(0), target_bold.std(0)).mean())}


def sensitivity(sc, truth: dict, target_bold, args) -> dict:
    """Change of each data term when one parameter moves +-10%, vs the noise floor."""
    noise = [loss_parts(simulate_truth(sc, truth, args, seed), target_bold) for seed in (2001, 2002, 2003)]
    out = {"noise_floor": {k: {"mean": float(np.mean([n[k] for n in noise])),
                               "std": float(np.std([n[k] for n in noise], ddof=1))} for k in noise[0]},
           "perturbed": {}}
    for name in PARAMS:
        for factor in (0.9, 1.1):
            params = dict(truth, **{name: truth[name] * factor})
            parts = loss_parts(simulate_truth(sc, params, args, 2001), target_bold)
            out["perturbed"][f"{name} x{factor}"] = parts
    # signal-to-noise: mean change at +-10% over the noise floor's spread across seeds
    snr = {}
    for name in PARAMS:
        snr[name] = {}
        for k in noise[0]:
            delta = np.mean([out["perturbed"][f"{name} x{f}"][k] for f in (0.9, 1.1)]) - out["noise_floor"][k]["mean"]
            snr[name][k] = float(delta / max(out["noise_floor"][k]["std"], 1e-12))
    out["snr_at_10pct"] = snr
    return out


def fit_one(job: dict) -> dict:
    torch.set_num_threads(1)
    args, seed, init, truth = job["args"], job["seed"], job["init"], job["truth"]
    sc = connectome()
    target = FitTarget(bold=torch.as_tensor(job["target_bold"]))
    model = rww.RWWBold(sc, batch=args.realisations, dt=args.dt, tr=args.tr, backend=args.backend,
                        learn=list(PARAMS), **init)
    config = FitConfig(epochs=args.epochs, lr=args.lr, window_trs=None, n_trs=args.fit_trs,
                       burn_in_trs=20, seed=1000 * (seed + 1),
                       weights={"fc_corr": 1.0, "fc_mse": args.w_mse, "bold_mean": args.w_mean},
                       priors={k: (1.25 * truth[k], truth[k]) for k in PARAMS})
    tick = time.perf_counter()
    result = fit(model, target, config, checkpoint=os.path.join(args.out, f"seed{seed}.ckpt"),
                 resume=True, progress=False)
    seconds = time.perf_counter() - tick
    hist = result.history
    last = {k: float(hist[f"params/{k}"][-1]) for k in PARAMS}
    avg = {k: float(np.mean(hist[f"params/{k}"][-args.average:])) for k in PARAMS}
    # a fresh 1200-TR scan with the estimate, compared with the truth's scan
    est_model = rww.RWWBold(sc, batch=1, dt=args.dt, tr=args.tr, backend=args.backend, **avg)
    with torch.no_grad():
        _, state = est_model(20, seed=5000 + seed)
        bold, _ = est_model(args.n_trs, state=state, seed=5000 + seed, t0=20 * est_model.steps_per_tr)
    check = loss_parts(bold, target.bold)
    return {"seed": seed, "init": init, "estimate": avg, "last_epoch": last,
            "rel_error": {k: (avg[k] - truth[k]) / truth[k] for k in PARAMS},
            "rel_error_last_epoch": {k: (last[k] - truth[k]) / truth[k] for k in PARAMS},
            "init_rel_offset": {k: (init[k] - truth[k]) / truth[k] for k in PARAMS},
            "train_fc_r_last_epoch": hist["fc_r"][-1],
            "fresh_scan_fc_r_vs_truth_scan": 1 - check["fc_corr"], "fresh_scan_terms": check,
            "history": {k: hist[k] for k in hist if k.startswith("params/") or k in ("fc_r", "loss")},
            "seconds": seconds, "fc": obj.pearson_matrix(bold[0]).numpy().tolist()}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    truth = {k: float(v) for k, v in (kv.split("=") for kv in args.truth.split(","))}
    if sorted(truth) != sorted(PARAMS):
        raise SystemExit(f"--truth: give exactly {PARAMS}")
    torch.set_num_threads(1)
    sc = connectome()
    started = time.perf_counter()
    tick = time.perf_counter()
    target_bold = simulate_truth(sc, truth, args, seed=1)[0]
    truth_seconds = time.perf_counter() - tick
    truth_fc = obj.fc(target_bold)
    print(f"ground truth: {args.n_trs} TRs simulated in {truth_seconds:.1f} s; mean FC "
          f"{float(obj.lower_triangle(truth_fc).mean()):.3f}", flush=True)

    sens = None
    if not args.no_sensitivity:
        tick = time.perf_counter()
        sens = sensitivity(sc, truth, target_bold, args)
        sens["seconds"] = time.perf_counter() - tick
        with open(os.path.join(args.out, "sensitivity.json"), "w") as fh:
            json.dump(sens, fh, indent=1)
        print("sensitivity (change at +-10% / noise spread):", json.dumps(sens["snr_at_10pct"]), flush=True)

    rng = np.random.default_rng(2024)
    jobs = []
    for seed in range(args.seeds):
        factors = {k: float(1 + rng.choice([-1, 1]) * rng.uniform(0.3, 0.5)) for k in PARAMS}
        jobs.append({"args": args, "seed": seed, "truth": truth, "target_bold": target_bold.numpy(),
                     "init": {k: truth[k] * factors[k] for k in PARAMS}})
    if args.jobs > 1:
        # spawn, not fork: a forked child of a process whose OpenMP pool is up can deadlock
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(fit_one, jobs))
    else:
        runs = [fit_one(j) for j in jobs]
    for r in runs:
        print(json.dumps({k: r[k] for k in ("seed", "estimate", "rel_error", "seconds")}), flush=True)

    errors = {k: np.array([r["rel_error"][k] for r in runs]) for k in PARAMS}
    summary = {
        "truth": truth, "settings": {k: v for k, v in vars(args).items()},
        "prior": {k: [1.25 * truth[k], truth[k]] for k in PARAMS},
        "truth_scan": {"mean_fc": float(obj.lower_triangle(truth_fc).mean()), "seconds": truth_seconds},
        "median_abs_rel_error": {k: float(np.median(np.abs(e))) for k, e in errors.items()},
        "max_abs_rel_error": {k: float(np.max(np.abs(e))) for k, e in errors.items()},
        "mean_rel_error": {k: float(np.mean(e)) for k, e in errors.items()},
        "sensitivity_snr_at_10pct": None if sens is None else sens["snr_at_10pct"],
        "total_seconds": time.perf_counter() - started,
        "machine": {"cpu_count": os.cpu_count(), "load_average_end": os.getloadavg(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "runs": [{k: v for k, v in r.items() if k not in ("history", "fc")} for r in runs],
    }
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    with open(os.path.join(args.out, "histories.json"), "w") as fh:
        json.dump({r["seed"]: r["history"] for r in runs}, fh)
    write_table(summary, os.path.join(args.out, "summary.md"))
    plot_trajectories(runs, truth, args, os.path.join(args.out, "trajectories.png"))
    plot_errors(runs, os.path.join(args.out, "errors.png"))
    plot_fc(truth_fc.numpy(), np.asarray(runs[0]["fc"]), os.path.join(args.out, "fc_truth_vs_fit.png"))
    for seed in range(args.seeds):                     # checkpoints are large and only for resume
        path = os.path.join(args.out, f"seed{seed}.ckpt")
        if os.path.exists(path):
            os.remove(path)
    print(open(os.path.join(args.out, "summary.md")).read())


def write_table(summary: dict, path: str):
    s = summary["settings"]
    truth = summary["truth"]
    lines = [f"# Parameter recovery ({'quick' if s['quick'] else 'full'} run)", "",
             f"deco2014 on the embedded HCP Schaefer-100 connectome (N=100), truth "
             + ", ".join(f"{k}={v:g}" for k, v in truth.items())
             + f"; target: one {s['n_trs']}-TR scan (TR {s['tr']} s, dt {s['dt']} ms). "
             f"Fits: {s['epochs']} epochs x {s['realisations']} realisations x {s['fit_trs']} TRs, "
             f"Adam lr {s['lr']}, loss 1 - r(FC) + {s['w_mse']:g} FC-MSE + {s['w_mean']:g} BOLD-mean, "
             "priors N(1.25 truth, truth^2). Estimate = mean of the last "
             f"{s['average']} epochs. Relative error = (estimate - truth) / truth.", "",
             "| seed | " + " | ".join(f"{k}: start → estimate (error)" for k in PARAMS)
             + " | FC r, fresh scan vs truth scan |",
             "|---" * (len(PARAMS) + 2) + "|"]
    for r in summary["runs"]:
        cells = [f"{r['init'][k]:.3g} → {r['estimate'][k]:.3g} ({100 * r['rel_error'][k]:+.1f}%)" for k in PARAMS]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {r['fresh_scan_fc_r_vs_truth_scan']:.3f} |")
    lines.append("| median abs error | " + " | ".join(f"{100 * summary['median_abs_rel_error'][k]:.1f}%" for k in PARAMS) + " | |")
    lines.append("| max abs error | " + " | ".join(f"{100 * summary['max_abs_rel_error'][k]:.1f}%" for k in PARAMS) + " | |")
    lines.append("| mean signed error | " + " | ".join(f"{100 * summary['mean_rel_error'][k]:+.1f}%" for k in PARAMS) + " | |")
    snr = summary.get("sensitivity_snr_at_10pct")
    if snr:
        terms = list(next(iter(snr.values())))
        lines += ["", "Sensitivity: mean change of each data term when one parameter moves ±10% from the "
                  "truth, in units of the term's spread over noise seeds (|value| < ~2: that term alone "
                  "cannot tell a 10% change from noise).", "",
                  "| parameter | " + " | ".join(terms) + " |", "|---" * (len(terms) + 1) + "|"]
        for k in PARAMS:
            lines.append(f"| {k} | " + " | ".join(f"{snr[k][t]:.1f}" for t in terms) + " |")
    lines += ["", f"Total wall time {summary['total_seconds'] / 60:.1f} min on {summary['machine']['cpu_count']} "
              f"CPU cores (load average at the end {summary['machine']['load_average_end'][0]:.1f})."]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_trajectories(runs, truth, args, path):
    plt = _plt()
    fig, axes = plt.subplots(1, len(PARAMS) + 1, figsize=(3.6 * (len(PARAMS) + 1), 3.2))
    for r in runs:
        for ax, k in zip(axes, PARAMS):
            ax.plot(np.asarray(r["history"][f"params/{k}"]) / truth[k], lw=1, label=f"seed {r['seed']}")
        axes[-1].plot(r["history"]["fc_r"], lw=1)
    for ax, k in zip(axes, PARAMS):
        ax.axhline(1.0, color="k", ls="--", lw=1)
        ax.axhline(1.25, color="grey", ls=":", lw=1)
        ax.set_title(f"{k} / truth ({truth[k]:g})")
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    axes[-1].set_title(f"FC r ({args.fit_trs}-TR epoch vs target)")
    axes[-1].set_xlabel("epoch")
    fig.suptitle("dashed: truth; dotted: prior mean", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_errors(runs, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, k in enumerate(PARAMS):
        e = [100 * r["rel_error"][k] for r in runs]
        s = [100 * r["init_rel_offset"][k] for r in runs]
        ax.scatter(np.full(len(s), i - 0.12), s, marker="x", color="grey", label="start" if i == 0 else None)
        ax.scatter(np.full(len(e), i + 0.12), e, color="C0", label="estimate" if i == 0 else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(25, color="grey", ls=":", lw=0.8)
    ax.set_xticks(range(len(PARAMS)), PARAMS)
    ax.set_ylabel("relative error [%]")
    ax.legend(fontsize=8)
    ax.set_title("start and estimate per seed (dotted: prior mean)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_fc(truth_fc, fit_fc, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.4))
    lim = np.percentile(np.abs(truth_fc[np.tril_indices_from(truth_fc, -1)]), 99)
    for ax, m, t in ((axes[0], truth_fc, "truth scan FC"), (axes[1], fit_fc, "fresh scan, seed 0 estimate")):
        im = ax.imshow(m - np.eye(len(m)), vmin=-lim, vmax=lim, cmap="RdBu_r")
        ax.set_title(t, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    il = np.tril_indices_from(truth_fc, -1)
    axes[2].scatter(truth_fc[il], fit_fc[il], s=1, alpha=0.3)
    r = np.corrcoef(truth_fc[il], fit_fc[il])[0, 1]
    axes[2].set_xlabel("truth FC")
    axes[2].set_ylabel("estimate FC")
    axes[2].set_title(f"r = {r:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
