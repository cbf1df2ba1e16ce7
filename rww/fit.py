"""Fitting RWWBold to fMRI with PyTorch optimizers.

Two schemes:

- windowed (``window_trs=W``, the paper's truncated BPTT): each epoch simulates the scan in
  windows of W TRs, the state carried from window to window but detached, and takes one optimizer
  step per window on that window's loss (the window's simulated FC against the target);
- full-length (``window_trs=None``): each epoch simulates the whole scan and back-propagates
  through all of it (checkpointed backends keep this within memory), one optimizer step per epoch.

The model's batch holds noise realisations of the same parameters: every loss term is averaged
over them. Each epoch draws fresh noise (seed ``config.seed + epoch``) and starts from the
model's initial state after a burn-in simulated without gradient, so an epoch is a pure function
of the parameters and the epoch number: that is what makes resume exact.

Optimizers: any ``torch.optim.Optimizer``. Every step is taken as ``optimizer.step(closure)``,
the closure re-simulating the step's window (same state, noise seed and time) and returning its
loss, so optimizers that evaluate the loss several times per step work: L-BFGS evaluates it up to
``max_eval`` times per step (default ``1.25 * max_iter`` = 25), each evaluation a forward and
backward simulation of the window, so an L-BFGS epoch costs up to that many Adam epochs
(``history["evaluations"]`` counts them). The history logs the first evaluation of each step
(the loss at the parameters the step started from, as for Adam), and that evaluation's BOLD and
final state are the ones kept and carried to the next window. An optional learning-rate scheduler
is stepped once per epoch (``ReduceLROnPlateau`` with the epoch's loss).

Convergence: :func:`convergence` judges the last ``config.convergence_window`` epochs (the trend
of every learned parameter and of the loss); the verdict is in ``history["converged"]`` (per
epoch) and :attr:`FitResult.convergence`, and ``config.early_stop`` ends the fit at the first
epoch where it holds.

Checkpoints (``checkpoint=path``) are written atomically after every epoch (model, optimizer,
scheduler, history, config); ``resume=True`` continues from the last one and reproduces the
uninterrupted fit exactly. Files are plain tensors and lists, loaded with
``torch.load(weights_only=True)``.

Realisations over ranks (``ctx=``, a :class:`rww.distributed.Context` of several ranks, e.g.
under ``torchrun``): each rank simulates a contiguous block of the ``model.batch`` realisations
(their noise that of the one-process batch), every rank computes the whole loss on the gathered
outputs and the gradients are summed over ranks before each step (details, and what is refused,
in :mod:`rww.fit_epoch`). Every rank holds the same parameters and optimizer state and returns
the same result; rank 0 writes the checkpoint, which has no rank layout, so a fit resumes on any
number of ranks. The result equals the one-process fit to rounding (the summed gradient differs
in its last bits; ``tests/test_fit_distributed.py`` measures it). ``ctx=None``: one process.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import objectives as obj
from . import distributed as rdist
from .fit_control import (StopFit, _atomic_torch_save, _atomic_write_text, _build_optimizer,
                          _build_scheduler, _step_takes_closure, convergence)
from .fit_epoch import (Block, _burn_in, _records_needed, _total, check_distributable,  # noqa: F401
                        final_bold, local_batch, loss_terms, run_epoch)
from .fit_target import MIN_FCD_PAIRS, FitTarget, _pair_kind, fcd_counts, fcd_min_trs
from .model import RWWBold

LOSS_TERMS = ("fc_corr", "fc_log", "fc_l1", "fc_mse", "fc_level", "fcd", "fcd_ks", "bold_std",
              "bold_mean", "firing_rate", "rate_band", "bifurcation", "entropy", "smoothness")
"""Loss terms by name (weights in :attr:`FitConfig.weights`):

- ``fc_corr`` ``1 - r``; ``fc_log`` ``-log(0.5 + 0.5 r)``; ``fc_l1``, ``fc_mse``: FC vs target;
- ``fc_level``: squared difference of the mean off-diagonal FC (the level r ignores);
- ``fcd``: 1-Wasserstein distance (200 quantiles) of FCD values in the target's convention;
  ``fcd_ks``: smooth KS surrogate of the same (:func:`rww.objectives.smooth_ks_statistic`);
