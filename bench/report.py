#!/usr/bin/env python
"""Turn the benchmark JSON under ``bench/results/`` into the tables of ``bench/README.md`` and the
scaling figure ``bench/scaling.png``.

Usage (from the repository root)::

    python bench/report.py                 # every bench/results/*.json -> README tables + figure
    python bench/report.py --check         # exit 1 if README.md is not what the JSON gives

Inputs: pytest-benchmark JSON files written by ``bench/test_workloads.py`` (``--benchmark-json
bench/results/<name>.json``; one file per machine and run) and the sweep written by
``bench/scaling.py`` (``bench/results/scaling-<device>.json``), and the interleaved conduction-delay
comparison written by ``bench/delays.py`` (``"kind": "delays"``, e.g.
``bench/results/cpu-delays.json``). Nothing is typed in by hand: every
number in the generated part of README.md is computed here from those files, and each table
names the file, machine, versions and git revision it came from.

Timings: the figure of merit is *wall seconds per simulated second* (``min`` over the timed rounds
of the run's wall time, divided by the simulated seconds per simulation), and *microseconds per
step* (wall time over the integration steps; for a batch, over the steps of all its simulations).
The minimum is used because the machine is shared: the minimum is the least disturbed
measurement; the median is in the JSON. Ratios compare two implementations on the same workload
variant measured in the same run (same JSON file).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import platform
import re
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
README = os.path.join(BENCH, "README.md")
FIGURE = os.path.join(BENCH, "scaling.png")
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)


# ---------------------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            match = re.search(r"MemTotal:\s+(\d+) kB", fh.read())
        return round(int(match.group(1)) / 2**20, 1)
    except (OSError, AttributeError):
        return None


def _git(*args) -> str | None:
    try:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment() -> dict:
    """Machine (CPU model, cores, RAM, GPU), versions and git revision, taken anew for every row
    (other sessions may commit while a suite runs: each row names the code it ran)."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "numba", "triton", "numpy", "rww", "pytest_benchmark"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception:
            versions[name] = None
    gpu = None
    try:
        import torch
        if torch.cuda.is_available():
            gpu = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    # Uncommitted or untracked library code means the revision alone does not name the code
    # that ran: record that, and a hash of the library sources as they were.
    status = _git("status", "--porcelain", "--untracked-files=all", "--", "rww")
    return {
        "machine": {"cpu": _cpu_model(), "logical_cpus": os.cpu_count(),
                    "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "ram_gib": _ram_gib(), "gpu": gpu, "system": platform.platform()},
        "versions": versions,
        "git": {"revision": _git("rev-parse", "HEAD"),
                "dirty": bool(status) if status is not None else None,
                "uncommitted": status.splitlines() if status else [],
                "source_sha1": _source_sha1()},
    }


def _source_sha1() -> str:
    """SHA-1 (12 hex digits) over the library's Python sources (rww/), path and bytes."""
    import hashlib

    h = hashlib.sha1()
    for top in ("rww",):
        for dirpath, dirnames, filenames in sorted(os.walk(os.path.join(ROOT, top))):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, ROOT).encode())
                    with open(path, "rb") as fh:
                        h.update(fh.read())
    return h.hexdigest()[:12]


def describe_environment(env: dict) -> str:
    m, v, g = env["machine"], env["versions"], env["git"]
    gpu = ", ".join(m["gpu"]) if m.get("gpu") else "no GPU"
    rev = (g.get("revision") or "unknown")[:10]
    if g.get("dirty"):
        rev += f" + {len(g.get('uncommitted', []))} uncommitted library files"
    if g.get("source_sha1"):
        rev += f" (library sources sha1 {g['source_sha1']})"
    vers = ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "numba", "triton", "rww") if v.get(k))
    return (f"{m['cpu']}, {m['usable_cpus']} cores, {m['ram_gib']} GiB RAM, {gpu}; {vers}; "
            f"git {rev}")


# ---------------------------------------------------------------------------- loading
def load_runs(paths=None) -> list[dict]:
    """pytest-benchmark files: ``[{"path", "datetime", "rows": [...]}]``, rows flattened."""
    runs = []
    for path in sorted(paths or glob.glob(os.path.join(RESULTS, "*.json"))):
        with open(path) as fh:
            data = json.load(fh)
        if "benchmarks" not in data:
            continue
        rows = []
        for b in data["benchmarks"]:
            x = b.get("extra_info", {})
            if "workload" not in x:
                continue
            w = x["workload"]
            wall = b["stats"]["min"]
            cpus = [c for c in x.get("worker_cpu_s") or [] if c is not None]
            rows.append({
                "key": w["key"], "name": w["name"], "variant": w["variant"], "device": x["device"],
                "impl": x["impl"], "meta": x["meta"], "workload": w, "memory": x["memory"],
                "wall_min": wall, "wall_median": b["stats"]["median"], "rounds": b["stats"]["rounds"],
                "per_sim_s": wall / w["seconds"],
                "cpu_per_sim_s": min(cpus) / w["seconds"] if cpus else None,
                "us_per_step": wall / (w["n_steps"] * w["batch"]) * 1e6,
                "load": x.get("loadavg_before", [None])[0], "environment": x.get("environment"),
            })
        if not rows:            # another suite's pytest-benchmark file (e.g. test_cpu_backend.py)
            continue
        runs.append({"path": os.path.relpath(path, ROOT), "datetime": data.get("datetime"),
                     "rows": rows})
    return runs


