"""Internals of :func:`rww.fit.fit`: what one epoch computes (burn-in, windows, the optimizer's
closure, the loss terms) and the split of the noise realisations over torch.distributed ranks.

Realisations over ranks (``fit(..., ctx=)``, a :class:`rww.distributed.Context` of several
ranks): the model's ``batch`` is the number R of realisations of the whole fit. Rank r simulates
the contiguous block ``partition(R, ctx)`` of them (the model's ``batch`` is set to the block's
size for the fit, and restored after it), with ``sim_offset`` = the block's first index, so a
realisation's noise is that of the one-process batch whatever the rank. Every loss evaluation:

1. each rank simulates its block (with gradient);
2. the per-realisation outputs the loss needs (BOLD and the records of the terms) are
   all-gathered without autograd: each rank writes its rows into a zero-filled ``(R, ...)``
   buffer, all-reduced (adding zeros is exact, and uneven blocks need no padding); a failure
   flag per rank travels in the same buffer, so a rank whose simulation failed makes every rank
   raise instead of hanging;
3. the rank's own rows are put back as the autograd tensors: every rank computes the full loss
   (bit for bit the one-process loss: each realisation's simulation does not depend on the rest
   of the batch), and its backward reaches only the rank's own simulations. Terms of the
   parameters alone (priors, ``bifurcation``, ``smoothness``) are back-propagated on rank 0 only;
4. the gradients are summed over ranks (one all-reduce of a flat buffer, with a flag per
   parameter so that a parameter without gradient keeps ``grad = None`` as in one process), then
   clipped (``grad_clip``) and stepped, the same numbers on every rank.

The sum over ranks adds the per-rank sums of realisation gradients in another order than the
one-process backward does, so a fit on several ranks equals the one-process fit to rounding,
not bit for bit: in ``tests/test_fit_distributed.py`` (float32, 2 gloo ranks, 4 and 3
realisations) Adam fits came out identical, an L-BFGS epoch's parameters within 3e-7 relative. Optimizers whose step calls the
closure several times (L-BFGS) work: every rank sees the same losses and gradients and so takes
the same decisions.

Not supported on several ranks (refused by :func:`check_distributable`): models whose
parameters or settings differ per simulation (a ``(B, N, N)`` connectome stack, per-simulation
parameter values, FIC targets, velocities or ``refine_fic`` corrections), and more ranks than
realisations.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import torch

from . import distributed as rdist
from . import objectives as obj

# Terms that depend on the parameters alone, not on the simulation (back-propagated once).
PARAMETER_TERMS = ("bifurcation", "smoothness")


def loss_terms(model, result, target, emp_fc: torch.Tensor, config, extra) -> dict:
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
            raise ValueError(f"weights: the {term} term needs target fcd_values, and "
                             f"{target.fcd_unavailable or 'the target has none'}")
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


def _total(terms: dict, config, model) -> tuple[torch.Tensor, dict]:
    total = sum(config.weights.get(k, 0.0) * v for k, v in terms.items())
    logged = dict(terms)
    for name, (mean, std) in config.priors.items():
        nll = obj.gaussian_nll(getattr(model, name), mean, std)
        logged[f"prior_{name}"] = nll
        total = total + nll
    return total, logged


def _records_needed(config) -> tuple:
    rec = []
    if config.weights.get("firing_rate") or config.weights.get("rate_band"):
        rec.append("r_E")
    if config.weights.get("entropy"):
        rec += ["S_E", "S_I"]
    return tuple(rec)


def _burn_in(model, config, seed: int, sim_offset: int = 0):
    state = model.initial_state()
    if config.burn_in_trs:
        with torch.no_grad():
            _, state = model(config.burn_in_trs, state=state, seed=seed, t0=0, sim_offset=sim_offset)
    return state.detach(), config.burn_in_trs * model.steps_per_tr


# ------------------------------------------------------------------------------ ranks
class Block:
    """This rank's realisations ``[start, start + size)`` of ``total`` (one process: all)."""

    def __init__(self, total: int, ctx: rdist.Context | None):
        self.ctx = ctx if ctx is not None and ctx.distributed else None
        self.total = total
        own = rdist.partition(total, self.ctx or rdist.SINGLE)
        self.start, self.size = (own[0] if own else 0), len(own)

    @property
    def distributed(self) -> bool:
        return self.ctx is not None

    @property
    def is_main(self) -> bool:
        return self.ctx is None or self.ctx.is_main

    def gather(self, result, failure: BaseException | None, record: tuple):
        """The whole batch's ``bold`` and ``records``, this rank's rows the autograd tensors of
        ``result`` (see the module docstring); raises on every rank when one failed."""
        ctx, n_rows = self.ctx, self.total
        if failure is None:
            parts = [result.bold] + [result.records[k] for k in record]
            common = parts[0].dtype
            for part in parts[1:]:
                common = torch.promote_types(common, part.dtype)
            local = torch.cat([part.detach().to(common) for part in parts], dim=-1)
            shape, dtype, device = local.shape[1:], local.dtype, local.device
        else:
            shape, dtype, device = None, None, None
        # Every rank must agree on the buffer's size: the shape travels first (tiny, rank 0's
        # unless it failed: then any rank's that did not).
        meta = torch.zeros(ctx.world_size, 3, dtype=torch.float64,
                           device=device if device is not None else _device(ctx))
        if failure is None:
            meta[ctx.rank] = torch.tensor([1.0, shape[0], shape[1]], dtype=torch.float64)
        rdist.all_reduce_(meta, ctx, "sum")
        ok = meta[:, 0] > 0
        if failure is not None:
            raise failure
        if not bool(ok.all()):
            bad = torch.nonzero(~ok).flatten().tolist()
            raise RuntimeError(f"fit: rank(s) {bad} failed to simulate their realisations (the "
                               "error is on that rank's stderr)")
        buf = torch.zeros((n_rows,) + tuple(shape), dtype=dtype, device=device)
        buf[self.start:self.start + self.size] = local
        rdist.all_reduce_(buf, ctx, "sum")
        n = result.bold.shape[-1]
        lo, hi = self.start, self.start + self.size

        def spliced(column: int, mine: torch.Tensor) -> torch.Tensor:
            gathered = buf[..., column * n:(column + 1) * n].to(mine.dtype)
            return torch.cat([gathered[:lo], mine, gathered[hi:]], dim=0)

        records = {k: spliced(i + 1, result.records[k]) for i, k in enumerate(record)}
        return SimpleNamespace(bold=spliced(0, result.bold), records=records, state=result.state)

    def reduce_gradients(self, params: list):
        """Sum every parameter's gradient over ranks (one all-reduce); a parameter without a
        gradient on every rank keeps ``None``."""
        ref = params[0]
        flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                for p in params]
        flags = torch.tensor([float(p.grad is not None) for p in params], dtype=ref.dtype,
                             device=ref.device)
        buf = torch.cat(flat + [flags])
        rdist.all_reduce_(buf, self.ctx, "sum")
        start = 0
        for i, p in enumerate(params):
            size = p.numel()
            p.grad = buf[start:start + size].view_as(p).clone() if buf[-len(params) + i] > 0 else None
            start += size


