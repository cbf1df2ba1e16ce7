#!/usr/bin/env python
"""One command for a CUDA machine: the Triton kernels' tests on the GPU, then timings.

Usage (from the repository root, with the project's venv active)::

    python bench/gpu.py                  # tests, then every GPU workload (under 10 minutes)
    python bench/gpu.py --skip-tests     # timings only
    python bench/gpu.py --only W5 W7     # some workloads
    python bench/gpu.py --deadline 420 --keep-going --out $OUT/gpu.json --log-dir $OUT
                                         # one lease: stop starting workloads after 420 s, time
                                         # even after a test failure (rows marked), keep logs

Steps:

1. ``pytest tests/test_triton_backend.py`` with the kernels compiled for the GPU (the test module
   puts the backend's tensors on CUDA when it is available; the float64 reference still runs on
   the CPU). A failure stops here (exit 1): timings of wrong kernels are worthless.
2. For each GPU workload of ``bench/workloads.py`` (W5: one simulation, N=100, 60 s; W4: B=32768,
   N=100, 60 s, throughput, timed with C streamed per simulation and with ``tl.dot`` tiles;
   W6: the full-length gradient of one HCP scan, 1200 TRs of 0.72 s at N=94 and dt=0.1 ms; W7:
   N=1000, 60 s): compile and warm up on one TR, calibrate on a short run, then time forward
   (``torch.no_grad``, a single checkpoint), forward with a graph and backward (loss ``mean(BOLD**2)``, learnable G
   and per-region w_IE, K = ceil(sqrt(steps))), each bracketed by ``torch.cuda.synchronize``,
   and the peak ``torch.cuda.max_memory_allocated`` of each phase (reset before it; the inputs,
   allocated before the reset, are reported separately). A workload whose calibrated estimate
   exceeds its time budget runs at a shorter length and its rates are reported per simulated
   second with the length actually run (``simulated_s``, ``extrapolated: true``).
3. Prints a table and writes ``bench/results/gpu-<device>.json`` (device, versions, git commit,
   workloads, every measurement).

On a machine without CUDA it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

# Seconds of measured work allowed per workload (the whole script must stay under 10 minutes,
# tests and compilation included).
BUDGET_S = {"W5": 20.0, "W4": 40.0, "W6": 120.0, "W7": 30.0}


def _cuda_or_exit():
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device is available (torch.cuda.is_available() is False). "
              "This script times the Triton kernels on a GPU; on a CPU-only machine run the CPU "
              "suite (bench/README.md) and the kernel tests under the interpreter "
              "(pytest tests/test_triton_backend.py).", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("bench/gpu.py: unset TRITON_INTERPRET (the kernels must be compiled for the GPU)",
              file=sys.stderr)
        sys.exit(2)
    return torch


def run_tests(timeout_s: float = 300.0, log_path: str | None = None) -> tuple[bool, float, str]:
    """The kernel-vs-reference tests on the GPU; returns ``(passed, seconds, summary line)``.
    ``log_path``: where to write pytest's whole output (with the slowest tests' durations)."""
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "--durations=8",
                               "-p", "no:cacheprovider", "tests/test_triton_backend.py"],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        out = ((err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or ""))
        out += f"\npytest did not finish within {timeout_s:.0f} s"
        code = -1
    if log_path:
        with open(log_path, "w") as fh:
            fh.write(out)
    summary = next((line for line in reversed(out.splitlines()) if line.strip()), "")
    if code != 0:
        print(out[-6000:])
    return code == 0, time.perf_counter() - start, summary


def _device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _git_commit() -> str:
    """The checkout's commit; ``RWW_COMMIT`` when the tree was copied without ``.git``."""
    if os.environ.get("RWW_COMMIT"):
        return os.environ["RWW_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Problem:
    """Inputs of one workload on the GPU at a given length (``n_trs``)."""

    def __init__(self, w, n_trs: int, device, learn: bool):
        import torch

        import workloads
        from rww.model import initial_state
        from rww.ops.spec import ScanSpec, steps_per_tr_from
        from rww.params import get_preset, pack_parameters, resolve_haemo

        preset = get_preset(w.preset)
        self.w, self.n_trs = w, n_trs
        spt = steps_per_tr_from(w.tr, w.dt, preset.balloon_dt_scale)
        self.spec = ScanSpec(preset, w.dt, spt, n_trs * spt, seed=1234,
                             haemo=resolve_haemo(preset, None))
        self.steps = self.spec.n_steps
        self.simulated_s = n_trs * w.tr
        values = dict(workloads.DECO_PARAMS) if w.preset == "deco2014" else {}
        self.G = torch.tensor(float(values.pop("G", 1.0)), device=device, requires_grad=learn)
        w_ie = float(values.pop("w_IE", preset.defaults["w_IE"]))
        self.w_IE = torch.full((w.n_nodes,), w_ie, device=device, requires_grad=learn)
        self.fixed = values
        self.coupling = torch.tensor(workloads.connectome(w.n_nodes), dtype=torch.float32,
                                     device=device)
        self.state = initial_state(w.batch, w.n_nodes, torch.float32, device)
        self._pack = lambda: pack_parameters({**self.fixed, "G": self.G, "w_IE": self.w_IE},
                                             preset, w.batch, w.n_nodes, torch.float32, device)

    def scan(self, backend, forward_only: bool = False):
        """Outputs of the checkpointed scan. ``forward_only``: one checkpoint (the initial
        state), since no backward follows; the default K = ceil(sqrt(T)) would store T/K full
        states even under no_grad (61 GB for W4: 775 checkpoints of 32768 x 100 x 6 floats)."""
        from rww.ops.scan import RWWScanFunction, default_checkpoint_every

        k = max(self.steps, 1) if forward_only else default_checkpoint_every(self.steps)
        return RWWScanFunction.run(self._pack(), self.coupling, self.state, self.spec, backend,
                                     k)


def _timed(torch, fn):
    """``(seconds, peak bytes above the allocation at entry, result)``; synchronised."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, torch.cuda.max_memory_allocated() - base, result


def measure(torch, w, backend, gradient: bool, budget_s: float, label: str,
            device="cuda") -> dict:
    """Warm up, calibrate, then time one workload (see the module docstring)."""
    device = torch.device(device)
    # Warm-up: compiles the kernels of this configuration (forward, recomputation, adjoint).
    warm = Problem(w, 1, device, gradient)
    with torch.no_grad():
        warm.scan(backend, forward_only=True)
    if gradient:
        torch.autograd.grad(warm.scan(backend)[0].pow(2).mean(), [warm.G, warm.w_IE])
    torch.cuda.synchronize()
    # Calibration: about 1% of the full length (at least one TR), forward only.
    full_trs = w.n_trs
    cal_trs = max(1, min(full_trs, math.ceil(full_trs / 100)))
    cal = Problem(w, cal_trs, device, False)
    with torch.no_grad():
        t_cal, _, _ = _timed(torch, lambda: cal.scan(backend, forward_only=True))
    per_tr = t_cal / cal_trs * (4.0 if gradient else 1.0)   # backward ~3x the forward
    n_trs = full_trs if per_tr * full_trs <= budget_s else max(cal_trs, int(budget_s / per_tr))
    p = Problem(w, n_trs, device, gradient)
    row = {"workload": w.key, "label": label, "description": w.label, "n_trs": n_trs,
           "steps": p.steps, "simulated_s": p.simulated_s, "extrapolated": n_trs != full_trs,
           "full_simulated_s": full_trs * w.tr, "batch": w.batch, "n_nodes": w.n_nodes,
           "inputs_bytes": torch.cuda.memory_allocated()}
    with torch.no_grad():
        t_fwd, m_fwd, outs = _timed(torch, lambda: p.scan(backend, forward_only=True))
    bold = outs[0]
    if not bool(torch.isfinite(bold).all()):
        raise RuntimeError(f"{w.key}: non-finite BOLD")
    row.update(forward_s=t_fwd, forward_peak_bytes=m_fwd)
    if gradient:
        # One peak over forward (with the graph: checkpoints saved) and backward together.
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        outs = p.scan(backend)
        loss = outs[0].pow(2).mean()
        torch.cuda.synchronize()
        mid = time.perf_counter()
        saved = torch.cuda.memory_allocated() - base
        grads = torch.autograd.grad(loss, [p.G, p.w_IE])
        torch.cuda.synchronize()
        end = time.perf_counter()
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            raise RuntimeError(f"{w.key}: non-finite gradient")
        row.update(forward_graph_s=mid - start, backward_s=end - mid,
                   backward_over_forward=(end - mid) / (mid - start),
                   after_forward_bytes=saved,
                   gradient_peak_bytes=torch.cuda.max_memory_allocated() - base)
        del loss, outs, grads
    sim_steps = w.batch * p.steps
    row.update(us_per_step=1e6 * t_fwd / p.steps, sim_steps_per_s=sim_steps / t_fwd,
               simulated_s_per_wall_s=w.batch * p.simulated_s / t_fwd,
               sims_per_s_full_length=w.batch / (t_fwd * full_trs / n_trs),
               full_length_forward_s=t_fwd * full_trs / n_trs)
    if gradient:
        row["full_length_gradient_s"] = (row["forward_graph_s"] + row["backward_s"]) * \
            full_trs / n_trs
    torch.cuda.empty_cache()
    return row


def _mb(x):
    return f"{x / 2**20:9.1f}"


def print_table(rows):
    head = (f"{'workload':9} {'config':14} {'sim s':>8} {'fwd s':>8} {'us/step':>8} "
            f"{'sims/s(full)':>12} {'bwd s':>8} {'bwd/fwd':>7} {'peak MB':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r or "skipped" in r:
            what = "ERROR " + r["error"] if "error" in r else "skipped: " + r["skipped"]
            print(f"{r['workload']:9} {r['label']:14} {what}")
            continue
        peak = r.get("gradient_peak_bytes", r["forward_peak_bytes"])
        bwd = f"{r['backward_s']:8.3f}" if "backward_s" in r else f"{'-':>8}"
        ratio = f"{r['backward_over_forward']:7.2f}" if "backward_s" in r else f"{'-':>7}"
        sim = f"{r['simulated_s']:g}" + ("*" if r["extrapolated"] else "")
        print(f"{r['workload']:9} {r['label']:14} {sim:>8} {r['forward_s']:8.3f} "
              f"{r['us_per_step']:8.3f} {r['sims_per_s_full_length']:12.1f} {bwd} {ratio} "
              f"{_mb(peak)}")
    print("* shorter than the full workload (time budget): rates per simulated second, "
          "full-length times extrapolated linearly")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--only", nargs="+", help="workload names (W4 W5 W6 W7)")
    parser.add_argument("--out", help="JSON path (default bench/results/gpu-<device>.json)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after start past which no further workload is started "
                             "(the rest are recorded as skipped)")
    parser.add_argument("--keep-going", action="store_true",
                        help="time the workloads even if the kernel tests fail (the result "
                             "records the failure)")
    parser.add_argument("--log-dir", help="folder for pytest's full output (tests.log)")
    args = parser.parse_args(argv)
    torch = _cuda_or_exit()
    import triton

    import workloads
    from rww.ops.triton.backend import TritonBackend

    device_name = torch.cuda.get_device_name()
    t_start = time.perf_counter()
    tests = None
    if not args.skip_tests:
        print(f"[{device_name}] tests/test_triton_backend.py on the GPU ...", flush=True)
        log = os.path.join(args.log_dir, "tests.log") if args.log_dir else None
        ok, secs, summary = run_tests(log_path=log)
        tests = {"passed": ok, "seconds": round(secs, 1), "summary": summary}
        print(f"  {summary} ({secs:.0f} s)", flush=True)
        if not ok and not args.keep_going:
            print("bench/gpu.py: kernel tests failed on the GPU; not timing", file=sys.stderr)
            return 1
    # W6 (the full-scan gradient, the library's reason to exist) right after the one-simulation
    # forward, so that a deadline cuts the throughput variants first.
    plan = [("W5", "streamed/res", {}, False), ("W6", "default", {}, True),
            ("W4", "streamed", {}, False), ("W4", "tl.dot", {"use_dot": True}, False),
            ("W7", "streamed", {}, False)]
    out = args.out or os.path.join(BENCH, "results", f"gpu-{_device_slug(device_name)}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    rows = []

    def write_result():
        # Rewritten after every workload, so that a run cut short keeps what it measured.
        result = {
            "device": device_name, "capability": list(torch.cuda.get_device_capability()),
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "commit": _git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tests": tests,
            "total_s": round(time.perf_counter() - t_start, 1),
            "workloads": {r["workload"]: workloads.parse_key(r["workload"]).as_dict()
                          for r in rows},
            "rows": rows,
        }
        with open(out, "w") as fh:
            json.dump(result, fh, indent=1)
        return result

    for name, label, config, gradient in plan:
        if args.only and name not in args.only:
            continue
        w = workloads.get(name)
        elapsed = time.perf_counter() - t_start
        if args.deadline is not None and elapsed > args.deadline:
            rows.append({"workload": w.key, "label": label,
                         "skipped": f"deadline {args.deadline:.0f} s passed ({elapsed:.0f} s)"})
            print(json.dumps(rows[-1]), flush=True)
            write_result()
            continue
        print(f"{w.key} [{label}] {w.label} ...", flush=True)
        try:
            rows.append(measure(torch, w, TritonBackend(**config), gradient, BUDGET_S[name],
                                label))
        except Exception as err:  # a failed variant is reported, the others still run
            rows.append({"workload": w.key, "label": label, "error": repr(err)[:500]})
        print(json.dumps(rows[-1]), flush=True)
        write_result()
    print()
    print_table(rows)
    result = write_result()
    print(f"\nwrote {out} ({result['total_s']:.0f} s in all)")
    ok = all("error" not in r and "skipped" not in r for r in rows)
    return 0 if ok and (tests is None or tests["passed"]) else 1


if __name__ == "__main__":
    sys.exit(main())
