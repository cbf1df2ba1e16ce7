"""cuBNM (``pip install cubnm``) in CPU mode (``force_cpu=True``): its reduced Wong-Wang model
``rWWSimGroup`` (Deco et al. 2014 equations), on the suite's connectome, duration, dt and TR.

Settings and how they differ from rww's run:
- FIC off (``do_fic=False``: the connectome-wide analytical FIC would change w_IE, and rww's
  workloads use w_IE = 1), FC and FCD off (``do_fc=False, do_fcd=False``: rww computes neither),
  no BOLD discarded (``bold_remove_s=0``);
- float64, Euler-Maruyama at dt = 0.1 ms; its Balloon-Windkessel is advanced every ``bw_dt`` =
  1 ms (cuBNM's default; rww advances it every 0.1-ms step);
- noise: cuBNM draws a 30-s noise segment once per session and reuses it, shuffled, for longer
  runs (``noise_segment_length=30``); that is done in the untimed warm-up;
- simulations of a batch run in parallel, one per OpenMP thread.

Conduction delays (the delayed workloads ``W9v5``, ``W9v10``: ``sc_dist`` = the tract lengths in
mm, ``param_lists["v"]`` = the velocity in m/s, which turns ``do_delay`` on), and how they differ
from rww's (read from cuBNM's ``src/ext/bnm.cpp``, CPU path ``bnm``):
- rounding: cuBNM computes ``rintf(L / (v dt))`` (single precision, half to even) and stores
  ``max(that, 1)``; rww and TVB compute ``rint(L / (v dt))`` in double precision;
- one-step offset: cuBNM's circular buffer holds S_E after each step, and the coupling of a step
  reads the entry ``lag`` places back, where 1 is the newest, i.e. rww's lag 0 (the current S_E).
  So cuBNM's delays are one step (0.1 ms) shorter than rww's and TVB's for the same L and v, and
  never shorter than the current state: D (the longest lag before the current step) is 469 at
  5 m/s and 234 at 10 m/s for the demo's lengths, against rww's 470 and 235;
- the lag matrix is built from the lower triangle and mirrored (cuBNM assumes symmetric lengths;
  the demo's are symmetric) and the diagonal is lag 1 (the current S_E);
- history: every entry starts at the initial S_E (0.001), as rww's constant history;
- cuBNM warns that delays at dt < 1 ms are slow ("it is recommended to set the model dt to >=
  1.0 msec"); the workloads keep rww's dt = 0.1 ms.
"""

from __future__ import annotations

import numpy as np

from . import PeerRunner, check_finite, forward_only

SUPPORTS_DELAYS = True


class CubnmRunner(PeerRunner):
    def __init__(self, workload, sc, meta, lengths=None):
        super().__init__(meta)
        import workloads as wl
        from cubnm import sim

        forward_only(workload, "cubnm")
        p = wl.DECO_PARAMS
        # cuBNM checks that the duration is whole milliseconds through Decimal(duration), which
        # fails for binary floats such as 0.2; round to the millisecond first.
        self.group = sim.rWWSimGroup(
            duration=round(workload.seconds, 3) if workload.seconds >= 1 else
            _whole_ms(workload.seconds), TR=workload.tr, sc=sc, dt="0.1", force_cpu=True,
            do_fc=False, do_fcd=False, gof_terms=[], bold_remove_s=0, do_fic=False,
            sim_seed=0, sim_verbose=False,
            **({} if lengths is None else {"sc_dist": np.array(lengths, dtype=np.float64)}))
        self.group.N = workload.batch
        b, n = workload.batch, workload.n_nodes
        self.group.param_lists["G"] = np.full(b, p["G"])
        self.group.param_lists["w_p"] = np.full((b, n), p["w_EE"])
        self.group.param_lists["J_N"] = np.full((b, n), p["J_NMDA"])
        self.group.param_lists["wIE"] = np.full((b, n), p["w_IE"])
        self.group.param_lists["sigma"] = np.full((b, n), p["sigma"])
        if lengths is not None:
            if not self.group.do_delay:
                raise RuntimeError("cubnm: sc_dist given but do_delay is off")
            self.group.param_lists["v"] = np.full(b, float(workload.velocity))
        self.group._set_default_params()

    def run(self):
        self.group.run()
        check_finite("cubnm", self.group.sim_bold)


def _whole_ms(seconds: float):
    from decimal import Decimal

    return Decimal(round(seconds * 1000)) / Decimal(1000)


def build(workload, sc, variant="cubnm", lengths=None):
    import cubnm

    meta = {"peer": "cuBNM", "versions": {"cubnm": cubnm.__version__, "numpy": np.__version__},
            "dtype": "float64", "integrator": "Euler-Maruyama dt=0.1 ms; Balloon every 1 ms",
            "install": "pip install cubnm",
            "notes": "CPU mode (force_cpu=True), FIC off, FC/FCD off, 30-s noise segment reused "
                     "shuffled, one OpenMP thread per simulation"}
    if lengths is not None:
        import workloads as wl

        meta["notes"] += (f"; conduction delays at {workload.velocity:g} m/s (sc_dist = tract "
                          "lengths): lag max(rintf(L / (v dt)), 1) entries back in a history "
                          "whose newest entry is the current S_E, i.e. one step shorter than "
                          "rww's, history constant at the initial S_E")
        meta["delays"] = {"velocity_m_per_s": float(workload.velocity),
                          "max_lag_steps": wl.max_lag(lengths, workload.velocity, workload.dt,
                                                      "cubnm"),
                          "convention": "cuBNM: max(rintf(L / (v dt)), 1) - 1 steps before the "
                                        "current step"}
    return CubnmRunner(workload, sc, meta, lengths)
