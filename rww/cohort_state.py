"""Internals of :mod:`rww.cohort`: the fitted parameters of a rank's model
(:class:`CohortParam`, one ``_CohortValue`` per parameter), the exact reduction of group-level
gradients over ranks, and the full-cohort rows a checkpoint holds (parameters and optimizer
state, independent of the number of ranks)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from . import distributed as rdist
from . import objectives as obj
from .fit import _config_changes
from .model import RWWBold
from .transforms import RegionalMap, make_learnable

LEVELS = ("subject", "group", "hierarchical")


@dataclass
class CohortParam:
    """How one parameter is fitted across the cohort (levels, transforms and the hierarchy's
    parametrisation: :mod:`rww.cohort`).

    Attributes:
        init: starting physical value: a number or ``(N,)`` per region (the same for every
            subject; the group value for group and hierarchical levels); for level
            ``"subject"`` also ``(S, 1)`` or ``(S, N)``, one start per subject.
        level: ``"subject"``, ``"group"`` or ``"hierarchical"``.
        transform: ``"positive"`` (softplus, default), ``"identity"`` or ``("interval", lo, hi)``.
        prior_scale: hierarchical only: ``tau > 0``, the std of a subject's deviation ``d_s``
            in the transform's unconstrained units.
    """

    init: object
    level: str = "subject"
    transform: object = "positive"
    prior_scale: float | None = None

    def settings(self) -> dict:
        init = torch.as_tensor(self.init, dtype=torch.float64)
        spec = list(self.transform) if isinstance(self.transform, (tuple, list)) else self.transform
        return {"level": self.level, "transform": spec, "prior_scale": self.prior_scale,
                "init": init.tolist()}


class _CohortValue(nn.Module):
    """A fitted parameter of the local model: ``forward()`` -> ``(S_local * R, K)`` physical
    values (K = 1 or N), subject-major. ``rows`` (set per evaluation) are leaf copies of the group
    raw value, one per local subject, whose gradients are the per-subject contributions."""

    def __init__(self, level, transform, n_local, realisations, width, group=None, subject=None):
        super().__init__()
        self.level, self._t = level, transform
        self.n_local, self.realisations, self.width = n_local, realisations, width
        self.rows = None
        if level in ("group", "hierarchical"):
            self.group = nn.Parameter(group.clone())                              # g (K,)
        if level == "subject":
            self.subject = nn.Parameter(subject.clone())                          # u_s (S_local, K)
        if level == "hierarchical":                # u_s = g + d_s, starting at d_s = 0
            self.subject = nn.Parameter(group.expand(n_local, width).clone())

    def begin(self):
        if self.level != "subject":
            self.rows = self.group.detach().expand(self.n_local, self.width).clone().requires_grad_()

    def group_value(self):
        return self._t.transform(self.group)

    def _group_rows(self) -> torch.Tensor:
        return self.rows if self.rows is not None else self.group.expand(self.n_local, self.width)

    def deviations(self) -> torch.Tensor:
        """``(S_local, K)`` deviations ``d_s = u_s - g`` (hierarchical)."""
        return self.subject - self._group_rows()

    def values(self) -> torch.Tensor:
        """``(S_local, K)`` physical values of the local subjects."""
        return self._t.transform(self.subject if self.level != "group" else self._group_rows())

    def forward(self) -> torch.Tensor:
        v = self.values()
        return v.unsqueeze(1).expand(-1, self.realisations, -1).reshape(-1, self.width)


def _initial_rows(name, p: CohortParam, n_subjects, n_nodes, dtype):
    if not isinstance(p, CohortParam):
        raise TypeError(f"params: {name} must be a CohortParam, got {type(p).__name__}")
    if p.level not in LEVELS:
        raise ValueError(f"params: {name} level {p.level!r}; choose from {LEVELS}")
    if isinstance(p.transform, RegionalMap):
        raise ValueError(f"params: {name}: RegionalMap transforms are not supported in cohort fits")
    if p.level == "hierarchical":
        if p.prior_scale is None or not float(p.prior_scale) > 0:
            raise ValueError(f"params: {name} is hierarchical and needs prior_scale > 0 (the std "
                             f"of a subject's deviation), got {p.prior_scale!r}")
    elif p.prior_scale is not None:
        raise ValueError(f"params: {name}: prior_scale applies to the hierarchical level only")
    init = torch.as_tensor(p.init, dtype=dtype).detach()
    if init.dim() == 0:
        rows = init.reshape(1, 1).expand(n_subjects, 1)
    elif init.dim() == 1 and init.shape[0] == n_nodes:
        rows = init.reshape(1, -1).expand(n_subjects, -1)
    elif init.dim() == 2 and p.level == "subject" and init.shape[0] == n_subjects \
            and init.shape[1] in (1, n_nodes):
        rows = init
    else:
        what = ", (S, 1) or (S, N)" if p.level == "subject" else ""
        raise ValueError(f"params: {name} init of shape {tuple(init.shape)}; expected a number, "
                         f"({n_nodes},){what} (S = {n_subjects} subjects, N = {n_nodes} regions)")
    transform = make_learnable(name, rows.contiguous(), p.transform)          # checks the range
    raw = transform.raw.detach().clone()
    del transform.raw                                 # only its transform is used
    return raw, transform


def _local_model(sc, local, realisations, options, specs, dtype):
    """The RWWBold of this rank's subjects, with the fitted parameters as :class:`_CohortValue`."""
    idx = torch.as_tensor(local)
    sc_local = sc if sc.dim() == 2 else sc[idx].repeat_interleave(realisations, 0)
    batch = len(local) * realisations
    inits = {name: raw[idx].repeat_interleave(realisations, 0) for name, (raw, _, _) in specs.items()}
    model = RWWBold(sc_local, batch=batch, learn={n: "identity" for n in specs},
                    **{**options, **inits})                   # validates names and shapes
    for name, (raw, transform, p) in specs.items():
        raw = raw.to(model.sc.device)
        model.learned[name] = _CohortValue(p.level, transform.to(model.sc.device), len(local),
                                           realisations, raw.shape[1], group=raw[0],
                                           subject=raw[idx.to(raw.device)])
    return model


