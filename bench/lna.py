#!/usr/bin/env python
"""The linear noise approximation's cost: one value and gradient of the regional LNA fit's loss
(rww.linear.lna, then the FC correlation with the target, backward), with the blockwise Lyapunov
solve (one shared Schur form of the neural Jacobian per step) and with scipy's dense 6N x 6N
solve, interleaved in one session.

Usage (from the repository root, in rww's virtualenv; about a minute on 2 cores)::

    python bench/lna.py --out bench/results/lna-cpu.json
    python bench/lna.py --rounds 2 --out /tmp/lna.json        # a quick check

Workload: the embedded demo (HCP Schaefer-100, N = 100, SC normalised to a mean row sum of 1, the
group FC as target), deco2014 with FIC at 3 Hz, G = 1.529, w_EE = 0.451 per region (the
learned leaf), sigma = 0.0063 nA: a 600 x 600 system. Reported: per solver the minimum and
median wall time per value and gradient over ``--rounds`` rounds of ``--repeats`` each, and the
dense/blockwise ratio; the FC r and gradient of the two solvers are checked to agree (1e-10).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import torch


def step(sc, fc, dense: bool):
    """One value and gradient; ``dense`` forces scipy's dense solve (no block structure)."""
    import rww.linear as linear
    from rww.objectives import fc_correlation
    from rww.params import get_preset, pack_parameters
    blocks = linear._blocks
    if dense:
        linear._blocks = lambda a, q: None
    try:
        w_ee = torch.full((sc.shape[0],), 0.451, dtype=torch.float64, requires_grad=True)
        table = pack_parameters({"G": 1.529, "w_EE": w_ee, "sigma": 0.0063},
                                get_preset("deco2014"), 1, sc.shape[0], torch.float64, sc.device)
        r = fc_correlation(linear.lna(table, sc).fc[0], fc)
        r.backward()
    finally:
        linear._blocks = blocks
    return float(r.detach()), w_ee.grad.clone()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from rww.data import load_demo
    demo = load_demo(normalise="mean_row_sum")
    sc = torch.as_tensor(demo.sc, dtype=torch.float64)
    fc = torch.as_tensor(demo.fc, dtype=torch.float64)
    solvers = {"blockwise": False, "dense": True}
    check = {name: step(sc, fc, dense) for name, dense in solvers.items()}     # and warm-up
    r_diff = abs(check["blockwise"][0] - check["dense"][0])
    g_diff = float((check["blockwise"][1] - check["dense"][1]).abs().max()
                   / check["dense"][1].abs().max())
    if not (r_diff < 1e-10 and g_diff < 1e-10):
        raise SystemExit(f"the solvers disagree: FC r by {r_diff:.3g}, gradient by {g_diff:.3g}")
    times = {name: [] for name in solvers}
    loads = []
    for rnd in range(args.rounds):
        order = list(solvers) if rnd % 2 == 0 else list(solvers)[::-1]
        for name in order:
            loads.append(os.getloadavg()[0])
            for _ in range(args.repeats):
                tick = time.perf_counter()
                step(sc, fc, solvers[name])
                times[name].append(time.perf_counter() - tick)
    rows = {name: {"min_s": min(t), "median_s": sorted(t)[len(t) // 2], "runs": len(t)}
            for name, t in times.items()}
    ratio = rows["dense"]["median_s"] / rows["blockwise"]["median_s"]
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    doc = {"kind": "lna", "what": "one value and gradient of the LNA FC correlation at N = 100 "
                                  "(600 x 600 Lyapunov system), seconds",
           "rows": rows, "dense_over_blockwise": ratio,
           "agreement": {"fc_r": r_diff, "gradient_rel": g_diff},
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                       "loadavg_1min": [min(loads), max(loads)]},
           "git_rev": rev.strip(), "rounds": args.rounds, "repeats": args.repeats}
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
    for name, row in rows.items():
        print(f"{name}: median {row['median_s']:.3f} s, min {row['min_s']:.3f} s per value and "
              "gradient")
    print(f"dense / blockwise: {ratio:.2f}x (FC r agree to {r_diff:.1e}, gradients to "
          f"{g_diff:.1e}); wrote {args.out}")


if __name__ == "__main__":
    main()
