#!/usr/bin/env python
"""Run one workload with one implementation and print JSON: wall time and peak memory.

Usage (from the repository root)::

    python bench/run_one.py W1/cpu numba              # ours, compiled CPU backend
    python bench/run_one.py W1/ref torch              # ours, the plain PyTorch reference loop
    python bench/run_one.py W6/full auto --device cuda
    .venv-peers/cubnm/bin/python bench/run_one.py W1/cpu cubnm     # a peer, in its own venv
    python bench/run_one.py W9v5/cpu auto              # conduction delays (demo connectome)
    .venv-peers/tvb/bin/python bench/run_one.py W9v5/ref tvb --sc sc.npy --lengths lengths.npy

The delayed workloads (``W9``, ``W9v5``, ``W9v10``: the demo connectome, with delays at the
workload's velocity) need the demo's connectome and tract lengths: rww's own runs load them with
``rww.data``; peers (whose virtualenvs have no rww) need ``--sc`` and ``--lengths`` files, which
``bench/delays.py`` writes once per session.

Implementations: ours are the backends of :func:`rww.rww_scan` (``auto``, ``numba``, ``torch``,
``torch-checkpoint``, ``triton``); peers are ``cubnm``, ``neurolib``, ``vbjax``, ``vbjax-euler``
and ``tvb`` (modules in ``bench/peers/``, each run with its own virtualenv's Python).

One-shot mode (the default) builds the workload, runs it once untimed (warm-up: JIT compilation,
caches, first-touch allocation stay out of the figures), resets the peak-RSS counter, runs it
``--repeat`` times timed, and prints one JSON object:

``wall_s``           list of wall seconds of the timed runs (the device synchronised around each);
``cpu_s``            list of the process's CPU seconds (all its threads, ``time.process_time``)
                     over each timed run: on a shared machine, what the run cost in CPU time
                     whatever the other jobs did (wall time also counts time spent waiting);
``rss_before_kb``    resident memory just before the timed runs (interpreter, libraries, JIT code,
                     the built model);
``peak_rss_kb``      peak resident memory during the timed runs (Linux ``VmHWM`` after writing 5
                     to ``/proc/self/clear_refs``); ``peak_rss_kb - rss_before_kb`` is what the
                     workload itself needed;
``ru_maxrss_kb``     ``getrusage`` peak over the whole process (imports and compilation included);
``cuda_max_allocated_bytes``  ``torch.cuda.max_memory_allocated`` over the timed runs (GPU).

Serve mode (``--serve``) is what the benchmark suite uses: after the warm-up it prints one JSON
line ``{"event": "ready", ...}`` and then answers commands on stdin, one per line: ``run`` (one
timed run, answers ``{"event": "done", "wall_s": ..., "cpu_s": ...}``), ``report`` (the memory fields above,
over every run since ready) and ``quit``. pytest-benchmark times the ``run`` round trip, so every
implementation, ours and the peers, is timed by the same harness in the same way.

The protocol is written to a duplicate of the original stdout; file descriptor 1 is pointed at
stderr so that whatever a simulator prints (cuBNM's C++ writes to stdout) cannot corrupt it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import resource
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import workloads as wl  # noqa: E402

# ``auto-1t``: ``auto`` with one thread (torch.set_num_threads(1), RWW_NUM_THREADS=1), the setting
# for a machine shared with other jobs, where the default threads wait on each other.
OURS = ("auto", "auto-1t", "numba", "torch", "torch-checkpoint", "triton")
PEERS = {
    "cubnm": "peers.cubnm_rww",
    "neurolib": "peers.neurolib_rww",
    "vbjax": "peers.vbjax_rww",
    "vbjax-euler": "peers.vbjax_rww",
    "tvb": "peers.tvb_rww",
}
IMPLS = OURS + tuple(PEERS)


# ---------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def release_free_memory():
    """Give freed heap pages back to the kernel (glibc ``malloc_trim``), so that memory freed by
    the warm-up and reused by the timed run counts in the timed run's peak instead of hiding in
    the resident set that is already there."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def ru_maxrss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)      # kB on Linux