def impl_name(row: dict) -> str:
    meta = row["meta"]
    if meta.get("ours"):
        if row["impl"] == "torch":
            return "rww reference loop (`torch`)"
        threads = ", 1 thread" if row["impl"].endswith("-1t") else ""
        return f"**rww `{row['impl']}` -> {meta.get('backend')}{threads}**"
    return f"{meta.get('peer', row['impl'])} {_peer_version(meta)}"


def _peer_version(meta: dict) -> str:
    v = meta.get("versions", {})
    for k in ("cubnm", "neurolib", "vbjax", "tvb-library"):
        if v.get(k):
            return v[k]
    return ""


def load_gpu() -> tuple[list[dict], list[dict]]:
    """``bench/gpu.py`` results (``gpu-*.json`` with ``rows``) and ``bench/gpu_tune.py`` results
    (``gpu-tune-*.json``), each with its ``path``."""
    timings, tunings = [], []
    for path in sorted(glob.glob(os.path.join(RESULTS, "gpu-*.json"))):
        with open(path) as fh:
            data = json.load(fh)
        if "rows" not in data or "benchmarks" in data:
            continue
        data["path"] = os.path.relpath(path, ROOT)
        (tunings if os.path.basename(path).startswith("gpu-tune-") else timings).append(data)
    return timings, tunings


def _gpu_machine(data: dict) -> str:
    cap = data.get("capability")
    cap = f", compute capability {cap[0]}.{cap[1]}" if cap else ""
    cuda = f", CUDA {data['cuda']}" if data.get("cuda") else ""
    python = f", python {data['python']}" if data.get("python") else ""
    return (f"{data['device']}{cap}; torch {data['torch']}, triton {data['triton']}{cuda}{python}; "
            f"git {str(data.get('commit', '?'))[:10]}")


