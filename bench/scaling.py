#!/usr/bin/env python
"""Cost scaling sweep: wall time and peak memory against simulated time T, regions N and batch B.

Usage (from the repository root; a few minutes on a 2-core CPU)::

    python bench/scaling.py                    # -> bench/results/scaling-cpu.json
    python bench/report.py                     # -> bench/scaling.png and the README table

Every point is one ``bench/run_one.py`` process (one-shot mode: build, warm-up, reset the peak-RSS
counter, one timed run), so each point's memory is its own: ``peak_increase_mb`` is the peak
resident memory during the timed run minus the resident memory just before it. Forward runs are
W1's (deco2014, no gradient); gradient runs are W3's (forward + backward through the
checkpointed scan, or through the plain loop's autograd tape for the reference). rww's fast
backend (``auto``) runs the full sweep; the plain PyTorch reference loop (``torch``) runs a
shorter one (it is ~1000x slower), on the same axes, since its memory behaviour is the point of
comparison: the checkpointed gradient keeps O(B N (T/K + K)) state, the tape O(B N T).

The reduced sizes are chosen for this machine class; on a GPU pass ``--device cuda`` to sweep
the same axes there (results in ``scaling-cuda.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import report  # noqa: E402

RUN_ONE = os.path.join(BENCH, "run_one.py")

# sweep -> (what stays fixed, in words, for the figure) and the points:
# (impl, mode, x, overrides). TR is chosen so that T is a whole number of TRs.
FIXED = {"T": "N=68, B=16", "N": "B=1, T=0.5 s (reference 0.01 s)",
         "B": "N=68, T=0.5 s (reference 0.01 s)"}


def sweep_points(quick: bool = False) -> list[tuple]:
    pts = []
    t_fast = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0) if not quick else (0.25, 1.0)
    t_ref = (0.005, 0.01, 0.02, 0.04) if not quick else (0.005, 0.02)
    for mode in ("forward", "gradient"):
        for t in t_fast:
            pts.append(("T", "auto", mode, t, dict(n_nodes=68, batch=16, seconds=t, tr=0.05)))
        for t in t_ref:
            pts.append(("T", "torch", mode, t, dict(n_nodes=68, batch=16, seconds=t, tr=0.005)))
    n_fast = (17, 68, 272, 1088) if not quick else (17, 272)
    for mode in ("forward", "gradient"):
        for n in n_fast:
            pts.append(("N", "auto", mode, n, dict(n_nodes=n, batch=1, seconds=0.5, tr=0.25)))
        for n in n_fast:
            pts.append(("N", "torch", mode, n, dict(n_nodes=n, batch=1, seconds=0.01, tr=0.01)))
    b_fast = (1, 8, 64, 512) if not quick else (1, 64)
    for mode in ("forward", "gradient"):
        for b in b_fast:
            pts.append(("B", "auto", mode, b, dict(n_nodes=68, batch=b, seconds=0.5, tr=0.25)))
        for b in b_fast:
            pts.append(("B", "torch", mode, b, dict(n_nodes=68, batch=b, seconds=0.01, tr=0.01)))
    return pts


def run_point(impl, mode, overrides, device, timeout):
    key = "W1/cpu" if mode == "forward" else "W3/cpu"
    cmd = [sys.executable, RUN_ONE, key, impl, "--device", device]
    for k, v in overrides.items():
        cmd += ["--set", f"{k}={v}"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    if not lines:
        return {"ok": False, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    msg = json.loads(lines[-1])
    if msg.get("event") != "result":
        return {"ok": False, "error": msg.get("error", "unknown error")}
    return {"ok": True, "msg": msg}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="two points per line (smoke test)")
    parser.add_argument("--out", default=None, help="default bench/results/scaling-<device>.json")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)

    from rww.ops.scan import auto_backend_name
    fast = auto_backend_name(args.device)
    points = []
    plan = sweep_points(args.quick)
    for i, (sweep, impl, mode, x, overrides) in enumerate(plan):
        if impl == "auto" and fast == "torch":
            print(f"[{i + 1}/{len(plan)}] skip {sweep} {impl} {mode} {x}: auto resolves to the "
                  "reference loop here", flush=True)
            continue
        tick = time.perf_counter()
        out = run_point(impl, mode, overrides, args.device, args.timeout)
        point = {"sweep": sweep, "impl": impl, "mode": mode, "x": x, "overrides": overrides,
                 "ok": out["ok"]}
        if out["ok"]:
            msg = out["msg"]
            mem = msg
            wall = min(msg["wall_s"])
            w = msg["workload"]
            peak, before = msg.get("peak_rss_kb"), msg.get("rss_before_kb")
            point.update(
                backend=msg["meta"]["backend"], workload=w, wall_s=wall,
                per_sim_s=wall / w["seconds"], us_per_step=wall / (w["n_steps"] * w["batch"]) * 1e6,
                peak_rss_mb=None if peak is None else peak / 1024,
                peak_increase_mb=None if peak is None or before is None else (peak - before) / 1024,
                ru_maxrss_mb=mem["ru_maxrss_kb"] / 1024,
                cuda_max_allocated_mb=(mem["cuda_max_allocated_bytes"] / 2**20
                                       if "cuda_max_allocated_bytes" in mem else None),
                loadavg=os.getloadavg()[0])
            if point["cuda_max_allocated_mb"] is not None:
                point["peak_increase_mb"] = point["cuda_max_allocated_mb"]
            print(f"[{i + 1}/{len(plan)}] {sweep} {impl}->{point['backend']} {mode} x={x}: "
                  f"{wall:.3g} s ({point['per_sim_s']:.3g} s/sim-s), "
                  f"+{point['peak_increase_mb']:.1f} MB  [{time.perf_counter() - tick:.0f} s]",
                  flush=True)
        else:
            point["error"] = out["error"]
            print(f"[{i + 1}/{len(plan)}] {sweep} {impl} {mode} x={x}: FAILED {out['error']}",
                  flush=True)
        points.append(point)

    data = {"datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/scaling.py" + (" --quick" if args.quick else "")
                       + (f" --device {args.device}" if args.device != "cpu" else ""),
            "device": args.device, "fixed": FIXED, "environment": report.environment(),
            "points": points}
    out = args.out or os.path.join(BENCH, "results", f"scaling-{args.device}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(data, fh, indent=1)
    print(f"wrote {os.path.relpath(out, ROOT)}")
    return 0 if all(p["ok"] for p in points) else 1


if __name__ == "__main__":
    sys.exit(main())