# ---------------------------------------------------------------------------- ours
class OursRunner:
    """A workload built with rww: ``run()`` does one timed unit of work (synchronised)."""

    def __init__(self, workload: wl.Workload, backend: str, device: str = "cpu", sc_np=None,
                 lengths_np=None):
        import torch

        import rww
        from rww.ops.scan import auto_backend_name, backend_available

        self.torch, self.workload, self.device = torch, workload, torch.device(device)
        impl = backend
        if backend == "auto-1t":
            torch.set_num_threads(1)
            os.environ["RWW_NUM_THREADS"] = "1"
            backend = "auto"
        if backend != "auto":
            ok, why = backend_available(backend)
            if not ok:
                raise RuntimeError(f"backend {backend!r} is not available: {why}")
        resolved = auto_backend_name(self.device) if backend == "auto" else backend
        if sc_np is None:
            sc_np = wl.connectome(workload.n_nodes)
        self.sc_sha1 = wl.connectome_sha1(sc_np)
        sc = torch.as_tensor(sc_np, dtype=torch.float32, device=self.device)
        w = workload
        common = dict(preset=w.preset, dt=w.dt, tr=w.tr, batch=w.batch, backend=backend,
                      device=self.device)
        if w.mode == "fit_epoch":
            from rww.fit import FitConfig, FitTarget, fit

            # The settings of `rww fit --demo` (the paper's setting), read from the command line's
            # own parser and defaults so they cannot drift: model, loss weights, lr, windows,
            # burn-in, seed, realisations. Only the connectome (the suite's 83-region one) and the
            # target FC (of a synthetic scan) differ from the demo, and n_trs (the variant's).
            demo = demo_fit_settings()
            if demo["window_trs"] != w.window_trs or demo["preset"] != w.preset:
                raise RuntimeError(f"{w.key}: workload ({w.preset}, {w.window_trs}-TR windows) "
                                   f"differs from `rww fit --demo` ({demo})")
            learn = [s.strip() for s in demo["learn"].split(",") if s.strip()]
            common["batch"] = demo["realisations"]
            self.model = rww.RWWBold(sc, learn=learn, **common)
            from rww import objectives as obj
            target_fc = obj.fc(torch.as_tensor(wl.target_bold(w.n_trs, w.n_nodes),
                                               dtype=torch.float32))
            self.target = FitTarget(fc=target_fc.to(self.device))
            weights = {k: float(v) for k, v in
                       (item.split("=") for item in demo["weights"].split(","))}

            def config(n_trs):
                return FitConfig(epochs=1, lr=float(demo["lr"]), window_trs=demo["window_trs"],
                                 n_trs=n_trs, burn_in_trs=demo["burn_in"], seed=demo["seed"],
                                 weights=weights)

            self.fit_settings = dict(demo, n_trs=w.n_trs, epochs=1)
            self._fit, self._config = fit, config
        elif w.mode == "gradient":
            self.model = rww.RWWBold(sc, G=wl.G_DECO, w_IE=torch.ones(w.n_nodes),
                                     learn=["G", "w_IE"], **common)
        elif w.mode == "forward":
            if w.velocity is not None:
                # Conduction delays: the connectome's tract lengths [mm] at the workload's velocity.
                common.update(lengths=torch.as_tensor(lengths_np, dtype=torch.float64),
                              velocity=float(w.velocity))
            self.model = rww.RWWBold(sc, G=wl.G_DECO, **common)
        else:
            raise ValueError(f"unknown mode {w.mode!r}")
        self.meta = {
            "impl": impl, "backend": resolved, "ours": True,
            "dtype": "float32", "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "numba_threads": _numba_threads(),
            "rww_threads": _rww_threads(),
            "versions": _versions_ours(),
            "sc_sha1": self.sc_sha1,
            "integrator": "Euler-Maruyama; Balloon every step",
            "notes": "",
        }
        if w.velocity is not None:
            self.meta["delays"] = {
                "velocity_m_per_s": float(w.velocity), "lengths_sha1": wl.connectome_sha1(lengths_np),
                "max_lag_steps": int(self.model.max_delay),
                "convention": "lag rint(L / (v dt)) steps before the current step (rww.delays; "
                              "TVB's rounding), lag 0 = current S_E; history constant at the "
                              "initial S_E"}
        if w.mode == "fit_epoch":
            self.meta["fit_settings"] = self.fit_settings

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _work(self, n_trs: int):
        torch, w = self.torch, self.workload
        if w.mode == "fit_epoch":
            result = self._fit(self.model, self.target, self._config(n_trs), progress=False)
            out = result.bold
        elif w.mode == "gradient":
            self.model.zero_grad(set_to_none=True)
            bold, _ = self.model(n_trs, seed=0)
            bold.square().mean().backward()
            out = bold.detach()
        else:
            with torch.no_grad():
                out, _ = self.model(n_trs, seed=0)
        self._sync()
        return out

    def warmup(self):
        # One TR (one window for a fit) compiles every kernel (numba, Triton) and runs every code
        # path of the timed run, without doubling the cost of long runs.
        n = self.workload.window_trs if self.workload.mode == "fit_epoch" else 1
        self.warmup_is_full = n >= self.workload.n_trs
        out = self._work(n)
        if not bool(self.torch.isfinite(out).all()):
            raise RuntimeError(f"{self.workload.key}: non-finite BOLD in the warm-up")

    def run(self):
        self._work(self.workload.n_trs)

    def reset_device_peak(self):
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def device_memory(self) -> dict:
        if self.device.type != "cuda":
            return {}
        return {"cuda_max_allocated_bytes": int(self.torch.cuda.max_memory_allocated(self.device))}


