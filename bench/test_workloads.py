"""pytest-benchmark suites over the named workloads of ``bench/workloads.py``.

Run (from the repository root; about 10 minutes on a 2-core CPU)::

    python -m pytest bench/test_workloads.py --benchmark-only \
        --benchmark-json bench/results/cpu.json && python bench/report.py

Every row is one (workload variant, implementation) pair, run in its own worker process
(``bench/run_one.py --serve``) and timed by pytest-benchmark around the worker's ``run`` command,
so our backends and the peers are measured by the same harness:

1. the worker builds the workload and runs it once untimed (JIT compilation, allocation; ours
   warms up on one TR, the peers on the whole run);
2. unless the warm-up was already a whole run, one more whole run, untimed; its duration sets
   the number of timed rounds (enough for about ``ROUND_BUDGET_S`` seconds, between 2 and 5; a
   single round for runs longer than ``SINGLE_ROUND_S``, which only the slowest peers and the
   reference loop at B = 32768 reach);
3. the timed rounds (``benchmark.pedantic``, one iteration each);
4. the worker reports its peak resident memory over the timed runs (and CUDA's peak allocation
   on a GPU), recorded in the row's ``extra_info`` with the workload, the implementation's
   versions and settings, the machine and the git revision.

Groups:

- ``test_cpu``: on CPU, for every workload: ours (``auto``, i.e. the compiled CPU backend) at the
  ``cpu`` variant (W8 also with one thread, ``auto-1t``); ours and the plain PyTorch reference
  loop (``torch``) at the ``ref`` variant (their ratio); and the peers at the ``cpu`` variant of
  W1 and W2 and the ``ref`` variant of W7. Every worker loads the same connectome bytes
  (:func:`connectome_file`), and the suite checks each row's hash of them. Ours is skipped when
  ``auto`` resolves to the reference loop (numba backend missing); a peer is skipped when its
  virtualenv (``.venv-peers/<name>``, or ``RWW_PEER_PYTHON_<NAME>``) cannot import it.
- ``test_gpu``: every workload at full size with ``auto`` (Triton), and the reference loop at the
  ``ref`` variant, on CUDA; skipped without a GPU.

The rows are ordered so that the implementations compared in one ratio run back to back.
"""

from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

import pytest

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import report  # noqa: E402
import workloads as wl  # noqa: E402

RUN_ONE = os.path.join(BENCH, "run_one.py")
ROUND_BUDGET_S = 6.0          # timed seconds aimed at per row
MIN_ROUNDS, MAX_ROUNDS = 2, 5
SINGLE_ROUND_S = 12.0         # a run longer than this is timed once (the slowest peers)
START_TIMEOUT_S = 900         # build + warm-up (numba compiles, jax traces)
RUN_TIMEOUT_S = 600

# Peer implementations -> (virtualenv folder under .venv-peers, module that must import).
PEER_ENVS = {"cubnm": ("cubnm", "cubnm"), "neurolib": ("neurolib", "neurolib"),
             "vbjax": ("vbjax", "vbjax"), "vbjax-euler": ("vbjax", "vbjax"),
             "tvb": ("tvb", "tvb.simulator")}
PEERS_ALL = ("cubnm", "neurolib", "vbjax", "vbjax-euler", "tvb")
PEERS_BATCHED = ("cubnm", "vbjax", "vbjax-euler")     # neurolib and TVB have no batch dimension

CPU_ROWS = []
for _name in wl.FULL:
    # Peers run W1 and W2 at the cpu variant; W7 (1000 regions) at the shorter ref variant,
    # where the slowest peers still take seconds per run.
    _cpu_peers = {"W1": PEERS_ALL, "W2": PEERS_BATCHED}.get(_name, ())
    _ref_peers = {"W7": ("cubnm", "neurolib", "vbjax-euler", "tvb")}.get(_name, ())
    CPU_ROWS += [(f"{_name}/cpu", "auto")] + [(f"{_name}/cpu", p) for p in _cpu_peers]
    if _name == "W8":
        # The fit loop's many small torch operations suffer most from threads waiting on each
        # other on a shared machine: also measured with one thread.
        CPU_ROWS += [(f"{_name}/cpu", "auto-1t")]
    CPU_ROWS += [(f"{_name}/ref", "auto")] + [(f"{_name}/ref", p) for p in _ref_peers]
    CPU_ROWS += [(f"{_name}/ref", "torch")]
GPU_ROWS = []
for _name in wl.FULL:
    GPU_ROWS += [(f"{_name}/full", "auto"), (f"{_name}/ref", "auto"), (f"{_name}/ref", "torch")]


# ---------------------------------------------------------------------------- workers
class WorkerError(RuntimeError):
    pass