def gpu_section(data: dict) -> list[str]:
    """Tables of one ``bench/gpu.py`` result: every row, then the anchors."""
    import workloads as wl

    lines = [f"### GPU: `{data['path']}` ({data.get('date', '')})", "",
             f"Machine: {_gpu_machine(data)}.", ""]
    tests = data.get("tests")
    if tests:
        verdict = "passed" if tests["passed"] else "**failed**"
        lines += [f"Kernel tests on the GPU (`tests/test_triton_backend.py`, float64 reference on "
                  f"the CPU): {verdict}: {tests['summary']}.", ""]
    for run in data.get("runs", []):
        lines.append(f"- run {run['run']}: `{run['command']}` ({run['date']}, {run['total_s']:.0f} "
                     f"s): {run['note']}")
    for name, text in (data.get("other_checks") or {}).items():
        lines.append(f"- {text}")
    lines += ["", "| workload | configuration | run | simulated s (of full) | forward s | µs / step "
              "| simulation-steps / s | simulations / s (full length) | full-length forward s | "
              "gradient s (forward with graph + backward) | backward / forward | peak MB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [r for r in data["rows"] if "forward_s" in r]
    for r in rows:
        peak = r.get("gradient_peak_bytes", r.get("forward_peak_bytes", 0)) / 2**20
        grad = (f"{_fmt(r['forward_graph_s'])} + {_fmt(r['backward_s'])} (full length "
                f"{_fmt(r['full_length_gradient_s'])})" if "backward_s" in r else "–")
        ratio = _fmt(r.get("backward_over_forward"))
        lines.append(
            f"| {r['description']} | {r['label']} | {r.get('run', 1)} | {r['simulated_s']:g} "
            f"({r['full_simulated_s']:g}) | {_fmt(r['forward_s'])} | {_fmt(r['us_per_step'])} | "
            f"{r['sim_steps_per_s']:.3g} | {_fmt(r['sims_per_s_full_length'])} | "
            f"{_fmt(r['full_length_forward_s'])} | {grad} | {ratio} | {peak:.1f} |")
    for r in data["rows"]:
        if "forward_s" not in r:
            lines.append(f"| {r['workload']} | {r['label']} | {r.get('run', 1)} | "
                         f"{r.get('error') or r.get('skipped')} |||||||||")
    lines += ["", "A shorter simulated length than the full one: the run was cut to fit its time "
              "budget; full-length figures are scaled linearly (the cost per step is constant). "
              "Peak MB: `torch.cuda.max_memory_allocated` above the inputs, over the forward, "
              "or over forward and backward together for a gradient.", ""]
    w4 = [r for r in rows if r["workload"].startswith("W4")]
    single = [r for r in rows if r["workload"].startswith("W5")]
    notes = []
    if w4:
        best = max(w4, key=lambda r: r["sims_per_s_full_length"])
        notes.append(
            f"- W4 throughput: {best['sims_per_s_full_length']:.0f} simulations/s at full length "
            f"({best['label']}; {best['sim_steps_per_s'] * best['n_nodes']:.2g} node-steps/s), "
            f"{best['sims_per_s_full_length'] / wl.CUBNM_A100_W4_SIMS_PER_S:.2g}x cuBNM's "
            f"published ~{wl.CUBNM_A100_W4_SIMS_PER_S:.0f}/s on an A100 (an anchor from another "
            "GPU, not a same-session ratio).")
    if single:
        r = single[0]
        notes.append(
            f"- One simulation, N = 100 (W5): {r['us_per_step']:.2f} µs per step; cuBNM's "
            f"published single-simulation figure is {wl.CUBNM_A100_SINGLE_US_PER_STEP} µs per "
            "step on an A100 (anchor, other GPU).")
    if notes:
        lines += ["Against the anchors (`bench/workloads.py`):", ""] + notes + [""]
    return lines


def tune_section(data: dict) -> list[str]:
    """One ``bench/gpu_tune.py`` result: each configuration against the defaults it ran with,
    and which configuration ``rww.ops.triton.config.choose_config`` picks now."""
    import workloads as wl

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from dataclasses import asdict

    from rww.ops.triton.config import choose_config

    lines = [f"### GPU kernel configurations: `{data['path']}` ({data.get('date', '')})", "",
             f"Machine: {_gpu_machine(data)}. `default` = the defaults of that commit; `now "
             "default` marks the configuration `rww.ops.triton.config.choose_config` picks in this "
             "revision. Each time is the best of two runs after an untimed compile-and-warm-up "
             "run; BOLD diff is the largest difference from the `default` row's BOLD on the same "
             "problem, relative to its largest value (summation order only).", "",
             "| workload | mode | configuration | µs / step | vs `default` | BOLD diff | now "
             "default |", "|---|---|---|---:|---:|---:|---|"]
    base = {r["workload"]: r["us_per_step"] for r in data["rows"]
            if r["label"] == "default" and "us_per_step" in r}
    for r in data["rows"]:
        if "us_per_step" not in r:
            lines.append(f"| {r['workload']} | {r['mode']} | {r['label']} | "
                         f"{r.get('error') or r.get('skipped')} |||||")
            continue
        w = wl.parse_key(r["workload"])
        now = "yes" if all(
            r.get(f"{name}_resolved") == asdict(choose_config(w.batch, w.n_nodes, False, kernel))
            for name, kernel in (("forward", "fwd"), ("adjoint", "bwd"))
            if kernel == "fwd" or r["mode"] == "gradient") else ""
        diff = r.get("bold_max_rel_diff")
        lines.append(f"| {w.label} | {r['mode']} | {r['label']} | {r['us_per_step']:.3g} | "
                     f"{_ratio(base[r['workload']] / r['us_per_step'])} | "
                     f"{'–' if diff is None else f'{diff:.1e}'} | {now} |")
    return lines + [""]


def _fmt(x, digits=3) -> str:
    if x is None:
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _ratio(x: float) -> str:
    """A ratio as ``3.24x``, ``771x`` or ``2,120x`` (three significant digits, no exponent)."""
    if x >= 100:
        return f"{float(f'{x:.3g}'):,.0f}x"
    return f"{x:.3g}x"


def _mb(kb) -> float | None:
    return None if kb is None else kb / 1024.0


def _ours(rows, row):
    """The rww fast-backend row for the same workload variant and device."""
    for r in rows:
        if (r["key"], r["device"]) == (row["key"], row["device"]) and r["meta"].get("ours") \
                and r["impl"] != "torch":
            return r
    return None


# ---------------------------------------------------------------------------- tables
def workload_table(run: dict) -> list[str]:
    rows = run["rows"]
    out = ["| workload | variant: size | implementation | wall s / simulated s | µs / step | "
           "rww faster by | CPU s / simulated s | peak RSS MB (+ during run) | load |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ours = _ours(rows, r)
        if ours is r:
            ratio = "—"
        elif ours is not None and r["meta"].get("ours") and r["impl"] != "torch":
            ratio = f"{_ratio(r['wall_min'] / ours['wall_min'])} (vs `{ours['impl']}`)"
        elif ours is not None:
            ratio = f"{_ratio(r['wall_min'] / ours['wall_min'])}"
        else:
            ratio = "–"
        mem = r["memory"]
        if r["device"] == "cuda" and mem.get("cuda_max_allocated_bytes") is not None:
            memtxt = f"GPU {mem['cuda_max_allocated_bytes'] / 2**20:,.1f}"
        else:
            peak, before = _mb(mem.get("peak_rss_kb")), _mb(mem.get("rss_before_kb"))
            memtxt = (f"{peak:,.0f} (+{max(peak - before, 0):,.1f})" if peak is not None and
                      before is not None else _fmt(_mb(mem.get("ru_maxrss_kb"))))
        w = r["workload"]
        per = _fmt(r["per_sim_s"])
        if w["mode"] == "fit_epoch":
            per += f" ({_fmt(r['wall_min'] / w['n_trs'] * 1200)} s/epoch of 1200 TRs)"
        out.append(f"| {w['name']} {w['title']} | {w['variant']}: {w['label']} | {impl_name(r)} | "
                   f"{per} | {_fmt(r['us_per_step'])} | {ratio} | {_fmt(r['cpu_per_sim_s'])} | "
                   f"{memtxt} | "
                   f"{_fmt(r['load'], 2)} |")
    return out


def summary_table(run: dict) -> list[str]:
    """One line per workload: ours, vs the reference loop, vs each peer, against the target.

    Every ratio is between two rows of this run on the same workload variant, and the cell names
    the variant and both times, so each ratio can be recomputed from the rows below."""
    import workloads as wl

    rows = run["rows"]
    out = ["| workload | rww wall s / simulated s (variant) | reference loop: wall s / simulated s "
           "(variant), rww faster by | peers: wall s / simulated s (variant), rww faster by | "
           "target |",
           "|---|---:|---|---|---|"]
    by_name: dict = {}
    for r in rows:
        by_name.setdefault((r["name"], r["device"]), []).append(r)
    for (name, device), group in by_name.items():
        fast = [r for r in group if r["meta"].get("ours") and r["impl"] != "torch"]
        headline = next((r for r in fast if r["variant"] in ("full", "cpu")), fast[0] if fast else None)
        if headline is None:
            continue

        def versus(r):
            ours = _ours(rows, r)
            if ours is None:
                return None
            return (f"{_fmt(r['per_sim_s'])} vs {_fmt(ours['per_sim_s'])} ({r['variant']}): "
                    f"{_ratio(r['wall_min'] / ours['wall_min'])}")

        ref_pairs = [v for r in group if r["impl"] == "torch" and (v := versus(r))]
        peers = [f"{r['meta'].get('peer', r['impl'])} {v}" for r in group
                 if not r["meta"].get("ours") and (v := versus(r))]
        w = headline["workload"]
        per = _fmt(headline["per_sim_s"])
        target = _target_verdict(name, headline, wl)
        out.append(f"| {name} {w['title']} ({device}) | {per} ({w['variant']}) | "
                   f"{'; '.join(ref_pairs) or '–'} | {'; '.join(peers) or '–'} | {target} |")
    return out


def _fast_row(name: str, variant: str, device: str, impl: str | None = None):
    """rww's fast-backend row (or, with ``impl="torch"``, the reference loop's) of this run."""
    for r in _ROWS_CACHE:
        if (r["name"], r["variant"], r["device"]) == (name, variant, device) \
                and r["meta"].get("ours") and \
                (r["impl"] == impl if impl else r["impl"] != "torch"):
            return r
    return None


def _target_verdict(name: str, row: dict, wl) -> str:
    """The workload's goal and whether this run met it (computed, never typed in)."""
    w, dev = row["workload"], row["device"]
    steps_per_s = w["n_steps"] * w["batch"] / row["wall_min"]
    sim_s_per_s = w["seconds"] * w["batch"] / row["wall_min"]
    if name in ("W1", "W5") and dev == "cpu":
        text = f"{_fmt(row['us_per_step'])} µs/step"
        if name == "W1":
            goal = 2.0
            text = (f"<= {goal:g} µs/step (DESIGN.md 4): {text}, "
                    f"{'met' if row['us_per_step'] <= goal else '**missed**'}")
            ref, ours_ref = _fast_row("W1", "ref", dev, impl="torch"), _fast_row("W1", "ref", dev)
            if ref and ours_ref:
                speedup = ref["wall_min"] / ours_ref["wall_min"]
                text += (f"; >= 25x the reference loop (CPU-backend issue): {_ratio(speedup)}, "
                         f"{'met' if speedup >= 25 else '**missed**'}")
        return text
    if name in ("W1", "W5") and dev == "cuda":
        return (f"~1 µs/step (latency bound, DESIGN.md 4): {_fmt(row['us_per_step'])} µs/step, "
                f"{'met' if row['us_per_step'] <= 1.5 else '**missed**'}")
    if name == "W2":
        single = _fast_row("W1", row["variant"], dev)
        if single:
            gain = single["us_per_step"] / row["us_per_step"]
            return (f"{_fmt(row['us_per_step'])} µs per simulation-step vs "
                    f"{_fmt(single['us_per_step'])} single (W1): batching gains {_ratio(gain)}")
    if name == "W3":
        fwd = _fast_row("W1", w["variant"], dev)
        if fwd:
            ratio = row["per_sim_s"] / fwd["per_sim_s"]
            return (f"forward+backward <= 4x the forward (CPU-backend issue): {_ratio(ratio)} "
                    f"({_fmt(row['per_sim_s'])} vs W1 {w['variant']} {_fmt(fwd['per_sim_s'])}), "
                    f"{'met' if ratio <= 4.0 else '**missed**'}")
    if name == "W4":
        text = f"{_fmt(sim_s_per_s)} simulated s per wall s ({steps_per_s:.3g} simulation-steps/s)"
        if dev == "cuda":
            text = (f"~500,000 simulated s per wall s on an H100: {text}, "
                    f"{_fmt(sim_s_per_s / 5e5 * 100)} % of the bound")
        return text
    if name == "W6":
        full = wl.get("W6")
        scaled = row["per_sim_s"] * full.seconds
        mem = row["memory"]
        if dev == "cuda" and mem.get("cuda_max_allocated_bytes") is not None:
            return (f"full scan in {_fmt(scaled)} s, peak GPU memory "
                    f"{mem['cuda_max_allocated_bytes'] / 2**20:,.1f} MB")
        return (f"full 8.64M-step scan would take ~{_fmt(scaled)} s here (scaled from "
                f"{w['seconds']:g} s); memory at the reduced length in the table below")
    if name == "W7":
        gflops = 2 * w["n_nodes"] ** 2 * steps_per_s / 1e9
        return f"coupling alone: {gflops:.3g} GFLOP/s ({_fmt(row['us_per_step'])} µs/step)"
    if name == "W8":
        epoch = row["wall_min"] / w["n_trs"] * 1200
        goal = wl.WHOBPYT_EPOCH_SECONDS / 20
        speedup = wl.WHOBPYT_EPOCH_SECONDS / epoch
        def cpu_epoch(r):
            if r.get("cpu_per_sim_s") is None:
                return ""
            return f" (process CPU time {_fmt(r['cpu_per_sim_s'] * w['seconds'] / w['n_trs'] * 1200)} s)"

        text = (f"<= {goal:.2f} s/epoch (20x whobpyt's quoted {wl.WHOBPYT_EPOCH_SECONDS} s): "
                f"{_fmt(epoch)} s/epoch{cpu_epoch(row)}, {_ratio(speedup)} whobpyt, "
                f"{'met' if epoch <= goal else '**missed**'}")
        one = _fast_row("W8", w["variant"], dev, impl="auto-1t")
        if one is not None:
            epoch1 = one["wall_min"] / w["n_trs"] * 1200
            text += (f"; with 1 thread (`auto-1t`): {_fmt(epoch1)} s/epoch{cpu_epoch(one)}, "
                     f"{_ratio(wl.WHOBPYT_EPOCH_SECONDS / epoch1)} whobpyt, "
                     f"{'met' if epoch1 <= goal else '**missed**'}")
        return text
    return w["target"]


_ROWS_CACHE: list = []


def peer_notes(run: dict) -> list[str]:
    seen, out = set(), []
    for r in run["rows"]:
        meta = r["meta"]
        if meta.get("ours") or meta.get("peer") in seen:
            continue
        seen.add(meta.get("peer"))
        vers = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        out.append(f"- **{meta.get('peer')}** ({vers}; `{meta.get('install')}`): {meta.get('dtype')}, "
                   f"{meta.get('integrator')}. {meta.get('notes')}.")
    return out


# ---------------------------------------------------------------------------- scaling
def load_scaling() -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "scaling-*.json"))):
        with open(path) as fh:
            data = json.load(fh)
        data["path"] = os.path.relpath(path, ROOT)
        out.append(data)
    return out


