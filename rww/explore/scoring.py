"""Scoring side of a sweep: the output columns (names, descriptions, units), the streamed FC/FCD
scoring within a memory bound, and :class:`SweepEvaluator`, the candidate evaluator whose noise
depends on the candidate index only."""

from __future__ import annotations

import math
import numbers
import re

import torch

from ..errors import SimulationDiverged
from ..params import PARAM_DOC
from ..scoring import prepare_target, score_batch
from ..search import CandidateEvaluator

__all__ = ["SweepEvaluator", "score_batch_streamed", "scoring_bytes_per_simulation",
           "column_name", "COLUMN_DOC", "DEFAULT_SCORE_BYTES"]

#: Memory bound of the streamed FC/FCD scoring when neither a chunk nor a bound is given [bytes].
DEFAULT_SCORE_BYTES = 512 * 2**20

#: Output columns after the searched parameters (internal name -> description with the unit).
#: A value that is not a finite number (no G_c, an unscored candidate's loss, a diverged
#: candidate's scores, an undefined r) is ``None`` in :attr:`rww.explore.SweepResult.rows`,
#: ``null`` in the JSON files (standard JSON, no ``Infinity``/``NaN``) and an empty cell in
#: ``sweep.csv``: the three hold the same table.
COLUMN_DOC = {
    "candidate": "index of the candidate in the design (also its noise index, sim_offset)",
    "batch": "batch that simulated it (candidates batch*batch_size ... in order)",
    "G": "global coupling G (dimensionless; G_rel * G_c when G_rel is swept)",
    "G_c": "critical coupling where the FIC fixed point loses stability (dimensionless; with FIC; "
           "null/empty when none was found below G = 10)",
    "G_over_Gc": "G / G_c (dimensionless; with FIC; null/empty without a finite value)",
    "fic_failed_regions": "regions where analytic FIC found no w_IE at the candidate's G (count; "
                          "0 = FIC succeeded, also for 'diverged'; null/empty without FIC, and for "
                          "'no critical coupling' rows: G = G_rel * G_c has no value there, so "
                          "no FIC solution at the candidate's G exists to count)",
    "status": "'ok', or why the candidate was not scored ('FIC failed in K regions', 'no "
              "critical coupling below G = 10', 'diverged')",
    "loss": "ranking loss of rww.search.candidate_loss: (1 - fc_r) + |fc_level_diff| + fcd_ks "
            "+ rate_weight * rate_excess / 10 Hz (dimensionless; null/empty when not scored)",
    "fc_r": "Pearson r between the lower triangles of simulated and target FC, all edges",
    "fc_r_intra": "the same over intra-hemispheric edges only (with hemisphere labels)",
    "fc_mse": "mean squared lower-triangle FC difference (dimensionless)",
    "fc_level": "mean off-diagonal simulated FC (dimensionless)",
    "fc_level_diff": "simulated minus target mean off-diagonal FC (dimensionless)",
    "fcd_ks": "FCD KS statistic in the target's window convention",
    "fcd_ks_all": "FCD KS statistic over all pairs of distinct windows (cuBNM's convention)",
    "fcd_ks_nonoverlap": "FCD KS statistic over pairs of windows sharing no TR",
    "fcd_w1": "FCD 1-Wasserstein distance in the target's convention (dimensionless, r units)",
    "fcd_w1_all": "FCD 1-Wasserstein distance, all pairs of distinct windows",
    "fcd_w1_nonoverlap": "FCD 1-Wasserstein distance, pairs of windows sharing no TR",
    "rate_mean": "time-mean excitatory rate r_E averaged over regions [Hz]",
    "rate_max": "time-mean r_E of the fastest region [Hz]",
    "rate_excess": "mean over regions of how far r_E lies outside the rate band [Hz]",
}
_UNITS = {"rate_mean": "Hz", "rate_max": "Hz", "rate_excess": "Hz", "fic_target": "Hz"}