class Worker:
    """A ``run_one.py --serve`` subprocess: ``run()`` one timed run, ``report()`` memory."""

    def __init__(self, python: str, key: str, impl: str, device: str = "cpu"):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [python, RUN_ONE, key, impl, "--serve", "--device", device,
             "--sc", connectome_file(wl.parse_key(key).n_nodes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            cwd=ROOT, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready = self._get(START_TIMEOUT_S)
        self.walls: list[float] = []
        self.cpus: list[float] = []

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _log_tail(self, n: int = 3000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-n:]

    def _get(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"no answer in {timeout} s; worker log:\n{self._log_tail()}") from None
        if line is None:
            self.proc.wait(timeout=10)
            raise WorkerError(f"worker exited ({self.proc.returncode}); log:\n{self._log_tail()}")
        msg = json.loads(line)
        if msg.get("event") == "error":
            raise WorkerError(f"{msg['error']}\nworker log:\n{self._log_tail()}")
        return msg

    def call(self, command: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._get(timeout)

    def run(self):
        done = self.call("run")
        self.walls.append(done["wall_s"])
        self.cpus.append(done.get("cpu_s"))

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


_SC_DIR = tempfile.TemporaryDirectory(prefix="rww-bench-sc-")


def connectome_file(n_nodes: int) -> str:
    """``workloads.connectome(n_nodes)`` saved once per session as ``.npy``: every worker, ours and
    the peers' (whose numpy may differ in the last bits of exp and norm), loads these bytes."""
    import numpy as np

    path = os.path.join(_SC_DIR.name, f"sc-{n_nodes}.npy")
    if not os.path.exists(path):
        np.save(path, wl.connectome(n_nodes))
    return path


def _peer_python(impl: str) -> str:
    env_dir, _ = PEER_ENVS[impl]
    override = os.environ.get("RWW_PEER_PYTHON_" + env_dir.upper())
    return override or os.path.join(ROOT, ".venv-peers", env_dir, "bin", "python")


_PEER_OK: dict = {}


def peer_available(impl: str) -> tuple[bool, str]:
    """Whether the peer's virtualenv exists and imports the peer (cached)."""
    if impl not in _PEER_OK:
        python = _peer_python(impl)
        module = PEER_ENVS[impl][1]
        if not os.path.exists(python):
            _PEER_OK[impl] = (False, f"{impl}: no virtualenv at {python} (see bench/README.md)")
        else:
            done = subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                                  text=True, timeout=300)
            last = (done.stderr.strip().splitlines() or [""])[-1]
            _PEER_OK[impl] = ((True, "") if done.returncode == 0 else
                              (False, f"{impl}: `import {module}` failed: {last}"))
    return _PEER_OK[impl]


def _fast_cpu_backend() -> tuple[bool, str]:
    from rww.ops.scan import auto_backend_name, backend_available

    name = auto_backend_name("cpu")
    if name == "torch":
        return False, ("auto resolves to the reference loop on CPU: "
                       f"{backend_available('numba')[1] or 'numba backend unavailable'}")
    return True, name


# ---------------------------------------------------------------------------- measurement
def measure(benchmark, python: str, key: str, impl: str, device: str = "cpu"):
    workload = wl.parse_key(key)
    benchmark.group = f"{key} {device}: {workload.label}"
    load_before = os.getloadavg()
    worker = Worker(python, key, impl, device)
    try:
        if worker.ready.get("warmup_full"):
            probe = worker.ready["warmup_s"]                 # the warm-up was a full run
        else:
            tick = time.perf_counter()
            worker.call("run")                               # a full untimed run sets the rounds
            probe = time.perf_counter() - tick
        rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(ROUND_BUDGET_S / max(probe, 1e-3))))
        if probe > SINGLE_ROUND_S:
            rounds = 1
        benchmark.pedantic(worker.run, rounds=rounds, iterations=1, warmup_rounds=0)
        memory = worker.call("report")
    finally:
        worker.close()
    ready = worker.ready
    benchmark.extra_info.update({
        "workload": workload.as_dict(), "impl": impl, "device": device,
        "meta": ready["meta"], "build_s": ready["build_s"], "warmup_s": ready["warmup_s"],
        "probe_s": probe, "worker_wall_s": worker.walls, "worker_cpu_s": worker.cpus,
        "memory": {k: v for k, v in memory.items() if k != "event"},
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "environment": report.environment(),
    })
    return ready


@pytest.mark.parametrize("key, impl", CPU_ROWS, ids=[f"{k}-{i}" for k, i in CPU_ROWS])
def test_cpu(benchmark, key, impl):
    if impl in PEER_ENVS:
        ok, why = peer_available(impl)
        if not ok:
            pytest.skip(why)
        python = _peer_python(impl)
    else:
        if impl.startswith("auto"):
            ok, why = _fast_cpu_backend()
            if not ok:
                pytest.skip(why)
        python = sys.executable
    ready = measure(benchmark, python, key, impl, "cpu")
    # Every implementation simulated exactly the same connectome (same bytes, same hash).
    import numpy as np
    n_nodes = wl.parse_key(key).n_nodes
    assert ready["meta"]["sc_sha1"] == wl.connectome_sha1(np.load(connectome_file(n_nodes)))