def _slope(xs, ys):
    import math
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


SWEEP_AXES = (("T", "simulated seconds T", "seconds"), ("N", "regions N", "n_nodes"),
              ("B", "batch B", "batch"))


def _series(points, sweep):
    """{(impl, mode): [points sorted by the swept variable]} for one sweep."""
    series: dict = {}
    for p in points:
        if p["sweep"] == sweep and p.get("ok"):
            series.setdefault((p["impl"], p["mode"]), []).append(p)
    for v in series.values():
        v.sort(key=lambda p: p["x"])
    return series


def plot_scaling(data: dict, path: str = FIGURE):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    points = data["points"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    styles = {("auto", "forward"): ("C0", "o", "-"), ("auto", "gradient"): ("C1", "s", "-"),
              ("torch", "forward"): ("C2", "^", "--"), ("torch", "gradient"): ("C3", "v", "--")}
    for col, (sweep, xlabel, _) in enumerate(SWEEP_AXES):
        series = _series(points, sweep)
        fixed = data["fixed"][sweep]
        for (impl, mode), pts in sorted(series.items()):
            color, marker, ls = styles.get((impl, mode), ("k", "x", ":"))
            name = (f"rww {pts[0]['backend']}" if impl != "torch" else "reference loop") + f", {mode}"
            xs = [p["x"] for p in pts]
            axes[0, col].plot(xs, [p["per_sim_s"] for p in pts], color=color, marker=marker,
                              ls=ls, label=name)
            axes[1, col].plot(xs, [max(p["peak_increase_mb"], 0.05) for p in pts], color=color,
                              marker=marker, ls=ls, label=name)
        axes[0, col].set_title(f"vs {xlabel} ({fixed})", fontsize=10)
        xs_all = sorted({p["x"] for pts in series.values() for p in pts})
        for row in (0, 1):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel(xlabel)
            # Ticks at the swept values, plain numbers; no labels on minor ticks.
            if xs_all:
                ax.xaxis.set_major_locator(FixedLocator(xs_all))
                ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        axes[0, col].set_ylabel("wall s per simulated s")
        axes[1, col].set_ylabel("peak memory increase during run [MB]")
    axes[0, 0].legend(fontsize=8)
    env = data["environment"]
    fig.suptitle(f"rww cost scaling on {env['machine']['cpu']} ({env['machine']['usable_cpus']} "
                 f"cores), {data['path']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


MEMORY_FLOOR_MB = 2.0     # below this a peak-RSS increase is page-level noise, not a trend


def scaling_table(data: dict) -> list[str]:
    out = ["| sweep | implementation, mode | x from..to | wall s from..to | slope of wall time | "
           "memory increase MB from..to | slope of memory |", "|---|---|---|---|---:|---|---:|"]
    for sweep, xlabel, _ in SWEEP_AXES:
        for (impl, mode), pts in sorted(_series(data["points"], sweep).items()):
            xs = [p["x"] for p in pts]
            name = (f"rww {pts[0]['backend']}" if impl != "torch" else "reference loop")
            st = _slope(xs, [p["wall_s"] for p in pts])
            big = [p for p in pts if p["peak_increase_mb"] >= MEMORY_FLOOR_MB]
            sm = _slope([p["x"] for p in big], [p["peak_increase_mb"] for p in big]) \
                if len(big) >= 2 else None
            smtxt = _fmt(sm, 2) if sm is not None else \
                f"– (< 2 points above {MEMORY_FLOOR_MB:g} MB)"
            out.append(f"| {xlabel} ({data['fixed'][sweep]}) | {name}, {mode} | "
                       f"{_fmt(xs[0])}..{_fmt(xs[-1])} | "
                       f"{_fmt(pts[0]['wall_s'])}..{_fmt(pts[-1]['wall_s'])} | {_fmt(st, 2)} | "
                       f"{_fmt(pts[0]['peak_increase_mb'], 2)}..{_fmt(pts[-1]['peak_increase_mb'], 2)} | "
                       f"{smtxt} |")
    return out


# ---------------------------------------------------------------------------- delays
def load_delays() -> list[dict]:
    """``bench/delays.py`` results (JSON with ``"kind": "delays"``), each with its ``path``."""
    out = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
        with open(path) as fh:
            data = json.load(fh)
        if isinstance(data, dict) and data.get("kind") == "delays":
            data["path"] = os.path.relpath(path, ROOT)
            out.append(data)
    return out


def _delay_impl_name(row: dict) -> str:
    meta = row["meta"]
    if meta.get("ours"):
        return f"**rww `{row['impl']}` -> {meta.get('backend')}**"
    return f"{meta.get('peer', row['impl'])} {_peer_version(meta)}"


def _pair(a: dict, b: dict) -> str:
    """``a``'s time over ``b``'s, wall / CPU (``4.2x / 3.9x``)."""
    txt = _ratio(a["wall_min"] / b["wall_min"])
    if a.get("cpu_min") and b.get("cpu_min"):
        txt += f" / {_ratio(a['cpu_min'] / b['cpu_min'])}"
    return txt


def delays_section(data: dict) -> list[str]:
    """One ``bench/delays.py`` result: the summary (each implementation at no delays, 5 and 10
    m/s, against its own no-delay run and against rww's at the same velocity), every row, and
    how each peer's delays differ from rww's."""
    rows = data["rows"]
    conn = data["connectome"]
    env = data.get("environment")
    names = []                                       # workloads in run order
    for r in rows:
        if r["workload"]["name"] not in names:
            names.append(r["workload"]["name"])
    impls = []
    for r in rows:
        if r["impl"] not in impls:
            impls.append(r["impl"])
    cell = {(r["workload"]["name"], r["impl"]): r for r in rows}
    ours_impl = next((r["impl"] for r in rows if r["meta"].get("ours")), None)
    base_name = next((n for n in names if next(r for r in rows if r["workload"]["name"] == n)
                      ["workload"].get("velocity") is None), None)

    def lag(r):
        return (r["meta"].get("delays") or {}).get("max_lag_steps", 0)

    def head(name):
        w = next(r for r in rows if r["workload"]["name"] == name)["workload"]
        return "no delays" if w.get("velocity") is None else f"{w['velocity']:g} m/s"

    loads = [x for r in rows for x in r.get("loadavg", [])]
    lines = [f"### Conduction delays: `{data['path']}` ({data.get('datetime', '')})", ""]
    if env:
        lines += [f"Machine: {describe_environment(env)}.", ""]
    start = data.get("environment_start")
    if env and start and start["git"].get("source_sha1") != env["git"].get("source_sha1"):
        lines += [f"The library's sources changed while this ran (other sessions committed): "
                  f"at the start {describe_environment(start).split('; git ')[-1]}.", ""]
    first = rows[0]["workload"]
    lines += [
        f"Command: `{data.get('command')}` ({data.get('total_s', 0) / 60:.0f} min). "
        f"{first['label'].split(', demo')[0]} on the demo connectome (`rww.data.load_demo`, "
        f"N = {conn['n_nodes']}, SC / its mean row sum {conn.get('mean_row_sum_raw') or 0:,.2f}, "
        f"SHA-1 `{conn['sc_sha1']}`; tract lengths up to {conn['max_length_mm']:.1f} mm, SHA-1 "
        f"`{conn['lengths_sha1']}`), the same bytes in every worker. All rows were timed in one "
        f"session: every worker built and warmed up, then {data['rounds']} rounds each running "
        "every row once (rows under a second several times), in an order rotated from round to "
        "round. Times: the minimum over the runs; `CPU` = the worker process's CPU time of its "
        "least costly run, which other jobs inflate much less than wall time; 1-minute load "
        f"average {min(loads):.1f}-{max(loads):.1f} during the runs." if loads else "", ""]
    lines += ["Summary: µs per step, wall / CPU; in brackets the time over the same "
              "implementation's run without delays, and for the peers the time over rww's at the "
              "same velocity (`rww faster by`), each as wall / CPU. D = the longest lag in steps "
              "before the current step (rww/TVB, cuBNM).", ""]
    lines += ["| implementation | " + " | ".join(
        f"{head(n)}" + ("" if n == base_name else
                        f" (D = {'/'.join(sorted({str(lag(cell[(n, i)])) for i in impls if (n, i) in cell}, key=int, reverse=True))})")
        for n in names) + " |", "|---|" + "---:|" * len(names)]
    for impl in impls:
        cells = []
        for n in names:
            r = cell.get((n, impl))
            if r is None:
                cells.append("–")
                continue
            parts = []
            base = cell.get((base_name, impl))
            if base is not None and base is not r:
                parts.append(f"{_pair(r, base)} no delays")
            ours = cell.get((n, ours_impl))
            if ours is not None and ours is not r:
                parts.append(f"rww faster by {_pair(r, ours)}")
            text = f"{_fmt(r['us_per_step'])} / {_fmt(r.get('cpu_us_per_step'))}"
            if parts:
                text += f" ({'; '.join(parts)})"
            cells.append(text)
        name = _delay_impl_name(cell[next(n for n in names if (n, impl) in cell), impl])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "All rows (`vs no delays` = this row's time over the same implementation's W9 "
              "row; `rww faster by` = this row's time over rww's on the same workload; CPU-time "
              "ratios in brackets):", "",
              "| workload | implementation | D (steps) | wall s / simulated s | µs / step | CPU µs "
              "/ step | vs no delays | rww faster by | runs | peak RSS MB (+ during run) | load |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    def both(a, b):
        txt = _ratio(a["wall_min"] / b["wall_min"])
        if a.get("cpu_min") and b.get("cpu_min"):
            txt += f" ({_ratio(a['cpu_min'] / b['cpu_min'])})"
        return txt

    for r in rows:
        w = r["workload"]
        base, ours = cell.get((base_name, r["impl"])), cell.get((w["name"], ours_impl))
        mem = r["memory"]
        peak, before = _mb(mem.get("peak_rss_kb")), _mb(mem.get("rss_before_kb"))
        memtxt = (f"{peak:,.0f} (+{max(peak - before, 0):,.1f})" if peak is not None and
                  before is not None else _fmt(_mb(mem.get("ru_maxrss_kb"))))
        ld = r.get("loadavg") or [None]
        lines.append(
            f"| {w['name']} {w['variant']}: {w['label']} | {_delay_impl_name(r)} | {lag(r)} | "
            f"{_fmt(r['wall_min'] / w['seconds'])} | {_fmt(r['us_per_step'])} | "
            f"{_fmt(r.get('cpu_us_per_step'))} | "
            f"{'—' if base is None or base is r else both(r, base)} | "
            f"{'—' if ours is None or ours is r else both(r, ours)} | {len(r['wall_s'])} | "
            f"{memtxt} | {_fmt(min(ld), 2)}-{_fmt(max(ld), 2)} |")
    lines += ["", "How each implementation's delays were computed (from each row's recorded "
              "settings):", ""]
    seen = set()
    for r in rows:
        meta = r["meta"]
        d = meta.get("delays")
        who = meta.get("peer") or "rww"
        if d is None or who in seen:
            continue
        seen.add(who)
        if meta.get("ours"):
            lines.append(f"- **rww** ({meta.get('dtype')}, {meta.get('integrator')}): "
                         f"{d.get('convention')}.")
        else:
            vers = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
            lines.append(f"- **{who}** ({vers}; `{meta.get('install')}`): {meta.get('dtype')}, "
                         f"{meta.get('integrator')}. {d.get('convention')}. {meta.get('notes')}.")
    for name, why in (data.get("skipped") or {}).items():
        lines.append(f"- {name}: not run ({why}).")
    return lines + [""]


# ---------------------------------------------------------------------------- README
def workloads_table() -> list[str]:
    """The workload definitions (bench/workloads.py), full size and reduced variants."""
    import workloads as wl

    out = ["| workload | full size | CPU variant (`cpu`) | reference-loop variant (`ref`) | "
           "devices | target |", "|---|---|---|---|---|---|"]
    for name, full in wl.FULL.items():
        cpu, ref = wl.get(name, "cpu"), wl.get(name, "ref")

        def length(w):
            return (f"{w.n_trs} TRs" if w.mode == "fit_epoch" else f"{w.seconds:g} s") + \
                f", TR {w.tr:g} s, {w.n_steps:,} steps"
        out.append(f"| {name} {full.title} | {full.label} ({full.n_steps:,} steps) | {length(cpu)} | "
                   f"{length(ref)} | {', '.join(full.devices)} | {full.target} |")
    return out


def generate(plot: bool = True) -> str:
    runs = load_runs()
    lines = [BEGIN, "", "<!-- generated by `python bench/report.py` from bench/workloads.py and "
             "bench/results/*.json; do not edit by hand -->", "",
             "### Workloads (`bench/workloads.py`)", ""] + workloads_table() + [""]
    if not runs:
        lines += ["No benchmark results yet: run the commands above.", ""]
    for run in runs:
        _ROWS_CACHE[:] = run["rows"]
        envs = [r["environment"] for r in run["rows"] if r.get("environment")]
        lines += [f"### `{run['path']}` ({run['datetime'] or 'date unknown'})", ""]
        if envs:
            lines += [f"Machine: {describe_environment(envs[0])}.", ""]
            sources = sorted({e["git"].get("source_sha1") for e in envs} - {None})
            if len(sources) > 1:
                revs = sorted({(e["git"].get("revision") or "?")[:10] for e in envs})
                lines += [f"The library's sources changed while this suite ran (other sessions "
                          f"committed: revisions {', '.join(revs)}; {len(sources)} distinct source "
                          "hashes, one per row in the JSON's `extra_info.environment`): rows "
                          "measured minutes apart may have run different code.", ""]
        if not run["rows"]:
            lines += ["(no rows)", ""]
            continue
        lines += ["Summary (ratios: the other implementation's time over rww's, same workload "
                  "variant, same run):", ""] + summary_table(run) + [""]
        lines += ["All rows (`wall s / simulated s` = min over the timed rounds / simulated "
                  "seconds per simulation; `µs / step` over all simulations of a batch; "
                  "`rww faster by` = this row's time / rww's on the same variant; `CPU s / "
                  "simulated s` = the worker process's CPU time (all threads) over the least "
                  "CPU-costly round, which other jobs on the machine inflate much less than wall "
                  "time; `peak RSS` = "
                  "the worker's peak resident memory during the timed runs, and in brackets its "
                  "increase over the memory held before them; `load` = 1-minute load average of "
                  "the machine when the row started):", ""] + workload_table(run) + [""]
        notes = peer_notes(run)
        if notes:
            lines += ["How each peer was run (from each row's recorded settings):", ""] + notes + [""]
    for data in load_scaling():
        device = data.get("device", "cpu")
        figure = FIGURE if device == "cpu" else os.path.join(BENCH, f"scaling-{device}.png")
        if plot:
            plot_scaling(data, figure)
        lines += [f"### Cost scaling (`{data['path']}`, {data.get('datetime', '')})", "",
                  f"Machine: {describe_environment(data['environment'])}. Command: "
                  f"`{data.get('command', 'python bench/scaling.py')}`.", "",
                  f"![cost scaling]({os.path.relpath(figure, BENCH)})", "",
                  "Top row: wall seconds per simulated second (flat in T = cost linear in T); "
                  "bottom row: the peak resident memory added during the run (floored at 0.05 "
                  "MB on the log axis). Slopes of straight-line fits to wall time and memory on "
                  "log-log axes (1 = linear; the checkpointed gradient's state memory should "
                  "grow like sqrt(T), slope 0.5, the reference loop's autograd tape like T, slope "
                  f"1; memory slopes only over points above {MEMORY_FLOOR_MB:g} MB):", ""]
        lines += scaling_table(data) + [""]
    for data in load_delays():
        lines += delays_section(data)
    timings, tunings = load_gpu()
    for data in timings:
        lines += gpu_section(data)
    for data in tunings:
        lines += tune_section(data)
    lines.append(END)
    return "\n".join(lines)


def write_readme(check: bool = False) -> int:
    generated = generate(plot=not check)
    with open(README) as fh:
        text = fh.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + generated + tail
    else:
        new = text.rstrip("\n") + "\n\n## Results\n\n" + generated + "\n"
    if check:
        return 0 if new == text else 1
    with open(README, "w") as fh:
        fh.write(new)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if README.md differs from what the JSON gives")
    args = parser.parse_args(argv)
    code = write_readme(check=args.check)
    print(f"{'checked' if args.check else 'wrote'} {os.path.relpath(README, ROOT)}"
          + (f" and {os.path.relpath(FIGURE, ROOT)}" if load_scaling() and not args.check else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