def column_name(name: str) -> str:
    """The CSV column of a row key: the name with its unit appended (``rate_mean`` ->
    ``rate_mean_Hz``, ``J_NMDA`` -> ``J_NMDA_nA``, ``tau_E`` -> ``tau_E_ms``, ``1/nC`` ->
    ``per_nC``); dimensionless names unchanged."""
    unit = _UNITS.get(name)
    if unit is None and name in PARAM_DOC:
        match = re.search(r"\[([^\]]+)\]", PARAM_DOC[name])
        unit = match.group(1) if match else None
    if not unit:
        return name
    unit = unit.replace("1/", "per_").replace("/", "_per_").replace(" ", "_")
    return f"{name}_{unit}"


# ------------------------------------------------------------------------------ streamed scoring
def _positive_int(name: str, value, optional: bool = False):
    """``value`` as an int if it is a positive integer (a bool is not; ``None`` passes when
    ``optional``), else ValueError naming it."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def scoring_bytes_per_simulation(n_trs: int, n_nodes: int, fcd_window: int | None = None,
                                 fcd_step: int | None = None) -> int:
    """Upper estimate of the working memory of :func:`rww.scoring.score_batch` per simulation
    [bytes] (float64): the BOLD copy and its centred copy, the FC and its products, the FCD's
    windowed copies, window FCs and their lower triangles, the FCD matrix, its values and the
    KS/W1 sort buffers.

    Args:
        n_trs, n_nodes: the scored BOLD's length [TRs] and regions.
        fcd_window: FCD window [TRs]; ``None``: FC only.
        fcd_step: FCD step [TRs]; ``None``: 1 (a window at every TR, the most windows: an upper
            bound for any step).

    Raises:
        ValueError: a size that is not a positive integer (``fcd_window`` at least 2).
    """
    t = _positive_int("n_trs", n_trs)
    n = _positive_int("n_nodes", n_nodes)
    step = _positive_int("fcd_step", 1 if fcd_step is None else fcd_step)
    total = 3 * t * n + 5 * n * n
    if fcd_window is not None:
        window = _positive_int("fcd_window", fcd_window)
        if window < 2:
            raise ValueError(f"fcd_window: must be at least 2 TRs, got {fcd_window!r}")
        w = (t - window) // step + 1 if t >= window else 0
        m = n * (n - 1) // 2
        total += 3 * w * window * n + 4 * w * n * n + 3 * w * m + 4 * w * w + 6 * w * w
    return 8 * total


def score_batch_streamed(bold: torch.Tensor, target, hemispheres=None, *, chunk: int | None = None,
                         max_bytes: int | None = None, fcd: bool | str = True) -> dict:
    """:func:`rww.scoring.score_batch` over a large batch, ``chunk`` simulations at a time.

    Every score is per simulation, so the result equals scoring the whole batch at once (bit for
    bit on the CPU, except the FCD W1 distances, whose torch sums round differently for
    different batch sizes: relative differences ~1e-16; ``tests/test_explore.py`` checks both),
    while the working memory is that of one chunk: FC ``(chunk, N, N)`` and FCD
    ``(chunk, W, N, N)`` intermediates instead of ``(B, ...)``.
    The BOLD itself ``(B, T, N)`` is not copied (each chunk is converted to float64 alone).

    Args:
        bold: ``(B, T, N)`` simulated BOLD after burn-in (any device and float dtype), ``B >= 1``.
        target: :class:`rww.fit.FitTarget` or :class:`rww.scoring.ScoringTarget` (prepared once).
        hemispheres: ``(N,)`` labels for ``fc_r_intra``, or ``None``.
        chunk: simulations per chunk; default from ``max_bytes``. Given, it is used as it is.
        max_bytes: memory bound of one chunk's scoring [bytes] (default
            :data:`DEFAULT_SCORE_BYTES`), through :func:`scoring_bytes_per_simulation`; at least
            one simulation per chunk. Checked even when ``chunk`` is given.
        fcd: as :func:`rww.scoring.score_batch`.

    Returns:
        name -> ``(B,)`` float64 tensor, the keys of :func:`rww.scoring.score_batch`.

    Raises:
        ValueError: ``chunk`` or ``max_bytes`` not a positive integer (bools are refused), an
            empty batch (``B = 0``: :func:`rww.scoring.score_batch` cannot name its keys
            either); anything :func:`rww.scoring.score_batch` raises.
    """
    if not torch.is_tensor(bold) or bold.dim() != 3:
        shape = tuple(bold.shape) if torch.is_tensor(bold) else type(bold).__name__
        raise ValueError(f"bold: expected a tensor (B, T, N), got {shape}")
    chunk = _positive_int("chunk", chunk, optional=True)
    max_bytes = _positive_int("max_bytes", max_bytes, optional=True)
    b, t, n = bold.shape
    if b == 0:
        raise ValueError(f"bold: an empty batch {tuple(bold.shape)} (B = 0): nothing to score")
    st = prepare_target(target, n, fcd=fcd)
    if chunk is None:
        limit = DEFAULT_SCORE_BYTES if max_bytes is None else max_bytes
        per = scoring_bytes_per_simulation(t, n, st.fcd_window if (fcd and st.has_fcd) else None,
                                           st.fcd_step)
        chunk = max(1, limit // per)
    parts = []
    for start in range(0, b, chunk):
        parts.append(score_batch(bold[start:start + chunk], st, hemispheres, fcd=fcd))
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


# ------------------------------------------------------------------------------ the evaluator
class SweepEvaluator(CandidateEvaluator):
    """A :class:`rww.search.CandidateEvaluator` whose candidates' noise depends on their index
    only, scoring FC/FCD streamed within a memory bound.

    Takes every argument of :class:`rww.search.CandidateEvaluator` (``sc`` ``(N, N)``, ``target``,
    ``n_trs``, ``burn_in_trs``, ``dt`` [ms], ``tr`` [s], ``fixed``, ``fic`` [Hz] or ``None``,
    ``maps``, ``hemispheres``, ``batch_size``, ``seed`` (the noise seed), ``backend``, ``haemo``,
    ``dtype``, ``rate_band`` [Hz], ``rate_weight``, ``progress``) plus:

    Args:
        score_chunk: simulations scored at a time (default from ``score_max_bytes``). Part of a
            sweep's settings: torch's sums round differently for different batch sizes, which
            changes the last bits of the FCD W1 distances.
        score_max_bytes: memory bound of the FC/FCD scoring [bytes] (default
            :data:`DEFAULT_SCORE_BYTES`), through :func:`scoring_bytes_per_simulation`.
        device: where the candidates are simulated and scored (default ``sc``'s device), e.g.
            ``"cuda:0"`` with ``sc`` on the CPU, where FIC and G_c are solved.

    ``backend="auto"`` is resolved here (:func:`rww.ops.scan.auto_backend_name` of ``device``):
    :attr:`backend` is the name of the backend that runs, and a sweep's settings record it, so a
    resume where ``auto`` would pick another backend is refused by name.

    :meth:`evaluate_batch` scores candidates ``first, first + 1, ...`` of a design with noise
    indices equal to those candidate indices. FIC, G_c and the scores are computed with one torch
    thread (the simulation with all of them), so that no result depends on the process's thread
    count: torch's CPU reductions split their sums by thread, which changes their last bits.
    Candidates that FIC cannot serve are not scored; to keep one simulation per batch and the
    noise indices contiguous, their slots are simulated with a scored candidate's parameters and
    discarded.
    """

    def __init__(self, sc, target, *, score_chunk: int | None = None,
                 score_max_bytes: int | None = None, device=None, **kwargs):
        kwargs.setdefault("progress", False)
        with _torch_threads(1):        # the target's FC/FCD too (see below)
            super().__init__(sc, target, **kwargs)
        _positive_int("score_chunk", score_chunk, optional=True)
        _positive_int("score_max_bytes", score_max_bytes, optional=True)
        if score_chunk is None:
            st = self.target
            per = scoring_bytes_per_simulation(self.n_trs, self.n_nodes,
                                               st.fcd_window if st.has_fcd else None, st.fcd_step)
            score_chunk = max(1, (score_max_bytes or DEFAULT_SCORE_BYTES) // per)
        #: simulations scored at a time (a setting: the FCD W1 distances' last bits depend on it)
        self.score_chunk = score_chunk
        #: where candidates are simulated and scored (FIC and G_c stay with ``sc``)
        self.device = torch.device(device) if device is not None else self.sc.device
        if self.backend == "auto":     # pinned: a sweep's settings name the backend that ran
            from ..ops import scan
            self.backend = scan.auto_backend_name(self.device)
        self._noise_base = 0
        self._outer_threads = torch.get_num_threads()
        #: simulation batches run (a diverging batch's reruns count one each)
        self.simulations_run = 0

    def evaluate_batch(self, names: list, values, first: int) -> list:
        """Simulate and score candidates ``first ... first + M - 1`` of a design.

        Args:
            names: the swept names, in column order.
            values: ``(M, D)`` their values (M at most ``batch_size`` for one simulation).
            first: design index of the first candidate (its noise index).

        Returns:
            ``M`` rows (dicts) as :meth:`rww.search.CandidateEvaluator.__call__` plus
            ``candidate`` and ``fic_failed_regions``.
        """
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ValueError(f"first: must be a non-negative integer, got {first!r}")
        self._noise_base = first
        self._outer_threads = torch.get_num_threads()
        try:
            # FIC, G_c and the scores with one torch thread: torch's CPU reductions split their
            # work by thread count, so their last bits would depend on how the process was
            # launched (torchrun sets OMP_NUM_THREADS=1); the simulation keeps every thread
            with _torch_threads(1):
                rows = self(names, values)
        finally:
            self._noise_base = 0
        for i, row in enumerate(rows):
            row["candidate"] = first + i
            row["fic_failed_regions"] = _fic_failures(row["status"], self.fic is not None
                                                      or "fic_target" in names)
        return rows

    def _simulate_and_score(self, params: dict, idx: list, status: list) -> dict:
        from ..model import RWWBold
        b = len(idx)
        lo, hi = min(idx), max(idx)
        span = hi - lo + 1
        # slot p of the simulated batch is candidate lo + p; unscored candidates' slots take
        # the first scored candidate's parameters (simulated, then discarded)
        where = {i - lo: j for j, i in enumerate(idx)}
        fill = torch.tensor([where.get(p, 0) for p in range(span)])
        device = self.device
        values = {k: (v[fill] if v.shape[0] == b else v).to(device=device, dtype=self.dtype)
                  for k, v in params.items()}
        model = RWWBold(self.sc.to(device=device, dtype=self.dtype), dt=self.dt, tr=self.tr,
                        batch=span,
                        backend=self.backend, haemo=self.haemo, dtype=self.dtype, **values)
        self.simulations_run += 1
        try:
            with _torch_threads(self._outer_threads):
                result = model.simulate(self.burn_in_trs + self.n_trs, seed=self.seed,
                                        record=("r_E",), sim_offset=self._noise_base + lo)
        except SimulationDiverged:
            if b == 1 and span == 1:
                status[idx[0]] = "diverged"
                return {}
            merged = {}
            for j in range(b):         # each alone, with its own noise index
                one = self._simulate_and_score({k: v[j:j + 1] if v.shape[0] == b else v
                                                for k, v in params.items()}, [idx[j]], status)
                for key, col in one.items():
                    merged.setdefault(key, [math.nan] * b)[j] = float(col[0])
            return merged
        keep = torch.tensor([i - lo for i in idx], device=result.bold.device)
        bold = result.bold[keep, self.burn_in_trs:]
        scores = score_batch_streamed(bold, self.target, self.hemispheres, chunk=self.score_chunk)
        rate = result.records["r_E"][keep, self.burn_in_trs:].to(torch.float64).mean(1)
        low, high = self.rate_band
        excess = (torch.relu(rate - high) + torch.relu(low - rate)).mean(-1)
        scores.update(rate_mean=rate.mean(-1), rate_max=rate.max(-1).values, rate_excess=excess)
        return {k: v.cpu() for k, v in scores.items()}


class _torch_threads:
    """Run a block with ``n`` torch CPU threads (restored after)."""

    def __init__(self, n: int):
        self.n, self.saved = n, None

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.n != self.saved:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)
        return False


def _fic_failures(status: str, with_fic: bool):
    if not with_fic:
        return None
    match = re.match(r"FIC failed in (\d+) regions", status)
    if match:
        return int(match.group(1))
    return 0 if status in ("ok", "diverged") else None
