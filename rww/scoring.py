"""Scoring simulated BOLD against an empirical target, with every convention spelled out: the
scores of the evaluation protocol (:func:`rww.evaluate.evaluate`) and of search code that
simulates batches itself.

Prepare the target once with :func:`prepare_target` (a :class:`ScoringTarget`: FC and FCD values
in both window conventions), then score with :func:`score_bold` (R noise realisations of one
model: the scores below) or :func:`score_batch` (each of B simulations separately, tensors
``(B,)``). Hemisphere labels for the intra-hemispheric scores: :func:`split_hemispheres`,
:func:`demo_hemispheres`.

=================================  =============================================================
score                              meaning
=================================  =============================================================
``fc_r``                           Pearson r between the lower triangles (i > j) of the
                                   realisation-averaged simulated FC and the target FC
``fc_r_single``, ``..._std``       mean and population std over realisations of each
                                   realisation's own FC r (what one simulated scan achieves)
``fc_r_intra`` (+ ``_single*``)    the same over intra-hemispheric edges only (cuBNM's
                                   ``exc_interhemispheric``); needs ``hemispheres``
``fc_mse``                         mean squared lower-triangle difference, averaged FC
``fc_level_sim``, ``_target``      mean off-diagonal FC (the level r ignores); ``fc_level_diff``
                                   = sim - target; ``fc_level_sim_std`` over realisations
``fcd_ks_all``, ``fcd_w1_all``     KS statistic (``scipy.stats.ks_2samp``) and exact
                                   1-Wasserstein distance between FCD values over all pairs of
                                   distinct windows (cuBNM's convention), simulated values pooled
                                   over realisations
``fcd_ks_nonoverlap``, ``..w1..``  the same over pairs of windows that share no TR
``fcd_ks_*_single``, ``..._std``   per-realisation FCD KS, mean and population std
``fcd_ks``, ``fcd_w1``             the variant in the target's own convention
                                   (``FitTarget.fcd_exclude_overlapping``)
``rate_mean``, ``_max``, ``_min``  excitatory rate r_E [Hz]: time-mean per region; mean over
                                   regions and realisations, and the extreme regions
=================================  =============================================================

Scores that cannot be computed are ``None`` (the key is always present), with the reason in
:func:`describe_conventions` (:attr:`rww.evaluate.Evaluation.conventions`). In particular, when
the target's FCD values are pooled over all pairs of windows (cuBNM's files, the embedded demo:
``fcd_exclude_overlapping=False``) the non-overlapping variant is **reported as unavailable**, not
computed against the all-pairs values: overlapping pairs share TRs and are more similar, so
comparing simulated non-overlapping pairs with them would be biased even for a perfect model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import objectives as obj
from .fit import FitTarget, fcd_min_trs

FCD_VARIANTS = ("all", "nonoverlap")


# ------------------------------------------------------------------------------ hemispheres
def split_hemispheres(n_regions: int) -> torch.Tensor:
    """Labels ``(N,)`` int64 for regions ordered left hemisphere then right, equal halves:
    0 for the first ``N/2`` (left), 1 for the rest (right); cuBNM's assumption
    (``rh_idx = N / 2``)."""
    if not isinstance(n_regions, int) or n_regions < 2 or n_regions % 2:
        raise ValueError(f"split_hemispheres: need an even number of regions >= 2, got {n_regions!r}")
    return torch.cat([torch.zeros(n_regions // 2, dtype=torch.int64),
                      torch.ones(n_regions // 2, dtype=torch.int64)])


def demo_hemispheres() -> torch.Tensor:
    """Hemisphere labels ``(100,)`` of the embedded Schaefer-100 demo (:func:`rww.data.load_demo`):
    regions 1-50 left (0), 51-100 right (1)."""
    return split_hemispheres(100)


def check_hemispheres(hemispheres, n_nodes: int) -> torch.Tensor:
    """Validate hemisphere labels: ``(N,)`` integers or booleans (any two or more values; regions
    with equal labels share a hemisphere). Returns them as an int64 tensor on the CPU."""
    try:
        labels = torch.as_tensor(hemispheres)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"hemispheres: expected (N,) integer or boolean labels, got "
                        f"{type(hemispheres).__name__}") from err
    if labels.dtype == torch.bool:
        labels = labels.to(torch.int64)
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"hemispheres: expected integer or boolean labels, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n_nodes:
        raise ValueError(f"hemispheres: expected {n_nodes} labels (one per region), got shape "
                         f"{tuple(labels.shape)}")
    labels = labels.to(torch.int64).cpu()
    if intra_hemispheric_pairs(labels)[0].numel() < 3:
        raise ValueError("hemispheres: fewer than 3 intra-hemispheric edges; the intra-hemispheric "
                         "FC correlation needs more (check the labels)")
    return labels


def intra_hemispheric_pairs(hemispheres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` of the lower-triangle edges (i > j, row-major like
    :func:`rww.objectives.lower_triangle`) joining regions with equal labels."""
    n = hemispheres.shape[0]
    rows, cols = torch.tril_indices(n, n, offset=-1)
    keep = hemispheres[rows] == hemispheres[cols]
    return rows[keep], cols[keep]


