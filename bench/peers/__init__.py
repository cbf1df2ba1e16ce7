"""Peers run side by side with rww on the same workloads (see ``bench/README.md``).

Each module here wraps one published simulator, installed from PyPI into its own virtualenv
(``.venv-peers/<name>``; they pin conflicting numpy versions), and exposes
``build(workload, sc, variant) -> PeerRunner``. Only the public API of each peer is used; no
peer code is copied here. ``bench/run_one.py`` loads these modules in the peer's own Python.
"""

from __future__ import annotations


class PeerRunner:
    """What ``bench/run_one.py`` needs: ``warmup()``, ``run()`` (one timed unit of work, results
    materialised) and ``meta`` (version, dtype, integrator, how the run differs from rww's)."""

    def __init__(self, meta: dict):
        self.meta = meta

    def warmup(self):
        self.run()

    def run(self):
        raise NotImplementedError


def check_finite(name: str, array) -> None:
    """Raise if a peer's BOLD is not finite (a benchmark of a diverged run means nothing)."""
    import numpy as np

    a = np.asarray(array)
    if a.size == 0 or not np.isfinite(a).all():
        raise RuntimeError(f"{name}: BOLD is empty or not finite (shape {a.shape})")


def forward_only(workload, peer: str) -> None:
    """Peers are compared on forward simulation with the deco2014 equations only."""
    if workload.mode != "forward" or workload.preset != "deco2014":
        raise ValueError(f"{peer}: only forward deco2014 workloads are compared with peers, "
                         f"not {workload.key} ({workload.mode}, {workload.preset})")