def demo_fit_settings() -> dict:
    """The settings ``rww fit --demo --paper`` runs with (the seed paper's HCP fit, which W8
    times; plain ``--demo`` runs the fitting recipe since 0.2): :data:`rww.cli.fit.DEMO_DEFAULTS`
    and the command's own defaults (burn-in, seed, realisations, backend) from its parser."""
    import argparse

    from rww.cli import fit as cli_fit

    parser = argparse.ArgumentParser()
    cli_fit.add_parser(parser.add_subparsers())
    args = parser.parse_args(["fit", "--demo", "--paper"])
    out = dict(cli_fit.DEMO_DEFAULTS)
    # --realisations: None means the command's default of one batch member.
    out.update(burn_in=args.burn_in, seed=args.seed, realisations=args.realisations or 1,
               backend=args.backend)
    return out


def _rww_threads():
    try:
        from rww.ops.numba.backend import num_threads
        return num_threads()
    except Exception:
        return None


def _numba_threads():
    """numba's thread count. The first call starts numba's threading layer, whose OpenMP layer
    resets OpenMP's thread count, i.e. torch's: torch's setting is restored (``auto-1t`` would
    otherwise run its torch operations on all cores after all)."""
    try:
        import numba
        import torch
    except Exception:
        return None
    torch_threads = torch.get_num_threads()
    try:
        n = numba.get_num_threads()
    except Exception:
        n = None
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    return n


