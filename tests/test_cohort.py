"""Cohort fits (rww.cohort): one call recovers each subject's G and a group value; subjects see
only their own simulations; resume equals an uninterrupted fit; held-out scores are the
evaluation protocol's; ``torchrun --nproc_per_node 2`` (gloo) equals one process bit for bit,
and a checkpoint continues exactly on another number of ranks."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from rww import RWWBold
from rww.cohort import CohortParam, CohortTarget, evaluate_cohort, fit_cohort
from rww.evaluate import evaluate
from rww.fit import FitConfig, FitTarget

from helpers import TORCHRUN, seeded_connectome, torchrun_env

# ------------------------------------------------------------------------------ recovery
N = 8
SETTINGS = dict(dt=1.0, tr=0.5, backend="auto")
TRUE_G = torch.tensor([0.25, 0.35, 0.45])


@pytest.fixture(scope="module")
def cohort():
    """Three subjects on one connectome with G = 0.25, 0.35, 0.45 (deco2014, FIC off): 20 TRs
    of BOLD after a 20-TR burn-in, one batch with a common noise seed (subject s is simulation
    s of it)."""
    sc = seeded_connectome(N, 0).float()
    truth = RWWBold(sc, G=TRUE_G.view(-1, 1), batch=3, **SETTINGS)
    with torch.no_grad():
        _, state = truth(20, seed=123)
        bold, _ = truth(20, state=state, seed=123, t0=20 * truth.steps_per_tr)
    return sc, bold


def _recovery_config(lr):
    # The fit sees the targets' window (the same 20-TR burn-in, 20 TRs): the BOLD means carry
    # the mean S_E, which identifies G; the learning rate decays so Adam's momentum settles.
    return FitConfig(epochs=20, lr=lr, window_trs=None, n_trs=20, burn_in_trs=20,
                     weights={"bold_mean": 1.0, "fc_corr": 1.0})


def _decay(optimizer):
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9)


def test_one_call_recovers_each_subjects_G(cohort):
    sc, bold = cohort
    result = fit_cohort(sc, CohortTarget(bold=bold), {"G": CohortParam(0.35)},
                        _recovery_config(0.05), realisations=2, model_options=SETTINGS,
                        scheduler=_decay)
    fitted = result.params["G"]
    error = (fitted - TRUE_G).abs() / TRUE_G
    print("cohort G fitted", fitted.tolist(), "relative error", error.tolist())
    assert fitted.shape == (3,)
    assert (error < 0.10).all(), f"G fitted {fitted.tolist()}, truth {TRUE_G.tolist()}"
    h = result.history
    assert h["epoch"] == list(range(20)) and len(h["subjects"]) == 3
    for s in range(3):
        sub = result.subject_history(s)
        for key in ("loss", "fc_r", "params/G", "terms/bold_mean", "terms/fc_corr"):
            assert len(sub[key]) == 20, key
        assert sub["params/G"][-1] == pytest.approx(float(fitted[s]), rel=1e-6)
    # the cohort loss is the sum of the subjects' losses
    assert h["loss"][-1] == pytest.approx(sum(h["subjects"][s]["loss"][-1] for s in range(3)))
    assert result.fc.shape == (3, N, N) and result.convergence["epochs_run"] == 20


def test_hierarchical_group_value_is_recovered(cohort):
    """G_s = G_group + d_s (identity transform), truth 0.35 + (-0.1, 0, 0.1): the group value,
    started 14% low, and every subject are recovered within 10%."""
    sc, bold = cohort
    param = CohortParam(0.3, "hierarchical", "identity", prior_scale=0.1)
    result = fit_cohort(sc, CohortTarget(bold=bold), {"G": param}, _recovery_config(0.02),
                        realisations=2, model_options=SETTINGS, scheduler=_decay)
    group, fitted = float(result.group["G"]), result.params["G"]
    print("group G", group, "subjects", fitted.tolist(), "deviations",
          result.deviations["G"].tolist())
    assert abs(group - 0.35) / 0.35 < 0.10, f"group G {group}, history {result.history['group/G']}"
    assert ((fitted - TRUE_G).abs() / TRUE_G < 0.10).all(), fitted.tolist()
    torch.testing.assert_close(result.deviations["G"], fitted - group, rtol=0, atol=1e-6)
    assert len(result.history["group/G"]) == 20
    assert len(result.subject_history(0)["terms/deviation_G"]) == 20


# ------------------------------------------------------------------------------ small problem
# Shared with the torchrun script below (exec'd there): 3 subjects, each its own connectome and
# target BOLD, N = 6, TR 0.1 s at dt 1 ms, windows of 4 TRs, 2 realisations; G hierarchical,
# w_EE one group value, a step scheduler.
PROBLEM = '''
import torch
from rww.cohort import CohortParam, CohortTarget
from rww.fit import FitConfig

OPTIONS = dict(dt=1.0, tr=0.1, backend="auto")
EVAL = dict(n_trs=10, burn_in_trs=5, n_realisations=2, dt=1.0, fcd=False, seed=7)


def problem(folder, epochs=4, **changes):
    data = torch.load(f"{folder}/cohort_inputs.pt", weights_only=True)
    params = {"G": CohortParam(0.5, "hierarchical", "identity", prior_scale=0.2),
              "w_EE": CohortParam(1.3, "group")}
    settings = dict(epochs=epochs, lr=0.05, window_trs=4, n_trs=8, burn_in_trs=4, seed=3,
                    weights={"fc_corr": 1.0, "bold_mean": 0.5}, priors={"w_EE": (1.4, 0.5)})
    settings.update(changes)
    return (data["sc"], CohortTarget(bold=data["bold"]), params, FitConfig(**settings))


def scheduler(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)


def pack(result):
    history = {k: v for k, v in result.history.items() if k != "seconds"}
    return {"params": result.params, "group": result.group, "deviations": result.deviations,
            "fc": result.fc, "history": history, "held_out": result.held_out}
'''
SMALL = {}
exec(PROBLEM, SMALL)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    n = 6
    sc = torch.stack([seeded_connectome(n, 3 + s).float() for s in range(3)])
    truth = RWWBold(sc, G=torch.tensor([[0.4], [0.55], [0.7]]), batch=3, dt=1.0, tr=0.1)
    with torch.no_grad():
        bold = truth.simulate(16, seed=5).bold[:, 8:]
    torch.save({"sc": sc, "bold": bold}, folder / "cohort_inputs.pt")
    return folder


def _fit(folder, epochs=4, ctx=None, **kwargs):
    sc, target, params, config = SMALL["problem"](folder, epochs)
    return fit_cohort(sc, target, params, config, realisations=2, model_options=SMALL["OPTIONS"],
                      scheduler=SMALL["scheduler"], ctx=ctx, **kwargs)


def _assert_same(a: dict, b: dict, what: str):
    for key in ("params", "group", "deviations"):
        assert a[key].keys() == b[key].keys(), (what, key)
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (what, key, name, a[key][name],
                                                              b[key][name])
    assert torch.equal(a["fc"], b["fc"]), what
    assert a["history"] == b["history"], what
    assert a["held_out"] == b["held_out"], what


@pytest.fixture(scope="module")
def straight(small):
    """The uninterrupted one-process fit (4 epochs) with its held-out scores."""
    sc, target, _, _ = SMALL["problem"](small)
    return SMALL["pack"](_fit(small, held_out=target, evaluate_options=SMALL["EVAL"]))


def test_resume_equals_an_uninterrupted_fit(small, straight, tmp_path):
    class Interrupt(Exception):
        pass

    def stop_after_two(epoch, history):
        if epoch == 1:
            raise Interrupt

    path = str(tmp_path / "cohort.ckpt")
    with pytest.raises(Interrupt):
        _fit(small, checkpoint=path, callback=stop_after_two)
    assert not os.path.exists(path + ".tmp")
    sc, target, _, _ = SMALL["problem"](small)
    resumed = _fit(small, checkpoint=path, resume=True, held_out=target,
                   evaluate_options=SMALL["EVAL"])
    assert resumed.history["epoch"] == [0, 1, 2, 3]
    _assert_same(SMALL["pack"](resumed), straight, "resumed")
    # resuming the finished fit runs nothing and returns the same
    again = _fit(small, checkpoint=path, resume=True, held_out=target,
                 evaluate_options=SMALL["EVAL"])
    _assert_same(SMALL["pack"](again), straight, "resumed again")
    meta, arrays = again.save(str(tmp_path / "result"))
    with open(meta) as fh:
        saved = json.load(fh)
    assert saved["history"]["subjects"][2]["fc_r"] == again.history["subjects"][2]["fc_r"]
    assert saved["held_out"] == again.held_out
    with np.load(arrays) as npz:
        assert np.array_equal(npz["param_G"], again.params["G"].numpy())
        assert np.array_equal(npz["group_w_EE"], again.group["w_EE"].numpy())
    # other settings are refused, naming them
    params = SMALL["problem"](small)[2]
    with pytest.raises(ValueError, match=r"other settings \(lr, realisations differ\)"):
        fit_cohort(sc, target, params, SMALL["problem"](small, lr=0.1)[3], realisations=3,
                   model_options=SMALL["OPTIONS"], scheduler=SMALL["scheduler"],
                   checkpoint=path, resume=True)
    params["G"] = CohortParam(0.5, "hierarchical", "identity", prior_scale=0.3)
    with pytest.raises(ValueError, match=r"params\.G differ"):
        fit_cohort(sc, target, params, SMALL["problem"](small)[3], realisations=2,
                   model_options=SMALL["OPTIONS"], scheduler=SMALL["scheduler"],
                   checkpoint=path, resume=True)
    with pytest.raises(ValueError, match=r"\(sc differ\)"):
        fit_cohort(sc * 1.01, target, SMALL["problem"](small)[2], SMALL["problem"](small)[3],
                   realisations=2, model_options=SMALL["OPTIONS"], scheduler=SMALL["scheduler"],
                   checkpoint=path, resume=True)


def test_held_out_scores_are_the_evaluation_protocols(small, straight):
    sc, target, _, _ = SMALL["problem"](small)
    result = _fit(small, epochs=1)
    scores = evaluate_cohort(result, target, **SMALL["EVAL"])
    assert len(scores) == 3
    for s in range(3):
        model = result.subject_model(s)
        assert torch.equal(model.sc, sc[s]) and float(model.G) == float(result.params["G"][s])
        ev = evaluate(model, target.subject(s), **SMALL["EVAL"]).to_dict()
        assert scores[s] == ev
    assert len(straight["held_out"]) == 3 and all(-1 <= x["fc_r"] <= 1 for x in straight["held_out"])


def test_each_subject_sees_only_its_own_simulation(small):
    """Subject 2's target replaced: subjects 0 and 1 fit exactly as before (subject-level G and
    w_EE), subject 2 differently."""
    sc, target, _, config = SMALL["problem"](small, epochs=2)
    params = {"G": CohortParam(0.5), "w_EE": CohortParam(torch.tensor([[1.3], [1.4], [1.5]]))}
    kwargs = dict(realisations=2, model_options=SMALL["OPTIONS"])
    before = fit_cohort(sc, target, params, config, **kwargs)
    bold = target.bold.clone()
    bold[2] = bold[2].flip(0)
    after = fit_cohort(sc, CohortTarget(bold=bold), params, config, **kwargs)
    for s, same in ((0, True), (1, True), (2, False)):
        a, b = before.subject_history(s), after.subject_history(s)
        assert (a == b) is same, s
        assert torch.equal(before.params["G"][s], after.params["G"][s]) is same, s
    assert before.params["w_EE"].shape == (3,)


def test_cohort_errors(small):
    sc, target, params, config = SMALL["problem"](small, epochs=1)
    kwargs = dict(realisations=2, model_options=SMALL["OPTIONS"])
    with pytest.raises(ValueError, match="model-level terms"):
        fit_cohort(sc, target, params, FitConfig(weights={"fc_corr": 1.0, "bifurcation": 1.0}),
                   **kwargs)
    with pytest.raises(ValueError, match="needs prior_scale > 0"):
        fit_cohort(sc, target, {"G": CohortParam(0.5, "hierarchical"), "w_EE": params["w_EE"]},
                   config, **kwargs)
    with pytest.raises(ValueError, match=r"sc: expected \(N, N\) shared or \(3, N, N\)"):
        fit_cohort(sc[:2], target, params, config, **kwargs)
    with pytest.raises(ValueError, match="cohort target, subject 1: target fc: values outside"):
        fit_cohort(sc, CohortTarget(fc=torch.stack([torch.eye(6), 2 * torch.ones(6, 6),
                                                    torch.eye(6)])), params, config, **kwargs)
    with pytest.raises(ValueError, match="model_options: \\['G'\\] are set by the cohort fit"):
        fit_cohort(sc, target, params, config, realisations=2, model_options={"G": 0.3})
    with pytest.raises(ValueError, match="rww.cohort"):
        FitTarget(fc=torch.eye(6).expand(3, 6, 6)).validate(6, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"cohort target fcd_values: 2 subjects, expected 3"):
        CohortTarget(fc=target.bold.new_zeros(3, 6, 6), fcd_values=[[0.1, 0.2]] * 2).validate(
            6, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"subjects have \[7, 8\] TRs"):
        CohortTarget(bold=[target.bold[0], target.bold[1][:7], target.bold[2]]).validate(
            6, torch.float32, "cpu")


def test_per_subject_fcd_values_reach_each_subjects_term(small):
    """FCD values per subject (of different lengths): each subject's fcd_ks term compares with
    its own values, so giving subject 1 other values changes only subject 1's term."""
    sc, target, params, _ = SMALL["problem"](small, epochs=1)
    config = FitConfig(epochs=1, window_trs=None, n_trs=8, burn_in_trs=4,
                       weights={"fc_corr": 1.0, "fcd_ks": 1.0})
    fcd = [torch.rand(m, generator=torch.Generator().manual_seed(m)) for m in (10, 12, 14)]
    kwargs = dict(realisations=2, model_options=SMALL["OPTIONS"])

    fcs = torch.stack([t.fc for t in target.validate(6, torch.float32, "cpu")])

    def ks(values):
        cohort_target = CohortTarget(fc=fcs, fcd_values=values, fcd_window=3, fcd_step=1)
        result = fit_cohort(sc, cohort_target, params, config, **kwargs)
        return [result.subject_history(s)["terms/fcd_ks"][0] for s in range(3)]

    before = ks(fcd)
    after = ks([fcd[0], fcd[1] + 0.3, fcd[2]])
    assert before[0] == after[0] and before[2] == after[2] and before[1] != after[1]


