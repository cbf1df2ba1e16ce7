"""Warnings about implausible settings and states: what a reader of a summary should know before
trusting a simulation (every check says what it saw and what to do).

:func:`check` is what ``rww simulate`` and ``rww fit`` record in their summaries (``"warnings"``)
and print; call it on a model (and, after a run, its mean excitatory rates) from Python.

Checks:

- connectome: self-connections (a non-zero diagonal: tractography counts usually include them,
  most models of inter-regional coupling exclude them); negative weights.
- parameters that are non-negative by their meaning (couplings, weights, time constants, kinetic
  factors, noise amplitude) but are negative in the table the model simulates (deco2014; the
  griffiths2022 equations pass its gains through relu);
- with FIC: G above the critical coupling G_c (the fixed point the weights were set for is then
  unstable);
- rates: a mean excitatory rate outside the 1-10 Hz of spontaneous cortical activity
  (:data:`rww.objectives.RATE_BAND_HZ`), and any region above 100 Hz (the high-activity branch or
  saturation, e.g. G far too large).
"""

from __future__ import annotations

import torch

from .objectives import RATE_BAND_HZ
from .params import PARAM_INDEX

# Parameters whose meaning makes them non-negative (rww.params.PARAM_DOC).
NON_NEGATIVE = ("G", "w_EE", "w_IE", "w_EI", "J_NMDA", "W_E", "W_I", "sigma", "a_E", "d_E",
                "a_I", "d_I", "tau_E", "tau_I", "gamma_E", "gamma_I")
SATURATED_HZ = 100.0


def check(model, rate_e: torch.Tensor | None = None) -> list[str]:
    """Plausibility warnings for ``model`` (an :class:`rww.RWWBold`), and for ``rate_e``, the
    mean excitatory rate ``(B, N)`` [Hz] of a run when given.

    Returns:
        A list of one-line messages (empty when nothing looks implausible).
    """
    out = []
    with torch.no_grad():
        sc = model.sc.detach().double()
        diag = torch.diagonal(sc, dim1=-2, dim2=-1)
        n_self = int((diag != 0).sum())
        if n_self:
            share = float(diag.abs().sum() / sc.abs().sum().clamp_min(1e-300))
            out.append(f"the connectome has self-connections on {n_self} of {diag.numel()} "
                       f"diagonal entries ({share:.1%} of the total weight): most models of "
                       "inter-regional coupling exclude them; zero the diagonal (rww simulate/fit "
                       "--zero-diagonal) unless you mean them")
        if bool((sc < 0).any()):
            out.append(f"the connectome has {int((sc < 0).sum())} negative weights (min "
                       f"{float(sc.min()):.3g}): structural connectivity counts are non-negative")
        if model.preset.code == 0:
            table = model.parameter_table().detach()
            for name in NON_NEGATIVE:
                values = table[PARAM_INDEX[name]]
                if bool((values < 0).any()):
                    out.append(f"parameter {name} is negative ({int((values < 0).sum())} "
                               f"value(s), min {float(values.min()):.3g}): it is non-negative by "
                               "its meaning in the deco2014 equations")
        if model.fic_target is not None:
            try:
                ratio = model.coupling_ratio().detach()
            except (ValueError, RuntimeError):
                ratio = None
            if ratio is not None and bool((ratio > 1).any()):
                out.append(f"G is above the critical coupling G_c (G/G_c up to "
                           f"{float(ratio.max()):.3f}): the FIC fixed point is unstable there; "
                           "lower G (or use --g-relative with a value below 1)")
    if rate_e is not None:
        rate_e = rate_e.detach().double()
        low, high = RATE_BAND_HZ
        mean = rate_e.mean(-1)
        outside = (mean < low) | (mean > high)
        if bool(outside.any()):
            out.append(f"mean excitatory rate {_span(mean)} Hz is outside the {low:g}-{high:g} "
                       "Hz of spontaneous cortical activity in "
                       f"{int(outside.sum())} of {mean.numel()} simulation(s): check G (or "
                       "G/G_c), w_EE, I_0 and FIC")
        if bool((rate_e > SATURATED_HZ).any()):
            out.append(f"{int((rate_e > SATURATED_HZ).sum())} region(s) fire above "
                       f"{SATURATED_HZ:g} Hz (max {float(rate_e.max()):.3g} Hz): the network is "
                       "on its high-activity branch or saturated; lower G or w_EE")
    return out


def _span(values: torch.Tensor) -> str:
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.3g}" if abs(hi - lo) <= 1e-3 * max(abs(hi), 1e-12) else f"{lo:.3g}-{hi:.3g}"


__all__ = ["check", "NON_NEGATIVE", "SATURATED_HZ"]
