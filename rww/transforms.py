"""Learnable parameters in unconstrained space, mapped to their physical range.

An optimizer moves the raw (unconstrained) tensor; the model reads ``physical = transform(raw)``.

===============  ===========================  =======================  =========================
spec             physical range               forward                  notes
===============  ===========================  =======================  =========================
``"identity"``   all reals                    ``raw``                  e.g. griffiths2022's w_bb
``"positive"``   (0, inf)                     ``softplus(raw)``        default for every
                                                                       parameter of the model
``("interval",   (lo, hi)                     ``lo + (hi - lo) *``     bounded search, e.g.
lo, hi)``                                     ``sigmoid(raw)``         G in (0, 3)
``RegionalMap``  per region, (0, inf) or      ``t(a + sum_k c_k m_k)``  a parameter as a linear
                 (lo, hi) through ``t``                                function of K regional maps
===============  ===========================  =======================  =========================

Each learnable parameter is an ``nn.Module`` whose ``forward()`` returns the physical tensor and
whose ``raw`` (or ``intercept``/``coefficients``) are the ``nn.Parameter`` s the optimizer sees.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _inverse_softplus(value: torch.Tensor) -> torch.Tensor:
    # log(exp(x) - 1) written stably: x + log(-expm1(-x)) (exact for large x, finite for x > 0)
    return value + torch.log(-torch.expm1(-value))


class Learnable(nn.Module):
    """A learnable parameter: ``forward()`` -> physical tensor (shape of the initial value)."""

    spec = "abstract"

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        return self.transform(self.raw)

    def describe(self) -> str:
        return self.spec


class Identity(Learnable):
    spec = "identity"

    def __init__(self, name: str, init: torch.Tensor):
        super().__init__()
        self.raw = nn.Parameter(init.detach().clone())

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        return raw



class Positive(Learnable):
    """``physical = softplus(raw)`` in (0, inf); softplus keeps gradients alive near 0, unlike exp
    which makes steps multiplicative."""

    spec = "positive"

    def __init__(self, name: str, init: torch.Tensor):
        super().__init__()
        init = init.detach()
        if (init <= 0).any():
            raise ValueError(
                f"learn: {name} starts at {init.min().item():.4g}, but the 'positive' transform "
                f"(softplus) needs a value > 0; start from a positive value or give learn="
                f"{{'{name}': ('interval', lo, hi)}} with lo below it"
            )
        self.raw = nn.Parameter(_inverse_softplus(init).clone())

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(raw)



class Interval(Learnable):
    """``physical = lo + (hi - lo) * sigmoid(raw)`` in the open interval (lo, hi)."""

    def __init__(self, name: str, init: torch.Tensor, lo: float, hi: float):
        super().__init__()
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"learn: {name} interval ({lo}, {hi}) must have finite lo < hi")
        init = init.detach()
        if ((init <= lo) | (init >= hi)).any():
            raise ValueError(
                f"learn: {name} starts at values in [{init.min().item():.4g}, "
                f"{init.max().item():.4g}], outside the open interval ({lo}, {hi})"
            )
        self.lo, self.hi = float(lo), float(hi)
        unit = (init - lo) / (hi - lo)
        self.raw = nn.Parameter(torch.log(unit) - torch.log1p(-unit))

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        return self.lo + (self.hi - self.lo) * torch.sigmoid(raw)

    @property
    def spec(self):
        return ("interval", self.lo, self.hi)

    def describe(self) -> str:
        return f"interval({self.lo:g}, {self.hi:g})"



class RegionalMap(Learnable):
    """A per-region parameter as a linear function of K regional maps, through an outer transform.

    ``physical_i = outer(intercept + sum_k coefficients_k * maps[k, i])``; the intercept starts
    where ``outer`` gives the mean of the initial value, the coefficients at 0.

    Args:
        maps: ``(K, N)`` regional maps (e.g. T1w/T2w myelin, gene-expression gradients); z-score
            them first so coefficients are comparable.
        outer: ``"identity"``, ``"positive"`` or ``("interval", lo, hi)``.
    """

    def __init__(self, maps, outer="positive"):
        super().__init__()
        maps = torch.as_tensor(maps)
        if maps.dim() == 1:
            maps = maps.unsqueeze(0)
        if maps.dim() != 2 or not torch.isfinite(maps).all():
            raise ValueError(f"RegionalMap: maps must be a finite (K, N) array, got shape {tuple(maps.shape)}")
        self.register_buffer("maps", maps.clone())
        self.outer = outer
        self.intercept = None        # created by bind(), which knows the initial value and dtype
        self.coefficients = None

    def bind(self, name: str, init: torch.Tensor, n_nodes: int) -> "RegionalMap":
        if self.maps.shape[1] != n_nodes:
            raise ValueError(f"learn: {name} maps have {self.maps.shape[1]} regions, the model {n_nodes}")
        self.maps = self.maps.to(dtype=init.dtype, device=init.device)
        start = make_learnable(name, init.detach().mean().reshape(()), self.outer)
        self._outer = start
        self.intercept = nn.Parameter(start.raw.detach().clone())
        del start.raw                                 # only the transform of `start` is used
        self.coefficients = nn.Parameter(torch.zeros(self.maps.shape[0], dtype=init.dtype,
                                                     device=init.device))
        return self

    def describe(self) -> str:
        return f"regional_map(K={self.maps.shape[0]}, {self._outer.describe()})"

    def forward(self) -> torch.Tensor:
        linear = self.intercept + self.coefficients @ self.maps          # (N,)
        return self._outer.transform(linear)


def make_learnable(name: str, init: torch.Tensor, spec="positive", n_nodes: int | None = None) -> Learnable:
    """Build the :class:`Learnable` for ``spec`` (see the module table) starting at ``init``."""
    if isinstance(spec, RegionalMap):
        return spec.bind(name, init, n_nodes if n_nodes is not None else spec.maps.shape[1])
    if spec == "identity":
        return Identity(name, init)
    if spec == "positive":
        return Positive(name, init)
    if isinstance(spec, (tuple, list)) and len(spec) == 3 and spec[0] == "interval":
        return Interval(name, init, float(spec[1]), float(spec[2]))
    raise ValueError(
        f"learn: unknown transform {spec!r} for {name}; use 'identity', 'positive', "
        "('interval', lo, hi) or rww.transforms.RegionalMap(maps)"
    )
