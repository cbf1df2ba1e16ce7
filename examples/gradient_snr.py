"""Signal-to-noise ratio of the fitting loss's gradient over noise realisations.

How useful is ``d loss / d theta`` (theta = the raw, softplus-transformed G/G_c and w_EE of a
``RWWBold(fic=True, g_relative=True)`` model) as a function of the differentiated horizon (TRs
simulated and back-propagated after a burn-in without gradient) and of the distance to the
bifurcation (G/G_c)? For every (G/G_c, horizon) this script draws R noise realisations (one batch
member each, its own noise), computes the per-realisation loss

    (1 - FC r) + (FC level difference)^2 + W1(simulated FCD values, target FCD values)

against the embedded HCP demo (group FC and FCD; windows of 43 TRs every 7, TR 0.72 s, every pair
of distinct windows as in the demo's pooled values), and its gradient with respect to the raw
parameters, realisation by realisation. It reports the mean gradient, its per-component SNR
``|mean| / (std / sqrt(R))`` (of the R-averaged gradient) and ``|mean| / std`` (of one
realisation), the cosine similarity of pairs of single-realisation gradients, the wall time per
realisation (forward + backward), and at the longest horizon the sign agreement with a central
finite difference of the expected loss (common random numbers: the same seeds at theta +- h).

Per-realisation gradients in one batched pass: with ``g_relative`` the parameter table is already
one column per batch member ``(P, B, N)``; the scan runs on a detached copy of it (a leaf), the sum
of the R losses is back-propagated once through the scan (member b's loss depends only on
column b), and the table's cheap graph (softplus, G_c by the implicit function theorem, analytic
FIC) is then differentiated R times with ``grad_outputs`` = column b of the leaf's gradient. The
script checks that the R gradients add up to the gradient of the summed loss.

dt = 1 ms (coarser than the library's 0.1 ms contract for deco2014; the gradient's statistics,
not the simulator's accuracy, are measured here).

    python examples/gradient_snr.py --quick      # ~1-2 min
    python examples/gradient_snr.py              # full: ~15 min on one CPU core
"""

from __future__ import annotations

import argparse
import itertools
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
from rww.fit import FitTarget
from rww.ops.scan import rww_scan

from _common import git_revision, replot  # noqa: E402  (examples/ is on the path)

PARAMS = ("G", "w_EE")


def build_model(data, g_rel: float, w_ee: float, batch: int, dt: float, backend: str) -> RWWBold:
    return RWWBold(data.sc, dt=dt, fic=True, g_relative=True, G=g_rel, w_EE=w_ee, batch=batch,
                   learn=list(PARAMS), backend=backend)


def per_realisation_loss(bold: torch.Tensor, target: FitTarget) -> dict:
    """Loss terms ``(B,)`` of each realisation's ``bold (B, T, N)``."""
    sim_fc = obj.pearson_matrix(bold, eps=1e-20)
    terms = {"fc_corr": obj.fc_corr_loss(sim_fc, target.fc),
             "fc_level": obj.fc_level_loss(sim_fc, target.fc),
             "fcd": obj.wasserstein1(target.simulated_fcd_values(bold), target.fcd_values)}
    terms["total"] = terms["fc_corr"] + terms["fc_level"] + terms["fcd"]
    return terms


def burn_in(model: RWWBold, table: torch.Tensor, n_trs: int, seed: int):
    spec = model.spec(n_trs, seed=seed, t0=0)
    with torch.no_grad():
        result = rww_scan(table.detach(), model.coupling(), model.initial_state(), spec,
                          backend=model.backend)
    return result.state.detach(), n_trs * model.steps_per_tr


