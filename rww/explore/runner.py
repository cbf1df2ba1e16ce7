"""Running a sweep: :func:`design` (the candidates of a grid or a Latin hypercube) and
:func:`sweep` (batches split over ranks, written as they finish, resumed from ``OUT/batches/``)."""

from __future__ import annotations

import json
import os
import time
import uuid

import numpy as np

from .. import distributed as rdist
from ..search import SearchSpace, grid_design, latin_hypercube
from .scoring import SweepEvaluator
from .store import (SweepResult, SweepSettingsError, _atomic_write, _batch_path, _dumps,
                    _finished_batches, _finite, _prepare_folder, _rank_differences, _settings,
                    _settings_key, _write_summary)

__all__ = ["sweep", "design"]


# ------------------------------------------------------------------------------ the design
def design(space: SearchSpace, method: str = "grid", *, n: int | None = None, points=None,
           seed: int = 0) -> np.ndarray:
    """The candidates ``(M, D)`` (float64, columns in ``space.names`` order) of a sweep.

    Args:
        method: ``"grid"`` (:func:`rww.search.grid_design`, ``points`` per dimension: an int or
            name -> int) or ``"lhs"`` (:func:`rww.search.latin_hypercube` of ``n`` candidates,
            ``seed``).

    Raises:
        ValueError: an unknown method, or its size missing.
    """
    if method == "grid":
        if points is None:
            raise ValueError("design: a grid needs points (per dimension: an int or name -> int)")
        return grid_design(space, points)
    if method == "lhs":
        if n is None:
            raise ValueError("design: a Latin hypercube needs n (the number of candidates)")
        return latin_hypercube(space, n, seed)
    raise ValueError(f"design: unknown method {method!r}; choose 'grid' or 'lhs'")


