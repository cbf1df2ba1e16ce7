"""Plausibility warnings (rww.plausibility) and their place in rww simulate's summary."""

import json

import numpy as np
import torch

from rww import RWWBold
from rww.cli import main
from rww.plausibility import check


def _sc(n=5, diagonal=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    sc = torch.rand(n, n, generator=g, dtype=torch.float64)
    sc = (sc + sc.T) / 2
    if not diagonal:
        sc.fill_diagonal_(0)
    return sc / sc.sum(1).mean()


def test_plausible_settings_give_no_warning():
    model = RWWBold(_sc(), dtype=torch.float64, G=0.5)
    assert check(model, torch.full((1, 5), 3.0, dtype=torch.float64)) == []


def test_each_kind_of_implausibility_is_named():
    model = RWWBold(_sc(diagonal=True), dtype=torch.float64, G=0.5,
                    w_IE=torch.tensor([1.0, -0.2, 1.0, 1.0, 1.0], dtype=torch.float64))
    rates = torch.tensor([[3.0, 3.0, 3.0, 3.0, 150.0]], dtype=torch.float64)
    messages = check(model, rates)
    assert any("self-connections on 5 of 5" in m for m in messages)
    assert any("parameter w_IE is negative (1 value(s), min -0.2)" in m for m in messages)
    assert any("mean excitatory rate 32.4 Hz is outside the 1-10 Hz" in m for m in messages)
    assert any("1 region(s) fire above 100 Hz (max 150 Hz)" in m for m in messages)


def test_g_above_the_critical_coupling():
    model = RWWBold(_sc(), dtype=torch.float64, fic=True, g_relative=True, G=1.1)
    assert any("above the critical coupling G_c (G/G_c up to 1.100)" in m for m in check(model))
    assert check(RWWBold(_sc(), dtype=torch.float64, fic=True, g_relative=True, G=0.9)) == []


def test_simulate_summary_records_the_warnings(tmp_path, capsys):
    """G = 1000 on a connectome with self-connections: rates of ~5e4 Hz and the diagonal are
    reported on stderr and in summary.json (they used to pass silently: "warnings": [])."""
    sc = _sc(diagonal=True).numpy()
    np.save(tmp_path / "sc.npy", sc)
    code = main(["simulate", str(tmp_path / "sc.npy"), "--trs", "5", "--param", "G=1000",
                 "--seed", "1", "--no-figures", "--no-progress", "--out", str(tmp_path / "out")])
    assert code == 0
    err = capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    kinds = ("self-connections", "outside the 1-10 Hz", "fire above 100 Hz")
    for kind in kinds:
        assert any(kind in w for w in summary["warnings"]), kind
        assert kind in err
    assert summary["seed"] == 1 and summary["seed_drawn"] is False
