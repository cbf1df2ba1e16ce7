"""Scoring after a fit: FCD skipped, with the reason, where the target has no FCD values or the
BOLD (target or simulated) is too short, instead of failing inside torch.quantile."""

import pytest
import torch

from rww.fit import FitTarget
from rww.scoring import fcd_unavailable, prepare_target, score_batch, score_bold

N = 4


def series(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_auto_skips_fcd_for_a_target_bold_too_short_and_says_why():
    sim = series((2, 40, N), 1)
    short = FitTarget(bold=series((25, N), 2))                 # windows of 30 TRs every 5
    st = prepare_target(short, N, fcd="auto")
    assert st.fcd_all is None and st.fcd_nonoverlap is None
    assert fcd_unavailable(st, 40) == ("target FCD values unavailable: target.bold (25 TRs) holds "
                                       "0 FCD window(s) of 30 TRs every 5; FCD needs at least 2 "
                                       "(>= 35 TRs)")
    scores = score_bold(sim, short, fcd="auto")
    assert scores["fcd_ks"] is None and scores["fcd_ks_all"] is None
    assert scores["fc_r"] == score_bold(sim, short, fcd=False)["fc_r"]
    assert set(score_batch(sim, short, fcd="auto")) == set(score_batch(sim, short, fcd=False))


def test_auto_scores_what_a_40_tr_target_allows():
    """40 TRs: 3 windows of 30 every 5, so 3 pairs of distinct windows but none sharing no TR:
    the target's own (non-overlapping) variant is unavailable, the pooled one is scored."""
    sim = series((2, 40, N), 3)
    target = FitTarget(bold=series((40, N), 4))
    st = prepare_target(target, N, fcd="auto")
    assert "no pair of windows sharing no TR (needs >= 60 TRs)" in fcd_unavailable(st, 40)
    scores = score_bold(sim, target, fcd="auto")
    assert scores["fcd_ks"] is None and scores["fcd_ks_nonoverlap"] is None
    assert 0 <= scores["fcd_ks_all"] <= 1


def test_auto_skips_fcd_for_a_simulation_too_short_and_says_why():
    target = FitTarget(fc=torch.eye(N), fcd_values=series((50,), 5).abs() / 4, fcd_window=30,
                       fcd_step=5)
    st = prepare_target(target, N, fcd="auto")
    assert fcd_unavailable(st) is None and fcd_unavailable(st, 60) is None
    assert fcd_unavailable(st, 40) == (
        "the simulated BOLD's 40 TRs hold 3 FCD window(s) of 30 TRs every 5 and 0 pair(s) of "
        "windows sharing no TR; scoring FCD needs at least one (>= 60 TRs): simulate longer")
    for trs in (25, 40):                                        # 0 windows; 3 windows, 0 pairs
        assert score_bold(series((2, trs, N), 6), st, fcd="auto")["fcd_ks"] is None
    assert 0 <= score_bold(series((2, 60, N), 7), st, fcd="auto")["fcd_ks"] <= 1
    with pytest.raises(ValueError, match=r"sim_bold: 25 TRs hold 0 FCD window"):
        score_bold(series((2, 25, N), 6), st)                  # FCD asked for explicitly
    assert fcd_unavailable(prepare_target(target, N, fcd=False)) == "FCD not computed (fcd=False)"


def test_the_fcd_mode_is_checked():
    with pytest.raises(ValueError, match=r"fcd: expected True, False or 'auto', got 'yes'"):
        score_bold(series((1, 40, N), 8), FitTarget(fc=torch.eye(N)), fcd="yes")
