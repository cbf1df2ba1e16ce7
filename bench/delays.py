#!/usr/bin/env python
"""Conduction delays: rww with and without delays against cuBNM's and TVB's delayed runs, timed in
one session with the repeats interleaved.

Usage (from the repository root, in rww's virtualenv; 9-10 minutes on 2 shared cores)::

    python bench/delays.py --out bench/results/cpu-delays.json && python bench/report.py
    python bench/delays.py --variant ref --rounds 2 --out /tmp/d.json     # a quick check
    python bench/delays.py --impl torch-checkpoint --variant ref ...       # rww without numba

Workloads (``bench/workloads.py``, ``DELAYED``): ``W9`` (one simulation of the demo connectome,
HCP Schaefer-100, N = 100, normalised to a mean row sum of 1, deco2014 at G = 0.5, dt 0.1 ms,
TR 1 s, forward, no delays: the ratio's base), ``W9v5`` and ``W9v10`` (the same with delays from
the demo's tract lengths at 5 and 10 m/s), at the ``cpu`` variant (10 s simulated) by default.

Rows: rww (``--impl``, default ``auto``, the numba backend) and every peer of ``--peers``
(default cuBNM and TVB, each in its own virtualenv, ``.venv-peers/<name>``) on each of the three
workloads. Every worker (``run_one.py --serve``) loads the same connectome and tract-length bytes
(``.npy`` files written once here; SHA-1 recorded and checked), builds and warms up (ours on one
TR, the peers on a whole run), then runs once untimed where the warm-up was not a whole run. All
workers stay up; the timed runs then go round by round, each round running every row once (rows
under a second run several times in a round, ``--min-round-s``) in an order rotated from round
to round, so that a slow spell of the shared machine falls on every row alike. Reported: the
minimum wall time over the runs (and the process CPU time of the least costly run), per
simulated second and per step, with the 1-minute load average at each run.

Output: one JSON file (``"kind": "delays"``) that ``bench/report.py`` renders into README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import report  # noqa: E402
import workloads as wl  # noqa: E402

RUN_ONE = os.path.join(BENCH, "run_one.py")
PEER_ENVS = {"cubnm": ("cubnm", "cubnm"), "tvb": ("tvb", "tvb.simulator")}
START_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 1800


class WorkerError(RuntimeError):
    pass


class Worker:
    """A ``run_one.py --serve`` subprocess (see ``test_workloads.Worker``), with the delayed
    workloads' ``--sc`` and ``--lengths`` files."""

    def __init__(self, python, key, impl, sc_path, lengths_path):
        self.key, self.impl = key, impl
        self.log = tempfile.TemporaryFile(mode="w+")
        args = [python, RUN_ONE, key, impl, "--serve", "--sc", sc_path]
        if wl.parse_key(key).velocity is not None:
            args += ["--lengths", lengths_path]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, cwd=ROOT, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready = self._get(START_TIMEOUT_S)
        self.walls, self.cpus, self.loads = [], [], []

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _log_tail(self, n=3000):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-n:]

    def _get(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"{self.key} {self.impl}: no answer in {timeout} s; log:\n"
                              f"{self._log_tail()}") from None
        if line is None:
            self.proc.wait(timeout=10)
            raise WorkerError(f"{self.key} {self.impl}: worker exited ({self.proc.returncode}); "
                              f"log:\n{self._log_tail()}")
        msg = json.loads(line)
        if msg.get("event") == "error":
            raise WorkerError(f"{self.key} {self.impl}: {msg['error']}\nlog:\n{self._log_tail()}")
        return msg

    def call(self, command, timeout=RUN_TIMEOUT_S):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._get(timeout)

    def run(self):
        load = os.getloadavg()[0]
        done = self.call("run")
        self.walls.append(done["wall_s"])
        self.cpus.append(done.get("cpu_s"))
        self.loads.append(load)
        return done["wall_s"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()            # our own child, by its Popen handle
                self.proc.wait()
        self.log.close()


def peer_python(name):
    env_dir, _ = PEER_ENVS[name]
    return (os.environ.get("RWW_PEER_PYTHON_" + env_dir.upper())
            or os.path.join(ROOT, ".venv-peers", env_dir, "bin", "python"))


def peer_available(name):
    python = peer_python(name)
    if not os.path.exists(python):
        return False, f"no virtualenv at {python} (see bench/README.md)"
    done = subprocess.run([python, "-c", f"import {PEER_ENVS[name][1]}"], capture_output=True,
                          text=True, timeout=300)
    if done.returncode:
        return False, f"`import {PEER_ENVS[name][1]}` failed: " \
                      f"{(done.stderr.strip().splitlines() or [''])[-1]}"
    return True, ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="cpu", choices=("cpu", "ref", "full"))
    parser.add_argument("--impl", default="auto", help="rww's backend (default auto: numba)")
    parser.add_argument("--peers", nargs="*", default=["cubnm", "tvb"], choices=sorted(PEER_ENVS))
    parser.add_argument("--workloads", nargs="*", default=list(wl.DELAYED),
                        choices=list(wl.DELAYED))
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (default 4)")
    parser.add_argument("--min-round-s", type=float, default=1.0,
                        help="a row whose run is shorter runs this long per round (default 1 s)")
    parser.add_argument("--out", default=None, help="JSON file (default: print a summary only)")
    args = parser.parse_args(argv)

    import numpy as np

    started = time.perf_counter()
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env_start = report.environment()     # other sessions may commit while this runs
    sc, lengths = wl.demo_connectome()
    tmp = tempfile.TemporaryDirectory(prefix="rww-bench-delays-")
    sc_path, lengths_path = os.path.join(tmp.name, "sc.npy"), os.path.join(tmp.name, "lengths.npy")
    np.save(sc_path, sc)
    np.save(lengths_path, lengths)
    sc_sha1, lengths_sha1 = wl.connectome_sha1(sc), wl.connectome_sha1(lengths)

    skipped = {}
    impls = [(args.impl, sys.executable)]
    for name in args.peers:
        ok, why = peer_available(name)
        if ok:
            impls.append((name, peer_python(name)))
        else:
            skipped[name] = why
            print(f"skipping {name}: {why}", flush=True)
    keys = [f"{name}/{args.variant}" for name in args.workloads]

    workers = []
    try:
        for key in keys:
            for impl, python in impls:
                tick = time.perf_counter()
                w = Worker(python, key, impl, sc_path, lengths_path)
                workers.append(w)
                if w.ready["meta"]["sc_sha1"] != sc_sha1:
                    raise WorkerError(f"{key} {impl}: connectome bytes differ")
                if w.ready.get("warmup_full"):
                    w.probe = w.ready["warmup_s"]
                else:
                    t = time.perf_counter()
                    w.call("run")
                    w.probe = time.perf_counter() - t
                w.per_round = max(1, math.ceil(args.min_round_s / max(w.probe, 1e-3)))
                print(f"ready {key:12s} {impl:18s} build+warm-up {time.perf_counter() - tick:6.1f} s,"
                      f" one run {w.probe:7.2f} s, {w.per_round} per round", flush=True)
        for r in range(args.rounds):
            shift = r % len(workers)
            order = workers[shift:] + workers[:shift]
            if r % 2:
                order = order[::-1]
            for w in order:
                for _ in range(w.per_round):
                    w.run()
            print(f"round {r + 1}/{args.rounds} done ({time.perf_counter() - started:.0f} s)",
                  flush=True)
        memory = {id(w): w.call("report") for w in workers}
    finally:
        for w in workers:
            w.close()

    rows = []
    for w in workers:
        work = wl.parse_key(w.key)
        best_wall = min(w.walls)
        cpus = [c for c in w.cpus if c is not None]
        rows.append({
            "key": w.key, "impl": w.impl, "workload": work.as_dict(), "meta": w.ready["meta"],
            "build_s": w.ready["build_s"], "warmup_s": w.ready["warmup_s"], "probe_s": w.probe,
            "runs_per_round": w.per_round, "wall_s": w.walls, "cpu_s": w.cpus, "loadavg": w.loads,
            "wall_min": best_wall, "wall_median": float(np.median(w.walls)),
            "cpu_min": min(cpus) if cpus else None,
            "us_per_step": best_wall / (work.n_steps * work.batch) * 1e6,
            "cpu_us_per_step": min(cpus) / (work.n_steps * work.batch) * 1e6 if cpus else None,
            "memory": {k: v for k, v in memory[id(w)].items() if k != "event"},
        })
    data = {
        "kind": "delays", "datetime": stamp,
        "command": "python bench/delays.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "total_s": time.perf_counter() - started,
        "environment": report.environment(), "environment_start": env_start,
        "connectome": {"source": "rww.data.load_demo(include_bold=False): HCP Schaefer-100 (cuBNM "
                                 "example data), sc / mean row sum",
                       "n_nodes": int(sc.shape[0]), "mean_row_sum_raw": None,
                       "sc_sha1": sc_sha1, "lengths_sha1": lengths_sha1,
                       "max_length_mm": float(lengths.max())},
        "max_lag_steps": {name: {conv: wl.max_lag(lengths, w.velocity, w.dt, conv)
                                 for conv in ("rww", "cubnm")}
                          for name, w in wl.DELAYED.items() if w.velocity is not None},
        "rounds": args.rounds, "variant": args.variant, "impl": args.impl,
        "skipped": skipped, "rows": rows,
    }
    from rww.data import load_demo
    data["connectome"]["mean_row_sum_raw"] = float(
        np.asarray(load_demo(include_bold=False).sc).sum(axis=1).mean())
    for r in rows:
        print(f"{r['key']:12s} {r['impl']:18s} {r['us_per_step']:9.2f} µs/step (min of "
              f"{len(r['wall_s'])}), CPU {r['cpu_us_per_step'] or float('nan'):9.2f} µs/step, "
              f"D {r['meta'].get('delays', {}).get('max_lag_steps', 0)}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(data, fh, indent=1)
        print(f"wrote {args.out} ({data['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