def _versions_ours() -> dict:
    import torch

    import rww
    out = {"python": platform.python_version(), "torch": torch.__version__, "rww": rww.__version__}
    for name in ("numba", "numpy", "triton"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:
            out[name] = None
    return out


# ---------------------------------------------------------------------------- dispatch
def load_connectome(workload: wl.Workload, path: str | None):
    """The workload's connectome: from ``path`` (``.npy``, written by the suite so that every
    implementation gets the same bytes whatever its numpy) or :func:`workloads.connectome` (the
    demo's, :func:`workloads.demo_connectome`, for the delayed workloads: needs rww)."""
    import numpy as np

    if path is None:
        if workload.connectome == "demo":
            return wl.demo_connectome()[0]
        return wl.connectome(workload.n_nodes)
    sc = np.load(path)
    if sc.shape != (workload.n_nodes, workload.n_nodes):
        raise ValueError(f"--sc {path}: shape {sc.shape}, expected {workload.n_nodes} regions")
    return sc


def load_lengths(workload: wl.Workload, path: str | None):
    """Tract lengths [mm] for a workload with conduction delays (``None`` without): from ``path``
    (``.npy``) or the demo's (:func:`workloads.demo_connectome`, needs rww)."""
    import numpy as np

    if workload.velocity is None:
        if path is not None:
            raise ValueError(f"--lengths: {workload.key} has no conduction delays (no velocity)")
        return None
    lengths = np.load(path) if path is not None else wl.demo_connectome()[1]
    if lengths.shape != (workload.n_nodes, workload.n_nodes):
        raise ValueError(f"--lengths: shape {lengths.shape}, expected {workload.n_nodes} regions")
    return lengths


def build(impl: str, workload: wl.Workload, device: str = "cpu", sc_path: str | None = None,
          lengths_path: str | None = None):
    """A runner with ``warmup()``, ``run()``, ``meta`` for ``impl`` on ``workload``."""
    sc = load_connectome(workload, sc_path)
    lengths = load_lengths(workload, lengths_path)
    if impl in OURS:
        return OursRunner(workload, impl, device, sc_np=sc, lengths_np=lengths)
    if impl in PEERS:
        if device != "cpu":
            raise ValueError(f"{impl}: peers are run on CPU only")
        module = importlib.import_module(PEERS[impl])
        if lengths is not None:
            if not getattr(module, "SUPPORTS_DELAYS", False):
                raise ValueError(f"{impl}: conduction delays are not wired for this peer")
            runner = module.build(workload, sc, variant=impl, lengths=lengths)
            runner.meta.setdefault("delays", {})["lengths_sha1"] = wl.connectome_sha1(lengths)
        else:
            runner = module.build(workload, sc, variant=impl)
        runner.meta.setdefault("sc_sha1", wl.connectome_sha1(sc))
        runner.meta.update(impl=impl, ours=False)
        runner.meta.setdefault("versions", {})["python"] = platform.python_version()
        return runner
    raise ValueError(f"unknown implementation {impl!r}; choose one of {IMPLS}")


def memory_report(runner, peak_reset_ok: bool, rss_before: int | None) -> dict:
    out = {"rss_before_kb": rss_before,
           "peak_rss_kb": _status_kb("VmHWM") if peak_reset_ok else None,
           "ru_maxrss_kb": ru_maxrss_kb(),
           "peak_reset": peak_reset_ok}
    if hasattr(runner, "device_memory"):
        out.update(runner.device_memory())
    return out


def override(workload: wl.Workload, assignments: list) -> wl.Workload:
    """``workload`` with ``FIELD=VALUE`` overrides (ints and floats parsed), variant 'sweep'."""
    import dataclasses

    types = {"n_nodes": int, "batch": int, "seconds": float, "tr": float, "dt": float}
    changes = {"variant": "sweep", "devices": ("cpu", "cuda")}
    for item in assignments:
        field, _, value = item.partition("=")
        if field not in types:
            raise SystemExit(f"--set: cannot override {field!r}; choose from {sorted(types)}")
        changes[field] = types[field](value)
    out = dataclasses.replace(workload, **changes)
    out.n_trs                                   # validates whole TRs
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", help="name/variant, e.g. W1/cpu (variants: full, cpu, ref)")
    parser.add_argument("impl", choices=IMPLS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs (one-shot mode)")
    parser.add_argument("--serve", action="store_true", help="answer run/report/quit on stdin")
    parser.add_argument("--sc", default=None, metavar="NPY",
                        help="connectome (.npy) instead of workloads.connectome(N): the suite "
                             "writes it once, so that every implementation simulates the same "
                             "bytes (numpy versions differ in the last bits of exp/norm)")
    parser.add_argument("--lengths", default=None, metavar="NPY",
                        help="tract lengths [mm] (.npy) for a workload with conduction delays "
                             "(W9v5, W9v10); default: the demo's, through rww.data (rww only)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a workload field (n_nodes, batch, seconds, tr); the "
                             "variant becomes 'sweep' (used by bench/scaling.py)")
    args = parser.parse_args(argv)

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                               # simulators' own prints go to stderr
    sys.stdout = sys.stderr

    def emit(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    workload = wl.parse_key(args.workload)
    if args.set:
        workload = override(workload, args.set)
    try:
        tick = time.perf_counter()
        runner = build(args.impl, workload, args.device, args.sc, args.lengths)
        build_s = time.perf_counter() - tick
        tick = time.perf_counter()
        runner.warmup()
        warmup_s = time.perf_counter() - tick
    except Exception as err:                    # reported, not hidden: the suite records it
        emit({"event": "error", "error": f"{type(err).__name__}: {err}"})
        return 2
    if "torch_threads" in runner.meta:
        import torch
        runner.meta["torch_threads_after_warmup"] = torch.get_num_threads()
    head = {"workload": workload.as_dict(), "impl": args.impl, "meta": runner.meta,
            "build_s": build_s, "warmup_s": warmup_s,
            "warmup_full": bool(getattr(runner, "warmup_is_full", True)), "pid": os.getpid()}
    if hasattr(runner, "reset_device_peak"):
        runner.reset_device_peak()
    import gc
    gc.collect()
    release_free_memory()
    rss_before = _status_kb("VmRSS")
    peak_ok = reset_peak_rss()

    if not args.serve:
        walls, cpus = [], []
        for _ in range(args.repeat):
            tick, cpu = time.perf_counter(), time.process_time()
            runner.run()
            walls.append(time.perf_counter() - tick)
            cpus.append(time.process_time() - cpu)
        emit(dict(head, event="result", wall_s=walls, cpu_s=cpus,
                  **memory_report(runner, peak_ok, rss_before)))
        return 0

    emit(dict(head, event="ready"))
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            tick, cpu = time.perf_counter(), time.process_time()
            try:
                runner.run()
            except Exception as err:
                emit({"event": "error", "error": f"{type(err).__name__}: {err}"})
                continue
            emit({"event": "done", "wall_s": time.perf_counter() - tick,
                  "cpu_s": time.process_time() - cpu})
        elif cmd == "report":
            emit(dict(event="report", **memory_report(runner, peak_ok, rss_before)))
        elif cmd == "quit":
            break
        elif cmd:
            emit({"event": "error", "error": f"unknown command {cmd!r}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
