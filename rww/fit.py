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

Checkpoints (``checkpoint=path``) are written atomically after every epoch (model, optimizer,
history, config); ``resume=True`` continues from the last one and reproduces the uninterrupted fit
exactly. Files are plain tensors and lists, loaded with ``torch.load(weights_only=True)``.
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
class FitTarget:
    """What the model is fitted to.

    Attributes:
        fc: ``(N, N)`` target FC (computed from ``bold`` when not given).
        bold: optional ``(T, N)`` BOLD; windowed fits then compare each window with the same
            window of the data (the paper's scheme), and its length sets the scan length.
        fcd_values: optional ``(M,)`` FCD values (above the diagonal) for the FCD term;
            computed from ``bold`` when not given (if it spans two windows).
        fcd_window, fcd_step: FCD convention of ``fcd_values``, in TRs.
        fcd_exclude_overlapping: whether ``fcd_values`` leave out pairs of overlapping windows
            (rww's :func:`rww.objectives.fcd_values` with window and step); ``False`` for values
            over every pair of distinct windows (cuBNM's pooled values, the embedded demo's).
            The simulated FCD is reduced the same way.
    """

    fc: torch.Tensor | None = None
    bold: torch.Tensor | None = None
    fcd_values: torch.Tensor | None = None
    fcd_window: int = 30
    fcd_step: int = 5
    fcd_exclude_overlapping: bool = True

    def validate(self, n_nodes: int, dtype, device) -> "FitTarget":
        """Check shapes and values; returns a copy with tensors of ``dtype`` on ``device``."""
        bold = self.bold
        if bold is not None:
            bold = torch.as_tensor(bold).to(dtype=dtype, device=device)
            if bold.dim() != 2 or bold.shape[1] != n_nodes:
                raise ValueError(f"target bold: expected shape (T, {n_nodes}) (time x regions), "
                                 f"got {tuple(bold.shape)}")
            if not torch.isfinite(bold).all():
                raise ValueError("target bold: contains NaN or infinite values")
            if bold.shape[0] < 3:
                raise ValueError(f"target bold: needs at least 3 time points, got {bold.shape[0]}")
            constant = torch.nonzero(bold.std(0) == 0).flatten().tolist()
            if constant:
                raise ValueError(f"target bold: regions {constant[:10]} have constant time series; "
                                 "their FC is undefined (remove or fix them)")
        fc = self.fc
        if fc is None:
            if bold is None:
                raise ValueError("target: give an FC matrix (fc=) or BOLD time series (bold=)")
            fc = obj.fc(bold)
        fc = torch.as_tensor(fc).to(dtype=dtype, device=device)
        if fc.shape != (n_nodes, n_nodes):
            raise ValueError(f"target fc: expected shape ({n_nodes}, {n_nodes}), got {tuple(fc.shape)}")
        if not torch.isfinite(fc).all():
            raise ValueError("target fc: contains NaN or infinite values")
        if (fc.abs() > 1 + 1e-6).any():
            raise ValueError("target fc: values outside [-1, 1]; expected a correlation matrix")
        fcd_vals = self.fcd_values
        if fcd_vals is not None:
            fcd_vals = torch.as_tensor(fcd_vals).to(dtype=dtype, device=device).flatten()
            if not torch.isfinite(fcd_vals).all() or fcd_vals.numel() < 2:
                raise ValueError("target fcd_values: expected at least 2 finite values")
        elif bold is not None and bold.shape[0] >= self.fcd_window + self.fcd_step:
            # The data's own FCD, in the convention the simulated FCD is reduced with.
            fcd_vals = FitTarget(fcd_window=self.fcd_window, fcd_step=self.fcd_step,
                                 fcd_exclude_overlapping=self.fcd_exclude_overlapping
                                 ).simulated_fcd_values(bold.unsqueeze(0))[0]
        return FitTarget(fc, bold, fcd_vals, self.fcd_window, self.fcd_step,
                         self.fcd_exclude_overlapping)

    def simulated_fcd_values(self, bold: torch.Tensor) -> torch.Tensor:
        """FCD values of simulated ``bold (B, T, N)`` -> ``(B, M)``, in this target's convention."""
        matrix = obj.fcd(bold, self.fcd_window, self.fcd_step)
        if self.fcd_exclude_overlapping:
            return obj.fcd_values(matrix, self.fcd_window, self.fcd_step)
        return obj.fcd_values(matrix)


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
            ``params/<name>/std``), ``seconds``.
        config: the :class:`FitConfig` as a dict.
    """

    params: dict
    bold: torch.Tensor
    fc: torch.Tensor
    history: dict
    config: dict

    def save(self, path: str) -> tuple[str, str]:
        """Write ``path.json`` (history, config, parameters) and ``path.npz`` (arrays)."""
        meta = {"config": self.config, "history": self.history,
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
        return cls(params, torch.as_tensor(arrays["bold"]), torch.as_tensor(arrays["fc"]),
                   meta["history"], meta["config"])


def _atomic_write_text(path: str, text: str):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_torch_save(obj_, path: str):
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        torch.save(obj_, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def loss_terms(model: RWWBold, result, target: FitTarget, emp_fc: torch.Tensor, config: FitConfig,
               extra: FitState) -> dict:
    """Every weighted loss term for one simulated piece (window or whole scan).

    Args:
        result: :class:`rww.ops.reference.ScanResult` of the piece, ``bold (B, T, N)``.
        emp_fc: ``(N, N)`` FC to compare with (the window's or the whole target's).

    Returns:
        name -> scalar tensor (unweighted); only terms with a non-zero weight are computed.
    """
    w = config.weights
    terms = {}
    need_fc = any(w.get(k) for k in ("fc_corr", "fc_log", "fc_l1", "fc_mse", "fc_level"))
    if need_fc:
        sim_fc = obj.pearson_matrix(result.bold, eps=1e-20)            # (B, N, N)
        for name, fn in (("fc_corr", obj.fc_corr_loss), ("fc_log", obj.fc_log_loss),
                         ("fc_l1", obj.fc_l1), ("fc_mse", obj.fc_mse),
                         ("fc_level", obj.fc_level_loss)):
            if w.get(name):
                terms[name] = fn(sim_fc, emp_fc).mean()
    if w.get("fcd") or w.get("fcd_ks"):
        if target.fcd_values is None:
            term = "fcd" if w.get("fcd") else "fcd_ks"
            raise ValueError(f"weights: the {term} term needs target fcd_values")
        sim = target.simulated_fcd_values(result.bold)                # (B, M)
        if w.get("fcd"):
            terms["fcd"] = obj.wasserstein1(sim, target.fcd_values).mean()
        if w.get("fcd_ks"):
            terms["fcd_ks"] = obj.smooth_ks_statistic(sim, target.fcd_values).mean()
    if w.get("bold_std"):
        if target.bold is None:
            raise ValueError("weights: the bold_std term needs target bold")
        terms["bold_std"] = obj.bold_std_loss(result.bold, target.bold.std(0)).mean()
    if w.get("bold_mean"):
        if target.bold is None:
            raise ValueError("weights: the bold_mean term needs target bold")
        terms["bold_mean"] = obj.bold_mean_loss(result.bold, target.bold.mean(0), target.bold.std(0)).mean()
    if w.get("firing_rate"):
        terms["firing_rate"] = obj.firing_rate_loss(result.records["r_E"], config.firing_rate_hz).mean()
    if w.get("rate_band"):
        low, high = config.rate_band_hz
        terms["rate_band"] = obj.rate_band_loss(result.records["r_E"], float(low), float(high)).mean()
    if w.get("bifurcation"):
        c = extra.curve
        terms["bifurcation"] = obj.bifurcation_penalty(model.w_IE, model.w_EI, c[0], c[1], c[2])
    if w.get("entropy"):
        terms["entropy"] = obj.entropy_term(result.records["S_E"], result.records["S_I"])
    if w.get("smoothness"):
        per_region = [model.learned[n]() for n in model.learnable
                      if n not in ("w_bb", "sigma_out") and model.learned[n]().dim() == 1]
        terms["smoothness"] = sum((obj.smoothness_penalty(v, model.sc) for v in per_region),
                                  torch.zeros((), dtype=model.sc.dtype, device=model.sc.device))
    return terms


def _total(terms: dict, config: FitConfig, model: RWWBold) -> tuple[torch.Tensor, dict]:
    total = sum(config.weights.get(k, 0.0) * v for k, v in terms.items())
    logged = dict(terms)
    for name, (mean, std) in config.priors.items():
        nll = obj.gaussian_nll(getattr(model, name), mean, std)
        logged[f"prior_{name}"] = nll
        total = total + nll
    return total, logged


def _check_fcd_piece(target: FitTarget, piece_trs: int):
    """The FCD term compares distributions of FCD values of each simulated piece: a piece too
    short for two non-overlapping window pairs would fail deep inside ``torch.quantile``."""
    if target.fcd_values is None:
        raise ValueError("weights: the fcd term needs target fcd_values (fcd and fcd_ks)")
    w, s = target.fcd_window, target.fcd_step
    n_win = (piece_trs - w) // s + 1 if piece_trs >= w else 0
    # rww's convention skips pairs of overlapping windows; the pooled (cuBNM) one keeps them.
    gap = max(1, -(-w // s)) if target.fcd_exclude_overlapping else 1
    n_pairs = sum(n_win - d for d in range(gap, n_win))
    if n_pairs < 2:
        kind = "non-overlapping windows" if target.fcd_exclude_overlapping else "windows"
        raise ValueError(f"fcd: a simulated piece of {piece_trs} TRs has {n_win} FCD windows ({w} TRs "
                         f"every {s}) and {n_pairs} pairs of {kind}; the fcd term needs "
                         "at least 2: simulate longer pieces (n_trs, window_trs) or use shorter windows")


def _records_needed(config: FitConfig) -> tuple:
    rec = []
    if config.weights.get("firing_rate") or config.weights.get("rate_band"):
        rec.append("r_E")
    if config.weights.get("entropy"):
        rec += ["S_E", "S_I"]
    return tuple(rec)


def _burn_in(model: RWWBold, config: FitConfig, seed: int):
    state = model.initial_state()
    if config.burn_in_trs:
        with torch.no_grad():
            _, state = model(config.burn_in_trs, state=state, seed=seed, t0=0)
    return state.detach(), config.burn_in_trs * model.steps_per_tr


def fit(model: RWWBold, target: FitTarget, config: FitConfig | None = None, optimizer=None,
        checkpoint: str | None = None, resume: bool = False, progress: bool = True,
        callback=None) -> FitResult:
    """Fit the learnable parameters of ``model`` to ``target``.

    Args:
        model: an :class:`rww.RWWBold` with ``learn=`` set; its batch is the number of noise
            realisations averaged in every loss term.
        target: :class:`FitTarget`.
        config: :class:`FitConfig` (defaults: 50 epochs, Adam lr 0.01, 20-TR windows, 1 - r).
        optimizer: a ``torch.optim.Optimizer`` over ``model.parameters()`` (and the fit's own
            parameters if the bifurcation term is on: pass a callable ``params -> optimizer`` to
            include them); default Adam(lr).
        checkpoint: path of the checkpoint file written atomically after every epoch.
        resume: continue from ``checkpoint`` if it exists (the result equals an uninterrupted fit).
        progress: show a progress bar (tqdm) over epochs.
        callback: called as ``callback(epoch, history)`` after every epoch.

    Returns:
        :class:`FitResult`.
    """
    config = config or FitConfig()
    config.validate()
    if not model.learnable:
        raise ValueError("model: no learnable parameters; build it with learn=[...]")
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
        _check_fcd_piece(target, window if config.window_trs else n_trs)
    extra = FitState(config, dtype, device)
    params = list(model.parameters()) + (list(extra.parameters()) if config.weights.get("bifurcation") else [])
    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=config.lr)
    elif callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer(params)
    record = _records_needed(config)

    history = {"epoch": [], "loss": [], "fc_r": [], "seconds": []}
    start_epoch = 0
    saved_bold = None
    if resume and checkpoint and os.path.exists(checkpoint):
        saved = torch.load(checkpoint, weights_only=True)
        # Everything but the epoch count must match: a finished fit may be extended.
        changed = _config_changes(saved["config"], _config_dict(config))
        if changed:
            raise ValueError(f"resume: {checkpoint} was written by a fit with other settings "
                             f"({', '.join(changed)} differ); use the same settings, or another "
                             "checkpoint path to start afresh")
        model.load_state_dict(saved["model"])
        extra.load_state_dict(saved["extra"])
        optimizer.load_state_dict(saved["optimizer"])
        history = saved["history"]
        start_epoch = saved["epoch"] + 1
        saved_bold = saved.get("last_bold")        # absent in checkpoints of rww < 0.2

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, initial=start_epoch, desc="fit", unit="epoch")
    last_bold = None
    for epoch in range(start_epoch, config.epochs):
        tick = time.perf_counter()
        seed = config.seed + epoch
        state, t0 = _burn_in(model, config, seed)
        logged_sum, pieces = {}, []
        for w_index in range(n_windows if config.window_trs else 1):
            length = window if config.window_trs else n_trs
            result = model.simulate(length, state=state, seed=seed, t0=t0, record=record)
            if target.bold is not None and config.window_trs:
                emp_fc = obj.pearson_matrix(target.bold[w_index * window:(w_index + 1) * window], eps=1e-20)
            else:
                emp_fc = target.fc
            terms = loss_terms(model, result, target, emp_fc, config, extra)
            total, logged = _total(terms, config, model)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            pieces_per_epoch = n_windows if config.window_trs else 1
            for k, v in logged.items():
                logged_sum[k] = logged_sum.get(k, 0.0) + v.item() / pieces_per_epoch
            logged_sum["total"] = logged_sum.get("total", 0.0) + total.item() / pieces_per_epoch
            pieces.append(result.bold.detach())
            state, t0 = result.state.detach(), t0 + length * model.steps_per_tr
        last_bold = torch.cat(pieces, dim=1)
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
        if checkpoint:
            # last_bold: what a resumed, already finished fit returns (the last epoch's BOLD,
            # simulated with the parameters of each of its windows).
            _atomic_torch_save({"model": model.state_dict(), "extra": extra.state_dict(),
                                "optimizer": optimizer.state_dict(), "history": history,
                                "epoch": epoch, "config": _config_dict(config),
                                "last_bold": last_bold.cpu()}, checkpoint)
        if bar is not None:
            bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", fc_r=f"{fc_r:.3f}")
            bar.update(1)
        if callback is not None:
            callback(epoch, history)
    if bar is not None:
        bar.close()
    if last_bold is None and saved_bold is not None:   # resumed a finished fit
        last_bold = saved_bold.to(model.sc.device)
    elif last_bold is None:
        # A finished fit's checkpoint from rww < 0.2 (no BOLD saved): simulate the last epoch's
        # noise (seed and burn-in as in the loop) with the final parameters.
        with torch.no_grad():
            seed = config.seed + max(config.epochs - 1, 0)
            state, t0 = _burn_in(model, config, seed)
            last_bold = model.simulate(n_trs, state=state, seed=seed, t0=t0).bold
    params_out = {name: getattr(model, name).detach().clone() for name in model.learnable}
    sim_fc = obj.pearson_matrix(last_bold, eps=1e-20).mean(0)
    return FitResult(params_out, last_bold, sim_fc, history, _config_dict(config))


def _config_dict(config: FitConfig) -> dict:
    d = asdict(config)
    d["bifurcation_init"] = list(d["bifurcation_init"])
    d["rate_band_hz"] = [float(v) for v in d["rate_band_hz"]]
    d["priors"] = {k: list(v) for k, v in d["priors"].items()}
    return d


def _config_changes(saved: dict, current: dict) -> list:
    """Settings (other than ``epochs``) in which a checkpoint's config differs from ``current``.
    A setting the checkpoint lacks (written before the setting existed) counts as its default,
    so checkpoints of earlier versions resume."""
    defaults = _config_dict(FitConfig())
    return sorted(k for k in set(saved) | set(current)
                  if k != "epochs" and saved.get(k, defaults.get(k)) != current.get(k))


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
