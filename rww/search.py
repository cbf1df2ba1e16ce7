"""Global search over a few model parameters, evaluated hundreds of candidates at a time.

A fit of the deco2014 model to resting-state fMRI has a narrow good region: with feedback
inhibition control (FIC) the FCD of the data is matched only with G a little below the critical
coupling G_c where the FIC fixed point loses stability, and gradients started far from it get lost
(their loss landscape is flat in FCD away from the bifurcation and noisy near it). So the recipe
is: a global search over a handful of parameters, every candidate simulated for as long as the
target scans and scored on FC and FCD together, then gradient refinement of the best candidates
(:func:`rww.search.refine`), possibly with regional heterogeneity.

Candidates:

- a design in a :class:`SearchSpace`: a grid (:func:`grid_design`), a Latin hypercube
  (:func:`latin_hypercube`, scipy's ``qmc``), or CMA-ES proposals (:func:`cma_search`, the ``cma``
  package of Hansen et al.);
- parameters are any of :data:`rww.params.PARAM_NAMES` (not ``w_IE``, which FIC sets) plus
  ``G_rel`` (G as a fraction of G_c, :func:`rww.stability.critical_coupling`), ``fic_target`` (the
  FIC rate [Hz]) and regional-map coefficients written ``"<param>:<map>"`` (``param_i =
  softplus(softplus^-1(param) + c * map_i)``, the form :class:`rww.transforms.RegionalMap` uses, so
  a search result starts a gradient refinement exactly).

Each batch of candidates is one :class:`rww.RWWBold` batch (per-simulation parameters), simulated
once with noise after a burn-in, and scored by :func:`rww.evaluate.score_batch`. The ranking loss
(:func:`candidate_loss`) is ``(1 - FC r) + |FC level difference| + FCD KS + rate penalty``; cuBNM's
CMA-ES cost has the same three data terms (Saberi et al. 2025).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import SimulationDiverged
from .evaluate import prepare_target, score_batch
from .objectives import RATE_BAND_HZ
from .params import PARAM_INDEX, PARAM_NAMES, get_preset, pack_parameters

__all__ = ["SearchSpace", "grid_design", "latin_hypercube", "CandidateEvaluator",
           "candidate_loss", "SearchResult", "search", "cma_search", "SPECIAL_NAMES",
           "DEFAULT_RATE_BAND"]

#: Search dimensions that are not rows of the parameter table.
SPECIAL_NAMES = {
    "G_rel": "G as a fraction of the critical coupling G_c (dimensionless)",
    "fic_target": "FIC target excitatory rate [Hz]",
}

#: Mean excitatory rates [Hz] the rate penalty leaves alone: the fits' band,
#: :data:`rww.objectives.RATE_BAND_HZ`.
DEFAULT_RATE_BAND = RATE_BAND_HZ


def _softplus_inv(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


@dataclass
class SearchSpace:
    """Bounds of the searched parameters.

    Attributes:
        bounds: name -> ``(low, high)``: a parameter of :data:`rww.params.PARAM_NAMES` (not
            ``w_IE``), a name of :data:`SPECIAL_NAMES`, or ``"<param>:<map>"`` (the coefficient
            of a regional map on a parameter; the map is given to :class:`CandidateEvaluator`).
        log: names sampled uniformly in log space (their bounds must be positive).
    """

    bounds: dict
    log: tuple = ()

    def __post_init__(self):
        if not isinstance(self.bounds, dict) or not self.bounds:
            raise ValueError("SearchSpace: bounds must be a non-empty dict name -> (low, high)")
        for name, pair in self.bounds.items():
            base = name.split(":")[0]
            if base == "w_IE":
                raise ValueError("SearchSpace: w_IE is set by FIC; search fic_target instead")
            if base not in PARAM_NAMES and name not in SPECIAL_NAMES:
                searchable = [p for p in PARAM_NAMES if p != "w_IE"]     # w_IE: set by FIC
                raise ValueError(f"SearchSpace: unknown parameter {name!r}; choose from "
                                 f"{', '.join(searchable)}, {', '.join(SPECIAL_NAMES)} or "
                                 "'<param>:<map>'")
            if ":" in name and name.split(":")[1] == "":
                raise ValueError(f"SearchSpace: {name!r} names no map after ':'")
            try:
                low, high = (float(v) for v in pair)
            except (TypeError, ValueError) as err:
                raise ValueError(f"SearchSpace: bounds of {name} must be (low, high), got "
                                 f"{pair!r}") from err
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"SearchSpace: bounds of {name} must be finite with low < high, "
                                 f"got ({low}, {high})")
            if ":" not in name and name not in ("G", "G_rel") and low <= 0:
                raise ValueError(f"SearchSpace: {name} is a positive physical quantity; its lower "
                                 f"bound must be > 0, got {low}")
            if name in ("G", "G_rel") and low < 0:
                raise ValueError(f"SearchSpace: {name} must be >= 0, got a lower bound of {low}")
            if name in self.log and low <= 0:
                raise ValueError(f"SearchSpace: {name} is searched in log space, so its bounds "
                                 f"must be positive; got ({low}, {high})")
        unknown = [n for n in self.log if n not in self.bounds]
        if unknown:
            raise ValueError(f"SearchSpace: log names {unknown} have no bounds")
        if "G" in self.bounds and "G_rel" in self.bounds:
            raise ValueError("SearchSpace: give G or G_rel, not both")

    @property
    def names(self) -> list:
        return list(self.bounds)

    def from_unit(self, unit) -> np.ndarray:
        """Points of the unit cube ``(M, D)`` -> parameter values ``(M, D)`` (float64)."""
        unit = np.asarray(unit, dtype=np.float64)
        if unit.ndim != 2 or unit.shape[1] != len(self.bounds):
            raise ValueError(f"from_unit: expected (M, {len(self.bounds)}), got {unit.shape}")
        out = np.empty_like(unit)
        for k, (name, (low, high)) in enumerate(self.bounds.items()):
            if name in self.log:
                out[:, k] = np.exp(np.log(low) + unit[:, k] * (np.log(high) - np.log(low)))
            else:
                out[:, k] = low + unit[:, k] * (high - low)
        return out

    def to_unit(self, values) -> np.ndarray:
        """Inverse of :meth:`from_unit`."""
        values = np.asarray(values, dtype=np.float64).reshape(-1, len(self.bounds))
        out = np.empty_like(values)
        for k, (name, (low, high)) in enumerate(self.bounds.items()):
            if name in self.log:
                out[:, k] = (np.log(values[:, k]) - np.log(low)) / (np.log(high) - np.log(low))
            else:
                out[:, k] = (values[:, k] - low) / (high - low)
        return out


def grid_design(space: SearchSpace, points) -> np.ndarray:
    """Full grid: ``points`` per dimension (an int, or name -> int) -> ``(M, D)`` values,
    bounds included (a single point sits at the middle)."""
    counts = [points.get(n, 1) if isinstance(points, dict) else points for n in space.names]
    if any(not isinstance(c, int) or c < 1 for c in counts):
        raise ValueError(f"grid_design: points per dimension must be positive integers, got {points!r}")
    axes = [np.linspace(0, 1, c) if c > 1 else np.array([0.5]) for c in counts]
    mesh = np.meshgrid(*axes, indexing="ij")
    return space.from_unit(np.stack([m.ravel() for m in mesh], axis=1))


def latin_hypercube(space: SearchSpace, n: int, seed: int = 0) -> np.ndarray:
    """``n`` candidates of a Latin hypercube (``scipy.stats.qmc.LatinHypercube``, scrambled)
    -> ``(n, D)`` values."""
    from scipy.stats import qmc
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"latin_hypercube: n must be a positive integer, got {n!r}")
    unit = qmc.LatinHypercube(d=len(space.bounds), seed=seed).random(n)
    return space.from_unit(unit)


def rate_excess(rate: torch.Tensor, band=DEFAULT_RATE_BAND) -> torch.Tensor:
    """Mean over regions of how far each region's mean excitatory rate lies outside ``band``
    [Hz]: ``(..., N)`` rates [Hz] -> ``(...)`` [Hz] (the ``rate_excess`` of
    :func:`candidate_loss`)."""
    low, high = band
    return (torch.relu(rate - high) + torch.relu(low - rate)).mean(-1)


def candidate_loss(scores: dict, rate_band=DEFAULT_RATE_BAND, rate_weight: float = 1.0,
                   fcd_key: str = "fcd_ks") -> np.ndarray:
    """Ranking loss of candidates (lower is better), ``(M,)``:
    ``(1 - fc_r) + |fc_level_diff| + fcd_ks + rate_weight * rate_excess / 10 Hz``, where
    ``rate_excess`` is the mean over regions of how far each region's mean r_E lies outside
    ``rate_band`` [Hz]. Missing FCD scores count as 1 (the worst KS). Infinite for candidates
    that failed (NaN scores)."""
    fc_r = np.asarray(scores["fc_r"], dtype=np.float64)
    level = np.abs(np.asarray(scores["fc_level_diff"], dtype=np.float64))
    fcd = np.asarray(scores.get(fcd_key, np.ones_like(fc_r)), dtype=np.float64)
    excess = np.asarray(scores.get("rate_excess", np.zeros_like(fc_r)), dtype=np.float64)
    loss = (1.0 - fc_r) + level + fcd + rate_weight * excess / 10.0
    return np.where(np.isfinite(loss), loss, np.inf)


class CandidateEvaluator:
    """Simulates and scores candidate parameter sets in batches (no gradient).

    Args:
        sc: ``(N, N)`` connectome (normalised as the model expects, e.g. by its mean row sum).
        target: :class:`rww.fit.FitTarget` (FC, FCD values and their window convention).
        n_trs: TRs scored per candidate (default: the target BOLD's length, else 1200, an HCP
            scan); simulations as long as the target scans give FCD distributions comparable
            with the target's.
        burn_in_trs: TRs simulated first and discarded (transients).
        dt: integration step [ms] for the search (coarser steps are faster; score the chosen
            point again at 0.1 ms with :func:`rww.evaluate.evaluate`).
        tr: [s].
        fixed: values of parameters that are not searched (numbers or ``(N,)`` tensors).
        fic: FIC target [Hz] used when ``fic_target`` is not searched; ``None`` disables FIC
            (then ``G_rel`` cannot be searched).
        maps: map name -> ``(N,)`` regional map, for ``"<param>:<map>"`` dimensions.
        hemispheres: ``(N,)`` labels, to score intra-hemispheric FC r too.
        batch_size: candidates simulated together.
        seed: noise seed (every batch uses the same seed: common random numbers, so candidates
            differ only by their parameters).
        backend, haemo, dtype: as :class:`rww.RWWBold`.
        rate_band, rate_weight: of :func:`candidate_loss`.
        progress: tqdm bar over candidates.
    """

    def __init__(self, sc, target, *, n_trs: int | None = None, burn_in_trs: int = 42,
                 dt: float = 1.0, tr: float = 0.72, fixed: dict | None = None, fic=3.0,
                 maps: dict | None = None, hemispheres=None, batch_size: int = 32, seed: int = 0,
                 backend: str = "auto", haemo=None, dtype=torch.float32,
                 rate_band=DEFAULT_RATE_BAND, rate_weight: float = 1.0, progress: bool = True):
        self.sc = torch.as_tensor(sc)
        if self.sc.dim() != 2 or self.sc.shape[0] != self.sc.shape[1]:
            raise ValueError(f"sc: expected a square (N, N) matrix, got {tuple(self.sc.shape)}")
        self.n_nodes = self.sc.shape[0]
        self.target = prepare_target(target, self.n_nodes)
        self.n_trs = int(n_trs or self.target.n_trs or 1200)
        if not isinstance(burn_in_trs, int) or burn_in_trs < 0:
            raise ValueError(f"burn_in_trs: must be a non-negative integer, got {burn_in_trs!r}")
        self.burn_in_trs = burn_in_trs
        self.dt, self.tr = float(dt), float(tr)
        self.fixed = dict(fixed or {})
        bad = [k for k in self.fixed if k not in PARAM_NAMES]
        if bad:
            raise ValueError(f"fixed: unknown parameters {bad}; choose from {', '.join(PARAM_NAMES)}")
        self.fic = fic
        self.maps = {k: torch.as_tensor(v, dtype=torch.float64).flatten() for k, v in (maps or {}).items()}
        for k, v in self.maps.items():
            if v.shape[0] != self.n_nodes or not torch.isfinite(v).all():
                raise ValueError(f"maps: {k} must hold {self.n_nodes} finite values, got {tuple(v.shape)}")
        self.hemispheres = hemispheres
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.seed, self.backend, self.haemo, self.dtype = seed, backend, haemo, dtype
        self.rate_band, self.rate_weight, self.progress = rate_band, rate_weight, progress
        self.preset = get_preset("deco2014")

    # ----------------------------------------------------------------------------- values
    def parameter_values(self, names: list, values: np.ndarray) -> tuple[dict, torch.Tensor]:
        """Candidate values ``(M, D)`` -> ``({param: (M, N) or (M, 1) float64}, fic target (M,))``
        with map coefficients applied and G *not yet* scaled by G_c."""
        values = np.asarray(values, dtype=np.float64)
        m = values.shape[0]
        col = {name: torch.as_tensor(values[:, k]) for k, name in enumerate(names)}
        out = {}
        for name in PARAM_NAMES:
            if name in col:
                out[name] = col[name].view(m, 1)
            elif name in self.fixed:
                v = torch.as_tensor(self.fixed[name], dtype=torch.float64)
                out[name] = v.view(1, -1).expand(m, -1) if v.dim() else v.view(1, 1).expand(m, 1)
        if "G_rel" in col:
            out["G"] = col["G_rel"].view(m, 1)
        for name in names:
            if ":" not in name:
                continue
            param, map_name = name.split(":")
            if map_name not in self.maps:
                raise ValueError(f"search: {name} needs a map called {map_name!r} (maps=); have "
                                 f"{sorted(self.maps)}")
            base = out.get(param, torch.full((m, 1), float(self.preset.defaults[param]),
                                             dtype=torch.float64))
            if (base <= 0).any():
                raise ValueError(f"search: {param} must be positive to carry a regional map")
            shift = col[name].view(m, 1) * self.maps[map_name].view(1, -1)
            out[param] = torch.nn.functional.softplus(_softplus_inv(base) + shift)
        if "fic_target" in col:
            fic = col["fic_target"]
        elif self.fic is not None:
            fic = torch.full((m,), float(self.fic), dtype=torch.float64)
        else:
            fic = None
        return out, fic

    def _table(self, values: dict, m: int) -> torch.Tensor:
        return pack_parameters(values, self.preset, m, self.n_nodes, torch.float64)

    # ----------------------------------------------------------------------------- scoring
    def __call__(self, names: list, values, extra_columns: dict | None = None) -> list:
        """Simulate and score candidates.

        Args:
            names: the searched names, in column order.
            values: ``(M, D)`` candidate values.
            extra_columns: name -> ``(M,)`` values copied into the rows (e.g. a generation).

        Returns:
            ``M`` rows (dicts): the searched values, ``G`` (absolute), ``G_c`` and ``G_over_Gc``
            (with FIC), every score of :func:`rww.evaluate.score_batch`, ``rate_mean``,
            ``rate_max`` (mean r_E over time: the mean and the largest region), ``rate_excess``,
            ``loss`` and ``status`` (``"ok"``, or why the candidate could not be scored).
        """
        from .fic import analytic_fic

        values = np.asarray(values, dtype=np.float64).reshape(-1, len(names))
        m = values.shape[0]
        params, fic = self.parameter_values(names, values)
        rows = [{name: float(values[i, k]) for k, name in enumerate(names)} for i in range(m)]
        for key, col in (extra_columns or {}).items():
            for i in range(m):
                rows[i][key] = col[i]
        status = ["ok"] * m
        sc64 = self.sc.to(torch.float64)
        if fic is not None:
            table = self._table(params, m)
            g_c = self._critical_coupling(table, sc64, fic)
            g = table[PARAM_INDEX["G"]].mean(-1)
            if "G_rel" in names:
                g_rel = torch.as_tensor(values[:, names.index("G_rel")])
                g = g_rel * g_c
                params["G"] = g.view(m, 1)
            for i in range(m):
                rows[i]["G"] = float(g[i])
                rows[i]["G_c"] = float(g_c[i])
                rows[i]["G_over_Gc"] = float(g[i] / g_c[i])
                if not math.isfinite(float(g_c[i])) and "G_rel" in names:
                    status[i] = "no critical coupling below G = 10"
            table = self._table({k: torch.nan_to_num(v) for k, v in params.items()}, m)
            fic_result = analytic_fic(table, sc64, fic.view(m, 1))
            failed = fic_result.failed.any(-1)
            for i in torch.nonzero(failed).flatten().tolist():
                if status[i] == "ok":
                    status[i] = f"FIC failed in {int(fic_result.failed[i].sum())} regions"
            params["w_IE"] = fic_result.w_IE.detach()
        else:
            g = pack_parameters(params, self.preset, m, self.n_nodes, torch.float64)[PARAM_INDEX["G"]]
            for i in range(m):
                rows[i]["G"] = float(g[i].mean())
        ok = [i for i in range(m) if status[i] == "ok"]
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(ok), desc="candidates", unit="sim", leave=False)
        for start in range(0, len(ok), self.batch_size):
            idx = ok[start:start + self.batch_size]
            scores = self._simulate_and_score({k: v[idx] if v.shape[0] == m else v
                                               for k, v in params.items()}, idx, status)
            for j, i in enumerate(idx):
                for key, col in scores.items():
                    rows[i][key] = float(col[j])
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        keys = ["fc_r", "fc_level_diff", "fcd_ks", "rate_excess"]
        table_scores = {k: np.array([r.get(k, np.nan) for r in rows]) for k in keys}
        if not any(np.isfinite(table_scores["fcd_ks"])):
            table_scores.pop("fcd_ks")
        loss = candidate_loss(table_scores, self.rate_band, self.rate_weight)
        for i in range(m):
            rows[i]["loss"] = float(loss[i]) if status[i] == "ok" else math.inf
            rows[i]["status"] = status[i]
        return rows

    def _critical_coupling(self, table: torch.Tensor, sc64: torch.Tensor,
                           fic: torch.Tensor) -> torch.Tensor:
        """``(M,)`` G_c of each candidate (:func:`rww.stability.critical_coupling`, no gradient),
        solved once per distinct parameter set: G_c does not depend on G, so candidates that
        differ only in G (e.g. a G/G_c x w_EE grid) share one solve, within a call and across
        calls (a solve costs ~0.1-1 s at N = 100, several times the candidate's simulation).
        Each candidate's G_c is the same number a solve of it alone gives (the solve is
        per simulation)."""
        from .stability import critical_coupling

        m = table.shape[1]
        rest = table.expand(-1, m, self.n_nodes).clone()
        rest[PARAM_INDEX["G"]] = 0.0             # critical_coupling overrides G and w_IE
        rest[PARAM_INDEX["w_IE"]] = 0.0
        keys = [rest[:, i].numpy().tobytes() + fic[i].numpy().tobytes() for i in range(m)]
        cache = self.__dict__.setdefault("_g_c_cache", {})
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if todo:
            first = [keys.index(k) for k in todo]
            solved = critical_coupling(table.expand(-1, m, -1)[:, first], sc64,
                                       fic[first].view(-1, 1)).detach()
            cache.update(zip(todo, solved.tolist()))
        return torch.tensor([cache[k] for k in keys], dtype=torch.float64)

    def _simulate_and_score(self, params: dict, idx: list, status: list) -> dict:
        from .model import RWWBold
        b = len(idx)
        # (b, 1) per simulation or (b, N) per simulation and region: never ambiguous, even when
        # b == N.
        values = {k: v.to(self.dtype) for k, v in params.items()}
        model = RWWBold(self.sc.to(self.dtype), dt=self.dt, tr=self.tr, batch=b,
                        backend=self.backend, haemo=self.haemo, dtype=self.dtype, **values)
        try:
            result = model.simulate(self.burn_in_trs + self.n_trs, seed=self.seed, record=("r_E",))
        except SimulationDiverged:
            if b == 1:
                status[idx[0]] = "diverged"
                return {}
            # find the diverging candidates one by one; the others keep their scores
            merged = {}
            for j in range(b):
                one = self._simulate_and_score({k: v[j:j + 1] if v.shape[0] == b else v
                                                for k, v in params.items()}, [idx[j]], status)
                for key, col in one.items():
                    merged.setdefault(key, [math.nan] * b)[j] = float(col[0])
            return merged
        bold = result.bold[:, self.burn_in_trs:]
        scores = score_batch(bold, self.target, self.hemispheres)
        rate = result.records["r_E"][:, self.burn_in_trs:].to(torch.float64).mean(1)   # (b, N)
        scores.update(rate_mean=rate.mean(-1), rate_max=rate.max(-1).values,
                      rate_excess=rate_excess(rate, self.rate_band))
        return scores


@dataclass
class SearchResult:
    """Every scored candidate of a search.

    Attributes:
        rows: one dict per candidate (see :meth:`CandidateEvaluator.__call__`), in evaluation
            order.
        names: the searched names.
        settings: the search's settings (method, sizes, seed, dt, target convention, seconds).
    """

    rows: list
    names: list
    settings: dict = field(default_factory=dict)

    def best(self, k: int = 1) -> list:
        """The ``k`` rows of lowest loss (scored ones only)."""
        ranked = sorted((r for r in self.rows if math.isfinite(r["loss"])), key=lambda r: r["loss"])
        return ranked[:k]

    def column(self, name: str) -> np.ndarray:
        return np.array([r.get(name, np.nan) for r in self.rows], dtype=np.float64)

    def save(self, path: str) -> tuple[str, str]:
        """Write ``path.csv`` (one row per candidate) and ``path.json`` (rows and settings),
        atomically."""
        columns = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        tmp = path + ".csv.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path + ".csv")
        tmp = path + ".json.tmp"
        with open(tmp, "w") as fh:
            json.dump({"names": self.names, "settings": self.settings,
                       "rows": [{k: (v if not (isinstance(v, float) and not math.isfinite(v))
                                     else None) for k, v in r.items()} for r in self.rows]},
                      fh, indent=1)
        os.replace(tmp, path + ".json")
        return path + ".csv", path + ".json"


def search(space: SearchSpace, evaluator: CandidateEvaluator, method: str = "lhs", n: int = 64,
           seed: int = 0, points=None) -> SearchResult:
    """Evaluate a design of candidates.

    Args:
        space: the :class:`SearchSpace`.
        evaluator: a :class:`CandidateEvaluator`.
        method: ``"lhs"`` (Latin hypercube of ``n``), ``"grid"`` (``points`` per dimension) or
            ``"cma"`` (:func:`cma_search` with population ``n``; ``points`` = generations).
        seed: of the design (the noise seed is the evaluator's).

    Returns:
        :class:`SearchResult`.
    """
    tick = time.perf_counter()
    if method == "cma":
        return cma_search(space, evaluator, popsize=n, generations=points or 10, seed=seed)
    if method == "lhs":
        values = latin_hypercube(space, n, seed)
    elif method == "grid":
        values = grid_design(space, points if points is not None else n)
    else:
        raise ValueError(f"search: unknown method {method!r}; choose 'lhs', 'grid' or 'cma'")
    rows = evaluator(space.names, values)
    return SearchResult(rows, space.names, _settings(space, evaluator, method, len(rows), seed,
                                                      time.perf_counter() - tick))


def cma_search(space: SearchSpace, evaluator: CandidateEvaluator, popsize: int = 32,
               generations: int = 10, sigma0: float = 0.3, seed: int = 0, x0=None) -> SearchResult:
    """CMA-ES (the ``cma`` package, Hansen et al.) in the unit cube of ``space``, each
    generation's ``popsize`` candidates evaluated as one batch; failed candidates get a loss of
    10 (worse than any scored one, whose loss is below 4 plus the rate penalty).

    Args:
        x0: start in parameter values ``(D,)`` (default: the centre of the bounds).
        sigma0: initial step in unit-cube coordinates.
    """
    import cma
    if not isinstance(popsize, int) or popsize < 2:
        raise ValueError(f"cma_search: popsize must be an integer >= 2 (CMA-ES needs at least two "
                         f"candidates a generation), got {popsize!r}")
    if not isinstance(generations, int) or generations < 1:
        raise ValueError(f"cma_search: generations must be a positive integer, got {generations!r}")
    tick = time.perf_counter()
    start = np.full(len(space.names), 0.5) if x0 is None else space.to_unit(x0)[0]
    es = cma.CMAEvolutionStrategy(start, sigma0, {"bounds": [0.0, 1.0], "popsize": popsize,
                                                  "seed": seed + 1, "verbose": -9})
    rows = []
    for gen in range(generations):
        unit = np.clip(np.asarray(es.ask()), 0.0, 1.0)
        batch = evaluator(space.names, space.from_unit(unit), {"generation": [gen] * len(unit)})
        losses = [r["loss"] if math.isfinite(r["loss"]) else 10.0 for r in batch]
        es.tell(list(unit), losses)
        rows += batch
    return SearchResult(rows, space.names, _settings(space, evaluator, "cma", len(rows), seed,
                                                      time.perf_counter() - tick,
                                                      popsize=popsize, generations=generations))


def _settings(space, evaluator, method, n, seed, seconds, **extra) -> dict:
    st = evaluator.target
    return dict(method=method, n_candidates=n, seed=seed, bounds=space.bounds,
                log=list(space.log), dt_ms=evaluator.dt, tr_s=evaluator.tr,
                n_trs=evaluator.n_trs, burn_in_trs=evaluator.burn_in_trs,
                noise_seed=evaluator.seed, fixed={k: (v.tolist() if torch.is_tensor(v) else v)
                                                  for k, v in evaluator.fixed.items()},
                fic=evaluator.fic, rate_band=list(evaluator.rate_band),
                fcd_window_trs=st.fcd_window, fcd_step_trs=st.fcd_step,
                fcd_convention=st.convention, seconds=seconds, **extra)
