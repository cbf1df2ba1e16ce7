"""Cohort fits: every subject of a cohort fitted in one call, as one batch, optionally split over
torch.distributed ranks.

Each subject is ``R`` simulations of the batch (``realisations``: noise realisations, averaged in
its loss terms) on its own connectome (``sc (S, N, N)``, or one ``(N, N)`` for all), compared
with its own target (:class:`CohortTarget`: FC ``(S, N, N)``, BOLD ``(S, T, N)``, FCD values per
subject). The loss is the sum of the subjects' losses; each subject's terms see only its own
simulations. Each fitted parameter has a level (:class:`CohortParam`):

- ``"subject"``: one value per subject, ``value_s = t(u_s)``;
- ``"group"``: one value shared by every subject, ``value = t(g)``;
- ``"hierarchical"``: ``value_s = t(g + d_s)`` with a Gaussian prior ``d_s ~ N(0, tau**2)``
  on each subject's deviation (``tau = prior_scale``), its negative log density
  ``0.5 (d_s / tau)**2 + log tau + 0.5 log(2 pi)`` (per element) added to subject s's loss.
  The optimizer moves ``g`` and ``u_s = g + d_s`` (the centred parametrisation: the same model
  and minimum as moving ``g`` and ``d_s``, without the direction ``g + c, d_s - c`` that only
  the prior resolves, which gradient steps cross slowly); ``g`` is then pulled to the subjects
  by the prior alone and settles at the mean of the ``u_s`` (without a prior on ``g``).

``t`` is the parameter's transform (:mod:`rww.transforms`: ``"positive"`` softplus, the
default; ``"identity"``; ``("interval", lo, hi)``), and ``g``, ``u_s``, ``d_s`` live in its
unconstrained space, so the hierarchy is additive there: with ``"identity"`` it is literally
``subject value = group value + deviation`` and ``tau`` is in the parameter's units; with the
default softplus it is additive in ``softplus^-1`` units (about the parameter's units for values
well above 1, about relative (log) units for values well below 1). The group value reported is
``t(g)``, the subject value at zero deviation. ``FitConfig.priors[name] = (mean, std)`` is a
Gaussian prior on the group value (group and hierarchical levels) or on each subject's value
(subject level). Deviations start at 0, the group value at ``init``.

The schedule, terms and noise are :func:`rww.fit.fit`'s (``FitConfig``): epoch e draws noise
seed ``config.seed + e``; subject s's realisation r is simulation ``s * R + r`` of one large batch
(``sim_offset``), so a subject's noise does not depend on which rank simulates it. Terms:
every term of :data:`rww.fit.LOSS_TERMS` but ``bifurcation`` and ``smoothness`` (model-level).
Optimizer: Adam (default, ``lr``) or a callable ``params -> optimizer`` of an element-wise
optimizer (Adam, AdamW, SGD, RMSprop); no L-BFGS or ``grad_clip`` (each would couple the
subjects through a global quantity). ``scheduler``: a callable ``optimizer -> scheduler``,
stepped once per epoch on every rank (``ReduceLROnPlateau`` with rank 0's cohort loss) and
checkpointed.

Distributed (``ctx``, see :mod:`rww.distributed`): the subjects are split over ranks with
``partition(S, ctx)`` (contiguous blocks); each rank simulates its block. A group-level
parameter enters every subject through a per-subject copy, so its gradient is a sum of
per-subject contributions; those rows are all-reduced (each rank fills its own rows, zeros
elsewhere, so the reduction is exact) and summed in subject order on every rank: the same
numbers in the same order whatever the number of ranks. With the per-simulation independence of
rww's backends (a simulation's BOLD and gradient do not depend on the rest of the batch, checked
in ``tests/test_cohort.py``), a fit on any number of ranks is bit for bit the one-process fit.
Per-subject logs, parameters and optimizer state are gathered on rank 0, which writes the
checkpoint: full-cohort rows (no rank layout), so a fit resumes exactly on any number of ranks.

Example:
    >>> target = CohortTarget(bold=bold)                           # (S, T, N)
    >>> result = fit_cohort(sc, target, {"G": CohortParam(0.4, "hierarchical", prior_scale=0.5),
    ...                                  "w_EE": CohortParam(1.4, "group")},
    ...                     FitConfig(epochs=20, window_trs=None, n_trs=60,
    ...                               weights={"fc_corr": 1.0, "bold_mean": 1.0}),
    ...                     realisations=2, model_options={"dt": 1.0, "tr": 0.5},
    ...                     checkpoint="cohort.ckpt", resume=True)
    >>> result.params["G"], result.group["G"], result.subject_history(0)["fc_r"]
    >>> scores = evaluate_cohort(result, held_out, n_trs=1200)     # per-subject held-out scores
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from . import distributed as rdist
from . import objectives as obj
from .cohort_state import (LEVELS, CohortParam, _fingerprint, _group_priors, _initial_rows,
                           _load_rows, _local_model, _merge_rows, _plain, _reduce_group_grads,
                           _resume_problem, _row, _rows, _series, _squeeze)
from .fit import (LOSS_TERMS, FitConfig, _check_fcd_piece, _config_dict, _records_needed,
                  _verdict_settings, loss_terms)
from .fit_control import StopFit, _atomic_torch_save, _atomic_write_text, convergence
from .fit_target import FitTarget
from .model import RWWBold

__all__ = ["CohortParam", "CohortTarget", "CohortResult", "COHORT_TERMS", "LEVELS", "fit_cohort",
           "evaluate_cohort"]

COHORT_TERMS = tuple(t for t in LOSS_TERMS if t not in ("bifurcation", "smoothness"))
_MODEL_KEYS_TAKEN = ("sc", "batch", "learn")


@dataclass
class CohortTarget:
    """Per-subject targets: give ``fc`` and/or ``bold`` (and optionally ``fcd_values``).

    Attributes:
        fc: ``(S, N, N)`` FC per subject (computed from ``bold`` when ``None``).
        bold: ``(S, T, N)`` BOLD per subject (or a sequence of S ``(T, N)`` arrays of one length
            T); windowed fits compare each window with the same window of the subject's data.
        fcd_values: per subject FCD values: ``(S, M)`` or a sequence of S ``(M_s,)`` arrays.
        fcd_window, fcd_step, fcd_exclude_overlapping: the FCD convention, as in
            :class:`rww.fit.FitTarget`.
    """

    fc: object = None
    bold: object = None
    fcd_values: object = None
    fcd_window: int = 30
    fcd_step: int = 5
    fcd_exclude_overlapping: bool = True

    @property
    def n_subjects(self) -> int:
        for value in (self.fc, self.bold, self.fcd_values):
            if value is not None:
                return len(value)
        raise ValueError("cohort target: give per-subject fc= (S, N, N) or bold= (S, T, N)")

    def subject(self, s: int) -> FitTarget:
        """Subject ``s``'s :class:`rww.fit.FitTarget` (not yet validated)."""
        pick = (lambda v: None if v is None else v[s])
        return FitTarget(pick(self.fc), pick(self.bold), pick(self.fcd_values), self.fcd_window,
                         self.fcd_step, self.fcd_exclude_overlapping)

    def validate(self, n_nodes: int, dtype, device) -> list:
        """One validated :class:`rww.fit.FitTarget` per subject.

        Raises:
            ValueError: ``target fc``/``bold``/``fcd_values`` of different numbers of subjects,
                BOLD of different lengths, or a subject's target invalid (the message names the
                subject, then :meth:`rww.fit.FitTarget.validate`'s reason).
        """
        n = self.n_subjects
        for name in ("fc", "bold", "fcd_values"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"cohort target {name}: {len(value)} subjects, expected {n} (as "
                                 "the other per-subject fields)")
            if name != "fcd_values" and torch.is_tensor(value) and value.dim() != 3:
                raise ValueError(f"cohort target {name}: expected (S, {'N, N' if name == 'fc' else 'T, N'})"
                                 f" per subject, got shape {tuple(value.shape)}")
        out = []
        for s in range(n):
            try:
                out.append(self.subject(s).validate(n_nodes, dtype, device))
            except ValueError as err:
                raise ValueError(f"cohort target, subject {s}: {err}") from None
        lengths = sorted({t.bold.shape[0] for t in out if t.bold is not None})
        if len(lengths) > 1:
            raise ValueError(f"cohort target bold: subjects have {lengths} TRs; one batch needs one "
                             "length (cut them to the shortest)")
        return out


