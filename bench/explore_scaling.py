"""Sweep scaling and batched FC/FCD memory (issue 14), on the CPU.

1. A 256-candidate sweep at N = 100 (the embedded demo: Schaefer-100 SC, group FC and FCD; a Latin
   hypercube over G/G_c and w_EE; deco2014 with FIC at dt = 1 ms) run by ``rww explore`` in one
   process and under ``torchrun --nproc_per_node 2`` (gloo), each in a fresh process: wall time
   of the command and the sweep's own seconds (sweep.json), and whether the two tables are equal
   byte for byte. Threads: one process with every core (numba and torch), two ranks with
   cores/2 each (``--per-rank-baseline``: also one process with cores/2 threads). The critical
   coupling G_c (an eigenvalue bisection per candidate, :func:`rww.stability.critical_coupling`)
   runs on one torch thread in every configuration (rww.explore keeps it thread-count invariant).
2. Scoring B = 4096 simulated BOLD series (N = 40, 100 TRs, FCD windows of 20 TRs every 5)
   naively (:func:`rww.scoring.score_batch` on the whole batch) and streamed
   (:func:`rww.explore.score_batch_streamed` under a 64 MiB bound), each in a fresh process: the
   peak resident memory added by the scoring (``ru_maxrss`` after minus before) and the time.

Writes ``bench/results/explore-cpu.json``. On a shared machine, the two-rank time competes with
other work: the load average before and after is recorded.

    python bench/explore_scaling.py [--candidates 256] [--n-trs 100] [--skip-sweep] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _env(threads: int) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["NUMBA_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _sweep(out: str, ranks: int, threads: int, args) -> dict:
    cmd = ["-m", "rww", "explore", "--demo", "--bounds", "G_rel=0.6:1.0,w_EE=0.6:1.2",
           "--design", "lhs", "--candidates", str(args.candidates), "--n-trs", str(args.n_trs),
           "--burn-in", str(args.burn_in), "--batch-size", str(args.batch_size),
           "--backend", "numba", "--no-figures", "--no-progress", "--out", out]
    if ranks == 1:
        cmd = [sys.executable] + cmd
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(ranks)] + cmd
    tick = time.perf_counter()
    run = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    with open(os.path.join(out, "sweep.json")) as fh:
        summary = json.load(fh)
    return {"ranks": ranks, "threads_per_rank": threads, "command_wall_s": round(wall, 2),
            "sweep_s": round(summary["seconds"], 2),
            "candidates_per_s": round(args.candidates / summary["seconds"], 2),
            "output": run.stdout.strip().splitlines()[0]}


MEMORY_CHILD = r"""
import json, resource, sys, time, torch
from rww.fit import FitTarget
from rww.explore import score_batch_streamed, scoring_bytes_per_simulation
from rww.scoring import prepare_target, score_batch
mode, b, n, t, w, s, limit = sys.argv[1], *map(int, sys.argv[2:8])
torch.set_num_threads(int(sys.argv[8]))
gen = torch.Generator().manual_seed(0)
bold = torch.randn(b, t, n, generator=gen).cumsum(1)            # float32, like simulated BOLD
target = prepare_target(FitTarget(bold=torch.randn(t, n, generator=gen, dtype=torch.float64)
                                  .cumsum(0), fcd_window=w, fcd_step=s, fcd_exclude_overlapping=False))
score_batch(bold[:2], target)                                    # warm up (allocator, kernels)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tick = time.perf_counter()
if mode == "naive":
    scores = score_batch(bold, target)
else:
    scores = score_batch_streamed(bold, target, max_bytes=limit)
seconds = time.perf_counter() - tick
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
torch.save({k: v for k, v in scores.items()}, sys.argv[9])
print(json.dumps({"mode": mode, "peak_added_bytes": after - before, "seconds": seconds,
                  "bold_bytes": bold.numel() * 4,
                  "estimate_bytes_per_simulation": scoring_bytes_per_simulation(t, n, w, s)}))