# ------------------------------------------------------------------------------ torchrun
SCRIPT = PROBLEM + '''
import sys
from rww import distributed as rdist
from rww.cohort import fit_cohort

folder = sys.argv[1]
ctx = rdist.init()
assert ctx.world_size == 2 and ctx.backend == "gloo", ctx


def run(epochs, **kwargs):
    sc, target, params, config = problem(folder, epochs)
    return fit_cohort(sc, target, params, config, realisations=2, model_options=OPTIONS,
                      scheduler=scheduler, ctx=ctx, **kwargs)


sc, target, _, _ = problem(folder)
full = run(4, checkpoint=f"{folder}/two.ckpt", held_out=target, evaluate_options=EVAL)
resumed = run(4, checkpoint=f"{folder}/one_then_two.ckpt", resume=True, held_out=target,
              evaluate_options=EVAL)
run(2, checkpoint=f"{folder}/two_then_one.ckpt")
if ctx.is_main:
    torch.save({"full": pack(full), "resumed": pack(resumed)}, f"{folder}/two.pt")
else:
    assert full is None and resumed is None
rdist.barrier(ctx)
rdist.shutdown(ctx)
'''


def test_two_ranks_equal_one_process_and_resume_across_rank_counts(small, straight):
    """Rank 0 simulates subjects 0-1, rank 1 subject 2: the fit (parameters, group values,
    deviations, FC, every history entry but wall-clock seconds, held-out scores) equals the
    one-process fit bit for bit; a 1-process checkpoint continued on 2 ranks, and a 2-rank
    checkpoint continued in 1 process, both equal it too."""
    _fit(small, epochs=2, checkpoint=str(small / "one_then_two.ckpt"))
    script = small / "cohort_two_ranks.py"
    script.write_text(SCRIPT)
    run = subprocess.run(TORCHRUN + [str(script), str(small)], env=torchrun_env(),
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-12000:]
    two = torch.load(small / "two.pt", weights_only=False)
    assert two["full"]["history"]["epoch"] == [0, 1, 2, 3]
    _assert_same(two["full"], straight, "2 ranks")
    _assert_same(two["resumed"], straight, "1 process, then 2 ranks")
    sc, target, _, _ = SMALL["problem"](small)
    continued = _fit(small, checkpoint=str(small / "two_then_one.ckpt"), resume=True,
                     held_out=target, evaluate_options=SMALL["EVAL"])
    _assert_same(SMALL["pack"](continued), straight, "2 ranks, then 1 process")