# ------------------------------------------------------------------------------ the result
@dataclass
class CohortResult:
    """Outcome of :func:`fit_cohort` (on rank 0; the other ranks get ``None``).

    Attributes:
        params: name -> ``(S,)`` (scalar parameters) or ``(S, N)`` physical value per subject.
        group: name -> group value ``t(g)`` (``()`` or ``(N,)``) of group and hierarchical
            parameters.
        deviations: name -> ``(S,)``/``(S, N)`` deviations ``d_s`` (hierarchical, unconstrained
            units).
        fc: ``(S, N, N)`` simulated FC of the last epoch per subject (mean over realisations),
            float64.
        history: per-epoch lists: ``epoch``, ``loss`` (sum of the subjects' losses and the group
            priors, mean over windows), ``fc_r_mean`` (mean over subjects), ``group/<name>``,
            ``lr``, ``seconds``, ``converged``; and ``subjects``: one dict per subject with
            ``loss``, ``terms/<term>`` (unweighted; ``prior_<name>``, ``deviation_<name>``),
            ``fc_r`` (FC r of its epoch's FC with its target FC) and ``params/<name>``.
        config: the :class:`rww.fit.FitConfig` as a dict; ``cohort``: the cohort's settings.
        convergence: :func:`rww.fit_control.convergence` on the loss and every subject's and
            group value, plus ``stopped``, ``epochs_run``, ``epochs``.
        held_out: per-subject held-out scores (:func:`evaluate_cohort`) when asked for.
        sc, model_options: what :meth:`subject_model` builds models from.
    """

    params: dict
    group: dict
    deviations: dict
    fc: torch.Tensor | None
    history: dict
    config: dict
    cohort: dict
    convergence: dict
    sc: torch.Tensor = None
    model_options: dict = field(default_factory=dict)
    held_out: list | None = None

    @property
    def n_subjects(self) -> int:
        return len(self.history["subjects"])

    def subject_history(self, s: int) -> dict:
        """Subject ``s``'s per-epoch series (``loss``, ``terms/...``, ``fc_r``, ``params/...``)."""
        return self.history["subjects"][s]

    def subject_model(self, s: int, batch: int = 1, **overrides) -> RWWBold:
        """An :class:`rww.RWWBold` of subject ``s``: its connectome and fitted parameters, the
        fit's ``model_options`` (``overrides`` replace them), ``batch`` simulations."""
        sc = self.sc if self.sc.dim() == 2 else self.sc[s]
        values = {name: v[s] for name, v in self.params.items()}       # () or (N,)
        return RWWBold(sc, batch=batch, **{**self.model_options, **overrides, **values})

    def save(self, path: str) -> tuple[str, str]:
        """Write ``path.json`` (history, settings, verdict, held-out scores, values) and
        ``path.npz`` (``param_<name>``, ``group_<name>``, ``deviation_<name>``, ``fc``)."""
        meta = {k: _plain(getattr(self, k)) for k in
                ("params", "group", "deviations", "history", "config", "cohort", "convergence",
                 "held_out")}
        _atomic_write_text(path + ".json", json.dumps(meta, indent=1))
        arrays = {f"{kind}_{k}": v.detach().cpu().numpy() for kind, d in
                  (("param", self.params), ("group", self.group), ("deviation", self.deviations))
                  for k, v in d.items()}
        if self.fc is not None:
            arrays["fc"] = self.fc.cpu().numpy()
        tmp = path + ".npz.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path + ".npz")
        return path + ".json", path + ".npz"


