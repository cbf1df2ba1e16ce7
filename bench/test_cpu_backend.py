"""Benchmarks of the numba CPU backend (issue 4's ratios), measured in one run on one machine.

Run from the repository root (about 3 minutes on an idle 2-core machine; compilation is excluded:
the kernels are warmed up first, from numba's on-disk cache when present)::

    python -m pytest bench/test_cpu_backend.py --benchmark-only -s -q

Measured (wall time, minimum over rounds, because the machine may be shared; float32, deco2014 at
its defaults with G = 0.5, dt = 0.1 ms so 10,000 steps per simulated second, TR = 0.5 s):

- forward wall seconds per simulated second at N = 68 and 100, B = 1 and 64, against the
  reference loop (``reference_scan``, plain PyTorch, ``backend="torch"``) timed on a short run
  (300 steps for B = 1, 100 for B = 64) and scaled per simulated second (its cost per step does
  not depend on the length);
- forward + backward (gradient of BOLD with respect to the parameter table, the coupling and the
  initial state; and without the coupling, as when fitting parameters only) against forward
  alone, on the same workload: 60 s at N = 68, B = 1 (the target's
  workload) and 0.5 s at N = 68, B = 64;
- peak memory (peak RSS of a fresh subprocess, measured from after warm-up and inputs) of the
  gradient of a 60 s simulation at N = 68, B = 1 with the checkpointed numba backend, against
  autograd through the reference loop, which stores every step: measured at 0.25 s and 0.5 s
  (2,500 and 5,000 steps) and extrapolated linearly to 60 s (running it would need tens of GB).

Nothing here asserts a target (a loaded machine must not fail the suite); the targets of issue 4
are listed next to the numbers. Results: ``bench/results/cpu-backend.json`` (rows, machine,
versions, load average before and after) and a table printed at the end of the session.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from rww.model import initial_state
from rww.ops.reference import reference_scan
from rww.ops.scan import default_checkpoint_every, rww_scan
from rww.ops.spec import ScanSpec
from rww.params import get_preset, pack_parameters, resolve_haemo

numba_backend = pytest.importorskip("rww.ops.numba.backend")

DT = 0.1                       # ms
STEPS_PER_S = int(round(1000 / DT))
TR_STEPS = 5000                # TR = 0.5 s
SUMMARY: list[dict] = []


def problem(n_nodes: int, batch: int, seconds: float, dtype=torch.float32, seed: int = 0):
    """deco2014 at its defaults with G = 0.5 on a random symmetric SC normalised to mean row sum
    1; ``seconds`` of simulated time (a whole number of 0.5 s TRs)."""
    preset = get_preset("deco2014")
    rng = np.random.default_rng(seed)
    sc = rng.random((n_nodes, n_nodes))
    sc = (sc + sc.T) / 2
    np.fill_diagonal(sc, 0)
    coupling = torch.tensor(sc / sc.sum(1).mean(), dtype=dtype)
    table = pack_parameters({"G": 0.5}, preset, batch, n_nodes, dtype)
    n_steps = int(round(seconds * STEPS_PER_S))
    assert n_steps % TR_STEPS == 0 or n_steps < TR_STEPS
    spt = TR_STEPS if n_steps >= TR_STEPS else n_steps
    spec = ScanSpec(preset, DT, spt, n_steps, seed=seed, haemo=resolve_haemo(preset, None))
    return table, coupling, initial_state(batch, n_nodes, dtype), spec


def best_of(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def numba_forward(table, coupling, state, spec):
    with torch.no_grad():
        return rww_scan(table, coupling, state, spec, backend="numba")


def numba_forward_backward(table, coupling, state, spec, coupling_grad=True):
    """Gradient of BOLD with respect to the parameter table, the initial state and (unless
    ``coupling_grad`` is False, the usual case when fitting parameters only) the coupling."""
    table, state = (t.detach().requires_grad_(True) for t in (table, state))
    coupling = coupling.detach().requires_grad_(coupling_grad)
    out = rww_scan(table, coupling, state, spec, backend="numba")
    torch.autograd.grad(out.bold.sum(), [table, coupling, state] if coupling_grad else [table, state])


@pytest.fixture(scope="module", autouse=True)
def _warm():
    seconds = numba_backend.warmup()
    yield
    print_summary(seconds)


def record(benchmark, **values):
    benchmark.extra_info.update(values)
    SUMMARY.append(values)


@pytest.mark.parametrize("n_nodes, batch", [(68, 1), (100, 1), (68, 64), (100, 64)])
def test_forward_vs_reference(benchmark, n_nodes, batch):
    sim_s = 2.0 if batch == 1 else 0.5
    table, coupling, state, spec = problem(n_nodes, batch, sim_s)
    benchmark.pedantic(numba_forward, args=(table, coupling, state, spec), rounds=3,
                       warmup_rounds=1, iterations=1)
    ours = benchmark.stats.stats.min / sim_s
    ref_steps = 300 if batch == 1 else 100
    r_table, r_coupling, r_state, r_spec = problem(n_nodes, batch, ref_steps / STEPS_PER_S)
    with torch.no_grad():
        ref = best_of(lambda: reference_scan(r_table, r_coupling, r_state, r_spec), 3)
    ref_per_s = ref / (ref_steps / STEPS_PER_S)
    record(benchmark, kind="forward", n_nodes=n_nodes, batch=batch, simulated_s=sim_s,
           numba_s_per_sim_s=ours, us_per_step_per_sim=ours / STEPS_PER_S / batch * 1e6,
           reference_s_per_sim_s=ref_per_s, reference_steps_timed=ref_steps,
           speedup=ref_per_s / ours, threads=numba_backend.num_threads())


@pytest.mark.parametrize("n_nodes, batch", [(68, 1), (68, 64)])
def test_forward_backward_vs_forward(benchmark, n_nodes, batch):
    sim_s = 60.0 if batch == 1 else 0.5
    table, coupling, state, spec = problem(n_nodes, batch, sim_s)
    benchmark.pedantic(numba_forward_backward, args=(table, coupling, state, spec), rounds=3,
                       warmup_rounds=0, iterations=1)
    both = benchmark.stats.stats.min
    forward = best_of(lambda: numba_forward(table, coupling, state, spec), 3)
    both = min(both, best_of(lambda: numba_forward_backward(table, coupling, state, spec), 1))
    no_gc = best_of(lambda: numba_forward_backward(table, coupling, state, spec, False), 2)
    record(benchmark, kind="forward+backward", n_nodes=n_nodes, batch=batch, simulated_s=sim_s,
           forward_s=forward, forward_backward_s=both, ratio=both / forward,
           forward_backward_without_coupling_grad_s=no_gc, ratio_without_coupling_grad=no_gc / forward,
           checkpoint_every=default_checkpoint_every(spec.n_steps),
           threads=numba_backend.num_threads())


# A fresh interpreter computes one gradient and reports its peak RSS. The peak is reset after
# imports, inputs and kernel loading (Linux: writing 5 to /proc/self/clear_refs resets VmHWM), so
# the increment is what the gradient itself needs.
_MEMORY_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, {bench!r})
from test_cpu_backend import problem
from rww.ops.numba.backend import warmup
from rww.ops.reference import reference_scan
from rww.ops.scan import rww_scan
backend, n_nodes, seconds = {backend!r}, {n_nodes}, {seconds}
warmup()
table, coupling, state, spec = problem(n_nodes, 1, seconds)
leaves = [t.detach().requires_grad_(True) for t in (table, coupling, state)]

def rss(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])

base = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
if backend == "numba":
    out = rww_scan(*leaves, spec, backend="numba")
else:
    out = reference_scan(*leaves, spec)
torch.autograd.grad(out.bold.sum(), leaves)
print(json.dumps({{"base_kb": base, "peak_kb": rss("VmHWM:")}}))
"""