"""


def _memory(args, tmp: str) -> dict:
    b, n, t, w, s, limit = args.mem_batch, args.mem_n, args.mem_trs, 20, 5, 64 * 2**20
    out = {"batch": b, "n_regions": n, "n_trs": t, "fcd_window_trs": w, "fcd_step_trs": s,
           "streamed_bound_bytes": limit, "threads": args.threads}
    paths = {}
    for mode in ("naive", "streamed"):
        paths[mode] = os.path.join(tmp, f"{mode}.pt")
        run = subprocess.run([sys.executable, "-c", MEMORY_CHILD, mode, str(b), str(n), str(t),
                              str(w), str(s), str(limit), str(args.threads), paths[mode]],
                             env=_env(args.threads), capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"memory {mode} failed:\n{run.stderr[-3000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        out[mode] = {"peak_added_MiB": round(result["peak_added_bytes"] / 2**20, 1),
                     "seconds": round(result["seconds"], 2)}
        out["bold_MiB"] = round(result["bold_bytes"] / 2**20, 1)
        out["estimate_MiB_per_simulation"] = round(result["estimate_bytes_per_simulation"] / 2**20, 3)
    import torch
    naive, streamed = torch.load(paths["naive"]), torch.load(paths["streamed"])
    out["scores_equal"] = {k: bool(torch.equal(naive[k], streamed[k])) for k in naive}
    out["max_relative_difference"] = {
        k: float(((naive[k] - streamed[k]).abs() / naive[k].abs().clamp_min(1e-300)).max())
        for k in naive}
    out["memory_ratio_naive_over_streamed"] = round(
        out["naive"]["peak_added_MiB"] / max(out["streamed"]["peak_added_MiB"], 1e-9), 1)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=256)
    p.add_argument("--n-trs", type=int, default=100)
    p.add_argument("--burn-in", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                   help="cores to use (one process: all; two ranks: half each)")
    p.add_argument("--mem-batch", type=int, default=4096)
    p.add_argument("--mem-n", type=int, default=40)
    p.add_argument("--mem-trs", type=int, default=100)
    p.add_argument("--per-rank-baseline", action="store_true",
                   help="also one process with half the threads (a rank's share)")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results", "explore-cpu.json"))
    args = p.parse_args()
    import torch

    import rww
    record = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "rww": rww.__version__, "load_average_before": os.getloadavg()},
              "note": "shared machine: other work competes with the runs (load averages)"}
    tmp = tempfile.mkdtemp(prefix="rww-explore-bench-")
    try:
        if not args.skip_sweep:
            half = max(1, args.threads // 2)
            runs = []
            configs = [(1, args.threads, "one"), (2, half, "two")]
            if args.per_rank_baseline:
                configs.append((1, half, "one_half"))
            for ranks, threads, name in configs:
                runs.append(_sweep(os.path.join(tmp, name), ranks, threads, args))
                print(json.dumps(runs[-1]), flush=True)
            same = (open(os.path.join(tmp, "one", "sweep.csv"), "rb").read()
                    == open(os.path.join(tmp, "two", "sweep.csv"), "rb").read())
            record["sweep"] = {
                "setting": f"{args.candidates} candidates (Latin hypercube over G/G_c in [0.6, 1] "
                           f"and w_EE in [0.6, 1.2]), demo N = 100, FIC 3 Hz, dt 1 ms, TR 0.72 s, "
                           f"{args.burn_in} + {args.n_trs} TRs, batches of {args.batch_size}, "
                           "numba backend",
                "runs": runs, "two_ranks_table_equals_one_process": same,
                "speedup_two_ranks_vs_one_process": round(runs[0]["sweep_s"] / runs[1]["sweep_s"], 2)}
            if args.per_rank_baseline:
                record["sweep"]["speedup_two_ranks_vs_one_rank_threads"] = round(
                    runs[2]["sweep_s"] / runs[1]["sweep_s"], 2)
        if not args.skip_memory:
            record["fc_fcd_memory"] = _memory(args, tmp)
            print(json.dumps(record["fc_fcd_memory"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["machine"]["load_average_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(record, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
