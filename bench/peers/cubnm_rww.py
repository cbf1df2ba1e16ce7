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
"""

from __future__ import annotations

import numpy as np

from . import PeerRunner, check_finite, forward_only


class CubnmRunner(PeerRunner):
    def __init__(self, workload, sc, meta):
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
            sim_seed=0, sim_verbose=False)
        self.group.N = workload.batch
        b, n = workload.batch, workload.n_nodes
        self.group.param_lists["G"] = np.full(b, p["G"])
        self.group.param_lists["w_p"] = np.full((b, n), p["w_EE"])
        self.group.param_lists["J_N"] = np.full((b, n), p["J_NMDA"])
        self.group.param_lists["wIE"] = np.full((b, n), p["w_IE"])
        self.group.param_lists["sigma"] = np.full((b, n), p["sigma"])
        self.group._set_default_params()

    def run(self):
        self.group.run()
        check_finite("cubnm", self.group.sim_bold)


def _whole_ms(seconds: float):
    from decimal import Decimal

    return Decimal(round(seconds * 1000)) / Decimal(1000)


def build(workload, sc, variant="cubnm"):
    import cubnm

    meta = {"peer": "cuBNM", "versions": {"cubnm": cubnm.__version__, "numpy": np.__version__},
            "dtype": "float64", "integrator": "Euler-Maruyama dt=0.1 ms; Balloon every 1 ms",
            "install": "pip install cubnm",
            "notes": "CPU mode (force_cpu=True), FIC off, FC/FCD off, 30-s noise segment reused "
                     "shuffled, one OpenMP thread per simulation"}
    return CubnmRunner(workload, sc, meta)
