"""The Virtual Brain (``pip install tvb-library``): ``ReducedWongWangExcInh`` (Deco et al. 2014)
on the suite's connectome, duration and dt, with TVB's BOLD monitor.

Settings and how they differ from rww's run:
- connectivity = the suite's matrix, zero tract lengths (no delays), ``Linear(a=1)`` coupling,
  the model's ``G`` = G (TVB multiplies the coupling by J_N as rww does);
- float64, ``EulerStochastic`` at dt = 0.1 ms, ``Additive`` noise with nsig = sigma**2 / 2 (TVB's
  noise term is sqrt(2 nsig dt) xi, rww's sigma sqrt(dt) xi); S clamped to [0, 1] by the model's
  state-variable boundaries;
- BOLD from TVB's ``Bold`` monitor (period = TR): a convolution of S_E with an HRF kernel
  (Volterra, 20 s), not the Balloon-Windkessel ODE rww integrates;
- one simulation per call (TVB has no batch dimension); TVB's simulator loop is Python over
  steps, with the model's derivative compiled by numba.

Conduction delays (the delayed workloads ``W9v5``, ``W9v10``): ``tract_lengths`` = the lengths in
mm and ``speed`` = the velocity in mm/ms (= m/s). How they differ from rww's (TVB 2.x,
``Connectivity.set_idelays`` and ``simulator/history.py``):
- rounding and lag: the same as rww's, ``idelays = rint(L / speed / dt)`` (double precision,
  half to even), and the coupling of step s reads the state after step ``s - 1 - idelay``, so
  lag 0 is the current S (rww's convention; cuBNM reads one step less far back);
- history: TVB's ``SparseHistory`` keeps ``max lag + 1`` states of every coupled variable; with
  no initial conditions given (as here, with or without delays) the whole history is drawn by
  ``model.initial()``: random, uniform over the state-variable ranges (S_E, S_I in [0, 1]), not
  constant at one initial S_E as in rww and cuBNM. The first ~50 ms of a delayed run therefore
  see different inputs (timing is not affected);
- the same Python loop runs with and without delays (TVB always reads the coupling through the
  history buffer; without delays it is one state deep): delays change the gather's indices, not
  the work per step;
- BOLD: TVB's ``Bold`` monitor (HRF convolution of the delayed-coupling model's S_E), as without
  delays.
"""

from __future__ import annotations

import numpy as np

from . import PeerRunner, check_finite, forward_only

SUPPORTS_DELAYS = True


class TvbRunner(PeerRunner):
    def __init__(self, workload, sc, meta, lengths=None):
        super().__init__(meta)
        import workloads as wl
        from tvb.simulator import coupling, integrators, models, monitors, noise, simulator
        from tvb.datatypes import connectivity

        forward_only(workload, "tvb")
        if workload.batch != 1:
            raise ValueError("tvb: no batch dimension (one simulator per simulation)")
        p = wl.DECO_PARAMS
        n = workload.n_nodes
        if lengths is None:
            tract_lengths, speed = np.zeros((n, n)), np.inf
        else:       # conduction delays: lengths in mm, speed in mm/ms (= the velocity in m/s)
            tract_lengths, speed = np.array(lengths, dtype=np.float64), float(workload.velocity)
        conn = connectivity.Connectivity(
            weights=np.array(sc, dtype=np.float64), tract_lengths=tract_lengths,
            region_labels=np.array([f"r{i}" for i in range(n)]), centres=np.zeros((n, 3)),
            speed=np.array([speed]))
        conn.configure()
        a = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
        model = models.ReducedWongWangExcInh(
            a_e=a(p["a_E"]), b_e=a(p["b_E"]), d_e=a(p["d_E"]), gamma_e=a(p["gamma_E"]),
            tau_e=a(p["tau_E"]), w_p=a(p["w_EE"]), W_e=a(p["W_E"]), J_N=a(p["J_NMDA"]),
            a_i=a(p["a_I"]), b_i=a(p["b_I"]), d_i=a(p["d_I"]), gamma_i=a(p["gamma_I"]),
            tau_i=a(p["tau_I"]), W_i=a(p["W_I"]), J_i=a(p["w_IE"]), I_o=a(p["I_0"]),
            G=a(p["G"]), lamda=a(0.0))
        integ = integrators.EulerStochastic(
            dt=workload.dt, noise=noise.Additive(nsig=a(p["sigma"] ** 2 / 2.0)))
        self.sim = simulator.Simulator(
            connectivity=conn, model=model, coupling=coupling.Linear(a=a(1.0)),
            integrator=integ, monitors=(monitors.Bold(period=workload.tr * 1000.0),),
            simulation_length=workload.seconds * 1000.0)
        self.sim.configure()
        self.max_lag = int(self.sim.connectivity.idelays.max())
        if lengths is not None:
            self.meta["delays"]["max_lag_steps"] = self.max_lag

    def run(self):
        ((_, bold),) = self.sim.run()
        check_finite("tvb", bold)


def build(workload, sc, variant="tvb", lengths=None):
    import importlib.metadata as md

    meta = {"peer": "TVB", "versions": {"tvb-library": md.version("tvb-library"),
                                        "numba": md.version("numba"), "numpy": np.__version__},
            "dtype": "float64",
            "integrator": "EulerStochastic dt=0.1 ms; Bold monitor (HRF convolution)",
            "install": "pip install tvb-library",
            "notes": "ReducedWongWangExcInh, no delays, additive noise nsig=sigma^2/2, BOLD by "
                     "TVB's HRF-kernel monitor, Python loop over steps"}
    if lengths is not None:
        meta["notes"] = meta["notes"].replace("no delays", f"delays at {workload.velocity:g} m/s "
                                              "(tract_lengths, speed in mm/ms)")
        meta["notes"] += (", lags rint(L / (speed dt)) steps as rww's, history drawn at random by "
                          "model.initial() over the state ranges")
        meta["delays"] = {"velocity_m_per_s": float(workload.velocity),
                          "convention": "TVB: rint(L / (speed dt)) steps before the current step "
                                        "(as rww)"}
    return TvbRunner(workload, sc, meta, lengths)
