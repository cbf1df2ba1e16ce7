"""The named benchmark workloads, as data.

Every number this suite reports is for one of these workloads, at one of its *variants*:

``full``
    The workload as named (``W1`` = one 60-second simulation of 68 regions, ...). The GPU
    workloads run at this size.
``cpu``
    The same connectome size, batch, dt, preset and kind of work over a shorter simulated time
    (and, where a whole number of TRs needs it, a shorter TR), so that the whole CPU suite runs in
    minutes on a 2-core machine. Timings are reported as *wall seconds per simulated second*
    (``wall / simulated seconds``), which is what the full workload costs per simulated second
    as long as the cost is linear in the length (it is: one step costs the same at step 10 and at
    step 10**6; the scaling figure checks it).
``ref``
    Shorter still: the length at which the plain PyTorch reference loop (``backend="torch"``)
    runs in seconds. Our fast backend runs this variant too, in the same session, so that the
    ratio "ours / reference" compares the same work measured the same way.

A TR changed in a reduced variant changes only how often BOLD is sampled (one sample per
thousands of steps): it does not change the cost per step.

This module needs only the standard library and numpy, because the peers' runners (in their own
virtual environments, without torch) import it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

import numpy as np

# Global coupling used by every deco2014 workload and every peer (the connectome is normalised to a
# mean row sum of 1, see connectome()); with the Deco 2014 defaults and no FIC this keeps the
# network in its low-activity state, far from divergence.
G_DECO = 0.5

# The deco2014 parameters every peer is given (rww's defaults, G = G_DECO; units: rates in Hz, time
# in ms, currents in nA). test_workloads.py checks them against rww.params so they cannot drift.
DECO_PARAMS = dict(G=G_DECO, w_EE=1.4, w_IE=1.0, w_EI=1.0, J_NMDA=0.15, I_0=0.382, W_E=1.0,
                   W_I=0.7, sigma=0.01, a_E=310.0, b_E=125.0, d_E=0.16, a_I=615.0, b_I=177.0,
                   d_I=0.087, tau_E=100.0, tau_I=10.0, gamma_E=0.641e-3, gamma_I=1e-3)
BALLOON = dict(kappa=1 / 0.65, gamma_h=1 / 0.41, tau_0=0.98, alpha=0.32, rho=0.34, V_0=0.02,
               k_1=7 * 0.34, k_2=2.0, k_3=2 * 0.34 - 0.2)   # Deco 2014's Balloon (time constants)

# cuBNM's published GPU anchors (Saberi et al., cuBNM: GPU-Accelerated Brain Network Modeling,
# bioRxiv 2025, doi:10.1101/2025.11.13.688224, on an NVIDIA A100, as quoted in the GPU-validation
# issue): about 100 simulations of W4 per second (N = 100, 60 s at dt = 0.1 ms: 6e9 node-steps
# per second), and 3.4 us per step for one simulation. Not measured by this suite (cuBNM's GPU
# build is not run here, and the GPU differs); the GPU report compares against them as anchors,
# not as same-session ratios.
CUBNM_A100_W4_SIMS_PER_S = 100.0
CUBNM_A100_SINGLE_US_PER_STEP = 3.4

# whobpyt's time per epoch of the paper's HCP fit on a 2-core CPU machine of this kind, quoted
# from the benchmark issue ("whobpyt took 20.6 s per epoch"); not measured by this suite (whobpyt
# is not on PyPI). W8's target is 20x faster than this.
WHOBPYT_EPOCH_SECONDS = 20.6


@dataclass(frozen=True)
class Workload:
    """One benchmark workload.

    Attributes:
        name: ``"W1"`` ... ``"W8"``, with ``variant`` the size it is run at.
        title: what it stands for.
        n_nodes: connectome size N.
        batch: simulations run together B.
        seconds: simulated time per simulation [s] (for a fit epoch: the scan length).
        dt: integration step (ms for deco2014; the paper's unit for griffiths2022).
        tr: BOLD sampling interval [s].
        preset: ``"deco2014"`` or ``"griffiths2022"``.
        mode: ``"forward"`` (simulate BOLD, no gradient), ``"gradient"`` (simulate, then
            backpropagate a loss on the BOLD to the parameters through the checkpointed scan),
            ``"fit_epoch"`` (one epoch of :func:`rww.fit.fit`).
        devices: where the workload is run: ``("cuda",)`` for GPU-only workloads; CPU variants are
            defined for every workload and run on CPU.
        window_trs: TRs per truncated-BPTT window (fit_epoch only).
        variant: ``"full"``, ``"cpu"`` or ``"ref"`` (see the module docstring).
        target: the performance goal, in words, with its source.
        notes: anything a reader needs to interpret the number.
        connectome: ``"synthetic"`` (:func:`connectome`, the W1-W8 default) or ``"demo"`` (the
            embedded HCP Schaefer-100 connectome, ``rww.data.load_demo``, normalised to a mean
            row sum of 1, with its tract lengths; written to ``.npy`` files by the driver, since
            the peers' virtualenvs cannot import rww).
        velocity: conduction velocity [m/s = mm/ms] for conduction delays from the connectome's
            tract lengths; ``None``: no delays (the W1-W8 default).
    """

    name: str
    title: str
    n_nodes: int
    batch: int
    seconds: float
    dt: float
    tr: float
    preset: str = "deco2014"
    mode: str = "forward"
    devices: tuple = ("cpu", "cuda")
    window_trs: int | None = None
    variant: str = "full"
    target: str = ""
    notes: str = ""
    connectome: str = "synthetic"
    velocity: float | None = None

    @property
    def key(self) -> str:
        """``"W1/cpu"``: the name and variant, used as the row key everywhere."""
        return f"{self.name}/{self.variant}"

    @property
    def n_trs(self) -> int:
        """Number of TRs; the simulated time must be a whole number of TRs."""
        n = round(self.seconds / self.tr)
        if n < 1 or abs(n * self.tr - self.seconds) > 1e-9 * self.seconds:
            raise ValueError(f"{self.key}: {self.seconds} s is not a whole number of TRs of {self.tr} s")
        return n

    @property
    def n_steps(self) -> int:
        """Integration steps per simulation (deco2014: dt in ms; griffiths2022: dt in s)."""
        scale = 1000.0 if self.preset == "deco2014" else 1.0
        return round(self.seconds * scale / self.dt)

    @property
    def label(self) -> str:
        """Short human description of the size, e.g. ``"N=68 B=1 10 s dt=0.1 ms"``."""
        unit = "ms" if self.preset == "deco2014" else "(paper units)"
        what = {"forward": "forward", "gradient": "forward+backward",
                "fit_epoch": f"fit epoch, {self.window_trs}-TR windows"}[self.mode]
        length = f"{self.n_trs} TRs" if self.mode == "fit_epoch" else f"{self.seconds:g} s"
        extra = ""
        if self.connectome != "synthetic":
            extra += f", {self.connectome} connectome"
        if self.velocity is not None:
            extra += f", delays at {self.velocity:g} m/s"
        return (f"N={self.n_nodes} B={self.batch} {length} dt={self.dt:g} {unit} "
                f"TR={self.tr:g} s, {self.preset}, {what}{extra}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(key=self.key, n_trs=self.n_trs, n_steps=self.n_steps, label=self.label)
        d["devices"] = list(self.devices)
        return d


def _w(**kw) -> Workload:
    return Workload(**kw)


# The full workloads. Targets: DESIGN.md section 4 (physical limits), the benchmark issue.
FULL: dict[str, Workload] = {w.name: w for w in (
    _w(name="W1", title="single simulation", n_nodes=68, batch=1, seconds=60.0, dt=0.1, tr=1.0,
       target="CPU: <= 2 us per step at 68 nodes (DESIGN.md 4), i.e. <= 0.02 wall s per "
              "simulated s, and >= 25x faster than the reference loop (CPU-backend issue); GPU: "
              "latency-bound, ~1 us per step",
       notes="Desikan-Killiany-sized connectome (68 cortical regions)."),
    _w(name="W2", title="batch of 64 simulations", n_nodes=68, batch=64, seconds=60.0, dt=0.1,
       tr=1.0, target="throughput: the batch should cost much less than 64 single simulations",
       notes="a parameter sweep or noise ensemble: 64 parameter sets on one connectome."),
    _w(name="W3", title="gradient of a 60 s simulation (checkpointed)", n_nodes=68, batch=1,
       seconds=60.0, dt=0.1, tr=1.0, mode="gradient",
       target="forward+backward at most 4x the forward (W1) (CPU-backend issue)",
       notes="loss = mean(BOLD^2) (the loss does not change the cost: the adjoint sweeps the whole "
             "scan); learnable G (scalar) and w_IE (per region); checkpoint interval "
             "ceil(sqrt(steps))."),
    _w(name="W4", title="throughput, cuBNM's published workload", n_nodes=100, batch=32768,
       seconds=60.0, dt=0.1, tr=1.0, devices=("cuda",),
       target="GPU: bounded near 5e9 simulation-steps/s on an H100, ~500,000 simulated s per "
              "wall s (DESIGN.md 4)",
       notes="GPU only; the CPU variant keeps B=32768 and N=100 for a few steps (at this "
             "batch the cost per step does not depend on the length), to put the CPU's "
             "throughput in the same units."),
    _w(name="W5", title="single simulation, 100 regions", n_nodes=100, batch=1, seconds=60.0,
       dt=0.1, tr=1.0, devices=("cuda",),
       target="GPU: latency-bound, about 1 us per step (DESIGN.md 4): ~0.01 wall s per simulated s",
       notes="GPU workload; the CPU variant is for comparison."),
    _w(name="W6", title="full-length gradient of one HCP scan", n_nodes=94, batch=1,
       seconds=864.0, dt=0.1, tr=0.72, mode="gradient", devices=("cuda",),
       target="fits in memory: O(B*N*(T/K + K)) with K = ceil(sqrt(T)) instead of O(B*N*T) "
              "(8.64 million steps)",
       notes="1200 TRs of 0.72 s (14.4 min) at dt = 0.1 ms, backpropagated in one pass; peak "
             "memory is the point. GPU workload; on CPU run at reduced length: time is scaled "
             "per simulated second, memory is measured at the reduced length (the scaling figure "
             "shows how it grows with T)."),
    _w(name="W7", title="single simulation, 1000 regions", n_nodes=1000, batch=1, seconds=60.0,
       dt=0.1, tr=1.0,
       target="coupling-bound: 2*N^2 = 2e6 flops per step",
       notes="a fine parcellation; the coupling C @ S_E dominates."),
    _w(name="W8", title="one epoch of the paper's HCP fit", n_nodes=83, batch=1, seconds=900.0,
       dt=0.05, tr=0.75, preset="griffiths2022", mode="fit_epoch", window_trs=20,
       target=f">= 20x faster than whobpyt's {WHOBPYT_EPOCH_SECONDS} s per epoch, i.e. <= "
              f"{WHOBPYT_EPOCH_SECONDS / 20:.2f} s per epoch",
       notes="Griffiths et al. 2022's HCP fit with the settings of `rww fit --demo --paper` "
             "(rww/cli/fit.py, read from it at run time): preset griffiths2022, 83 regions "
             "(the suite's connectome), 1200 TRs of 0.75 s (15 steps of 0.05 per TR, whobpyt "
             "v0.2.0's count), 20-TR windows with the state detached between windows, one Adam "
             "step (lr 0.01) per window (60 per epoch), preceded by the demo's 10-TR burn-in "
             "without gradient; learnable G, w_EE, w_IE, w_EI; loss = the paper's "
             "-log(0.5 + 0.5 r) FC term + bifurcation + entropy terms (weights 1) against a "
             "target FC (of a synthetic scan, target_bold); batch 1. whobpyt's 20.6 s is "
             "quoted, not measured here."),
)}


# Conduction delays (the delays issue's benchmark row): one simulation of the demo connectome (HCP
# Schaefer-100, the connectome whose tract lengths rww ships) without delays, the ratio's base,
# and with delays from its tract lengths at 5 and at 10 m/s. Kept out of FULL so that the
# pytest-benchmark suite (test_workloads.py, whose rows are built from FULL) is unchanged; they are
# timed by bench/delays.py, interleaved, against cuBNM and TVB with the same lengths and velocity.
DELAYED: dict[str, Workload] = {w.name: w for w in (
    _w(name="W9", title="single simulation, demo connectome, no delays", n_nodes=100, batch=1,
       seconds=60.0, dt=0.1, tr=1.0, devices=("cpu",), connectome="demo",
       target="the base of W9v5 and W9v10's ratios (same connectome, no delays)",
       notes="W1's work on the demo connectome (100 regions)."),
    _w(name="W9v5", title="single simulation, demo connectome, delays at 5 m/s", n_nodes=100,
       batch=1, seconds=60.0, dt=0.1, tr=1.0, devices=("cpu",), connectome="demo", velocity=5.0,
       target="cost of conduction delays: time over W9's (same run)",
       notes="lags rint(L / (v dt)) steps (rww.delays.delay_steps): up to 470 steps (47 ms)."),
    _w(name="W9v10", title="single simulation, demo connectome, delays at 10 m/s", n_nodes=100,
       batch=1, seconds=60.0, dt=0.1, tr=1.0, devices=("cpu",), connectome="demo", velocity=10.0,
       target="cost of conduction delays: time over W9's (same run)",
       notes="lags rint(L / (v dt)) steps (rww.delays.delay_steps): up to 235 steps (23.5 ms)."),
)}

# Reduced variants: (simulated seconds, TR) per workload; N, B, dt, preset and mode stay those of
# the full workload. Chosen so that the whole CPU suite, peers included, runs in about 10-15
# minutes on a 2-core machine with the compiled CPU backend, and the reference loop takes seconds
# per run on the "ref" variant.
_CPU = {"W1": (10.0, 1.0), "W2": (1.0, 1.0), "W3": (2.0, 1.0), "W4": (0.001, 0.001),
        "W5": (10.0, 1.0), "W6": (14.4, 0.72), "W7": (2.0, 1.0), "W8": (900.0, 0.75)}
_REF = {"W1": (0.2, 0.1), "W2": (0.02, 0.02), "W3": (0.1, 0.1), "W4": (0.0002, 0.0002),
        "W5": (0.2, 0.1), "W6": (0.1, 0.1), "W7": (0.2, 0.1), "W8": (45.0, 0.75)}
# W9*: the cpu variant is W1's 10 s; ref (1 s) is for the slow torch-checkpoint path and quick checks.
for _name in DELAYED:
    _CPU[_name], _REF[_name] = (10.0, 1.0), (1.0, 1.0)


def get(name: str, variant: str = "full") -> Workload:
    """The workload ``name`` (``"W1"``..``"W8"``, or a delayed one, ``"W9"``, ``"W9v5"``,
    ``"W9v10"``) at ``variant`` (``"full"``, ``"cpu"``, ``"ref"``)."""
    base = FULL.get(name) or DELAYED.get(name)
    if base is None:
        raise KeyError(f"unknown workload {name!r}; choose one of {sorted(FULL) + sorted(DELAYED)}")
    if variant == "full":
        return base
    table = {"cpu": _CPU, "ref": _REF}.get(variant)
    if table is None:
        raise KeyError(f"unknown variant {variant!r}; choose full, cpu or ref")
    seconds, tr = table[name]
    return replace(base, seconds=seconds, tr=tr, variant=variant, devices=("cpu",))


def max_lag(lengths: np.ndarray, velocity: float, dt: float, convention: str = "rww") -> int:
    """The longest conduction lag in steps before the current state, from tract lengths [mm],
    velocity [m/s] and dt [ms]: ``rint(L / (v dt))`` for rww and TVB (lag 0 = the current S_E);
    cuBNM stores ``max(rint(L / (v dt)), 1)`` (rounded in single precision, ``rintf``) and reads
    that many entries back in a history whose newest entry is the current S_E, i.e. one step
    less far back (``convention="cubnm"`` returns that count minus 1)."""
    if convention == "cubnm":
        lags = np.maximum(np.rint((lengths / (velocity * dt)).astype(np.float32)), 1)
        return int(lags.max()) - 1
    return int(np.rint(lengths / (velocity * dt)).max())


def parse_key(key: str) -> Workload:
    """``"W1/cpu"`` -> :func:`get` ``("W1", "cpu")``."""
    name, _, variant = key.partition("/")
    return get(name, variant or "full")


def all_workloads() -> list[Workload]:
    """Every workload at every variant, in W1..W8 order (full, cpu, ref), then the delayed ones."""
    return [get(n, v) for n in (*FULL, *DELAYED) for v in ("full", "cpu", "ref")]


def connectome(n_nodes: int, seed: int = 0) -> np.ndarray:
    """A deterministic synthetic structural connectome ``(N, N)`` float64: symmetric, zero diagonal,
    non-negative, normalised to a mean row sum of 1.

    Regions sit at random points on a unit sphere; weights fall off exponentially with distance
    (length constant 0.4) times a log-normal factor (sigma 1), like tractography weights. Every
    simulator in the suite gets this same matrix (its SHA-1 is recorded with each result).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    pos = rng.standard_normal((n_nodes, 3))
    pos /= np.linalg.norm(pos, axis=1, keepdims=True)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    w = np.exp(-dist / 0.4) * np.exp(rng.standard_normal((n_nodes, n_nodes)))
    w = (w + w.T) / 2.0
    np.fill_diagonal(w, 0.0)
    if n_nodes > 1:
        w /= w.sum(axis=1).mean()
    return w


def connectome_sha1(sc: np.ndarray) -> str:
    """First 12 hex digits of the SHA-1 of the float64 matrix's bytes."""
    return hashlib.sha1(np.ascontiguousarray(sc, dtype=np.float64).tobytes()).hexdigest()[:12]


def demo_connectome() -> tuple[np.ndarray, np.ndarray]:
    """The demo connectome of the W9 workloads: ``(sc, lengths)``, float64 ``(100, 100)``; sc =
    ``rww.data.load_demo().sc`` (HCP Schaefer-100, symmetric) divided by its mean row sum (as
    :func:`connectome` is normalised, for deco2014 at ``G_DECO``), lengths = its tract lengths
    [mm]. Needs rww (torch): only the driver calls it; workers get the arrays as ``.npy``."""
    from rww.data import load_demo

    demo = load_demo(include_bold=False)
    sc = np.asarray(demo.sc, dtype=np.float64)
    lengths = np.asarray(demo.tract_lengths, dtype=np.float64)
    return sc / sc.sum(axis=1).mean(), lengths


def target_bold(n_trs: int, n_nodes: int, seed: int = 1) -> np.ndarray:
    """A deterministic ``(T, N)`` stand-in for an HCP BOLD scan (W8's fit target): noise with a
    shared component, so its FC is a non-trivial correlation matrix."""
    rng = np.random.Generator(np.random.PCG64(seed))
    shared = rng.standard_normal((n_trs, 1))
    return 0.5 * shared + rng.standard_normal((n_trs, n_nodes))


__all__ = ["Workload", "FULL", "DELAYED", "get", "max_lag", "demo_connectome", "parse_key",
           "all_workloads", "connectome", "connectome_sha1", "target_bold", "G_DECO", "DECO_PARAMS", "BALLOON", "WHOBPYT_EPOCH_SECONDS"]
