"""How a fit steps and stops: the optimizer and scheduler :func:`rww.fit.fit` builds or checks,
the convergence verdict (:func:`convergence`) and :class:`StopFit` for callbacks."""

from __future__ import annotations

import inspect
import math
import os

import numpy as np
import torch

class StopFit(Exception):
    """Raise from a :func:`fit` callback to end the fit after the current epoch (its checkpoint
    is written); the message is recorded as the reason (``convergence["stopped"]``). Unlike
    ``early_stop``, a fit stopped so and resumed continues."""


def _trend(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares trend of ``values (K, D)`` over K epochs: its drift across the window
    (slope x (K - 1)) and the drift's standard error, each ``(D,)``."""
    k = values.shape[0]
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2
    sxx = float((x * x).sum())
    slope = (x[:, None] * (values - values.mean(0))).sum(0) / sxx
    residual = values - values.mean(0) - slope * x[:, None]
    se = np.sqrt((residual ** 2).sum(0) / (k - 2) / sxx)
    return slope * (k - 1), se * (k - 1)


def _percent(x: float) -> str:
    return f"{100 * x:+.2g}%" if abs(x) < 0.1 else f"{100 * x:+.0f}%"


def convergence(history: dict, convergence_window: int = 10, param_rtol: float = 0.02,
                loss_rtol: float = 0.01) -> dict:
    """Convergence verdict of a fit, from its history's last ``convergence_window`` epochs.

    Over those K epochs, each series gets a least-squares trend line; its *drift* is the line's
    change across the window (slope x (K - 1)). A learned parameter (history ``params/<name>``:
    scalar, N-vector, or ``params/<name>/mean`` of a matrix) has settled when
    ``|drift| <= param_rtol * |mean|`` (vectors: Euclidean norms); a parameter that only
    fluctuates, without a trend, counts as settled. The loss has settled when
    ``|drift| <= loss_rtol * |mean|`` or ``|drift| <= 2 x`` its standard error (each epoch draws
    fresh noise, so a small trend may be noise). The fit has converged when the loss and every
    parameter have settled and all are finite.

    Args:
        history: :attr:`FitResult.history` (``loss`` and ``params/...`` lists per epoch).
        convergence_window, param_rtol, loss_rtol: as in :class:`FitConfig`.

    Returns:
        dict: ``converged`` (bool; ``False`` while fewer than K epochs exist), ``reason`` (one
        sentence with the drifts), ``window`` (K), ``epochs_judged`` (epochs in the history),
        ``loss_drift`` (relative to the mean loss; ``None`` when not judged), ``loss_noise``
        (twice the drift's standard error, relative), ``param_drift`` (name -> relative drift).
    """
    k = int(convergence_window)
    losses = list(history.get("loss", []))
    out = {"converged": False, "reason": "", "window": k, "epochs_judged": len(losses),
           "loss_drift": None, "loss_noise": None, "param_drift": {}}
    if len(losses) < k:
        out["reason"] = (f"not judged: {len(losses)} epoch(s) run, the verdict needs the last "
                         f"{k} (convergence_window)")
        return out
    series = {name[len("params/"):]: value for name, value in history.items()
              if name.startswith("params/") and not name.endswith("/std")}
    loss = np.asarray([np.nan if v is None else v for v in losses[-k:]], dtype=np.float64)
    bad = [] if np.isfinite(loss).all() else ["the loss"]
    moving, drifts = [], {}
    for name, values in series.items():
        arr = np.asarray(values[-k:], dtype=np.float64).reshape(len(values[-k:]), -1)
        if arr.shape[0] < k or not np.isfinite(arr).all():
            bad.append(name)
            continue
        drift, _ = _trend(arr)
        scale = float(np.linalg.norm(arr.mean(0)))
        if scale > 0:
            rel = float(np.linalg.norm(drift)) / scale
        else:                                   # a parameter at zero: any drift is too much
            rel = 0.0 if not drift.any() else math.inf
        if arr.shape[1] == 1:
            rel = math.copysign(rel, float(drift[0]))
        drifts[name] = rel
        if abs(rel) > param_rtol:
            moving.append(name)
    out["param_drift"] = drifts
    if bad:
        out["reason"] = (f"not converged: {', '.join(bad)} not finite (or not recorded) in the "
                         f"last {k} epochs")
        return out
    drift, se = (float(v[0]) for v in _trend(loss[:, None]))
    scale = abs(float(loss.mean()))
    rel_drift = drift / scale if scale > 0 else (0.0 if drift == 0 else math.copysign(math.inf, drift))
    rel_noise = 2 * se / scale if scale > 0 else (0.0 if se == 0 else math.inf)
    out["loss_drift"], out["loss_noise"] = rel_drift, rel_noise
    loss_settled = abs(drift) <= max(loss_rtol * scale, 2 * se)
    tol_p, tol_l = f"{100 * param_rtol:g}%", f"{100 * loss_rtol:g}%"
    loss_text = (f"the loss drifted {_percent(rel_drift)} (tolerance {tol_l}, noise "
                 f"±{100 * rel_noise:.2g}%)")
    if moving or not loss_settled:
        parts = []
        if moving:
            moving.sort(key=lambda n: -abs(drifts[n]))
            parts.append(", ".join(f"{n} drifted {_percent(drifts[n])}" for n in moving)
                         + f" (tolerance {tol_p})")
        if not loss_settled:
            parts.append(loss_text)
        out["reason"] = f"not converged: over the last {k} epochs " + "; ".join(parts)
        return out
    largest = max(drifts, key=lambda n: abs(drifts[n])) if drifts else None
    params_text = (f"every parameter drifted less than {tol_p} (largest: {largest} "
                   f"{_percent(drifts[largest])})" if largest else "no parameter was recorded")
    out["converged"] = True
    out["reason"] = f"converged: over the last {k} epochs {params_text} and {loss_text}"
    return out


def _build_optimizer(optimizer, params: list, model, lr: float):
    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=lr)
    elif callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer(params)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer (or a callable params -> "
                        f"optimizer), got {type(optimizer).__name__}")
    covered = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, p in model.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"optimizer: does not update the model's parameters {missing}; build it "
                         "over model.parameters() of this model (or pass a callable params -> "
                         "optimizer, which also gets the bifurcation term's coefficients)")
    return optimizer


def _build_scheduler(scheduler, optimizer):
    if scheduler is None:
        return None
    if callable(scheduler) and not hasattr(scheduler, "state_dict"):
        scheduler = scheduler(optimizer)
    if not hasattr(scheduler, "step") or not hasattr(scheduler, "state_dict"):
        raise TypeError(f"scheduler: expected a torch.optim.lr_scheduler scheduler (or a callable "
                        f"optimizer -> scheduler), got {type(scheduler).__name__}")
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("scheduler: is attached to another optimizer than the fit's; build it on "
                         "the optimizer passed as optimizer=, or pass a callable optimizer -> "
                         "scheduler (needed with the default Adam)")
    return scheduler


def _step_takes_closure(optimizer) -> bool:
    try:
        return len(inspect.signature(optimizer.step).parameters) > 0
    except (TypeError, ValueError):
        return True


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