- ``bold_std``, ``bold_mean``: BOLD amplitude and baseline vs the target BOLD;
- ``firing_rate``: mean r_E of every region pulled to ``firing_rate_hz``; ``rate_band``: zero
  while every region's mean r_E is in ``rate_band_hz``, quadratic outside;
- ``bifurcation``, ``entropy``: the paper's constraints; ``smoothness``: graph smoothness of
  per-region parameters.
"""


@dataclass
class FitConfig:
    """Settings of a fit.

    Attributes:
        epochs: number of epochs.
        lr: learning rate of the default Adam optimizer.
        window_trs: TRs per window (truncated BPTT); ``None`` for full-length BPTT.
        n_trs: TRs simulated per epoch (default: the target BOLD's length, else 1200).
        burn_in_trs: TRs simulated without gradient before each epoch (transients discarded).
        seed: base noise seed; epoch e uses ``seed + e``.
        weights: loss term -> weight (terms of :data:`LOSS_TERMS`; zero or absent = off).
        priors: parameter name -> ``(mean, std)`` of a Gaussian prior on its physical value.
        bifurcation_init: initial ``(c_a, c_b, c_c)`` of the paper's bifurcation constraint.
        firing_rate_hz: target of the firing-rate term.
        rate_band_hz: ``(low, high)`` band of the rate-band term [Hz] (default 1-10 Hz, see
            :data:`rww.objectives.RATE_BAND_HZ`).
        grad_clip: clip the gradient norm (``None``: no clipping).
        convergence_window: epochs (>= 3) the convergence verdict judges, the last ones (see
            :func:`convergence`).
        param_rtol: a learned parameter has settled when its drift over the window (the change
            of its least-squares trend line) is at most this fraction of its mean value there
            (vectors: Euclidean norms; N x N matrices: their mean).
        loss_rtol: the loss has settled when its drift is at most this fraction of its mean, or
            within twice the drift's standard error (a trend the epoch-to-epoch noise of fresh
            realisations cannot tell from zero).
        early_stop: end the fit at the first epoch after which the verdict is "converged"
            (default ``False``: run every epoch and only report the verdict). A fit stopped early
            and resumed stays stopped; ``epochs`` and these four settings may change on resume.
    """

    epochs: int = 50
    lr: float = 0.01
    window_trs: int | None = 20
    n_trs: int | None = None
    burn_in_trs: int = 10
    seed: int = 0
    weights: dict = field(default_factory=lambda: {"fc_corr": 1.0})
    priors: dict = field(default_factory=dict)
    bifurcation_init: tuple = (0.5, 20.0, 10.0)
    firing_rate_hz: float = 3.0
    rate_band_hz: tuple = obj.RATE_BAND_HZ
    grad_clip: float | None = None
    convergence_window: int = 10
    param_rtol: float = 0.02
    loss_rtol: float = 0.01
    early_stop: bool = False

    def validate(self):
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs: must be a non-negative integer, got {self.epochs!r}")
        if self.window_trs is not None and (not isinstance(self.window_trs, int) or self.window_trs < 3):
            raise ValueError(f"window_trs: must be an integer >= 3 (FC needs samples) or None, "
                             f"got {self.window_trs!r}")
        unknown = [k for k in self.weights if k not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"weights: unknown loss terms {unknown}; choose from {LOSS_TERMS}")
        if not any(w for w in self.weights.values()):
            raise ValueError("weights: every loss term is off; give at least one non-zero weight")
        for name, prior in self.priors.items():
            if len(prior) != 2 or not prior[1] > 0:
                raise ValueError(f"priors: {name} needs (mean, std) with std > 0, got {prior!r}")
        band = self.rate_band_hz
        try:
            low, high = (float(v) for v in band)
        except (TypeError, ValueError):
            raise ValueError(f"rate_band_hz: expected (low, high) in Hz, got {band!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
            raise ValueError(f"rate_band_hz: need finite 0 <= low < high, got {band!r}")
        if (not isinstance(self.convergence_window, int) or isinstance(self.convergence_window, bool)
                or self.convergence_window < 3):
            raise ValueError(f"convergence_window: must be an integer >= 3 (epochs; a trend and "
                             f"its noise need 3 points), got {self.convergence_window!r}")
        for name in ("param_rtol", "loss_rtol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                    or not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite fraction >= 0 (0.02 = 2%), got {value!r}")
        if not isinstance(self.early_stop, bool):
            raise ValueError(f"early_stop: must be True or False, got {self.early_stop!r}")


class FitState(torch.nn.Module):
    """Learnable quantities of the fit that are not model parameters: the paper's bifurcation
    curve coefficients (c_a, c_b, c_c), entering as ``0.001 + relu(.)``."""

    def __init__(self, config: FitConfig, dtype, device):
        super().__init__()
        self.curve = torch.nn.Parameter(torch.tensor(config.bifurcation_init, dtype=dtype, device=device))


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        params: name -> physical value (tensor) of every learned parameter.
        bold: ``(B, T, N)`` simulated BOLD of the last epoch.
        fc: ``(N, N)`` simulated FC of the last epoch (mean over realisations).
        history: per-epoch lists: ``loss``, ``terms/<name>``, ``fc_r``, ``G_over_Gc`` (models
            with FIC: G over the critical coupling), ``params/<name>``
            (scalars and N-vectors; for matrices such as ``w_bb``, ``params/<name>/mean`` and
            ``params/<name>/std``), ``lr`` (learning rate of the first parameter group during
            the epoch), ``evaluations`` (loss evaluations, i.e. simulations with gradient, in
            the epoch: one per step for Adam, several for L-BFGS), ``converged`` (the verdict of
            :func:`convergence` after the epoch), ``seconds``. Entries of epochs run by a version
            that did not record a series are ``None``.
        config: the :class:`FitConfig` as a dict.
        convergence: the verdict of :func:`convergence` on the whole history, plus ``stopped``
            (``None``, ``"early_stop"`` or ``"callback: <reason>"``), ``epochs_run`` and
            ``epochs`` (asked for).
    """

    params: dict
    bold: torch.Tensor
    fc: torch.Tensor
    history: dict
    config: dict
    convergence: dict | None = None

    @property
    def converged(self) -> bool:
        """Whether the fit converged (:attr:`convergence`); the reason is
        ``convergence["reason"]``."""
        return bool(self.convergence and self.convergence.get("converged"))

    def save(self, path: str) -> tuple[str, str]:
        """Write ``path.json`` (history, config, parameters, convergence) and ``path.npz``
        (arrays)."""
        meta = {"config": self.config, "history": self.history, "convergence": self.convergence,
                "params": {k: v.detach().cpu().tolist() for k, v in self.params.items()}}
        _atomic_write_text(path + ".json", json.dumps(meta, indent=1))
        arrays = {"bold": self.bold.detach().cpu().numpy(), "fc": self.fc.detach().cpu().numpy()}
        arrays.update({f"param_{k}": v.detach().cpu().numpy() for k, v in self.params.items()})
        tmp = path + ".npz.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path + ".npz")
        return path + ".json", path + ".npz"

    @classmethod
    def load(cls, path: str) -> "FitResult":
        with open(path + ".json") as fh:
            meta = json.load(fh)
        arrays = np.load(path + ".npz")
        params = {k: torch.as_tensor(arrays[f"param_{k}"]) for k in meta["params"]}
        verdict = meta.get("convergence")
        if verdict is None:           # written before rww recorded it: judge the history now
            verdict = convergence(meta["history"], **_verdict_settings(meta["config"]))
        return cls(params, torch.as_tensor(arrays["bold"]), torch.as_tensor(arrays["fc"]),
                   meta["history"], meta["config"], verdict)


