"""Time and peak memory of one full-length BPTT epoch on the CPU.

One epoch = simulate a whole 14.4-minute scan (1200 TRs at TR 0.72 s, dt = 0.1 ms: 8.64 million
Euler steps) of the embedded 100-region HCP connectome, compute the FC loss against the group FC,
back-propagate through the entire scan (the checkpointed adjoint: forward keeps the state every
K ~ sqrt(T) steps, backward recomputes each segment), and take one Adam step. This is
``rww.fit(..., FitConfig(window_trs=None))`` with one epoch; the forward and backward passes are
also timed separately.

Peak memory is the process's peak resident set size (``ru_maxrss``), read before the epoch (after
imports, data loading and the numba compilation warm-up) and after it; the difference is what the
epoch added. The script writes a JSON file (default ``examples/results/full_length_epoch.json``).

    python examples/full_length_epoch.py                 # ~2-4 min on one CPU core
    python examples/full_length_epoch.py --n-trs 100     # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import torch

import rww
from rww import objectives as obj
from rww.data import load_demo
from rww.fit import FitConfig, FitTarget, fit

PARAMS = ("G", "w_EE", "w_IE", "w_EI")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-trs", type=int, default=1200)
    ap.add_argument("--dt", type=float, default=0.1, help="integration step [ms]")
    ap.add_argument("--tr", type=float, default=0.72)
    ap.add_argument("--batch", type=int, default=1, help="noise realisations simulated together")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "full_length_epoch.json"))
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    load_start = os.getloadavg()
    demo = load_demo(include_bold=False)
    sc = demo.sc.to(torch.float32)
    sc = sc / sc.sum(1).mean()
    init = dict(G=0.5, w_EE=1.4, w_IE=1.0, w_EI=1.0)

    def build():
        return rww.RWWBold(sc, batch=args.batch, dt=args.dt, tr=args.tr, backend=args.backend,
                           learn=list(PARAMS), **init)

    # warm-up: compile the kernels (numba caches to disk; the first process compiles)
    model = build()
    tick = time.perf_counter()
    res = model.simulate(2)
    obj.fc_corr_loss(obj.pearson_matrix(res.bold, eps=1e-20), demo.fc.float()).mean().backward()
    fit(build(), FitTarget(fc=demo.fc), FitConfig(epochs=1, window_trs=None, n_trs=3, burn_in_trs=1),
        progress=False)                       # first fit call: remaining lazy imports/compiles
    warmup_s = time.perf_counter() - tick

    rss_before = peak_rss_mib()
    cur_before = current_rss_mib()

    # forward and backward timed separately (one realisation of the epoch's work)
    model = build()
    state = model.initial_state()
    tick = time.perf_counter()
    res = model.simulate(args.n_trs, state=state, seed=1)
    forward_s = time.perf_counter() - tick
    loss = obj.fc_corr_loss(obj.pearson_matrix(res.bold, eps=1e-20), demo.fc.float()).mean()
    tick = time.perf_counter()
    loss.backward()
    backward_s = time.perf_counter() - tick
    grads = {n: float(p.grad.abs().sum()) for n, p in model.named_parameters()}
    del res, loss
    rss_after_fb = peak_rss_mib()

    # the same as a fit epoch (burn-in of 10 TRs without gradient, loss, backward, Adam step)
    model = build()
    config = FitConfig(epochs=1, window_trs=None, n_trs=args.n_trs, burn_in_trs=10,
                       weights={"fc_corr": 1.0}, lr=0.01)
    tick = time.perf_counter()
    result = fit(model, FitTarget(fc=demo.fc), config, progress=False)
    epoch_s = time.perf_counter() - tick
    rss_after = peak_rss_mib()

    n_steps = args.n_trs * model.steps_per_tr
    k = rww.ops.scan.default_checkpoint_every(n_steps) if hasattr(rww, "ops") else None
    out = {
        "workload": {"preset": "deco2014", "n_nodes": model.n_nodes, "batch": args.batch,
                     "n_trs": args.n_trs, "tr_s": args.tr, "dt_ms": args.dt,
                     "scan_minutes": args.n_trs * args.tr / 60, "steps": n_steps,
                     "learned": list(PARAMS), "loss": "1 - r(FC) against the group FC",
                     "checkpoint_every_steps": k,
                     "checkpoint_floats": None if k is None else 6 * args.batch * model.n_nodes * -(-n_steps // k)},
        "backend": repr(model).split("backend=")[1].split(",")[0],
        "timing_s": {"forward": forward_s, "backward": backward_s, "forward_plus_backward": forward_s + backward_s,
                     "fit_epoch_including_burn_in_and_step": epoch_s,
                     "fit_epoch_history_seconds": result.history["seconds"][0],
                     "compile_warmup": warmup_s},
        "us_per_step": {"forward": 1e6 * forward_s / n_steps, "backward": 1e6 * backward_s / n_steps},
        "memory_mib": {"peak_rss_before_epoch": rss_before, "rss_before_epoch": cur_before,
                       "peak_rss_after_forward_backward": rss_after_fb,
                       "peak_rss_after_fit_epoch": rss_after,
                       "added_by_epoch": rss_after - rss_before,
                       "bold_plus_grad_tensors": 2 * 4 * args.batch * args.n_trs * model.n_nodes / 2**20},
        "load_average_1_5_15min": {"start": load_start, "end": os.getloadavg()},
        "grad_abs_sum": grads,
        "fc_r_after_epoch": result.history["fc_r"][0],
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
    }
    try:
        import numba
        out["machine"]["numba"] = numba.__version__
    except ImportError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