def peak_memory(backend: str, n_nodes: int, seconds: float) -> dict:
    code = _MEMORY_SCRIPT.format(bench=os.path.dirname(os.path.abspath(__file__)),
                                 backend=backend, n_nodes=n_nodes, seconds=seconds)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    values = json.loads(out.stdout.strip().splitlines()[-1])
    values["increment_mb"] = (values["peak_kb"] - values["base_kb"]) / 1024
    return values


def test_gradient_memory_60s(benchmark):
    n_nodes, seconds = 68, 60.0
    ours = benchmark.pedantic(peak_memory, args=("numba", n_nodes, seconds), rounds=1,
                              iterations=1)
    short = [0.25, 0.5]                    # 2,500 and 5,000 steps through the reference loop
    ref = [peak_memory("torch", n_nodes, s)["increment_mb"] for s in short]
    slope = (ref[1] - ref[0]) / (short[1] - short[0])
    ref_60 = ref[1] + slope * (seconds - short[1])
    record(benchmark, kind="memory", n_nodes=n_nodes, simulated_s=seconds,
           numba_increment_mb=ours["increment_mb"], numba_peak_rss_mb=ours["peak_kb"] / 1024,
           reference_increment_mb_measured={str(s): m for s, m in zip(short, ref)},
           reference_mb_per_sim_s=slope, reference_increment_mb_extrapolated=ref_60,
           ratio=ref_60 / ours["increment_mb"])