def _verdict_settings(config: dict) -> dict:
    defaults = FitConfig()
    return {k: config.get(k, getattr(defaults, k))
            for k in ("convergence_window", "param_rtol", "loss_rtol")}


def _check_fcd_piece(target: FitTarget, piece_trs: int, term: str):
    """The FCD term compares distributions of FCD values of each simulated piece: a target
    without FCD values, or a piece too short for two pairs of windows, would fail deep inside
    ``torch.quantile``; both are said here, with the numbers."""
    if target.fcd_values is None:
        raise ValueError(f"weights: the {term} term needs target fcd_values, and "
                         f"{target.fcd_unavailable or 'the target has none'}")
    w, s, exclude = target.fcd_window, target.fcd_step, target.fcd_exclude_overlapping
    n_win, n_pairs = fcd_counts(piece_trs, w, s, exclude)
    if n_pairs < MIN_FCD_PAIRS:
        raise ValueError(f"fcd: a simulated piece of {piece_trs} TRs has {n_win} FCD windows ({w} TRs "
                         f"every {s}) and {n_pairs} pairs of {_pair_kind(exclude)}; the {term} term "
                         f"needs at least {MIN_FCD_PAIRS}, i.e. pieces of at least "
                         f"{fcd_min_trs(w, s, exclude)} TRs: simulate longer pieces (n_trs, "
                         "window_trs; window_trs=None for the whole scan) or use shorter windows")


