"""neurolib (``pip install neurolib``): its Wong-Wang model ``WWModel`` (the Deco et al. 2014
two-population equations), on the suite's connectome, duration and dt, with BOLD.

Settings and how they differ from rww's run:
- ``K_gl`` = G, and neurolib multiplies the coupling by J_NMDA as rww does; no delays
  (``Dmat`` = 0);
- float64, Euler at dt = 0.1 ms; noise is an Ornstein-Uhlenbeck input (tau_ou = 5 ms,
  ``sigma_ou`` = sigma) rather than white noise on dS/dt; no clamping of S to [0, 1];
- neurolib 0.6.2's integrator reads ``tau_inh = params["tau_exc"]`` (S_I decays with 100 ms,
  not the 10 ms of the parameter set); this changes the dynamics, not the cost;
- it stores every step of S_E, S_I, r_E, r_I and pre-draws all the noise (memory grows with T);
  BOLD (``run(bold=True)``) is computed after the run from r_E, sampled every 2 s (neurolib's
  fixed 0.5 Hz; rww samples every TR); for a duration that is not a multiple of 2 s neurolib
  computes no BOLD, and the row says so;
- one simulation per call: neurolib has no batch dimension (its parameter exploration runs one
  model per parameter set).
"""

from __future__ import annotations

import numpy as np

from . import PeerRunner, check_finite, forward_only


class NeurolibRunner(PeerRunner):
    def __init__(self, workload, sc, meta):
        super().__init__(meta)
        import workloads as wl
        from neurolib.models.ww import WWModel

        forward_only(workload, "neurolib")
        if workload.batch != 1:
            raise ValueError("neurolib: no batch dimension (one model per simulation)")
        # neurolib samples BOLD every 2 s and computes none for other durations: run those
        # without BOLD (recorded in the row's notes); BOLD is a cheap pass after the run.
        self.bold = abs(workload.seconds / 2.0 - round(workload.seconds / 2.0)) < 1e-9
        if not self.bold:
            meta["notes"] += "; NO BOLD in this row (duration not a multiple of 2 s)"
        p = wl.DECO_PARAMS
        model = WWModel(Cmat=sc, Dmat=np.zeros_like(sc), seed=0)
        q = model.params
        q["dt"] = 0.1
        q["duration"] = workload.seconds * 1000.0
        q["K_gl"] = p["G"]
        q["sigma_ou"] = p["sigma"]
        # neurolib's units: rates in kHz, d in ms, so a in 1/nC over 1000, b in kHz, d in ms.
        q["a_exc"], q["b_exc"], q["d_exc"] = p["a_E"] / 1000, p["b_E"] / 1000, p["d_E"] * 1000
        q["a_inh"], q["b_inh"], q["d_inh"] = p["a_I"] / 1000, p["b_I"] / 1000, p["d_I"] * 1000
        q["tau_exc"], q["tau_inh"] = p["tau_E"], p["tau_I"]
        q["w_exc"], q["w_inh"], q["exc_current"] = p["W_E"], p["W_I"], p["I_0"]
        q["J_NMDA"], q["J_I"], q["w_ee"] = p["J_NMDA"], p["w_IE"], p["w_EE"]
        self.model = model

    def run(self):
        self.model.run(bold=self.bold)
        out = self.model.outputs["BOLD"]["BOLD"] if self.bold else self.model.outputs["r_exc"]
        check_finite("neurolib", out)


def build(workload, sc, variant="neurolib"):
    import importlib.metadata as md

    meta = {"peer": "neurolib", "versions": {"neurolib": md.version("neurolib"),
                                             "numba": md.version("numba"),
                                             "numpy": np.__version__},
            "dtype": "float64", "integrator": "Euler dt=0.1 ms, OU input noise; BOLD after the run",
            "install": "pip install neurolib",
            "notes": "WWModel, no delays, OU noise (tau 5 ms), all steps stored, BOLD from r_E "
                     "every 2 s; its integrator uses tau_exc for S_I (neurolib 0.6.2)"}
    return NeurolibRunner(workload, sc, meta)