TARGETS = {"forward_s_per_sim_s_N68_B1": 0.02, "forward_speedup_N68_B1": 25.0,
           "forward_backward_over_forward": 4.0, "gradient_60s_N68_mb": 100.0}


def _load() -> list:
    return [round(x, 2) for x in os.getloadavg()]


LOAD_BEFORE = _load()


def summarise(warmup_s: float) -> dict:
    """The session's rows, the targets and whether each is met, machine and versions."""
    import numba
    rows = {(r["kind"], r.get("n_nodes"), r.get("batch")): r for r in SUMMARY}
    checks = {}
    fwd = rows.get(("forward", 68, 1))
    if fwd:
        checks["forward_s_per_sim_s_N68_B1"] = (fwd["numba_s_per_sim_s"], "<=")
        checks["forward_speedup_N68_B1"] = (fwd["speedup"], ">=")
    both = rows.get(("forward+backward", 68, 1))
    if both:
        checks["forward_backward_over_forward"] = (both["ratio"], "<=")
    mem = rows.get(("memory", 68, None))
    if mem:
        checks["gradient_60s_N68_mb"] = (mem["numba_increment_mb"], "<=")
    targets = {name: {"value": value, "target": f"{op} {TARGETS[name]}",
                      "met": value <= TARGETS[name] if op == "<=" else value >= TARGETS[name]}
               for name, (value, op) in checks.items()}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(os.path.abspath(__file__))
                                ).stdout.strip()
    except OSError:
        commit = ""
    return {"suite": "bench/test_cpu_backend.py", "rows": SUMMARY, "targets": targets,
            "machine": {"processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "threads": numba_backend.num_threads(),
                        "load_average_before": LOAD_BEFORE, "load_average_after": _load()},
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numba": numba.__version__, "numpy": np.__version__},
            "git": commit, "kernel_load_or_compile_s": warmup_s,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def print_summary(warmup_s: float):
    if not SUMMARY:
        return
    result = summarise(warmup_s)
    path = os.environ.get("RWW_CPU_BENCH_JSON") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "cpu-backend.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
    m, v = result["machine"], result["versions"]
    print(f"\n\n{m['processor']}, {m['cpus']} cpus, {m['threads']} threads, load average "
          f"{m['load_average_before']} -> {m['load_average_after']}; torch {v['torch']}, numba "
          f"{v['numba']}; kernels loaded/compiled in {warmup_s:.1f} s; written to {path}")
    print(f"{'measure':44s} {'numba':>12s} {'reference':>12s} {'ratio':>9s}")
    for r in SUMMARY:
        if r["kind"] == "forward":
            print(f"{'forward s/sim-s N=%d B=%d' % (r['n_nodes'], r['batch']):44s} "
                  f"{r['numba_s_per_sim_s']:12.4f} {r['reference_s_per_sim_s']:12.3f} "
                  f"{r['speedup']:8.1f}x")
        elif r["kind"] == "forward+backward":
            label = "fwd+bwd / fwd, %g s N=%d B=%d (s)" % (r["simulated_s"], r["n_nodes"], r["batch"])
            print(f"{label:44s} {r['forward_backward_s']:12.3f} {r['forward_s']:12.3f} "
                  f"{r['ratio']:8.2f}x")
            print(f"{'  same, no coupling gradient':44s} "
                  f"{r['forward_backward_without_coupling_grad_s']:12.3f} {r['forward_s']:12.3f} "
                  f"{r['ratio_without_coupling_grad']:8.2f}x")
        elif r["kind"] == "memory":
            print(f"{'gradient 60 s N=68 peak RSS increment (MB)':44s} "
                  f"{r['numba_increment_mb']:12.1f} {r['reference_increment_mb_extrapolated']:12.0f} "
                  f"{r['ratio']:8.0f}x")
    for name, t in result["targets"].items():
        print(f"target {name}: {t['value']:.4g} (target {t['target']}): "
              f"{'met' if t['met'] else 'MISSED'}")
