"""How much memory a gradient through the scan needs, and the checkpoint interval K that fits.

A gradient holds, at its peak, the ``ceil(T/K)`` checkpoints saved by the forward (6 states per
simulation and region) plus the backward's working set for one segment of K steps, which
depends on the backend (:meth:`rww.ops.scan.ScanBackend.segment_bytes`). With ``w`` floats per
simulation, region and step in that working set, the total ``(6 T/K + w K) B N`` bytes per float
is smallest at ``K* = sqrt(6 T / w)``. The default ``K = ceil(sqrt(T))`` is kept when it fits
the memory budget (recomputing each segment once costs the same at any K, so K changes memory
only, never results); otherwise K* is used, and when even K* does not fit,
:class:`rww.errors.ScanMemoryError` says how many simulations would.

Budget: ``RWW_MEMORY_BUDGET`` (bytes, or with a unit: ``"40GB"``, ``"512MiB"``) when set;
otherwise 90% of the free memory of the CUDA device, or 80% of the available RAM on the CPU
(``MemAvailable`` of ``/proc/meminfo``; unknown elsewhere, then no limit is applied).
"""

from __future__ import annotations

import math
import os
import re

import torch

from ..errors import ScanMemoryError

_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str) -> int:
    """``"40GB"``, ``"512MiB"``, ``"1e9"`` -> bytes. Raises ValueError naming the accepted forms."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"memory size {text!r}: expected a number of bytes, optionally with a "
                         "unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 40GB")
    try:
        value = float(match.group(1)) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"memory size {text!r}: {match.group(1)!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"memory size {text!r}: must be positive")
    return int(value)


def memory_budget(device) -> int | None:
    """Bytes a scan's gradient may use on ``device`` (see the module docstring); None: unknown."""
    env = os.environ.get("RWW_MEMORY_BUDGET")
    if env:
        try:
            return parse_bytes(env)
        except ValueError as err:
            raise ValueError(f"RWW_MEMORY_BUDGET: {err}") from None
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.9 * free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(0.8 * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return None


def default_checkpoint_every(n_steps: int) -> int:
    """Checkpoint interval K minimising O(T/K + K) memory: ceil(sqrt(T)), at least 1."""
    return max(1, math.ceil(math.sqrt(max(n_steps, 1))))


def gradient_bytes(backend, n_steps: int, k: int, batch: int, n_nodes: int, itemsize: int,
                   state_rows: int = 6) -> int:
    """Peak bytes of a gradient through the scan with checkpoint interval ``k``: the checkpoints
    ``(ceil(T/k), state_rows, B, N)`` (6, plus D rows of S_E history with conduction delays of
    up to D steps) plus ``backend.segment_bytes`` for one segment."""
    checkpoints = math.ceil(max(n_steps, 1) / k) * state_rows * batch * n_nodes * itemsize
    return checkpoints + backend.segment_bytes(k, batch, n_nodes, itemsize,
                                               max_delay=state_rows - 6)


def _fmt(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def choose_checkpoint_every(backend, n_steps: int, batch: int, n_nodes: int, itemsize: int,
                            device, budget: int | None = None, state_rows: int = 6) -> int:
    """Checkpoint interval K for a gradient through ``n_steps`` steps (see the module docstring).

    Args:
        backend: the :class:`rww.ops.scan.ScanBackend` that will run the scan.
        n_steps, batch, n_nodes: T, B, N. itemsize: bytes per float (4 or 8).
        device: where the scan runs (for the default budget).
        budget: bytes available (default :func:`memory_budget`).
        state_rows: rows of a checkpoint (6, plus the S_E history's D with delays).

    Returns:
        K, an int in ``[1, max(T, 1)]``.

    Raises:
        rww.errors.ScanMemoryError: no K fits the budget; the message gives the least memory
            needed and how many simulations would fit.
    """
    t = max(n_steps, 1)
    k_default = default_checkpoint_every(t)
    budget = memory_budget(device) if budget is None else budget
    if budget is None:
        return k_default

    def gradient_bytes_k(k):
        return gradient_bytes(backend, t, k, batch, n_nodes, itemsize, state_rows)

    need = gradient_bytes_k(k_default)
    if need <= budget:
        return k_default
    # The working set's floats per (simulation, region, step), from the backend's own estimate.
    per_step = (backend.segment_bytes(2, batch, n_nodes, itemsize, max_delay=state_rows - 6)
                - backend.segment_bytes(1, batch, n_nodes, itemsize, max_delay=state_rows - 6)
                ) / (batch * n_nodes * itemsize)
    k_star = math.sqrt(state_rows * t / per_step) if per_step > 0 else t
    candidates = {min(t, max(1, int(k))) for k in (math.floor(k_star), math.ceil(k_star))}
    best = min(candidates, key=gradient_bytes_k)
    least = gradient_bytes_k(best)
    if least <= budget:
        return best
    fits = max(0, int(batch * budget / least))
    raise ScanMemoryError(
        f"the gradient of {batch} simulation(s) of {n_nodes} regions over {n_steps} steps needs at "
        f"least {_fmt(least)} on {torch.device(device)} (checkpoint interval K = {best}: "
        f"{math.ceil(t / best)} checkpoints and one {best}-step segment's working set, backend "
        f"{backend.name}), more than the {_fmt(budget)} available. Simulate at most {fits} "
        "simulation(s) per call (split the batch; pass sim_offset to keep each member's noise), "
        "shorten the scan (truncated windows), or raise the budget with RWW_MEMORY_BUDGET.",
        needed=least, budget=budget, max_batch=fits)


__all__ = ["choose_checkpoint_every", "default_checkpoint_every", "gradient_bytes",
           "memory_budget", "parse_bytes"]
