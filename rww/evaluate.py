"""One evaluation protocol for fitted models: simulate like the target was measured, score it
with every convention spelled out.

:func:`evaluate` takes a model (fitted at any step size) and a :class:`rww.fit.FitTarget`, builds
a copy of the model at the reference step (:func:`evaluation_model`: deco2014 at
``dt = 0.1 ms``), simulates ``n_realisations`` noise realisations of the target's length as one
batch, discards a burn-in, and scores the BOLD with :func:`rww.scoring.score_bold`: FC r (over all
and intra-hemispheric edges), FC MSE and level, FCD KS and 1-Wasserstein distances in both window
conventions, excitatory rates. The table of scores and their conventions is in :mod:`rww.scoring`;
the scoring names (:func:`score_bold`, :func:`score_batch`, :func:`prepare_target`,
:data:`SCORE_NAMES`, :func:`demo_hemispheres`, ...) are importable from here too.

Example:
    >>> demo = rww.data.load_demo(include_bold=False, normalise="mean_row_sum")
    >>> target = FitTarget(fc=demo.fc, fcd_values=demo.fcd_values, fcd_window=43, fcd_step=7,
    ...                    fcd_exclude_overlapping=False)
    >>> ev = evaluate(model, target, n_trs=1200, hemispheres=demo_hemispheres())
    >>> ev["fc_r"], ev["fcd_ks"], ev.conventions["fcd_all"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import objectives as obj
from .model import RWWBold
from .params import PARAM_NAMES
from .scoring import (FCD_VARIANTS, SCORE_NAMES, ScoringTarget, _check_fcd_length,
                      check_hemispheres, demo_hemispheres, describe_conventions,
                      intra_hemispheric_pairs, prepare_target, score_batch, score_bold,
                      split_hemispheres)

# The step every evaluation of a deco2014 model uses unless told otherwise [ms]: fits may run
# at coarser steps for speed; the scores are those of the model at the reference step.
CONTRACT_DT_MS = 0.1
# BOLD discarded before scoring [s] (cuBNM's default bold_remove_s): Balloon transients from the
# default initial state last ~10-20 s.
DEFAULT_BURN_IN_S = 30.0
DEFAULT_REALISATIONS = 4
DEFAULT_SEED = 10_000


# ------------------------------------------------------------------------------ the model copy
def evaluation_dt(model: RWWBold, dt: float | None = None) -> float:
    """The step an evaluation uses: ``dt`` if given; else deco2014's reference
    :data:`CONTRACT_DT_MS` (0.1 ms), and the model's own step for griffiths2022, whose
    discrete-time equations (one step for neural and haemodynamic parts) are defined by it."""
    if dt is not None:
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt: must be a positive finite number, got {dt!r}")
        return float(dt)
    return CONTRACT_DT_MS if model.preset.code == 0 else float(model.dt)


def _one_simulation(name: str, value: torch.Tensor, batch: int, n_nodes: int,
                    simulation: int | None):
    """``(value for one simulation, varies across simulations)``."""
    per_sim = ((value.dim() == 1 and value.shape[0] == batch and batch > 1
                and not (value.shape[0] == n_nodes))
               or (value.dim() == 2 and value.shape[0] == batch and batch > 1)
               or (value.dim() == 3 and value.shape[0] == batch and batch > 1))
    if not per_sim:
        return value, False
    same = bool((value == value[:1]).all())
    pick = value[simulation if simulation is not None else 0]
    if value.dim() == 2:
        pick = pick.unsqueeze(0)                  # (1, Np): unambiguous whatever the new batch
    return pick, not same


def _fic_options(model: RWWBold) -> dict:
    """The model's FIC and relative-coupling settings as :class:`rww.RWWBold` keyword arguments
    (the copy then sets w_IE by FIC, and G as a fraction of G_c, exactly as the model does)."""
    if model.fic_target is None:
        return {}
    target = model.fic_target.detach().clone()
    return {"fic": target.flatten() if target.dim() else float(target),
            "g_relative": model.g_relative}


def evaluation_model(model: RWWBold, *, dt: float | None = None, batch: int = 1,
                     backend: str | None = None, simulation: int | None = None) -> RWWBold:
    """A copy of ``model`` for evaluation: the same parameters (physical values, read as
    ``getattr(model, name)``), connectome (as the model uses it), TR, haemodynamics, preset,
    observation noise and (griffiths2022) connection gains, at step ``dt`` (default
    :func:`evaluation_dt`) with ``batch`` simulations sharing those parameters. Nothing in it is
    learnable and it shares no tensor with ``model``.

    Parameters and connectomes of shape ``()`` or per region broadcast to any batch. A model
    whose parameters or connectome *differ* across its B > 1 simulations holds B models: this
    raises ``ValueError`` unless ``simulation=i`` picks one (loop over i to evaluate each).

    The steps per TR are the model's own when ``dt`` equals the model's step (keeping a
    ``steps_per_tr`` override), else ``tr / dt`` (which must be whole).
    """
    if not isinstance(model, RWWBold):
        raise TypeError(f"model: expected a rww.RWWBold, got {type(model).__name__}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"n_realisations: must be a positive integer, got {batch!r}")
    b, n = model.batch, model.n_nodes
    if simulation is not None and not (isinstance(simulation, int) and 0 <= simulation < b):
        raise ValueError(f"simulation: must be an integer in [0, {b}), got {simulation!r}")
    dt = evaluation_dt(model, dt)
    varying, params = [], {}
    with torch.no_grad():
        for name in PARAM_NAMES:
            value, varies = _one_simulation(name, getattr(model, name).detach().clone(), b, n, simulation)
            if varies:
                varying.append(name)
            if value.dim() == 1 and value.shape[0] == n and batch == n and batch > 1:
                value = value.view(1, n)          # per region, unambiguous when batch == N
            params[name] = value
        sc, varies = _one_simulation("sc", model.sc.detach().clone(), b, n, simulation)
        if varies:
            varying.append("sc")
        if sc.dim() == 3:                         # a stack of one (batch 1): shared
            sc = sc[0]
        sigma_out, varies = _one_simulation("sigma_out", model.sigma_out.detach().clone(), b, n,
                                            simulation)
        if varies:
            varying.append("sigma_out")
        w_bb = model.w_bb.detach().clone() if model.has_w_bb else None
    if varying and simulation is None:
        raise ValueError(
            f"model: {', '.join(varying)} differ across its {b} simulations, so it holds {b} "
            "models; the evaluation runs noise realisations of one parameter set: pass "
            f"simulation=i (0 <= i < {b}) to evaluate simulation i, and loop to evaluate each")
    if sigma_out.dim() == 2:
        sigma_out = sigma_out[0]
    same_dt = abs(dt - model.dt) <= 1e-12 * max(1.0, dt)
    copy = RWWBold(sc, preset=model.preset.name, dt=dt, tr=model.tr, batch=batch,
                   backend=backend or model.backend, dtype=model.sc.dtype, device=model.sc.device,
                   haemo=dict(model.haemo), steps_per_tr=model.steps_per_tr if same_dt else None,
                   checkpoint_every=model.checkpoint_every, w_bb=w_bb is not None,
                   sigma_out=sigma_out, **_fic_options(model), **params)
    if model.fic_correction is not None:      # numerical FIC correction, as the model uses it
        correction = model.fic_correction.detach().clone()
        if correction.shape[0] != batch:      # per simulation of the model: its mean over them
            row = correction[simulation:simulation + 1] if simulation is not None else correction
            correction = row.mean(0, keepdim=True)
        copy.fic_correction = correction
    copy.sc = sc.clone()       # as the model uses it (griffiths2022's constructor normalises)
    if w_bb is not None:
        from .transforms import make_learnable
        copy.learned["w_bb"] = make_learnable("w_bb", w_bb, "identity")
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy


# ------------------------------------------------------------------------------ the protocol
@dataclass
class Evaluation:
    """Outcome of :func:`evaluate`.

    Attributes:
        scores: name -> float or ``None`` (every name of :data:`SCORE_NAMES`; ``ev[name]`` reads
            one).
        conventions: score group -> how it was computed (windows, pairs, edges, sources).
        settings: simulation settings (n_trs, burn_in_trs, n_realisations, seed, dt, tr,
            steps_per_tr, backend, preset, simulation).
        fc: ``(N, N)`` realisation-averaged simulated FC (float64, CPU).
        bold: ``(R, T, N)`` simulated BOLD after burn-in (CPU).
        rate_e: ``(R, N)`` time-mean excitatory rate per region [Hz] (CPU, float64).
    """

    scores: dict
    conventions: dict
    settings: dict
    fc: torch.Tensor
    bold: torch.Tensor
    rate_e: torch.Tensor | None = None

    def __getitem__(self, name: str):
        if name not in self.scores:
            raise KeyError(f"{name!r}: no such score; scores are {', '.join(self.scores)}")
        return self.scores[name]

    def to_dict(self) -> dict:
        """Scores as plain floats (``None`` where unavailable) plus ``"settings"`` and
        ``"conventions"`` (plain dicts): ready for ``json.dump``."""
        out = {k: (None if v is None else float(v)) for k, v in self.scores.items()}
        out["settings"] = dict(self.settings)
        out["conventions"] = dict(self.conventions)
        return out


def _simulate(model: RWWBold, n_trs: int, burn_in_trs: int, seed: int, progress: bool):
    total = burn_in_trs + n_trs
    chunk = max(1, math.ceil(total / 50)) if progress else total
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, unit="TR", desc="evaluate", leave=False)
    bolds, rates, state, t0, done = [], [], None, 0, 0
    try:
        with torch.no_grad():
            while done < total:
                k = min(chunk, total - done)
                result = model.simulate(k, state=state, seed=seed, t0=t0, record=("r_E",))
                state, t0 = result.state, t0 + k * model.steps_per_tr
                first = max(0, burn_in_trs - done)
                if first < k:
                    bolds.append(result.bold[:, first:].cpu())
                    rates.append(result.records["r_E"][:, first:].cpu())
                done += k
                if bar is not None:
                    bar.update(k)
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(bolds, dim=1), torch.cat(rates, dim=1)


def evaluate(model: RWWBold, target, *, n_trs: int | None = None, burn_in_trs: int | None = None,
             n_realisations: int = DEFAULT_REALISATIONS, seed: int = DEFAULT_SEED,
             dt: float | None = None, hemispheres=None, backend: str | None = None,
             simulation: int | None = None, fcd: bool = True, progress: bool = False) -> Evaluation:
    """Evaluate ``model`` against ``target`` with one fixed protocol.

    Builds :func:`evaluation_model` (same parameters at step ``dt``, default 0.1 ms for
    deco2014), simulates ``n_realisations`` noise realisations as one batch (noise seed
    ``seed``; realisation r is simulation r of the batch) from the default initial state for
    ``burn_in_trs + n_trs`` TRs without gradient, discards the burn-in and scores the rest with
    :func:`score_bold`.

    Args:
        model: a :class:`rww.RWWBold` (fitted at any step; its batch size does not matter).
        target: :class:`rww.fit.FitTarget`; FC, FCD values and window convention (``fcd_window``,
            ``fcd_step`` in TRs, ``fcd_exclude_overlapping``) are the target's.
        n_trs: scored TRs; default the target BOLD's length (simulations as long as the target
            scans); required when the target has no BOLD (e.g. 1200 for HCP).
        burn_in_trs: TRs discarded first; default ``ceil(30 s / TR)`` (cuBNM's bold_remove_s).
        n_realisations: noise realisations R (default 4).
        seed: noise seed.
        dt: integration step (ms for deco2014); default :func:`evaluation_dt`.
        hemispheres: ``(N,)`` hemisphere labels for the intra-hemispheric FC r
            (:func:`demo_hemispheres` for the demo), or ``None``.
        backend: simulation backend (default the model's).
        simulation: which simulation's parameters to evaluate when they vary across the
            model's batch (see :func:`evaluation_model`).
        fcd: compute the FCD distances.
        progress: show a tqdm bar over simulated TRs (the run is then cut into ~50 pieces,
            continued exactly).

    Returns:
        :class:`Evaluation`.
    """
    if not isinstance(model, RWWBold):
        raise TypeError(f"model: expected a rww.RWWBold, got {type(model).__name__}")
    st = prepare_target(target, model.n_nodes, fcd=fcd)
    hem = None if hemispheres is None else check_hemispheres(hemispheres, model.n_nodes)
    if n_trs is None:
        if st.n_trs is None:
            raise ValueError("n_trs: the target has no BOLD to take its length from; give the "
                             "length of the target scans (e.g. n_trs=1200 for HCP)")
        n_trs = st.n_trs
    if not isinstance(n_trs, int) or n_trs < 3:
        raise ValueError(f"n_trs: must be an integer >= 3, got {n_trs!r}")
    if burn_in_trs is None:
        burn_in_trs = math.ceil(DEFAULT_BURN_IN_S / model.tr - 1e-9)
    if not isinstance(burn_in_trs, int) or burn_in_trs < 0:
        raise ValueError(f"burn_in_trs: must be a non-negative integer, got {burn_in_trs!r}")
    if fcd and st.has_fcd:
        _check_fcd_length(n_trs, st, "n_trs")
    emodel = evaluation_model(model, dt=dt, batch=n_realisations, backend=backend,
                              simulation=simulation)
    bold, rate = _simulate(emodel, n_trs, burn_in_trs, seed, progress)
    scores = score_bold(bold, st, hem, rate_e=rate, fcd=fcd)
    settings = {"n_trs": n_trs, "burn_in_trs": burn_in_trs, "n_realisations": n_realisations,
                "seed": seed, "dt": emodel.dt, "tr": emodel.tr, "steps_per_tr": emodel.steps_per_tr,
                "trained_dt": model.dt, "backend": emodel.backend, "preset": emodel.preset.name,
                "simulation": simulation, "n_regions": model.n_nodes,
                "fcd_window_trs": st.fcd_window, "fcd_step_trs": st.fcd_step}
    conventions = describe_conventions(st, hem)
    conventions["simulation"] = (
        f"{n_realisations} noise realisations (one batch, seed {seed}) of one parameter set at "
        f"dt = {emodel.dt} ({emodel.steps_per_tr} steps per TR of {emodel.tr} s; the model was "
        f"built with dt = {model.dt}), from the default initial state; the first {burn_in_trs} TRs "
        f"discarded, {n_trs} TRs scored")
    sim_fc = obj.pearson_matrix(bold.to(torch.float64), eps=1e-20).mean(0)
    return Evaluation(scores, conventions, settings, sim_fc, bold,
                      rate.to(torch.float64).mean(dim=1))


__all__ = [
    "CONTRACT_DT_MS", "DEFAULT_BURN_IN_S", "DEFAULT_REALISATIONS", "DEFAULT_SEED", "SCORE_NAMES",
    "Evaluation", "ScoringTarget", "evaluate", "evaluation_model", "evaluation_dt",
    "prepare_target", "score_bold", "score_batch", "describe_conventions", "split_hemispheres",
    "demo_hemispheres", "check_hemispheres", "intra_hemispheric_pairs", "FCD_VARIANTS",
]