def gradients(model: RWWBold, target: FitTarget, n_trs: int, burn_trs: int, seed: int,
              check: bool = False) -> dict:
    """Per-realisation losses and gradients (d loss_b / d raw parameter) of one batched run."""
    raws = [model.learned[name].raw for name in PARAMS]
    tick = time.perf_counter()
    table = model.parameter_table()                      # (P, B, N), graph to the raw params
    t_table = time.perf_counter() - tick
    if table.shape[1] != model.batch:
        raise RuntimeError(f"expected a per-member table, got {tuple(table.shape)}")
    state, t0 = burn_in(model, table, burn_trs, seed)
    t_burn = time.perf_counter() - tick - t_table
    leaf = table.detach().requires_grad_(True)
    tick = time.perf_counter()
    result = rww_scan(leaf, model.coupling(), state, model.spec(n_trs, seed=seed, t0=t0),
                      backend=model.backend)
    terms = per_realisation_loss(result.bold, target)
    t_fwd = time.perf_counter() - tick
    tick = time.perf_counter()
    terms["total"].sum().backward()
    t_bwd = time.perf_counter() - tick
    tick = time.perf_counter()
    grads = []
    for b in range(model.batch):
        go = torch.zeros_like(leaf)
        go[:, b] = leaf.grad[:, b]
        g = torch.autograd.grad(table, raws, grad_outputs=go, retain_graph=True)
        grads.append(torch.stack([x.reshape(()) for x in g]).double())
    grads = torch.stack(grads)                           # (R, n_params)
    t_chain = time.perf_counter() - tick
    out = {"grads": grads.numpy(),
           "terms": {k: v.detach().double().numpy() for k, v in terms.items()},
           "seconds": {"table": t_table, "burn_in": t_burn, "forward": t_fwd, "backward": t_bwd,
                       "chain": t_chain}}
    if check:                                            # the R gradients add up to the sum's
        full = torch.autograd.grad(table, raws, grad_outputs=leaf.grad)
        full = torch.stack([x.reshape(()) for x in full]).double()
        out["check_sum_max_abs_diff"] = float((full - grads.sum(0)).abs().max())
        out["check_sum_scale"] = float(full.abs().max())
    return out


def expected_losses(model: RWWBold, target: FitTarget, n_trs: int, burn_trs: int,
                    seed: int) -> np.ndarray:
    """Per-realisation total loss ``(R,)`` without gradient."""
    with torch.no_grad():
        table = model.parameter_table()
        state, t0 = burn_in(model, table, burn_trs, seed)
        result = rww_scan(table, model.coupling(), state, model.spec(n_trs, seed=seed, t0=t0),
                          backend=model.backend)
        return per_realisation_loss(result.bold, target)["total"].double().numpy()


def set_physical(model: RWWBold, name: str, value: float):
    from rww.transforms import _inverse_softplus
    raw = model.learned[name].raw
    with torch.no_grad():
        raw.copy_(_inverse_softplus(torch.tensor(value, dtype=raw.dtype)))


