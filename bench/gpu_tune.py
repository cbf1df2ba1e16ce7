#!/usr/bin/env python
"""Kernel configurations timed side by side on a CUDA machine: the data behind
``rww.ops.triton.config.choose_config``'s defaults.

Usage (from the repository root)::

    python bench/gpu_tune.py --out bench/results/gpu-tune-<device>.json [--deadline 170]
    TRITON_INTERPRET=1 python bench/gpu_tune.py --dry-run     # the script's logic on CPU

``bench/gpu.py`` times each workload with the default configuration; this script times the
alternatives that the defaults were chosen against, each at a short length (the cost per step
does not depend on the length), in one process, so every ratio is between rows of one run:

- W5 (one simulation, N = 100): the streamed mat-vec with 1-8 warps and 4-32 unrolled columns,
  and C resident in registers (BLOCK_N = 128) with 4-16 warps;
- W7 (one simulation, N = 1000): the streamed mat-vec with 4-32 warps;
- W6 (gradient, N = 94): forward recomputation and adjoint with 1-8 warps each;
- W4 (N = 100, B = 32768, shared C): several simulations per program (``block_b``) for the
  streamed and ``tl.dot`` products.

Each row: compile and warm up on the same length (untimed), then the best of ``--repeats`` timed
runs (``torch.cuda.synchronize`` around each), microseconds per step, and the largest
difference of its BOLD from the default configuration's on the same problem (every
configuration computes the same sums, in orders that differ only in the mat-vec's summation
order, so differences are float32 rounding; a large one marks a wrong configuration). A
configuration that fails to compile or run is recorded with its error; the others still run.
``--deadline``: seconds after which no further row is started (results are written after every
row, so a run cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

# (workload, TRs timed, TR [s] or None for the workload's, mode, [(label, forward overrides,
# adjoint overrides)]): a shorter TR shortens the timed run only; the first entry
# of each group is the default configuration, against which BOLD differences are measured.
PLAN = [
    ("W5", 5, None, "forward", [
        ("default", {}, {}),
        ("streamed nw=1", {"num_warps": 1}, {}),
        ("streamed nw=2", {"num_warps": 2}, {}),
        ("streamed nw=8", {"num_warps": 8}, {}),
        ("streamed nw=4 bj=4", {"block_j": 4}, {}),
        ("streamed nw=4 bj=16", {"block_j": 16}, {}),
        ("streamed nw=4 bj=32", {"block_j": 32}, {}),
        ("resident nw=4", {"resident": True, "num_warps": 4}, {}),
        ("resident nw=8", {"resident": True, "num_warps": 8}, {}),
        ("resident nw=16", {"resident": True, "num_warps": 16}, {}),
    ]),
    ("W6", 10, None, "gradient", [
        ("default", {}, {}),
        ("fwd nw=2, bwd nw=2", {"num_warps": 2}, {"num_warps": 2}),
        ("fwd nw=1, bwd nw=4", {"num_warps": 1}, {}),
        ("fwd nw=4, bwd nw=8", {}, {"num_warps": 8}),
    ]),
    ("W7", 1, 0.2, "forward", [
        ("default", {}, {}),
        ("streamed nw=4", {"num_warps": 4}, {}),
        ("streamed nw=16", {"num_warps": 16}, {}),
        ("streamed nw=32", {"num_warps": 32}, {}),
        ("streamed nw=16 bj=32", {"num_warps": 16, "block_j": 32}, {}),
    ]),
    ("W4", 1, 0.1, "forward", [
        ("default", {}, {}),
        ("streamed block_b=4", {"block_b": 4}, {}),
        ("streamed block_b=16 nw=8", {"block_b": 16, "num_warps": 8}, {}),
        ("tl.dot block_b=16", {"use_dot": True}, {}),
        ("tl.dot block_b=32", {"use_dot": True, "block_b": 32}, {}),
    ]),
]


def tuned_backend(fwd: dict, bwd: dict):
    """A :class:`TritonBackend` whose forward (and recomputation) and adjoint kernels take
    separate configuration overrides."""
    from rww.ops.triton.config import choose_config
    from rww.ops.triton.backend import TritonBackend

    class Tuned(TritonBackend):
        def _cfg(self, batch, n_nodes, per_sim, kernel="fwd"):
            return choose_config(batch, n_nodes, per_sim, kernel,
                                 **(fwd if kernel == "fwd" else bwd))

    return Tuned()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON path (default "
                        "bench/results/gpu-tune-<device>.json)")
    parser.add_argument("--deadline", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="+", help="workloads (W4 W5 W6 W7)")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU tensors under TRITON_INTERPRET=1, 10-step TRs, two "
                             "configurations per workload: checks this script, times nothing")
    args = parser.parse_args(argv)

    import torch

    import workloads
    from gpu import Problem, _device_slug, _git_commit

    if args.dry_run:
        if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
            sys.exit("--dry-run needs TRITON_INTERPRET=1 in the environment")
        device = torch.device("cpu")
        device_name = "cpu (dry run)"
    else:
        if not torch.cuda.is_available():
            sys.exit("bench/gpu_tune.py: no CUDA device (use --dry-run to check the script)")
        device = torch.device("cuda")
        device_name = torch.cuda.get_device_name()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    import triton

    out = args.out or os.path.join(BENCH, "results", f"gpu-tune-{_device_slug(device_name)}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    start = time.perf_counter()
    rows = []

    def write():
        with open(out, "w") as fh:
            json.dump({"device": device_name, "torch": torch.__version__,
                       "triton": triton.__version__, "commit": _git_commit(),
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "total_s": round(time.perf_counter() - start, 1), "rows": rows},
                      fh, indent=1)

    for name, n_trs, tr, mode, configs in PLAN:
        if args.only and name not in args.only:
            continue
        w = workloads.get(name)
        if tr is not None:
            w = dataclasses.replace(w, tr=tr)
        if args.dry_run:   # 10 steps per TR, at most 4 simulations, two configurations
            w = dataclasses.replace(w, tr=0.001, batch=min(w.batch, 4))
            n_trs, configs = 1, configs[:2]
        reference = None
        for label, fwd, bwd in configs:
            elapsed = time.perf_counter() - start
            row = {"workload": w.key, "mode": mode, "label": label, "forward_config": fwd,
                   "adjoint_config": bwd, "n_trs": n_trs}
            if args.deadline is not None and elapsed > args.deadline:
                row["skipped"] = f"deadline {args.deadline:.0f} s passed ({elapsed:.0f} s)"
                rows.append(row)
                continue
            try:
                backend = tuned_backend(fwd, bwd)
                p = Problem(w, n_trs, device, mode == "gradient")
                row["steps"] = p.steps
                # The configurations actually launched (overrides on top of the defaults).
                row["forward_resolved"] = dataclasses.asdict(
                    backend._cfg(w.batch, w.n_nodes, False, "fwd"))
                row["adjoint_resolved"] = (dataclasses.asdict(
                    backend._cfg(w.batch, w.n_nodes, False, "bwd")) if mode == "gradient"
                    else None)

                def run():
                    if mode == "gradient":
                        bold = p.scan(backend)[0]
                        torch.autograd.grad(bold.pow(2).mean(), [p.G, p.w_IE])
                        return bold.detach()
                    with torch.no_grad():
                        return p.scan(backend, forward_only=True)[0]

                bold = run()                      # compile and warm up
                sync()
                times = []
                for _ in range(args.repeats):
                    sync()
                    t0 = time.perf_counter()
                    run()
                    sync()
                    times.append(time.perf_counter() - t0)
                best = min(times)
                row.update(seconds=best, seconds_all=times,
                           us_per_step=1e6 * best / p.steps,
                           sim_steps_per_s=w.batch * p.steps / best)
                if reference is None:
                    reference = bold
                else:
                    diff = float((bold - reference).abs().max())
                    row["bold_max_abs_diff"] = diff
                    row["bold_max_rel_diff"] = diff / max(float(reference.abs().max()), 1e-30)
            except Exception as err:  # recorded; the other configurations still run
                row["error"] = repr(err)[:400]
            rows.append(row)
            print(json.dumps(row), flush=True)
            write()
    write()
    print(f"\n{'workload':9} {'mode':8} {'configuration':26} {'us/step':>9} {'vs default':>10} "
          f"{'BOLD diff':>9}")
    base = {}
    for r in rows:
        if "us_per_step" in r and r["label"] == "default":
            base[r["workload"]] = r["us_per_step"]
    for r in rows:
        if "us_per_step" not in r:
            what = r.get("error") or r.get("skipped")
            print(f"{r['workload']:9} {r['mode']:8} {r['label']:26} {what}")
            continue
        ratio = base.get(r["workload"], float("nan")) / r["us_per_step"]
        diff = f"{r['bold_max_rel_diff']:.1e}" if "bold_max_rel_diff" in r else "-"
        print(f"{r['workload']:9} {r['mode']:8} {r['label']:26} {r['us_per_step']:9.3f} "
              f"{ratio:9.2f}x {diff:>9}")
    print(f"\nwrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
