#!/usr/bin/env python
"""W7 (one simulation, N = 1000) on the CPU: rww against vbjax's Euler run, interleaved in one session.

Usage (from the repository root)::

    python bench/w7.py                                  # 8 rounds -> bench/results/cpu-w7.json
    python bench/w7.py --rounds 4 --out /tmp/w7.json

Each implementation is one ``bench/run_one.py W7/cpu IMPL --serve`` process, warmed up once; every
round asks each for one timed run (20,000 steps: 2 s simulated at dt = 0.1 ms, float32,
forward), in an order that alternates between rounds, so that a change of machine load hits all
of them alike. Implementations:

- ``rww``: the numba backend on one thread, as installed (a symmetric connectome this large takes
  the packed upper-triangle coupling product, ``rww/ops/numba/symmetric.py``);
- ``rww-dense``: the same with ``RWW_SYMMETRIC_COUPLING=off`` (the dense product of rww 0.2.0);
- ``rww-split``: the numba backend with ``RWW_NODE_SPLIT=auto`` and two threads
  (``RWW_NUM_THREADS=2``): the simulation's forward on two threads (``rww/ops/numba/split.py``);
- ``vbjax-euler``: vbjax's Euler integration of the same model and connectome, in its own
  virtualenv (``.venv-peers/vbjax``, or the Python named by ``RWW_PEER_PYTHON_VBJAX``; skipped
  with a message when absent; it uses every core it finds).

Writes the runs (wall and CPU seconds, the number of running processes before each) and the
medians per step, with each one's ratio to vbjax, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _procs_running() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("procs_running"):
                return int(line.split()[1])
    return -1


def implementations() -> dict:
    """name -> (command, extra environment)."""
    run_one = [os.path.join("bench", "run_one.py"), "W7/cpu"]
    impls = {
        "rww": ([sys.executable, *run_one, "auto-1t", "--serve"], {}),
        "rww-dense": ([sys.executable, *run_one, "auto-1t", "--serve"],
                      {"RWW_SYMMETRIC_COUPLING": "off"}),
        "rww-split": ([sys.executable, *run_one, "auto", "--serve"],
                      {"RWW_NODE_SPLIT": "auto", "RWW_NUM_THREADS": "2"}),
    }
    vbjax = os.environ.get("RWW_PEER_PYTHON_VBJAX") or os.path.join(
        REPO, ".venv-peers", "vbjax", "bin", "python")
    if os.path.exists(vbjax):
        impls["vbjax-euler"] = ([vbjax, *run_one, "vbjax-euler", "--serve"], {})
    else:
        print(f"vbjax-euler skipped: no Python at {vbjax} (create .venv-peers/vbjax as "
              "bench/README.md says, or set RWW_PEER_PYTHON_VBJAX)", file=sys.stderr)
    return impls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "cpu-w7.json"))
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    impls = implementations()
    procs, heads = {}, {}
    try:
        for name, (cmd, env) in impls.items():
            p = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, **env), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 bufsize=1)
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"{name}: {' '.join(cmd)} exited before it was ready "
                                   "(run it by hand to see its error)")
            heads[name] = json.loads(line)
            procs[name] = p
            print(f"{name}: ready (warm-up {heads[name].get('warmup_s', float('nan')):.1f} s)",
                  flush=True)
        runs = {name: [] for name in impls}
        for r in range(args.rounds):
            order = list(impls) if r % 2 == 0 else list(impls)[::-1]
            for name in order:
                before, load = _procs_running(), os.getloadavg()[0]
                procs[name].stdin.write("run\n")
                msg = json.loads(procs[name].stdout.readline())
                if msg.get("event") != "done":
                    raise RuntimeError(f"{name}: {msg}")
                runs[name].append({"round": r, "wall_s": msg["wall_s"], "cpu_s": msg["cpu_s"],
                                   "procs_running_before": before, "loadavg_1min_before": load})
                print(f"round {r} {name:12s} {msg['wall_s']:.3f} s (procs running {before})",
                      flush=True)
    finally:
        for p in procs.values():
            try:
                p.stdin.write("quit\n")
                p.stdin.flush()
                p.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()

    workload = heads["rww"]["workload"]
    steps = workload["n_steps"]
    summary = {}
    for name in impls:
        walls = np.array([x["wall_s"] for x in runs[name]])
        summary[name] = {"median_us_per_step": float(np.median(walls)) / steps * 1e6,
                         "min_us_per_step": float(walls.min()) / steps * 1e6,
                         "median_cpu_s": float(np.median([x["cpu_s"] for x in runs[name]]))}
    if "vbjax-euler" in summary:
        ref = summary["vbjax-euler"]["median_us_per_step"]
        for name in impls:
            summary[name]["vbjax_euler_over_this"] = ref / summary[name]["median_us_per_step"]
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True,  # noqa: E731
                                    text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    doc = {"what": f"W7/cpu ({workload['label']}), timed interleaved: bench/w7.py",
           "machine": {"cpu": cpu, "cores": os.cpu_count(), "loadavg_end": os.getloadavg()},
           "platform": platform.platform(), "git_rev": git("rev-parse", "HEAD").strip(),
           "git_dirty_files": git("status", "--short").splitlines(),
           "steps": steps, "rounds": args.rounds,
           "implementations": {n: {"command": impls[n][0][1:], "env": impls[n][1]} for n in impls},
           "heads": heads, "runs": runs, "summary": summary}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps(summary, indent=1))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