def _fingerprint(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(b"-" if t is None else t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _plain(value):
    if torch.is_tensor(value):
        return value.detach().cpu().tolist()
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return str(value)



def _row(v: torch.Tensor):
    return float(v.reshape(())) if v.numel() == 1 else v.double().tolist()


def _squeeze(v: torch.Tensor) -> torch.Tensor:
    """``(S, 1)`` -> ``(S,)``, ``(1,)`` -> ``()``: scalars per subject read as scalars."""
    return v.squeeze(-1) if v.shape[-1] == 1 else v


def _series(history: dict) -> dict:
    """What :func:`convergence` judges: the loss and every value (all subjects concatenated)."""
    out = {"loss": history["loss"]}
    subjects = history["subjects"]
    names = [k for k in (subjects[0] if subjects else {}) if k.startswith("params/")]
    for k in names:
        out[k] = [sum(([v] if not isinstance(v, list) else v for v in epoch), [])
                  for epoch in zip(*(s[k] for s in subjects))]
    out.update({"params/" + k: v for k, v in history.items() if k.startswith("group/")})
    return out


def _group_priors(values, specs, config) -> dict:
    return {f"group_prior_{name}": obj.gaussian_nll(values[name].group_value(), *config.priors[name])
            for name, (_, _, p) in specs.items() if p.level != "subject" and name in config.priors}


def _reduce_group_grads(values, grouped, local, n_subjects, ctx, failure):
    """Group gradients as per-subject rows, all-reduced (exact: each rank fills only its rows)
    and summed in subject order; a failure anywhere raises on every rank."""
    if not ctx.distributed:
        if failure is not None:
            raise failure
        if not grouped:
            return
    widths = [values[n].width for n in grouped]
    ref = values[grouped[0]].group if grouped else torch.zeros(())
    buf = torch.zeros(n_subjects, sum(widths) + 1, dtype=ref.dtype, device=ref.device)
    idx = torch.as_tensor(local, device=ref.device)
    if failure is None:
        parts = [values[n].rows.grad if values[n].rows.grad is not None
                 else torch.zeros_like(values[n].rows) for n in grouped]
        if parts:
            buf[idx, :-1] = torch.cat(parts, dim=1)
    else:
        buf[idx, -1] = 1.0
    rdist.all_reduce_(buf, ctx, "sum")
    failed = torch.nonzero(buf[:, -1]).flatten().tolist()
    if failure is not None:
        raise failure
    if failed:
        raise RuntimeError(f"cohort fit: the rank simulating subjects {failed} failed (its error is "
                           "on that rank's stderr)")
    start = 0
    for name, k in zip(grouped, widths):
        values[name].group.grad = buf[:, start:start + k].sum(0)
        start += k


def _rows(keys, plist, optimizer) -> dict:
    """This rank's parameters and optimizer state by key (CPU copies)."""
    state = optimizer.state_dict()
    out = {"param_groups": state["param_groups"]}
    for i, (key, p) in enumerate(zip(keys, plist)):
        out[key] = {"value": p.detach().cpu().clone()}
        for k, v in state["state"].get(i, {}).items():
            out[key][f"state/{k}"] = v.detach().cpu().clone() if torch.is_tensor(v) else v
    return out


def _merge_rows(parts: list, param_groups: list) -> dict:
    """Full-cohort rows from the ranks' (in rank order: subjects in order): per-subject tensors
    (subject values and their optimizer state) concatenated, group ones taken from rank 0;
    ``param_groups`` (learning rates) as rank 0 has them after this epoch's scheduler step."""
    out = {"param_groups": param_groups}
    for key in parts[0]:
        if key == "param_groups":
            continue
        per_subject = not key.endswith("/group")
        out[key] = {k: (torch.cat([p[key][k] for p in parts]) if per_subject and torch.is_tensor(v)
                        and v.dim() and v.shape == parts[0][key]["value"].shape else v)
                    for k, v in parts[0][key].items()}
    return out


def _load_rows(saved, keys, plist, optimizer, local, device):
    rows = saved["rows"]
    idx = torch.as_tensor(local)
    pick = (lambda key, v: v[idx] if not key.endswith("/group") and torch.is_tensor(v) and v.dim()
            and v.shape == rows[key]["value"].shape else v)
    state = {"param_groups": rows["param_groups"], "state": {}}
    with torch.no_grad():
        for i, (key, p) in enumerate(zip(keys, plist)):
            p.copy_(pick(key, rows[key]["value"]).to(device))
            entry = {k[len("state/"):]: pick(key, v) for k, v in rows[key].items()
                     if k.startswith("state/")}
            if entry:
                state["state"][i] = entry
    optimizer.load_state_dict(state)


def _resume_problem(saved, checkpoint, config_dict, settings, optimizer, scheduler) -> str | None:
    if saved.get("format") != "rww.cohort/1":
        return f"resume: {checkpoint} is not a cohort-fit checkpoint (rww.cohort/1)"
    changed = _config_changes(saved["config"], config_dict)
    before, now = saved["cohort"], settings
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    if changed:
        return (f"resume: {checkpoint} was written by a cohort fit with other settings "
                f"({', '.join(changed)} differ); use the same settings, or another checkpoint "
                "path to start afresh")
    if saved.get("scheduler_class") != type(scheduler).__name__:
        return (f"resume: {checkpoint} was written with scheduler {saved.get('scheduler_class')}, "
                f"this fit has {type(scheduler).__name__}; pass the same scheduler")
    if saved.get("optimizer_class") != type(optimizer).__name__:
        return (f"resume: {checkpoint} was written with optimizer {saved.get('optimizer_class')}, "
                f"this fit has {type(optimizer).__name__}; pass the same optimizer")
    return None