def summarise(grads: np.ndarray, terms: dict) -> dict:
    r = grads.shape[0]
    mean, std = grads.mean(0), grads.std(0, ddof=1)
    snr1 = np.abs(mean) / std
    snr_r = snr1 * math.sqrt(r)
    # the single-realisation SNR's standard error (t-statistic approximation)
    snr1_se = np.sqrt((1.0 + snr1 ** 2 / 2.0) / r)
    unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    cos = [float(unit[i] @ unit[j]) for i, j in itertools.combinations(range(r), 2)]
    mean_unit = mean / np.linalg.norm(mean)
    cos_mean = unit @ mean_unit
    # the same with each component divided by its RMS over realisations (what Adam's per-component
    # normalisation sees): the raw cosine is dominated by the larger component
    scaled = grads / np.sqrt((grads ** 2).mean(0, keepdims=True))
    sunit = scaled / np.linalg.norm(scaled, axis=1, keepdims=True)
    cos_scaled = [float(sunit[i] @ sunit[j]) for i, j in itertools.combinations(range(r), 2)]
    per = {}
    for k, name in enumerate(PARAMS):
        per[name] = {"mean": float(mean[k]), "std": float(std[k]),
                     "snr_single": float(snr1[k]), "snr_single_se": float(snr1_se[k]),
                     "snr_of_mean": float(snr_r[k]),
                     "sign_fraction": float(np.mean(np.sign(grads[:, k]) == np.sign(mean[k]))),
                     "realisations_for_snr_2": float(math.ceil((2.0 / snr1[k]) ** 2))
                     if snr1[k] > 0 else None}
    return {"R": r, "params": per,
            "cosine_pairs": {"mean": float(np.mean(cos)), "median": float(np.median(cos)),
                             "min": float(np.min(cos)), "fraction_positive": float(np.mean(np.array(cos) > 0))},
            "cosine_pairs_rms_scaled": {"mean": float(np.mean(cos_scaled)),
                                        "median": float(np.median(cos_scaled)),
                                        "fraction_positive": float(np.mean(np.array(cos_scaled) > 0))},
            "cosine_to_mean": {"mean": float(cos_mean.mean()), "min": float(cos_mean.min())},
            "loss": {k: {"mean": float(v.mean()), "std": float(v.std(ddof=1))} for k, v in terms.items()},
            "grads": grads.tolist()}


def time_batches(data, target, g_rel, w_ee, n_trs, burn_trs, batches, dt, backend, seed):
    out = []
    for b in batches:
        model = build_model(data, g_rel, w_ee, b, dt, backend)
        res = gradients(model, target, n_trs, burn_trs, seed)
        s = res["seconds"]
        fb = s["forward"] + s["backward"]
        out.append({"batch": b, "n_trs": n_trs, "forward_s": s["forward"], "backward_s": s["backward"],
                    "fwd_bwd_s": fb, "fwd_bwd_per_realisation_s": fb / b, "table_s": s["table"],
                    "burn_in_s": s["burn_in"]})
        print(f"  timing B={b}: fwd {s['forward']:.2f} s, bwd {s['backward']:.2f} s, "
              f"per realisation {fb / b:.2f} s", flush=True)
    return out