def _device(ctx):
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def check_distributable(model, ctx: rdist.Context | None):
    """Refuse, on every rank alike, what a split of the realisations cannot run."""
    if ctx is None or not ctx.distributed:
        return
    why = []
    if ctx.world_size > model.batch:
        why.append(f"{ctx.world_size} ranks for {model.batch} realisations (model.batch): run at "
                   f"most {model.batch} ranks, or more realisations")
    if model.sc.dim() == 3:
        why.append("a (B, N, N) stack of connectomes (one per simulation)")
    if model._given_table().shape[1] != 1:
        why.append("parameter values given per simulation (the realisations of a fit share one "
                   "parameter set)")
    fic = getattr(model, "fic_target", None)
    if fic is not None and fic.dim() and fic.shape[0] > 1:
        why.append("a FIC target per simulation")
    corr = getattr(model, "fic_correction", None)
    if corr is not None and corr.dim() > 1 and corr.shape[0] > 1:
        why.append("a refine_fic correction per simulation")
    velocity = getattr(model, "velocity", None)
    if velocity is not None and velocity.dim() == 1:
        why.append("a conduction velocity per simulation")
    if why:
        raise ValueError("fit on several ranks (ctx): the realisations are split over ranks, "
                         "which does not support " + "; ".join(why))