# ------------------------------------------------------------------------------ the fit
def fit_cohort(sc, target: CohortTarget, params: dict, config: FitConfig | None = None, *,
               realisations: int = 1, model_options: dict | None = None, optimizer=None,
               checkpoint: str | None = None, resume: bool = False, held_out: CohortTarget | None = None,
               evaluate_options: dict | None = None, ctx: rdist.Context | None = None,
               progress: bool = False, callback=None, scheduler=None) -> CohortResult | None:
    """Fit every subject of a cohort in one batch (see the module docstring).

    Args:
        sc: ``(S, N, N)`` connectome per subject, or ``(N, N)`` shared (as :class:`rww.RWWBold`
            takes it: normalise it first).
        target: :class:`CohortTarget` of S subjects.
        params: name -> :class:`CohortParam` (e.g. ``{"G": CohortParam(0.4)}``).
        config: :class:`rww.fit.FitConfig` (schedule, terms, noise seed, priors).
        realisations: R noise realisations per subject (the batch is S x R).
        model_options: keyword arguments of :class:`rww.RWWBold` for every subject (``dt`` [ms],
            ``tr`` [s], ``preset``, ``backend``, ``dtype``, ``fic``, fixed parameters, ...).
        optimizer: ``None`` (Adam, ``config.lr``) or a callable ``params -> optimizer``
            (element-wise optimizers only).
        checkpoint: file written atomically by rank 0 after every epoch; ``resume=True``
            continues from it (on any number of ranks) and refuses one written with other
            settings, naming them.
        held_out: a :class:`CohortTarget` of held-out data: per-subject scores by
            :func:`evaluate_cohort` (``evaluate_options`` are its keyword arguments) in
            ``result.held_out``.
        ctx: :class:`rww.distributed.Context`; default :func:`rww.distributed.init`.
        progress: tqdm bar on rank 0; callback: ``callback(epoch, history)`` on rank 0 after
            each epoch's checkpoint (raise :class:`rww.fit.StopFit` to stop every rank).
        scheduler: a callable ``optimizer -> lr scheduler`` (see the module docstring).

    Returns:
        :class:`CohortResult` on rank 0, ``None`` on the other ranks.

    Raises:
        ValueError: settings that cannot work (naming them): unknown or model-level terms,
            ``grad_clip``, more ranks than subjects, shapes of ``sc``/targets/inits, a resume
            from a checkpoint of other settings.
        RuntimeError: another rank failed (its message quoted).
    """
    config = config or FitConfig()
    config.validate()
    ctx = rdist.init() if ctx is None else ctx
    bad = [t for t, w in config.weights.items() if w and t not in COHORT_TERMS]
    if bad:
        raise ValueError(f"weights: {bad} are model-level terms, not per subject; cohort fits use "
                         f"{COHORT_TERMS}")
    if config.grad_clip:
        raise ValueError("grad_clip: not supported in cohort fits (one norm over all subjects "
                         "would couple them); use grad_clip=None")
    if not isinstance(realisations, int) or realisations < 1:
        raise ValueError(f"realisations: must be a positive integer, got {realisations!r}")
    if not params:
        raise ValueError("params: fit at least one parameter, e.g. {'G': CohortParam(0.4)}")
    options = dict(model_options or {})
    taken = [k for k in options if k in _MODEL_KEYS_TAKEN or k in params]
    if taken:
        raise ValueError(f"model_options: {taken} are set by the cohort fit (connectome, batch, "
                         "fitted parameters); give them as sc=, realisations=, params=")
    dtype = options.get("dtype", torch.float32)
    if ctx.device.type != "cpu":
        options.setdefault("device", ctx.device)
    n_subjects = target.n_subjects
    sc = torch.as_tensor(sc).to(dtype)
    if sc.dim() not in (2, 3) or (sc.dim() == 3 and sc.shape[0] != n_subjects):
        raise ValueError(f"sc: expected (N, N) shared or ({n_subjects}, N, N) one per subject, got "
                         f"{tuple(sc.shape)}")
    n_nodes = sc.shape[-1]
    if ctx.world_size > n_subjects:
        raise ValueError(f"ranks: {ctx.world_size} ranks for {n_subjects} subjects; run at most "
                         f"{n_subjects} ranks (each needs a subject)")
    unknown = [name for name in config.priors if name not in params]
    if unknown:
        raise ValueError(f"priors: {unknown} are not fitted parameters of the cohort "
                         f"({sorted(params)})")
    specs = {}
    for name in sorted(params):
        raw, transform = _initial_rows(name, params[name], n_subjects, n_nodes, dtype)
        specs[name] = (raw, transform, params[name])
    local = rdist.partition(n_subjects, ctx)
    model = _local_model(sc, local, realisations, options, specs, dtype)
    device = model.sc.device
    targets = target.validate(n_nodes, dtype, device)
    t_bold = targets[0].bold
    n_trs = config.n_trs or (t_bold.shape[0] if t_bold is not None else 1200)
    window = config.window_trs or n_trs
    if window > n_trs:
        raise ValueError(f"window_trs={window} is longer than the scan ({n_trs} TRs)")
    n_pieces = n_trs // window if config.window_trs else 1
    if t_bold is not None and config.window_trs and n_pieces * window > t_bold.shape[0]:
        raise ValueError(f"n_trs={n_trs} in windows of {window} TRs runs past the target bold "
                         f"({t_bold.shape[0]} TRs); use n_trs <= {t_bold.shape[0]}")
    for term in ("fcd", "fcd_ks"):
        if config.weights.get(term):
            for s, t in enumerate(targets):
                try:
                    _check_fcd_piece(t, window, term)
                except ValueError as err:
                    raise ValueError(f"subject {s}: {err}") from None
    values = {name: model.learned[name] for name in specs}
    grouped = [name for name in specs if specs[name][2].level != "subject"]
    keys, plist = [], []
    for name in specs:
        for kind in ("group", "subject"):
            if hasattr(values[name], kind):
                keys.append(f"{name}/{kind}")
                plist.append(getattr(values[name], kind))
    optimizer = torch.optim.Adam(plist, lr=config.lr) if optimizer is None else optimizer(plist)
    if not isinstance(optimizer, torch.optim.Optimizer) or isinstance(optimizer, torch.optim.LBFGS):
        raise TypeError(f"optimizer: expected a callable returning an element-wise "
                        f"torch.optim.Optimizer, got {type(optimizer).__name__}")
    if scheduler is not None:
        scheduler = scheduler(optimizer)
        if not hasattr(scheduler, "step") or not hasattr(scheduler, "state_dict"):
            raise TypeError(f"scheduler: expected a callable optimizer -> lr scheduler, got one "
                            f"returning {type(scheduler).__name__}")
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    settings = {"n_subjects": n_subjects, "n_nodes": n_nodes, "realisations": realisations,
                "params": {n: p.settings() for n, (_, _, p) in specs.items()},
                "model_options": {k: _plain(v) for k, v in options.items() if k != "device"},
                "sc": _fingerprint(sc),
                "targets": _fingerprint(*[x for t in targets for x in (t.fc, t.bold, t.fcd_values)])}
    config_dict = _config_dict(config)
    verdict_settings = _verdict_settings(config_dict)

    history = {"epoch": [], "loss": [], "fc_r_mean": [], "lr": [], "seconds": [], "converged": [],
               "subjects": [{"loss": [], "fc_r": []} for _ in range(n_subjects)]}
    start_epoch, last_fc, stopped = 0, None, None
    if resume and checkpoint:
        saved = None
        if ctx.is_main and os.path.exists(checkpoint):
            saved = torch.load(checkpoint, weights_only=True)
            why = _resume_problem(saved, checkpoint, config_dict, settings, optimizer, scheduler)
            saved = saved if why is None else ("error", why)
        saved = rdist.broadcast_from_main(saved, ctx)
        if isinstance(saved, tuple):
            raise ValueError(saved[1])
        if saved is not None:
            _load_rows(saved, keys, plist, optimizer, local, device)
            if scheduler is not None and saved.get("scheduler") is not None:
                scheduler.load_state_dict(saved["scheduler"])
            history, start_epoch, last_fc = saved["history"], saved["epoch"] + 1, saved["last_fc"]
            if config.early_stop and convergence(_series(history), **verdict_settings)["converged"]:
                stopped = "early_stop"

    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, initial=start_epoch, desc="cohort fit", unit="epoch")
    record = _records_needed(config)
    offset, rr = local[0] * realisations, realisations
    for epoch in range(start_epoch, config.epochs):
        if stopped:
            break
        tick, seed = time.perf_counter(), config.seed + epoch
        lr = optimizer.param_groups[0]["lr"]
        state = model.initial_state()
        if config.burn_in_trs:
            with torch.no_grad():
                state = model.simulate(config.burn_in_trs, state=state, seed=seed,
                                       sim_offset=offset).state
        t0 = config.burn_in_trs * model.steps_per_tr
        logged = [{} for _ in local]
        group_logged, pieces = {}, []
        for w in range(n_pieces):
            length = window if config.window_trs else n_trs
            optimizer.zero_grad(set_to_none=True)
            for name in grouped:
                values[name].begin()
            failure = None
            try:
                result = model.simulate(length, state=state, seed=seed, t0=t0, record=record,
                                        sim_offset=offset)
                total = 0.0
                for j, s in enumerate(local):
                    sl = slice(j * rr, (j + 1) * rr)
                    piece = SimpleNamespace(bold=result.bold[sl],
                                            records={k: v[sl] for k, v in result.records.items()})
                    tgt = targets[s]
                    emp = (obj.pearson_matrix(tgt.bold[w * window:(w + 1) * window], eps=1e-20)
                           if tgt.bold is not None and config.window_trs else tgt.fc)
                    terms = loss_terms(model, piece, tgt, emp, config, None)
                    for name, (_, _, p) in specs.items():
                        if p.level == "hierarchical":
                            terms[f"deviation_{name}"] = obj.gaussian_nll(
                                values[name].deviations()[j], 0.0, float(p.prior_scale))
                        if p.level == "subject" and name in config.priors:
                            terms[f"prior_{name}"] = obj.gaussian_nll(
                                values[name].values()[j], *config.priors[name])
                    sub = sum(config.weights.get(k, 1.0 if k.startswith(("prior_", "deviation_"))
                                                 else 0.0) * v for k, v in terms.items())
                    total = total + sub
                    for k, v in list(terms.items()) + [("loss", sub)]:
                        logged[j][k] = logged[j].get(k, 0.0) + float(v.detach()) / n_pieces
                total.backward()
            except Exception as err:          # noqa: BLE001 - every rank must learn of it
                failure = err
            _reduce_group_grads(values, grouped, local, n_subjects, ctx, failure)
            gprior = _group_priors(values, specs, config)
            for k, v in gprior.items():
                group_logged[k] = group_logged.get(k, 0.0) + float(v.detach()) / n_pieces
            if gprior:
                sum(gprior.values()).backward()
            optimizer.step()
            for name in grouped:
                values[name].rows = None
            pieces.append(result.bold.detach())
            state, t0 = result.state.detach(), t0 + length * model.steps_per_tr
        bold = torch.cat(pieces, dim=1)
        mine = []
        with torch.no_grad():
            now = {name: values[name].values().detach().cpu() for name in specs}
        for j, s in enumerate(local):
            fc = obj.pearson_matrix(bold[j * rr:(j + 1) * rr].double(), eps=1e-20).mean(0).cpu()
            fc_r = float(obj.fc_correlation(fc, targets[s].fc.double().cpu()))
            mine.append((s, logged[j], fc_r, {n: _row(now[n][j]) for n in specs}, fc))
        rows = _rows(keys, plist, optimizer) if checkpoint else None
        gathered = rdist.gather_to_main((mine, rows), ctx)
        decision = None
        if ctx.is_main:
            subjects = sorted((x for part, _ in gathered for x in part), key=lambda x: x[0])
            last_fc = torch.stack([x[4] for x in subjects])
            for s, sub_logged, fc_r, vals, _ in subjects:
                h = history["subjects"][s]
                h["loss"].append(sub_logged.pop("loss"))
                h["fc_r"].append(fc_r)
                for k, v in sub_logged.items():
                    h.setdefault(f"terms/{k}", []).append(v)
                for n, v in vals.items():
                    h.setdefault(f"params/{n}", []).append(v)
            for name in grouped:
                history.setdefault(f"group/{name}", []).append(
                    _row(values[name].group_value().detach().cpu()))
            for k, v in group_logged.items():
                history.setdefault(f"terms/{k}", []).append(v)
            history["epoch"].append(epoch)
            history["loss"].append(sum(history["subjects"][s]["loss"][-1] for s in range(n_subjects))
                                   + sum(group_logged.values()))
            history["fc_r_mean"].append(float(np.mean([x[2] for x in subjects])))
            history["lr"].append(float(lr))
            history["seconds"].append(time.perf_counter() - tick)
            converged = convergence(_series(history), **verdict_settings)["converged"]
            history["converged"].append(converged)
            if scheduler is not None:           # rank 0 steps before its checkpoint, the others below
                scheduler.step(history["loss"][-1]) if plateau else scheduler.step()
            if checkpoint:
                _atomic_torch_save({"format": "rww.cohort/1", "epoch": epoch, "history": history,
                                    "config": config_dict, "cohort": settings,
                                    "optimizer_class": type(optimizer).__name__,
                                    "scheduler_class": type(scheduler).__name__,
                                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                                    "rows": _merge_rows([r for _, r in gathered],
                                                        optimizer.state_dict()["param_groups"]),
                                    "last_fc": last_fc, "world_size": ctx.world_size}, checkpoint)
            if bar is not None:
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}",
                                fc_r=f"{history['fc_r_mean'][-1]:.3f}")
                bar.update(1)
            try:
                if callback is not None:
                    callback(epoch, history)
            except StopFit as stop:
                decision = f"callback: {stop}" if str(stop) else "callback"
            except Exception as err:           # noqa: BLE001 - end the other ranks too
                rdist.broadcast_from_main(("error", f"rank 0 callback: {type(err).__name__}: {err}"), ctx)
                raise
            if decision is None and config.early_stop and converged:
                decision = "early_stop"
        decision, loss = rdist.broadcast_from_main(
            (decision, history["loss"][-1] if ctx.is_main else None), ctx)
        if isinstance(decision, tuple):
            raise RuntimeError(decision[1])
        stopped = decision
        if scheduler is not None and not ctx.is_main:     # the loss rank 0 stepped with
            scheduler.step(loss) if plateau else scheduler.step()
    if bar is not None:
        bar.close()
    with torch.no_grad():
        final = {name: values[name].values().detach().cpu() for name in specs}
        devs = {name: values[name].deviations().detach().cpu() for name in specs
                if specs[name][2].level == "hierarchical"}
        group = {name: values[name].group_value().detach().cpu() for name in grouped}
    gathered = rdist.gather_to_main((final, devs), ctx)
    result = None
    if ctx.is_main:
        cat = (lambda k, d: _squeeze(torch.cat([g[k][d] for g in gathered])))
        verdict = convergence(_series(history), **verdict_settings)
        verdict.update(stopped=stopped, epochs_run=len(history["epoch"]), epochs=config.epochs)
        result = CohortResult({n: cat(0, n) for n in specs}, {n: _squeeze(v) for n, v in group.items()},
                              {n: cat(1, n) for n in devs}, last_fc, history, config_dict, settings,
                              verdict, sc.detach().cpu(), {k: v for k, v in options.items()})
    if held_out is not None:
        scores = evaluate_cohort(result, held_out, ctx=ctx, **(evaluate_options or {}))
        if result is not None:
            result.held_out = scores
    return result