def _cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as err:
        return False, str(err)
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, ""


@pytest.mark.parametrize("key, impl", GPU_ROWS, ids=[f"{k}-{i}" for k, i in GPU_ROWS])
def test_gpu(benchmark, key, impl):
    ok, why = _cuda()
    if not ok:
        pytest.skip(why)
    if impl == "auto":
        from rww.ops.scan import auto_backend_name
        if auto_backend_name("cuda") == "torch":
            pytest.skip("auto resolves to the reference loop on CUDA (triton backend unavailable)")
    measure(benchmark, sys.executable, key, impl, "cuda")


# ---------------------------------------------------------------------------- consistency
def test_peer_parameters_match_rww():
    """The parameter set handed to every peer is rww's deco2014 preset (with G = G_DECO)."""
    from rww.params import HAEMO_MODELS, get_preset

    preset = get_preset("deco2014")
    expected = dict(preset.defaults, G=wl.G_DECO)
    assert wl.DECO_PARAMS == {k: expected[k] for k in wl.DECO_PARAMS}
    assert set(wl.DECO_PARAMS) == set(expected)
    assert wl.BALLOON == pytest.approx(HAEMO_MODELS[preset.haemo], rel=1e-15)


def test_workload_variants_are_whole_trs_and_shorter():
    for w in wl.all_workloads():
        assert w.n_trs >= 1 and w.n_steps >= 1, w.key
        if w.mode == "fit_epoch":
            assert w.n_trs % w.window_trs == 0, w.key
        if w.variant != "full":
            full = wl.get(w.name)
            assert (w.n_nodes, w.batch, w.dt, w.preset, w.mode) == \
                (full.n_nodes, full.batch, full.dt, full.preset, full.mode), w.key
            assert w.seconds <= full.seconds, w.key
    assert wl.get("W6").n_trs == 1200 and wl.get("W6").n_steps == 8_640_000
    assert wl.get("W8").n_trs == 1200 and wl.get("W8").n_steps == 18_000


def test_connectome_is_deterministic_and_normalised():
    import numpy as np

    a, b = wl.connectome(68), wl.connectome(68)
    assert np.array_equal(a, b) and wl.connectome_sha1(a) == wl.connectome_sha1(b)
    assert np.allclose(a, a.T) and (np.diag(a) == 0).all() and (a >= 0).all()
    assert a.sum(1).mean() == pytest.approx(1.0)


def test_delayed_workloads():
    """W9 (demo connectome, no delays) and W9v5/W9v10 (delays at 5 and 10 m/s) differ only in the
    velocity; the demo connectome is normalised as the synthetic one; the lag conventions (rww and
    TVB: rint(L / (v dt)); cuBNM: one step less far back, at least the current state)."""
    import dataclasses

    import numpy as np

    base = wl.get("W9", "cpu")
    assert base.velocity is None and base.connectome == "demo" and base.key == "W9/cpu"
    assert (base.n_nodes, base.batch, base.dt, base.tr, base.seconds, base.mode, base.preset) == \
        (100, 1, 0.1, 1.0, 10.0, "forward", "deco2014")
    for name, v in (("W9v5", 5.0), ("W9v10", 10.0)):
        w = wl.get(name, "cpu")
        assert w.velocity == v
        same = ("n_nodes", "batch", "seconds", "dt", "tr", "preset", "mode", "variant", "connectome")
        assert all(getattr(w, f) == getattr(base, f) for f in same), name
        assert wl.parse_key(f"{name}/ref").seconds == 1.0
    assert not set(wl.DELAYED) & set(wl.FULL)          # the pytest-benchmark suite is unchanged
    # Lag conventions on a toy matrix: 1.48 -> 1 step (cuBNM 0); 0.25 / 0.5 = 0.5 -> 0 (halves to
    # even; cuBNM's floor of 1 entry back = the current state, 0 steps).
    toy = np.array([[0.0, 0.74], [0.74, 0.0]])
    assert wl.max_lag(toy, 5.0, 0.1) == 1 and wl.max_lag(toy, 5.0, 0.1, "cubnm") == 0
    half = np.array([[0.0, 0.25], [0.25, 0.0]])
    assert wl.max_lag(half, 5.0, 0.1) == 0 and wl.max_lag(half, 5.0, 0.1, "cubnm") == 0
    sc, lengths = wl.demo_connectome()
    assert sc.shape == lengths.shape == (100, 100)
    assert sc.sum(1).mean() == pytest.approx(1.0) and np.allclose(sc, sc.T)
    assert wl.max_lag(lengths, 5.0, 0.1) == 470 and wl.max_lag(lengths, 10.0, 0.1) == 235
    assert wl.max_lag(lengths, 5.0, 0.1, "cubnm") == 469
    assert dataclasses.replace(base, velocity=5.0).label.endswith("delays at 5 m/s")