@contextmanager
def local_batch(model, block: Block):
    """The model simulates this rank's block (``model.batch`` = block size) inside."""
    if not block.distributed:
        yield
        return
    saved = model.batch
    model.batch, model._g_c_cache = block.size, None
    try:
        yield
    finally:
        model.batch, model._g_c_cache = saved, None


# ------------------------------------------------------------------------------ one epoch
def run_epoch(model, target, config, extra, optimizer, params, *, seed: int, window: int,
              n_trs: int, pieces: int, with_closure: bool, record: tuple, block: Block):
    """One epoch: burn-in, then one optimizer step per window (one for a full-length epoch).

    Returns:
        ``(logged, bold, evaluations)``: the mean over windows of each logged term and of the
        total (key ``"total"``), the epoch's ``(R, T, N)`` BOLD (every realisation, on every
        rank), and the number of loss evaluations.
    """
    state, t0 = _burn_in(model, config, seed, block.start)
    logged_sum, bolds, evaluations = {}, [], 0
    length = window if config.window_trs else n_trs
    for w_index in range(pieces):
        if target.bold is not None and config.window_trs:
            emp_fc = obj.pearson_matrix(target.bold[w_index * window:(w_index + 1) * window], eps=1e-20)
        else:
            emp_fc = target.fc
        first = {}

        def closure():
            # One loss evaluation of this window: the same start state, noise and time at
            # every call, so an optimizer evaluating several times sees one function.
            nonlocal evaluations
            optimizer.zero_grad(set_to_none=True)
            if not block.distributed:
                result = model.simulate(length, state=state, seed=seed, t0=t0, record=record)
            else:
                result, failure = None, None
                try:
                    result = model.simulate(length, state=state, seed=seed, t0=t0, record=record,
                                            sim_offset=block.start)
                except Exception as err:          # noqa: BLE001 - every rank must learn of it
                    failure = err
                result = block.gather(result, failure, record)
            terms = loss_terms(model, result, target, emp_fc, config, extra)
            total, logged = _total(terms, config, model)
            if block.is_main:
                total.backward()
            else:                # the terms of the parameters alone count once, on rank 0
                sim = [config.weights.get(k, 0.0) * v for k, v in terms.items()
                       if k not in PARAMETER_TERMS]
                part = sum(sim) if sim else None
                if part is not None and torch.is_tensor(part) and part.requires_grad:
                    part.backward()
            if block.distributed:
                block.reduce_gradients(params)
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            evaluations += 1
            if not first:
                first.update(total=total.item(), logged={k: v.item() for k, v in logged.items()},
                             bold=result.bold.detach(), state=result.state.detach())
            return total

        if with_closure:
            optimizer.step(closure)
        else:                                   # an optimizer whose step takes no closure
            closure()
            optimizer.step()
        if not first:
            raise RuntimeError(f"optimizer: {type(optimizer).__name__}.step(closure) did not "
                               "call the closure; the fit cannot log or carry the window's "
                               "simulation (use an optimizer that evaluates it)")
        for k, v in first["logged"].items():
            logged_sum[k] = logged_sum.get(k, 0.0) + v / pieces
        logged_sum["total"] = logged_sum.get("total", 0.0) + first["total"] / pieces
        bolds.append(first["bold"])
        state, t0 = first["state"], t0 + length * model.steps_per_tr
    return logged_sum, torch.cat(bolds, dim=1), evaluations


def final_bold(model, config, n_trs: int, seed: int, block: Block) -> torch.Tensor:
    """The ``(R, n_trs, N)`` BOLD of epoch ``seed``'s noise at the current parameters, without
    gradient (every realisation, on every rank)."""
    with torch.no_grad():
        state, t0 = _burn_in(model, config, seed, block.start)
        result = model.simulate(n_trs, state=state, seed=seed, t0=t0, sim_offset=block.start)
        if block.distributed:
            result = block.gather(result, None, ())
        return result.bold