# ------------------------------------------------------------------------------ held-out scores
def evaluate_cohort(result: CohortResult | None, target: CohortTarget, *,
                    ctx: rdist.Context | None = None, **options) -> list | None:
    """Held-out scores per subject: :func:`rww.evaluate.evaluate` of each subject's fitted model
    (:meth:`CohortResult.subject_model`) against its target, subjects split over ranks.

    Args:
        result: the fit's result (needed on rank 0 only; it is broadcast).
        target: :class:`CohortTarget` of the same S subjects (held-out scans).
        ctx: :class:`rww.distributed.Context`; default :func:`rww.distributed.init`.
        **options: keyword arguments of :func:`rww.evaluate.evaluate` (``n_trs``,
            ``burn_in_trs``, ``n_realisations``, ``seed``, ``dt``, ``hemispheres``, ``fcd``, ...).
            Every subject uses the same ``seed`` (the evaluation is per subject, not a batch).

    Returns:
        On rank 0, a list of S dicts (:meth:`rww.evaluate.Evaluation.to_dict`: scores, settings,
        conventions); ``None`` on the other ranks.

    Raises:
        ValueError: ``target`` holds another number of subjects than the fit.
    """
    from .evaluate import evaluate
    ctx = rdist.init() if ctx is None else ctx
    payload = None if result is None else (result.params, result.sc, result.model_options,
                                           result.n_subjects)
    params, sc, options_m, n_subjects = rdist.broadcast_from_main(payload, ctx)
    if target.n_subjects != n_subjects:
        raise ValueError(f"held-out target: {target.n_subjects} subjects, the fit has {n_subjects}")
    shell = CohortResult(params, {}, {}, None, {"subjects": [None] * n_subjects}, {}, {}, {},
                         sc, options_m)
    mine = []
    for s in rdist.partition(n_subjects, ctx):
        model = shell.subject_model(s)
        mine.append((s, evaluate(model, target.subject(s), **options).to_dict()))
    gathered = rdist.gather_to_main(mine, ctx)
    if not ctx.is_main:
        return None
    return [scores for _, scores in sorted((x for part in gathered for x in part),
                                           key=lambda x: x[0])]
