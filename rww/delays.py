"""Conduction delays: tract lengths and a conduction velocity turned into whole-step lags.

The delayed coupling input to region i is ``G J_NMDA sum_j C_ij S_E,j(t - tau_ij)`` with
``tau_ij = L_ij / v`` (tract length L in mm, velocity v in m/s = mm/ms), rounded to whole steps
of dt as TVB rounds them (``numpy.rint(tau / dt)``, round half to even; TVB
``Connectivity.set_idelays``): a lag of 0 steps is the current S_E, the no-delay coupling. cuBNM
rounds the same way but counts one step more (it stores S_E after each step and reads it
``max(rint(tau / dt), 1)`` entries back, i.e. ``rint(tau / dt) - 1`` steps before the current
one, and never less than the current one), so its delays are shorter by one step than rww's and
TVB's for the same lengths and velocity.

The S_E history the lags read is part of the scan's state (:data:`rww.ops.spec.STATE_NAMES`
plus ``D`` rows, ``D`` the longest lag): checkpoints carry it, a run continued with ``t0`` equals
one long run, and its memory per checkpoint is ``D x B x N`` floats. Its default at the start of
a simulation is constant, equal to the initial S_E (TVB and cuBNM do the same).
"""

from __future__ import annotations

import math

import torch

#: Default conduction velocity [m/s] (Deco et al. 2009, PNAS 106:10302, and TVB's default
#: ``conduction_speed`` of 3 mm/ms; cuBNM's examples use 1-10 m/s).
DEFAULT_VELOCITY = 3.0


def delay_steps(lengths: torch.Tensor, velocity, dt: float) -> torch.Tensor:
    """Lags in whole steps, ``rint(L / (v dt))``.

    Args:
        lengths: tract lengths [mm], ``(N, N)`` (row: receiving region, column: sending one, as
            the connectome), non-negative and finite.
        velocity: conduction velocity [m/s = mm/ms]: a positive number, or a ``(B,)`` tensor,
            one per simulation.
        dt: step [ms].

    Returns:
        int64 lags ``(N, N)`` for a scalar velocity, ``(B, N, N)`` for a ``(B,)`` one.

    Raises:
        ValueError: lengths not square, negative or non-finite; velocity not positive; dt not
            positive.
    """
    lengths = torch.as_tensor(lengths, dtype=torch.float64)
    if lengths.dim() != 2 or lengths.shape[0] != lengths.shape[1]:
        raise ValueError(f"lengths: expected a square (N, N) matrix of tract lengths in mm, got "
                         f"shape {tuple(lengths.shape)}")
    if not torch.isfinite(lengths).all() or (lengths < 0).any():
        raise ValueError("lengths: tract lengths must be finite and non-negative [mm]; replace "
                         "missing entries (NaN) by 0 where there is no connection")
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt: must be a positive number of ms, got {dt!r}")
    v = torch.as_tensor(velocity, dtype=torch.float64, device=lengths.device)
    if v.dim() > 1 or not torch.isfinite(v).all() or (v <= 0).any():
        raise ValueError(f"velocity: must be a positive number of m/s (or a (B,) tensor of them), "
                         f"got {velocity!r}")
    if v.dim() == 1:
        return torch.round(lengths / (v.view(-1, 1, 1) * dt)).to(torch.int64)
    return torch.round(lengths / (v * dt)).to(torch.int64)


def history_bytes(max_delay: int, batch: int, n_nodes: int, itemsize: int = 4) -> int:
    """Bytes of the S_E history in one state (and so in each checkpoint of a gradient):
    ``max_delay * batch * n_nodes * itemsize``."""
    return max_delay * batch * n_nodes * itemsize


__all__ = ["DEFAULT_VELOCITY", "delay_steps", "history_bytes"]