# ------------------------------------------------------------------------------ the sweep
def sweep(space: SearchSpace, evaluator: SweepEvaluator, method: str = "grid", *,
          n: int | None = None, points=None, seed: int = 0, out: str | None = None,
          overwrite: bool = False, max_batches: int | None = None, figures: bool = True,
          progress: bool = True, on_batch=None, ctx: rdist.Context | None = None) -> SweepResult:
    """Evaluate a grid or a Latin hypercube of candidates, resumably, on one or more ranks.

    Args:
        space: the :class:`rww.search.SearchSpace` (names and bounds).
        evaluator: a :class:`SweepEvaluator` (connectome, target, simulation settings, batch
            size, noise seed, scoring memory bound).
        method, n, points, seed: the design (:func:`design`): ``"grid"`` with ``points`` per
            dimension, or ``"lhs"`` with ``n`` candidates and design ``seed``.
        out: folder for ``settings.json``, ``batches/``, ``sweep.csv``, ``sweep.json`` and
            figures; ``None`` keeps everything in memory (no resume).
        overwrite: discard a sweep of other settings found in ``out`` (default: refuse).
        max_batches: stop after this many batches have finished in this call (all ranks
            together); rerun to continue. ``None``: run to the end.
        figures: draw the heat maps (:func:`rww.explore.figures.sweep_figures`) when complete.
        progress: tqdm bar over candidates on rank 0.
        on_batch: ``callable(batch, rows)`` called on rank 0 after each batch is written (e.g. to
            monitor or to stop a test: an exception ends the sweep, the written batches stay).
        ctx: :class:`rww.distributed.Context`; default :func:`rww.distributed.init` (joins the
            torchrun process group when launched by torchrun, else one process).

    Returns:
        :class:`SweepResult` (rows on rank 0 only).

    Raises:
        TypeError: ``evaluator`` is not a :class:`SweepEvaluator` (a plain
            :class:`rww.search.CandidateEvaluator`'s noise depends on batch positions, which
            would make the table depend on the number of ranks and on resumes).
        SweepSettingsError: ``out`` holds a sweep of other settings (the message names each
            differing setting with both values), or the ranks' settings differ (the message
            names the ranks and settings that differ from rank 0's); on every rank.
        OSError: ``out`` cannot be created or written (permission denied, not a folder...):
            rank 0's own error, the others an OSError of the same errno naming the folder.
        RuntimeError: a rank failed (its error is in the message), on every rank; or another
            rank was interrupted.
        KeyboardInterrupt: this rank was interrupted while simulating or (rank 0) writing a
            batch or preparing ``out``: it tells the other ranks (at the round's gather, as an
            error), which raise RuntimeError instead of waiting, then re-raises the interrupt.
            (Rank 0's own errors while writing are re-raised as themselves too.)
        ValueError: a bad design, ``max_batches`` not a positive integer.
    """
    tick = time.perf_counter()
    if not isinstance(evaluator, SweepEvaluator):
        raise TypeError(f"evaluator: expected a rww.explore.SweepEvaluator, got "
                        f"{type(evaluator).__name__} (its noise depends on batch positions)")
    if max_batches is not None and (isinstance(max_batches, bool)
                                    or not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches: must be a positive integer, got {max_batches!r}")
    ctx = rdist.init() if ctx is None else ctx
    values = design(space, method, n=n, points=points, seed=seed)
    if method == "grid":                    # what does not shape the design is no setting
        n, seed = None, None
    else:
        points = None
    values = rdist.broadcast_from_main(values, ctx)         # one design, whatever scipy each has
    names = space.names
    settings = _settings(space, evaluator, method, n, points, seed, values)
    key = _settings_key(settings)
    m, bs = values.shape[0], evaluator.batch_size
    n_batches = -(-m // bs)
    everyone = rdist.gather_to_main((key, settings), ctx)   # every rank's settings, on rank 0
    problem, done, failure = None, [], None
    if ctx.is_main:
        try:
            message = _rank_differences(everyone)
            if message is None and out is not None:
                message = _prepare_folder(out, settings, overwrite)
                if message is None:
                    done = _finished_batches(out, key, n_batches)
            problem = None if message is None else ("settings", message)
        except OSError as err:                 # the folder: raised as such, on every rank
            failure, problem = err, ("os", (err.errno, f"sweep output folder {out}: "
                                            f"{err.strerror or err}", err.filename))
        except BaseException as err:           # re-raised below, after telling the other ranks
            failure, problem = err, ("abort", f"rank 0: {_why(err)}")
    problem, done, run_id = rdist.broadcast_from_main((problem, done, uuid.uuid4().hex[:12]), ctx)
    if failure is not None:
        raise failure
    if problem is not None:
        kind, detail = problem
        if kind == "settings":
            raise SweepSettingsError(detail)
        if kind == "os":
            raise OSError(*detail) if detail[0] is not None else OSError(detail[1])
        raise RuntimeError(f"sweep: {detail}")
    done_set = set(done)
    remaining = [k for k in range(n_batches) if k not in done_set]
    if max_batches is not None:
        remaining = remaining[:max_batches]
    rows_by_batch = {}
    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm
        finished = sum(min(bs, m - k * bs) for k in done)
        bar = tqdm(total=m, initial=finished, desc="sweep", unit="cand", leave=False)
    simulated = []

    def record(gathered):
        """Rank 0: write the round's batches; returns the first rank's error, or None."""
        error = None
        for rank, item in enumerate(gathered):
            if item is None:
                continue
            k, rows, err = item
            if err is not None:
                error = error or err
                continue
            rows = [_finite(r) for r in rows]      # None for inf/NaN: as read back from the file
            for r in rows:
                r["batch"] = k
            if out is not None:
                _atomic_write(_batch_path(out, k), _dumps(
                    {"batch": k, "settings_key": key, "run": run_id, "rank": rank,
                     "world_size": ctx.world_size, "rows": rows}))
            rows_by_batch[k] = rows
            simulated.append(k)
            if bar is not None:
                bar.update(len(rows))
            if on_batch is not None:
                on_batch(k, rows)
        return error

    try:
        for start in range(0, len(remaining), ctx.world_size):
            round_batches = remaining[start:start + ctx.world_size]
            mine = round_batches[ctx.rank] if ctx.rank < len(round_batches) else None
            payload = failure = None
            if mine is not None:
                try:
                    first = mine * bs
                    rows = evaluator.evaluate_batch(names, values[first:first + bs], first)
                    payload = (mine, rows, None)
                except BaseException as err:       # reported by rank 0 to every rank
                    if not ctx.distributed:
                        raise
                    if not isinstance(err, Exception):
                        failure = err               # KeyboardInterrupt...: re-raised below
                    payload = (mine, None, f"rank {ctx.rank}, batch {mine}: {_why(err)}")
            gathered = rdist.gather_to_main(payload, ctx)
            error = None
            if ctx.is_main:
                try:
                    error = record(gathered)
                except BaseException as err:   # re-raised below, after telling the other ranks
                    failure, error = failure or err, f"rank 0: {_why(err)}"
            error = rdist.broadcast_from_main(error, ctx)
            if failure is not None:
                raise failure
            if error is not None:
                raise RuntimeError(f"sweep: {error}")
            if not ctx.is_main:
                simulated.extend(round_batches)
    finally:
        if bar is not None:
            bar.close()
    simulated = sorted(simulated)
    complete = len(done) + len(simulated) == n_batches
    result = SweepResult(None, names, settings, complete, simulated, list(done),
                         world_size=ctx.world_size)
    summary = ctx.is_main and out is not None and complete
    if ctx.is_main:
        for k in done:
            with open(_batch_path(out, k)) as fh:
                rows_by_batch[k] = json.load(fh)["rows"]
        result.rows = [r for k in sorted(rows_by_batch) for r in rows_by_batch[k]]
        if summary:
            result.paths["csv"] = result.to_csv(os.path.join(out, "sweep.csv"))
            if figures:
                from .figures import sweep_figures
                result.paths["figures"] = sweep_figures(result, out)
            result.paths["json"] = os.path.join(out, "sweep.json")
    result.seconds = time.perf_counter() - tick           # once: sweep.json records this value
    if summary:
        _write_summary(result, out, run_id)
    return result


def _why(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    return f"{type(err).__name__}: {err}"