def _check_resumable(saved: dict, checkpoint: str, config: FitConfig, optimizer, scheduler):
    # Everything but the epoch count and the stopping rule must match: a finished fit may be
    # extended, or judged and stopped differently.
    changed = _config_changes(saved["config"], _config_dict(config))
    if changed:
        raise ValueError(f"resume: {checkpoint} was written by a fit with other settings "
                         f"({', '.join(changed)} differ); use the same settings, or another "
                         "checkpoint path to start afresh")
    for what, now, key in (("optimizer", optimizer, "optimizer_class"),
                           ("scheduler", scheduler, "scheduler_class")):
        before = saved.get(key, "?")            # "?": written before rww recorded it
        name = None if now is None else type(now).__name__
        if before != "?" and before != name:
            raise ValueError(f"resume: {checkpoint} was written with {what} {before}, this fit "
                             f"has {name}; pass the same {what}, or another checkpoint path to "
                             "start afresh")


def _fill_history(history: dict, config: FitConfig):
    """Series this version records every epoch, added to a history of an earlier version
    (``None`` where not recorded; the verdicts recomputed)."""
    n = len(history["epoch"])
    for key in ("lr", "evaluations"):
        if len(history.get(key, [])) < n:
            history[key] = [None] * (n - len(history.get(key, []))) + list(history.get(key, []))
    if len(history.get("converged", [])) < n:
        settings = _verdict_settings(_config_dict(config))
        history["converged"] = [
            convergence({k: v[:i + 1] for k, v in history.items() if isinstance(v, list)},
                        **settings)["converged"] for i in range(n)]