def _entries(matrix: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    n = matrix.shape[-1]
    return matrix.flatten(-2).index_select(-1, (rows * n + cols).to(matrix.device))


def _pearson_last(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r along the last dimension, broadcasting ``(..., M)`` with ``(M,)``."""
    a, b = torch.broadcast_tensors(a, b)
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / torch.sqrt(a.square().sum(-1) * b.square().sum(-1))


# ------------------------------------------------------------------------------ the target
@dataclass
class ScoringTarget:
    """A :class:`rww.fit.FitTarget` made ready for scoring (see :func:`prepare_target`).

    Attributes:
        fc: ``(N, N)`` target FC, float64.
        fcd_all: ``(M,)`` target FCD values over all pairs of distinct windows, or ``None``.
        fcd_nonoverlap: ``(M',)`` over pairs of windows sharing no TR, or ``None``.
        fcd_window, fcd_step: the FCD window and step in TRs.
        convention: ``"nonoverlap"`` or ``"all"``: the target's own (``fcd_exclude_overlapping``),
            the one ``fcd_ks`` / ``fcd_w1`` report.
        n_trs: length of the target BOLD in TRs (``None`` without BOLD).
        sources: where each of ``fc``, ``fcd_all``, ``fcd_nonoverlap`` came from, or why it is
            unavailable.
    """

    fc: torch.Tensor
    fcd_all: torch.Tensor | None
    fcd_nonoverlap: torch.Tensor | None
    fcd_window: int
    fcd_step: int
    convention: str
    n_trs: int | None
    sources: dict = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return self.fc.shape[-1]

    @property
    def has_fcd(self) -> bool:
        return self.fcd_all is not None or self.fcd_nonoverlap is not None

    def fcd(self, variant: str) -> torch.Tensor | None:
        return self.fcd_all if variant == "all" else self.fcd_nonoverlap

    @property
    def min_separation(self) -> int:
        """Windows at least this many steps apart share no TR: ``ceil(window / step)``."""
        return max(1, -(-self.fcd_window // self.fcd_step))


def _n_windows(n_trs: int, window: int, step: int) -> int:
    return (n_trs - window) // step + 1 if n_trs >= window else 0


def _n_pairs(n_windows: int, separation: int) -> int:
    return sum(n_windows - d for d in range(separation, n_windows))


def prepare_target(target, n_nodes: int | None = None, *, fcd: bool | str = True,
                   device=None) -> ScoringTarget:
    """Validate a :class:`rww.fit.FitTarget` and compute what scoring needs, once.

    FC: ``target.fc``, else the FC of ``target.bold``. FCD values in both variants, each from (in
    this order) ``target.fcd_values`` (they fill the variant of ``fcd_exclude_overlapping``) or the
    FCD of ``target.bold`` (windows of ``fcd_window`` TRs every ``fcd_step``); a variant neither
    provides is unavailable (``None``).

    Args:
        target: a :class:`rww.fit.FitTarget` (or a :class:`ScoringTarget`, returned as is).
        n_nodes: number of regions expected (default: the target's).
        fcd: compute FCD values (``False``: FC scores only; ``"auto"``: where the target allows,
            a target BOLD too short for two FCD windows leaving FCD unavailable, with the reason
            in ``sources`` and :func:`fcd_unavailable`).
        device: of the returned tensors (default CPU).

    Raises:
        ValueError: shapes or values that :meth:`FitTarget.validate` rejects; with ``fcd=True``,
            a target BOLD too short for two FCD windows when no ``fcd_values`` are given (pass
            ``fcd=False`` to score FC only, ``"auto"`` to skip FCD where unavailable).
    """
    _check_fcd_mode(fcd)
    if isinstance(target, ScoringTarget):
        if n_nodes is not None and target.n_nodes != n_nodes:
            raise ValueError(f"target: has {target.n_nodes} regions, the simulation {n_nodes}")
        return target
    if not isinstance(target, FitTarget):
        raise TypeError(f"target: expected a rww.fit.FitTarget, got {type(target).__name__}")
    device = torch.device("cpu") if device is None else torch.device(device)
    w, s = int(target.fcd_window), int(target.fcd_step)
    if w < 2 or s < 1:
        raise ValueError(f"target: fcd_window must be >= 2 and fcd_step >= 1, got {w}, {s}")
    if n_nodes is None:
        for x in (target.fc, target.bold):
            if x is not None:
                n_nodes = torch.as_tensor(x).shape[-1]
                break
    explicit = target.fcd_values is not None
    valid = target.validate(n_nodes if n_nodes is not None else 0, torch.float64, device)
    bold = valid.bold
    convention = "nonoverlap" if target.fcd_exclude_overlapping else "all"
    sources = {"fc": "target.fc" if target.fc is not None else "FC of target.bold"}
    values = {"all": None, "nonoverlap": None}
    if fcd:
        if explicit:
            values[convention] = valid.fcd_values
            sources[f"fcd_{convention}"] = (f"target.fcd_values ({valid.fcd_values.numel()} values, "
                                            f"given in this convention)")
        if bold is not None:
            n_win = _n_windows(bold.shape[0], w, s)
            if n_win >= 2:
                matrix = obj.fcd(bold, w, s)
                for variant in FCD_VARIANTS:
                    if values[variant] is not None:
                        continue
                    vals = obj.fcd_values(matrix) if variant == "all" else obj.fcd_values(matrix, w, s)
                    if vals.numel():
                        values[variant] = vals
                        sources[f"fcd_{variant}"] = (f"FCD of target.bold ({bold.shape[0]} TRs, "
                                                     f"{n_win} windows, {vals.numel()} values)")
                    else:
                        sources[f"fcd_{variant}"] = (
                            f"unavailable: target.bold ({bold.shape[0]} TRs, {n_win} windows of {w} "
                            f"TRs every {s}) has no pair of windows sharing no TR (needs >= "
                            f"{fcd_min_trs(w, s, True, min_pairs=1)} TRs)")
            elif not explicit and fcd != "auto":
                raise ValueError(
                    f"target bold: {bold.shape[0]} TRs hold {n_win} FCD window(s) of {w} TRs every "
                    f"{s}; FCD needs at least 2 (>= {w + s} TRs). Use a longer target, a shorter "
                    "fcd_window, or fcd=False to score FC only")
            elif not explicit:
                for variant in FCD_VARIANTS:
                    sources[f"fcd_{variant}"] = (
                        f"unavailable: target.bold ({bold.shape[0]} TRs) holds {n_win} FCD "
                        f"window(s) of {w} TRs every {s}; FCD needs at least 2 (>= {w + s} TRs)")
        for variant in FCD_VARIANTS:
            if values[variant] is None and f"fcd_{variant}" not in sources:
                if explicit:
                    given = "non-overlapping pairs" if convention == "nonoverlap" else \
                        "all pairs of distinct windows (pooled, cuBNM's convention)"
                    sources[f"fcd_{variant}"] = (
                        f"unavailable: target.fcd_values are over {given} and the target has no "
                        "BOLD long enough to compute this variant from; mixing the conventions "
                        "would bias the comparison (overlapping pairs share TRs and are more "
                        "similar)")
                else:
                    sources[f"fcd_{variant}"] = "unavailable: the target has no FCD values or BOLD"
    else:
        sources["fcd_all"] = sources["fcd_nonoverlap"] = "not computed (fcd=False)"
    return ScoringTarget(valid.fc, values["all"], values["nonoverlap"], w, s, convention,
                         None if bold is None else int(bold.shape[0]), sources)


def _check_fcd_mode(fcd):
    if not (isinstance(fcd, str) and fcd == "auto") and fcd not in (True, False):
        raise ValueError(f"fcd: expected True, False or 'auto', got {fcd!r}")


def fcd_unavailable(target: ScoringTarget, n_trs: int | None = None) -> str | None:
    """Why ``fcd_ks`` / ``fcd_w1`` (the target's own convention) cannot be scored, or ``None``.

    Args:
        target: a :class:`ScoringTarget` (:func:`prepare_target`, e.g. with ``fcd="auto"``).
        n_trs: length of the simulated BOLD to score, in TRs (``None``: judge the target only).

    Returns:
        ``None`` when the target has FCD values in its convention and ``n_trs`` TRs hold at least
        one pair of windows in it; else one sentence with the numbers.
    """
    convention = target.convention
    if target.fcd(convention) is None:
        source = target.sources.get(f"fcd_{convention}", "unavailable: no FCD values")
        if source.startswith("unavailable: "):
            return "target FCD values unavailable: " + source[len("unavailable: "):]
        return "FCD " + source
    if n_trs is None:
        return None
    w, s = target.fcd_window, target.fcd_step
    n_win = _n_windows(n_trs, w, s)
    separation = target.min_separation if convention == "nonoverlap" else 1
    n_pairs = _n_pairs(n_win, separation)
    if n_win < 2 or n_pairs < 1:
        kind = "windows sharing no TR" if convention == "nonoverlap" else "distinct windows"
        need = w + separation * s
        return (f"the simulated BOLD's {n_trs} TRs hold {n_win} FCD window(s) of {w} TRs every "
                f"{s} and {n_pairs} pair(s) of {kind}; scoring FCD needs at least one (>= {need} "
                "TRs): simulate longer")
    return None


# ------------------------------------------------------------------------------ scoring
def _check_bold(bold, name: str = "sim_bold") -> torch.Tensor:
    if not torch.is_tensor(bold):
        raise TypeError(f"{name}: expected a tensor (B, T, N), got {type(bold).__name__}")
    if bold.dim() != 3:
        raise ValueError(f"{name}: expected shape (B, T, N) (simulations x time x regions), got "
                         f"{tuple(bold.shape)}")
    if not bold.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor, got {bold.dtype}")
    if bold.shape[0] < 1 or bold.shape[1] < 3:
        raise ValueError(f"{name}: needs at least one simulation of at least 3 TRs, got "
                         f"{tuple(bold.shape)}")
    return bold


def _check_fcd_length(n_trs: int, st: ScoringTarget, what: str):
    n_win = _n_windows(n_trs, st.fcd_window, st.fcd_step)
    if n_win < 2:
        raise ValueError(
            f"{what}: {n_trs} TRs hold {n_win} FCD window(s) of {st.fcd_window} TRs every "
            f"{st.fcd_step}; the FCD scores need at least 2 (>= {st.fcd_window + st.fcd_step} TRs): "
            "simulate longer (rww explore/fit: --n-trs), or score FC only (Python: fcd=False; "
            "command line: no --fcd and a target FC without BOLD)")


def _score(bold: torch.Tensor, st: ScoringTarget, hemispheres, fcd: bool):
    """Per-simulation scores ``(B,)`` plus the simulated FCs and FCD values (for pooling)."""
    x = bold.detach().to(torch.float64)
    tfc = st.fc.to(x.device)
    sim_fc = obj.pearson_matrix(x, eps=1e-20)                    # (B, N, N)
    per = {"fc_r": obj.fc_correlation(sim_fc, tfc), "fc_mse": obj.fc_mse(sim_fc, tfc),
           "fc_level": obj.offdiagonal_mean(sim_fc)}
    per["fc_level_diff"] = per["fc_level"] - obj.offdiagonal_mean(tfc)
    if hemispheres is not None:
        rows, cols = intra_hemispheric_pairs(hemispheres)
        per["fc_r_intra"] = _pearson_last(_entries(sim_fc, rows, cols), _entries(tfc, rows, cols))
    sim_fcd = {}
    if fcd == "auto" and _n_windows(x.shape[1], st.fcd_window, st.fcd_step) < 2:
        fcd = False                       # too short to score FCD: skipped (fcd_unavailable says why)
    if fcd and st.has_fcd:
        _check_fcd_length(x.shape[1], st, "sim_bold")
        matrix = obj.fcd(x, st.fcd_window, st.fcd_step)          # (B, W, W)
        sim_fcd = {"all": obj.fcd_values(matrix),
                   "nonoverlap": obj.fcd_values(matrix, st.fcd_window, st.fcd_step)}
        for variant in FCD_VARIANTS:
            target_values = st.fcd(variant)
            if target_values is None or sim_fcd[variant].shape[-1] == 0:
                continue
            target_values = target_values.to(x.device)
            per[f"fcd_ks_{variant}"] = obj.ks_2samp_statistic(sim_fcd[variant], target_values)
            per[f"fcd_w1_{variant}"] = obj.wasserstein1_exact(sim_fcd[variant], target_values)
        if f"fcd_ks_{st.convention}" in per:
            per["fcd_ks"] = per[f"fcd_ks_{st.convention}"]
            per["fcd_w1"] = per[f"fcd_w1_{st.convention}"]
    return per, sim_fc, sim_fcd


def _prepare(bold, target, hemispheres, fcd):
    _check_fcd_mode(fcd)
    bold = _check_bold(bold)
    st = prepare_target(target, bold.shape[-1], fcd=fcd)
    hem = None if hemispheres is None else check_hemispheres(hemispheres, bold.shape[-1])
    return bold, st, hem


def score_batch(bold: torch.Tensor, target, hemispheres=None, *, fcd: bool | str = True) -> dict:
    """Score each of B simulations separately (e.g. B candidate parameter sets of a search).

    Args:
        bold: ``(B, T, N)`` simulated BOLD after burn-in (any device; scored in float64).
        target: :class:`rww.fit.FitTarget` or :class:`ScoringTarget` (prepare it once with
            :func:`prepare_target` when scoring many batches).
        hemispheres: ``(N,)`` hemisphere labels for ``fc_r_intra`` (:func:`demo_hemispheres`).
        fcd: compute the FCD distances (``"auto"``: where the target and the simulation's length
            allow; :func:`fcd_unavailable` says why not).

    Returns:
        name -> ``(B,)`` float64 tensor: ``fc_r``, ``fc_mse``, ``fc_level`` (simulated mean
        off-diagonal FC), ``fc_level_diff`` (sim - target), ``fc_r_intra`` (with hemispheres),
        ``fcd_ks_all``, ``fcd_w1_all``, ``fcd_ks_nonoverlap``, ``fcd_w1_nonoverlap`` (those the
        target supports), ``fcd_ks``, ``fcd_w1`` (the target's convention). Conventions as in
        :func:`score_bold`. A simulation whose BOLD is constant or non-finite scores NaN.
    """
    bold, st, hem = _prepare(bold, target, hemispheres, fcd)
    return _score(bold, st, hem, fcd)[0]


def _mean_std(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std(unbiased=False))


SCORE_NAMES = (
    "fc_r", "fc_r_single", "fc_r_single_std",
    "fc_r_intra", "fc_r_intra_single", "fc_r_intra_single_std",
    "fc_mse", "fc_level_sim", "fc_level_sim_std", "fc_level_target", "fc_level_diff",
    "fcd_ks_all", "fcd_w1_all", "fcd_ks_all_single", "fcd_ks_all_single_std",
    "fcd_ks_nonoverlap", "fcd_w1_nonoverlap", "fcd_ks_nonoverlap_single",
    "fcd_ks_nonoverlap_single_std", "fcd_ks", "fcd_w1",
    "rate_mean", "rate_max", "rate_min",
)


def score_bold(sim_bold: torch.Tensor, target, hemispheres=None, *, rate_e: torch.Tensor | None = None,
               fcd: bool | str = True) -> dict:
    """Score R noise realisations of one model against the target.

    Args:
        sim_bold: ``(R, T, N)`` simulated BOLD after burn-in.
        target: :class:`rww.fit.FitTarget` or :class:`ScoringTarget`.
        hemispheres: ``(N,)`` hemisphere labels (for ``fc_r_intra*``), or ``None``.
        rate_e: ``(R, T, N)`` excitatory rates [Hz] (the scan's ``r_E`` record), or ``None``.
        fcd: compute the FCD distances (``"auto"``: where the target and the simulation's length
            allow, the others ``None``; :func:`fcd_unavailable` says why).

    Returns:
        name -> float, or ``None`` where unavailable; every name of :data:`SCORE_NAMES` (see the
        module docstring). Simulated FCD values are pooled over the realisations for
        ``fcd_ks_*`` / ``fcd_w1_*``; ``*_single_*`` are per-realisation.
    """
    sim_bold, st, hem = _prepare(sim_bold, target, hemispheres, fcd)
    if not torch.isfinite(sim_bold).all():
        raise ValueError("sim_bold: contains NaN or infinite values (did the simulation diverge?)")
    per, sim_fc, sim_fcd = _score(sim_bold, st, hem, fcd)
    scores = dict.fromkeys(SCORE_NAMES)
    avg = sim_fc.mean(0)
    tfc = st.fc.to(avg.device)
    scores["fc_r"] = float(obj.fc_correlation(avg, tfc))
    scores["fc_r_single"], scores["fc_r_single_std"] = _mean_std(per["fc_r"])
    if hem is not None:
        rows, cols = intra_hemispheric_pairs(hem)
        scores["fc_r_intra"] = float(_pearson_last(_entries(avg, rows, cols), _entries(tfc, rows, cols)))
        scores["fc_r_intra_single"], scores["fc_r_intra_single_std"] = _mean_std(per["fc_r_intra"])
    scores["fc_mse"] = float(obj.fc_mse(avg, tfc))
    scores["fc_level_sim"], scores["fc_level_sim_std"] = _mean_std(per["fc_level"])
    scores["fc_level_target"] = float(obj.offdiagonal_mean(tfc))
    scores["fc_level_diff"] = scores["fc_level_sim"] - scores["fc_level_target"]
    for variant in FCD_VARIANTS:
        if f"fcd_ks_{variant}" not in per:
            continue
        pooled = sim_fcd[variant].flatten()
        target_values = st.fcd(variant).to(pooled.device)
        scores[f"fcd_ks_{variant}"] = float(obj.ks_2samp_statistic(pooled, target_values))
        scores[f"fcd_w1_{variant}"] = float(obj.wasserstein1_exact(pooled, target_values))
        mean, std = _mean_std(per[f"fcd_ks_{variant}"])
        scores[f"fcd_ks_{variant}_single"], scores[f"fcd_ks_{variant}_single_std"] = mean, std
    scores["fcd_ks"] = scores[f"fcd_ks_{st.convention}"]
    scores["fcd_w1"] = scores[f"fcd_w1_{st.convention}"]
    if rate_e is not None:
        if not torch.is_tensor(rate_e) or tuple(rate_e.shape) != tuple(sim_bold.shape):
            got = tuple(rate_e.shape) if torch.is_tensor(rate_e) else type(rate_e).__name__
            raise ValueError(f"rate_e: expected shape {tuple(sim_bold.shape)} like sim_bold, got {got}")
        regional = rate_e.detach().to(torch.float64).mean(dim=1)          # (R, N)
        scores["rate_mean"] = float(regional.mean())
        scores["rate_max"] = float(regional.max())
        scores["rate_min"] = float(regional.min())
    return scores


def describe_conventions(target: ScoringTarget, hemispheres=None) -> dict:
    """Plain-language convention of every score group, for
    :attr:`rww.evaluate.Evaluation.conventions`."""
    st = target
    w, s, k = st.fcd_window, st.fcd_step, st.min_separation
    out = {
        "fc": "FC = Pearson r over the scored TRs between regions; fc_r = Pearson r between the "
              "lower triangles (i > j, diagonal excluded) of the realisation-averaged simulated FC "
              "and the target FC (" + st.sources["fc"] + "); fc_r_single/std = mean and "
              "population std over realisations of each realisation's own r",
        "fc_mse": "mean squared difference of the lower triangles, realisation-averaged FC",
        "fc_level": "FC level = mean off-diagonal FC; fc_level_sim of the realisation-averaged FC "
                    "(= mean of the realisations' levels), fc_level_sim_std their population std; "
                    "fc_level_diff = sim - target (cuBNM's fc_diff is its absolute value)",
        "fcd": f"FCD in the target's window convention: windows of {w} TRs starting every {s} TRs "
               f"(0, {s}, {2 * s}, ... while start + {w} <= T); FCD = Pearson r between the "
               "windows' FC lower triangles; KS = scipy.stats.ks_2samp statistic, W1 = exact "
               "1-Wasserstein distance (scipy.stats.wasserstein_distance); simulated values pooled "
               "over realisations (fcd_ks_*_single/std: per realisation); fcd_ks/fcd_w1 "
               f"repeat the target's own variant ({st.convention})",
        "fcd_all": "all pairs of distinct windows (cuBNM's convention); target values: "
                   + st.sources.get("fcd_all", "unavailable"),
        "fcd_nonoverlap": f"pairs of windows >= {k} steps apart (ceil({w}/{s}); no shared TR); "
                          "target values: " + st.sources.get("fcd_nonoverlap", "unavailable"),
        "rate": "excitatory rate r_E [Hz] averaged over each TR's steps by the scan, then over "
                  "the scored TRs per region; rate_mean over regions and realisations, "
                  "rate_max/min the extreme region (any realisation)",
    }
    if hemispheres is None:
        out["fc_intra"] = ("not computed: no hemisphere labels (hemispheres=; "
                           "rww.evaluate.demo_hemispheres() for the embedded demo)")
    else:
        rows, _ = intra_hemispheric_pairs(hemispheres)
        sizes = torch.unique(hemispheres, return_counts=True)[1].tolist()
        out["fc_intra"] = ("as fc_r over intra-hemispheric edges only (cuBNM's exc_interhemispheric): "
                           f"{rows.numel()} edges within hemispheres of {' + '.join(map(str, sizes))} "
                           "regions")
    return out


__all__ = [
    "SCORE_NAMES", "FCD_VARIANTS", "ScoringTarget", "prepare_target", "score_bold", "score_batch",
    "fcd_unavailable",
    "describe_conventions", "split_hemispheres", "demo_hemispheres", "check_hemispheres",
    "intra_hemispheric_pairs",
]
