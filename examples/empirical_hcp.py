"""Empirical HCP fit on the embedded Schaefer-100 data (the paper's empirical experiment).

1. Group: fit the training group's FC (group-train706) and report the FC correlation of a fresh
   simulation with the fitted parameters, and the FCD distance (KS and 1-Wasserstein).
2. Single subject: fit the first half of the embedded subject's scan and report FC r on the
   held-out second half (and on the group FC).
3. With ``--preset griffiths2022`` the same, in the paper's own setting (20-TR windows, -log(0.5 +
   0.5 r), bifurcation and entropy terms), for a side-by-side with the paper.

    python examples/empirical_hcp.py --preset deco2014 --epochs 30 --out results/hcp-deco
    python examples/empirical_hcp.py --preset griffiths2022 --epochs 30 --out results/hcp-paper

The held-out group (group-test303) is not embedded and is never used for tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import rww
from rww import objectives as obj
from rww.data import load_demo
from rww.fit import FitConfig, FitTarget, evaluate, fit

SETTINGS = {
    "deco2014": dict(learn=["G", "w_IE"], init=dict(G=0.5), window_trs=None, n_trs=300, lr=0.02,
                     weights={"fc_corr": 1.0, "fcd": 1.0, "firing_rate": 0.01}),
    "griffiths2022": dict(learn=["G", "w_EE", "w_IE", "w_EI"], init={}, window_trs=20, n_trs=1200,
                          lr=0.01, weights={"fc_log": 1.0, "bifurcation": 1.0, "entropy": 1.0}),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(SETTINGS), default="deco2014")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--n-trs", type=int, default=None)
    ap.add_argument("--realisations", type=int, default=2)
    ap.add_argument("--dt", type=float, default=None)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--out", default="results/hcp")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    s = SETTINGS[args.preset]
    n_trs = args.n_trs or s["n_trs"]
    demo = load_demo()
    sc = demo.sc.to(torch.float32)
    if args.preset == "deco2014":
        sc = sc / sc.sum(1).mean()
    common = dict(preset=args.preset, batch=args.realisations, backend=args.backend)
    if args.dt:
        common["dt"] = args.dt
    fcd_window, fcd_step = demo.fcd_window_trs, demo.fcd_step_trs
    report = {"preset": args.preset, "args": vars(args)}

    # 1. group FC
    model = rww.RWWBold(sc, learn=s["learn"], **s["init"], **common)
    weights = dict(s["weights"])
    target = FitTarget(fc=demo.fc, fcd_values=demo.fcd_values, fcd_window=fcd_window, fcd_step=fcd_step)
    if weights.get("fcd") and n_trs < 2 * fcd_window:
        weights.pop("fcd")
    config = FitConfig(epochs=args.epochs, lr=s["lr"], window_trs=s["window_trs"], n_trs=n_trs,
                       burn_in_trs=20, weights=weights)
    tick = time.perf_counter()
    result = fit(model, target, config, checkpoint=os.path.join(args.out, "group.ckpt"), resume=True)
    report["group"] = {"seconds": time.perf_counter() - tick,
                       "params": {k: v.tolist() for k, v in result.params.items()},
                       "train_fc_r_last_epoch": result.history["fc_r"][-1],
                       "fresh_simulation": evaluate(model, demo.fc, n_trs=1200, target_fcd_values=demo.fcd_values,
                                                    fcd_window=fcd_window, fcd_step=fcd_step)}
    result.save(os.path.join(args.out, "group"))
    print(json.dumps(report["group"]))

    # 2. single subject, held-out second half
    if demo.subject_bold:
        name, bold = next(iter(demo.subject_bold.items()))
        bold = torch.as_tensor(bold, dtype=torch.float32)
        half = bold.shape[0] // 2
        train, test = bold[:half], bold[half:]
        model = rww.RWWBold(sc, learn=s["learn"], **s["init"], **common)
        config = FitConfig(epochs=args.epochs, lr=s["lr"], window_trs=s["window_trs"], n_trs=half,
                           burn_in_trs=20, weights={k: v for k, v in s["weights"].items() if k != "fcd"})
        result = fit(model, FitTarget(bold=train), config,
                     checkpoint=os.path.join(args.out, "subject.ckpt"), resume=True)
        report["subject"] = {
            "name": name, "params": {k: v.tolist() for k, v in result.params.items()},
            "held_out_second_half": evaluate(model, obj.fc(test), n_trs=test.shape[0]),
            "group_fc": evaluate(model, demo.fc, n_trs=test.shape[0]),
            "empirical_first_vs_second_half_fc_r": float(obj.fc_correlation(obj.fc(train), obj.fc(test))),
        }
        result.save(os.path.join(args.out, "subject"))
        print(json.dumps(report["subject"]))
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