def fit(model: RWWBold, target: FitTarget, config: FitConfig | None = None, optimizer=None,
        checkpoint: str | None = None, resume: bool = False, progress: bool = True,
        callback=None, scheduler=None, ctx: rdist.Context | None = None) -> FitResult:
    """Fit the learnable parameters of ``model`` to ``target``.

    Args:
        model: an :class:`rww.RWWBold` with ``learn=`` set; its batch is the number of noise
            realisations averaged in every loss term.
        target: :class:`FitTarget`.
        config: :class:`FitConfig` (defaults: 50 epochs, Adam lr 0.01, 20-TR windows, 1 - r).
        optimizer: any ``torch.optim.Optimizer`` over ``model.parameters()``, or a callable
            ``params -> optimizer`` (it also gets the fit's own parameters when the bifurcation
            term is on); default ``Adam(lr)``. Steps are ``optimizer.step(closure)``: the closure
            re-simulates the step's window and returns its loss, so L-BFGS works, at up to
            ``max_eval`` simulations per step (see the module docstring).
        checkpoint: path of the checkpoint file written atomically after every epoch (by rank 0).
        resume: continue from ``checkpoint`` if it exists (the result equals an uninterrupted fit;
            the same optimizer and scheduler types are required; any number of ranks).
        progress: show a progress bar (tqdm) over epochs (on rank 0).
        callback: called as ``callback(epoch, history)`` after every epoch (after its
            checkpoint; on rank 0); raising :class:`StopFit` ends the fit there (on every rank),
            other exceptions propagate.
        scheduler: a learning-rate scheduler (``torch.optim.lr_scheduler``) on ``optimizer``, or
            a callable ``optimizer -> scheduler`` (for the default Adam); stepped once after every
            epoch (``ReduceLROnPlateau`` with the epoch's mean loss), checkpointed with the fit.
        ctx: ``None`` (one process) or a :class:`rww.distributed.Context` from
            :func:`rww.distributed.init`: with several ranks, the ``model.batch`` realisations are
            split over them in contiguous blocks, each rank simulating its own and the loss and
            gradients combined over ranks (:mod:`rww.fit_epoch`). Call ``fit`` on every rank with
            the same model, target, settings and optimizer; every rank holds the same parameters
            and optimizer state, and returns the same result. Equals the one-process fit to
            rounding (the gradient is summed over ranks in another order). Refused: models with
            per-simulation parameters or settings, more ranks than realisations.

    Returns:
        :class:`FitResult`; ``result.converged`` and ``result.convergence["reason"]`` give the
        verdict of :func:`convergence`.

    Raises:
        ValueError: settings, target or schedule that cannot work (each message names the
            setting), e.g. an FCD term without FCD values or with pieces too short for them.
        TypeError: an optimizer or scheduler of the wrong kind.
        RuntimeError: (several ranks) another rank failed; its error is on its stderr.
    """
    config = config or FitConfig()
    config.validate()
    if not model.learnable:
        raise ValueError("model: no learnable parameters; build it with learn=[...]")
    check_distributable(model, ctx)
    block = Block(model.batch, ctx)
    dtype, device = model.sc.dtype, model.sc.device
    target = target.validate(model.n_nodes, dtype, device)
    n_trs = config.n_trs or (target.bold.shape[0] if target.bold is not None else 1200)
    window = config.window_trs or n_trs
    if window > n_trs:
        raise ValueError(f"window_trs={window} is longer than the scan ({n_trs} TRs)")
    n_windows = n_trs // window
    if target.bold is not None and config.window_trs and n_windows * window > target.bold.shape[0]:
        # each window is compared with the same window of the data: the data must cover them all
        raise ValueError(f"n_trs={n_trs} in windows of {window} TRs runs past the target bold "
                         f"({target.bold.shape[0]} TRs); use n_trs <= {target.bold.shape[0]}")
    if config.weights.get("fcd") or config.weights.get("fcd_ks"):
        _check_fcd_piece(target, window if config.window_trs else n_trs,
                         "fcd" if config.weights.get("fcd") else "fcd_ks")
    extra = FitState(config, dtype, device)
    params = list(model.parameters()) + (list(extra.parameters()) if config.weights.get("bifurcation") else [])
    optimizer = _build_optimizer(optimizer, params, model, config.lr)
    scheduler = _build_scheduler(scheduler, optimizer)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    with_closure = _step_takes_closure(optimizer)
    record = _records_needed(config)
    verdict_settings = _verdict_settings(_config_dict(config))

    history = {"epoch": [], "loss": [], "fc_r": [], "seconds": []}
    start_epoch = 0
    saved_bold = None
    stopped = None
    saved = _load_checkpoint(checkpoint, config, optimizer, scheduler, block) if resume else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        extra.load_state_dict(saved["extra"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        history = saved["history"]
        _fill_history(history, config)
        start_epoch = saved["epoch"] + 1
        saved_bold = saved.get("last_bold")        # absent in checkpoints of rww < 0.2
        if config.early_stop and convergence(history, **verdict_settings)["converged"]:
            stopped = "early_stop"                 # the fit stopped there: it stays stopped

    bar = None
    if progress and block.is_main:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, initial=start_epoch, desc="fit", unit="epoch")
    last_bold = None
    pieces_per_epoch = n_windows if config.window_trs else 1
    with local_batch(model, block):
        for epoch in range(start_epoch, config.epochs):
            if stopped:
                break
            tick = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            logged_sum, last_bold, evaluations = run_epoch(
                model, target, config, extra, optimizer, params, seed=config.seed + epoch,
                window=window, n_trs=n_trs, pieces=pieces_per_epoch, with_closure=with_closure,
                record=record, block=block)
            fc_r = _record_epoch(history, model, epoch, logged_sum, last_bold, target, lr,
                                 evaluations, tick)
            converged = convergence(history, **verdict_settings)["converged"]
            history.setdefault("converged", []).append(converged)
            if scheduler is not None:
                if plateau:
                    scheduler.step(history["loss"][-1])
                else:
                    scheduler.step()
            decision = None
            if block.is_main:
                if checkpoint:
                    # last_bold: what a resumed, already finished fit returns (the last epoch's
                    # BOLD, simulated with the parameters of each of its windows).
                    _atomic_torch_save({"model": model.state_dict(), "extra": extra.state_dict(),
                                        "optimizer": optimizer.state_dict(),
                                        "optimizer_class": type(optimizer).__name__,
                                        "scheduler": None if scheduler is None else scheduler.state_dict(),
                                        "scheduler_class": None if scheduler is None else type(scheduler).__name__,
                                        "history": history, "epoch": epoch,
                                        "config": _config_dict(config),
                                        "last_bold": last_bold.cpu()}, checkpoint)
                if bar is not None:
                    bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", fc_r=f"{fc_r:.3f}")
                    bar.update(1)
                decision = _call_back(callback, epoch, history, block)
            if block.distributed:         # rank 0's callback decides for every rank
                decision = rdist.broadcast_from_main(decision, block.ctx)
                if isinstance(decision, tuple):
                    raise RuntimeError(decision[1])
            stopped = decision
            if config.early_stop and converged and not stopped:
                stopped = "early_stop"
        if bar is not None:
            bar.close()
        if last_bold is None and saved_bold is not None:   # resumed a finished fit
            last_bold = saved_bold.to(model.sc.device)
        elif last_bold is None:
            # A finished fit's checkpoint from rww < 0.2 (no BOLD saved): simulate the last
            # epoch's noise (seed and burn-in as in the loop) with the final parameters.
            seed = config.seed + (history["epoch"][-1] if history["epoch"] else 0)
            last_bold = final_bold(model, config, n_trs, seed, block)
    params_out = {name: getattr(model, name).detach().clone() for name in model.learnable}
    sim_fc = obj.pearson_matrix(last_bold, eps=1e-20).mean(0)
    verdict = convergence(history, **verdict_settings)
    verdict.update(stopped=stopped, epochs_run=len(history["epoch"]), epochs=config.epochs)
    return FitResult(params_out, last_bold, sim_fc, history, _config_dict(config), verdict)


def _load_checkpoint(checkpoint, config, optimizer, scheduler, block) -> dict | None:
    """The checkpoint to resume from (``None``: none yet), checked; read by rank 0 and sent to
    every rank (a refusal raises on every rank)."""
    if not checkpoint:
        return None
    if not block.distributed:
        if not os.path.exists(checkpoint):
            return None
        saved = torch.load(checkpoint, weights_only=True)
        _check_resumable(saved, checkpoint, config, optimizer, scheduler)
        return saved
    saved = None
    if block.is_main and os.path.exists(checkpoint):
        try:
            saved = torch.load(checkpoint, weights_only=True)
            _check_resumable(saved, checkpoint, config, optimizer, scheduler)
        except Exception as err:                  # noqa: BLE001 - every rank must learn of it
            saved = ("error", err)
    saved = rdist.broadcast_from_main(saved, block.ctx)
    if isinstance(saved, tuple):
        err = saved[1]
        raise err if isinstance(err, (ValueError, TypeError)) else RuntimeError(f"resume: {err}")
    return saved


def _call_back(callback, epoch: int, history: dict, block):
    """Run the callback (rank 0): ``None`` to go on, the reason to stop; another exception is
    sent to the other ranks as ``("error", message)`` before it propagates."""
    if callback is None:
        return None
    try:
        callback(epoch, history)
    except StopFit as stop:
        return f"callback: {stop}" if str(stop) else "callback"
    except Exception as err:
        if block.distributed:
            rdist.broadcast_from_main(("error", f"rank 0 callback: {type(err).__name__}: {err}"),
                                      block.ctx)
        raise
    return None


def _record_epoch(history, model, epoch, logged_sum, last_bold, target, lr, evaluations, tick):
    """Append the epoch's entries to ``history``; returns its FC r."""
    sim_fc = obj.pearson_matrix(last_bold, eps=1e-20).mean(0)
    fc_r = float(obj.fc_correlation(sim_fc, target.fc))
    history["epoch"].append(epoch)
    history["loss"].append(logged_sum.pop("total"))
    history["fc_r"].append(fc_r)
    if model.fic_target is not None:
        # Distance to the bifurcation, recorded for every epoch (NaN without a crossing).
        try:
            ratio = float(model.coupling_ratio().mean())
        except ValueError:
            ratio = float("nan")
        history.setdefault("G_over_Gc", []).append(ratio)
    history.setdefault("lr", []).append(float(lr))
    history.setdefault("evaluations", []).append(evaluations)
    history["seconds"].append(time.perf_counter() - tick)
    for k, v in logged_sum.items():
        history.setdefault(f"terms/{k}", []).append(v)
    for name in model.learnable:
        value = getattr(model, name).detach().cpu()
        if value.dim() >= 2:
            # An N x N matrix (w_bb) per epoch would make every checkpoint and the saved
            # history grow by N^2 floats an epoch: its mean and spread are kept instead (the
            # final matrix is in the result's params).
            history.setdefault(f"params/{name}/mean", []).append(value.double().mean().item())
            history.setdefault(f"params/{name}/std", []).append(value.double().std().item())
        else:
            history.setdefault(f"params/{name}", []).append(value.tolist())
    return fc_r


def _config_dict(config: FitConfig) -> dict:
    d = asdict(config)
    d["bifurcation_init"] = list(d["bifurcation_init"])
    d["rate_band_hz"] = [float(v) for v in d["rate_band_hz"]]
    d["priors"] = {k: list(v) for k, v in d["priors"].items()}
    return d


def _config_changes(saved: dict, current: dict) -> list:
    """Settings (other than those of :data:`_RESUMABLE_CHANGES`) in which a checkpoint's config
    differs from ``current``.
    A setting the checkpoint lacks (written before the setting existed) counts as its default,
    so checkpoints of earlier versions resume."""
    defaults = _config_dict(FitConfig())
    return sorted(k for k in set(saved) | set(current)
                  if k not in _RESUMABLE_CHANGES and saved.get(k, defaults.get(k)) != current.get(k))


# Settings a resumed fit may change: they decide when the fit ends, not what an epoch computes.
_RESUMABLE_CHANGES = ("epochs", "early_stop", "convergence_window", "param_rtol", "loss_rtol")


def evaluate(model: RWWBold, target_fc: torch.Tensor, n_trs: int, burn_in_trs: int = 10,
             seed: int = 10_000, target_fcd_values: torch.Tensor | None = None,
             fcd_window: int = 30, fcd_step: int = 5, dt: float | None = None) -> dict:
    """Score the model on held-out data: a thin wrapper over :func:`rww.evaluate.evaluate` (the
    one evaluation protocol; use it directly for every score and its conventions).

    Simulates ``model.batch`` noise realisations of ``n_trs`` TRs (after ``burn_in_trs``) at step
    ``dt`` (default :func:`rww.evaluate.evaluation_dt`: 0.1 ms for deco2014, whatever step the
    model was fitted at) and returns floats: ``fc_r`` (Pearson r of the realisation-averaged FC's
    lower triangle with ``target_fc``'s), ``fc_mse`` and, with ``target_fcd_values`` (FCD values
    over pairs of non-overlapping windows of ``fcd_window`` TRs every ``fcd_step``, rww's
    convention), ``fcd_ks`` (KS statistic) and ``fcd_w1`` (exact 1-Wasserstein distance) of the
    simulated values pooled over realisations."""
    from .evaluate import evaluate as evaluate_protocol
    target = FitTarget(fc=target_fc, fcd_values=target_fcd_values, fcd_window=fcd_window,
                       fcd_step=fcd_step, fcd_exclude_overlapping=True)
    ev = evaluate_protocol(model, target, n_trs=n_trs, burn_in_trs=burn_in_trs,
                           n_realisations=model.batch, seed=seed, dt=dt,
                           fcd=target_fcd_values is not None)
    out = {"fc_r": ev["fc_r"], "fc_mse": ev["fc_mse"]}
    if target_fcd_values is not None:
        if ev["fcd_ks_nonoverlap"] is None:
            raise ValueError(f"evaluate: {n_trs} TRs hold no pair of non-overlapping FCD windows "
                             f"({fcd_window} TRs every {fcd_step}); simulate longer")
        out["fcd_ks"] = ev["fcd_ks_nonoverlap"]
        out["fcd_w1"] = ev["fcd_w1_nonoverlap"]
    return out


__all__ = ["FitConfig", "FitResult", "FitState", "FitTarget", "LOSS_TERMS", "MIN_FCD_PAIRS",
           "StopFit", "convergence", "evaluate", "fcd_counts", "fcd_min_trs", "fit",
           "loss_terms"]