def plot(results: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    points = results["settings"]["g_rel"]
    fig, axes = plt.subplots(1, len(PARAMS), figsize=(5.2 * len(PARAMS), 4.2), sharey=True)
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(points)))
    for ax, name in zip(axes, PARAMS):
        for colour, g in zip(colours, points):
            rows = [r for r in results["runs"] if r["g_rel"] == g]
            h = [r["n_trs"] for r in rows]
            snr_r = [max(r["params"][name]["snr_of_mean"], 1e-3) for r in rows]
            snr1 = [max(r["params"][name]["snr_single"], 1e-3) for r in rows]
            se = [r["params"][name]["snr_single_se"] for r in rows]
            err = [[min(e, 0.9 * v) for e, v in zip(se, snr1)], se]   # keep bars on a log axis
            ax.plot(h, snr_r, "o-", color=colour, label=f"G/G_c={g}: mean of R (R={rows[0]['R']})")
            ax.errorbar(h, snr1, yerr=err, fmt="s--", color=colour, alpha=0.6, capsize=3,
                        label=f"G/G_c={g}: one realisation")
        ax.axhline(2.0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(results["settings"]["horizons"])
        ax.set_xticklabels([str(h) for h in results["settings"]["horizons"]])
        ax.set_xlabel("differentiated horizon [TRs]")
        ax.set_title(f"d loss / d raw {name}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("SNR = |mean| / std  (of one realisation; of the R-mean)")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"Gradient SNR over noise realisations (w_EE={results['settings']['w_ee']}, "
                 f"dt={results['settings']['dt_ms']} ms, burn-in {results['settings']['burn_in_trs']} TRs)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer points and realisations (~2 min)")
    ap.add_argument("--g-rel", type=float, nargs="+", default=None, help="G/G_c points")
    ap.add_argument("--w-ee", type=float, default=0.6)
    ap.add_argument("--horizons", type=int, nargs="+", default=None, help="TRs differentiated")
    ap.add_argument("--realisations", type=int, default=None)
    ap.add_argument("--no-fd", action="store_true", help="skip the finite-difference check")
    ap.add_argument("--fd-h", type=float, default=0.02, help="finite-difference step (physical)")
    ap.add_argument("--timing-batches", type=int, nargs="*", default=None)
    ap.add_argument("--burn-in", type=int, default=42)
    ap.add_argument("--dt", type=float, default=1.0, help="integration step [ms]")
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "gradient_snr"))
    ap.add_argument("--replot", metavar="JSON", help="only redraw the figure of a results file")
    args = ap.parse_args(argv)
    if args.replot:
        return replot(args.replot, plot)
    quick = args.quick
    g_points = args.g_rel or ([0.85, 0.95] if quick else [0.7, 0.85, 0.95])
    horizons = sorted(args.horizons or ([100, 300] if quick else [100, 300, 1200]))
    n_real = args.realisations or (4 if quick else 16)
    n_fd = 0 if args.no_fd else n_real
    timing_batches = args.timing_batches if args.timing_batches is not None else \
        ([1, 2] if quick else [1, 2, 4])
    fd_horizon = max(horizons)

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    data = load_demo(include_bold=False, normalise="mean_row_sum")
    n = data.sc.shape[0]
    target = FitTarget(fc=data.fc, fcd_values=data.fcd_values, fcd_window=data.fcd_window_trs,
                       fcd_step=data.fcd_step_trs, fcd_exclude_overlapping=False
                       ).validate(n, torch.float32, "cpu")
    start = time.perf_counter()
    load0 = os.getloadavg()
    # warm-up (numba compilation / cache load) outside every timing
    gradients(build_model(data, g_points[0], args.w_ee, 1, args.dt, args.backend), target,
              min(horizons), 2, args.seed)

    runs, fd = [], []
    for gi, g_rel in enumerate(g_points):
        model = build_model(data, g_rel, args.w_ee, n_real, args.dt, args.backend)
        with torch.no_grad():
            g_c = float(model.critical_coupling()[0])
        for hi, h in enumerate(horizons):
            seed = args.seed + 100 * gi + hi
            res = gradients(model, target, h, args.burn_in, seed, check=(hi == 0))
            s = res["seconds"]
            row = {"g_rel": g_rel, "w_ee": args.w_ee, "G_c": g_c, "G": g_rel * g_c, "n_trs": h,
                   "seed": seed, "seconds": s,
                   "fwd_bwd_per_realisation_s": (s["forward"] + s["backward"]) / n_real,
                   **summarise(res["grads"], res["terms"])}
            if "check_sum_max_abs_diff" in res:
                row["check_sum_max_abs_diff"] = res["check_sum_max_abs_diff"]
                row["check_sum_scale"] = res["check_sum_scale"]
            runs.append(row)
            last, last_grads = row, res["grads"]
            p = row["params"]
            print(f"G/G_c={g_rel} (G_c={g_c:.4f}) T={h}: loss {row['loss']['total']['mean']:.4f}"
                  f"+-{row['loss']['total']['std']:.4f}; "
                  + "; ".join(f"{k}: mean {p[k]['mean']:+.3e} snr1 {p[k]['snr_single']:.2f} "
                              f"snrR {p[k]['snr_of_mean']:.2f}" for k in PARAMS)
                  + f"; cos {row['cosine_pairs']['mean']:+.2f} "
                    f"(scaled {row['cosine_pairs_rms_scaled']['mean']:+.2f}); "
                    f"{row['fwd_bwd_per_realisation_s']:.2f} s/real", flush=True)
        if n_fd:
            # central difference of the expected loss, common random numbers (the same seeds and
            # batch members as the longest horizon's gradient run) at theta +- h, compared with
            # that run's pathwise gradients
            seed = last["seed"]
            fd_model = model
            grads = last_grads
            entry = {"g_rel": g_rel, "n_trs": fd_horizon, "R": n_fd, "h": args.fd_h, "seed": seed,
                     "params": {}}
            base = {"G": g_rel, "w_EE": args.w_ee}
            for k, name in enumerate(PARAMS):
                vals = {}
                for sign in (+1, -1):
                    set_physical(fd_model, name, base[name] + sign * args.fd_h)
                    vals[sign] = expected_losses(fd_model, target, fd_horizon, args.burn_in, seed)
                set_physical(fd_model, name, base[name])
                diff = (vals[1] - vals[-1]) / (2 * args.fd_h)     # per realisation, physical
                # pathwise gradient in physical units: d/d phys = d/d raw / sigmoid(raw)
                dphys = 1.0 / (1.0 - math.exp(-base[name]))       # 1 / sigmoid(softplus^-1(x))
                path = grads[:, k] * dphys
                fd_mean, fd_se = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(n_fd))
                pw_mean, pw_se = float(path.mean()), float(path.std(ddof=1) / math.sqrt(n_fd))
                entry["params"][name] = {
                    "fd_mean": fd_mean, "fd_se": fd_se, "fd_z": fd_mean / fd_se,
                    "pathwise_mean": pw_mean, "pathwise_se": pw_se, "pathwise_z": pw_mean / pw_se,
                    "sign_agree": bool(np.sign(fd_mean) == np.sign(pw_mean)),
                    "per_realisation_sign_agree": float(np.mean(np.sign(diff) == np.sign(path))),
                    "per_realisation_corr": float(np.corrcoef(diff, path)[0, 1]),
                    "loss_plus_mean": float(vals[1].mean()), "loss_minus_mean": float(vals[-1].mean())}
                e = entry["params"][name]
                print(f"  FD G/G_c={g_rel} {name}: FD {fd_mean:+.3e}+-{fd_se:.1e}  pathwise "
                      f"{pw_mean:+.3e}+-{pw_se:.1e}  agree={e['sign_agree']} "
                      f"corr/real {e['per_realisation_corr']:+.2f}", flush=True)
            fd.append(entry)

    timing = time_batches(data, target, g_points[len(g_points) // 2], args.w_ee, fd_horizon,
                          args.burn_in, timing_batches, args.dt, args.backend, args.seed + 7)

    results = {
        "question": "SNR of the loss gradient over noise realisations vs differentiated horizon "
                    "and distance to the bifurcation",
        "settings": {"quick": quick, "g_rel": g_points, "w_ee": args.w_ee, "horizons": horizons,
                     "realisations": n_real, "fd_realisations": n_fd, "fd_h": args.fd_h,
                     "fd_horizon": fd_horizon, "burn_in_trs": args.burn_in, "dt_ms": args.dt,
                     "dt_note": "1 ms, coarser than the 0.1 ms contract of deco2014",
                     "tr_s": 0.72, "backend": args.backend, "threads": args.threads,
                     "params": list(PARAMS),
                     "gradient_of": "raw (softplus) parameters; G is G/G_c (g_relative)",
                     "loss": "(1 - FC r) + (FC level diff)^2 + W1(FCD values), per realisation",
                     "fcd": {"window_trs": data.fcd_window_trs, "step_trs": data.fcd_step_trs,
                             "exclude_overlapping": False},
                     "seed": args.seed},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "loadavg_start": load0,
                    "loadavg_end": os.getloadavg()},
        "git": git_revision(),
        "runs": runs, "finite_difference": fd, "timing_batches": timing,
        "total_seconds": time.perf_counter() - start,
    }
    path = os.path.join(args.out, "gradient_snr_quick.json" if quick else "gradient_snr.json")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    fig = os.path.join(args.out, "gradient_snr_quick.png" if quick else "gradient_snr.png")
    plot(results, fig)
    print(f"wrote {path} and {fig} ({results['total_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
