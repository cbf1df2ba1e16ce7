"""Fit control: any torch optimizer (closures: L-BFGS), learning-rate schedulers, the convergence
verdict, early stopping and callbacks that stop, with exact resume of each."""

import math

import pytest
import torch

import rww
from rww import objectives as obj
from rww.fit import FitConfig, FitResult, FitTarget, StopFit, convergence, fit

from helpers import seeded_connectome  # noqa: E402

N = 5


def small_model(**kw):
    return rww.RWWBold(seeded_connectome(N, 0), preset="griffiths2022", batch=2,
                       dtype=torch.float64, learn=["G", "w_EE"], G=5.0, **kw)


def target():
    g = torch.Generator().manual_seed(1)
    return FitTarget(fc=obj.fc(torch.randn(40, N, generator=g, dtype=torch.float64)))


def config(**kw):
    settings = dict(epochs=3, window_trs=None, n_trs=6, burn_in_trs=2, lr=0.1)
    settings.update(kw)
    return FitConfig(**settings)


class Interrupt(Exception):
    pass


def interrupt_after(epoch_to_stop):
    def callback(epoch, history):
        if epoch == epoch_to_stop:
            raise Interrupt
    return callback


def assert_same_fit(a: FitResult, b: FitResult):
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name]), name
    assert a.history["loss"] == b.history["loss"]
    assert a.history["lr"] == b.history["lr"]
    assert a.history["evaluations"] == b.history["evaluations"]
    assert torch.equal(a.bold, b.bold)


# ---------------------------------------------------------------- optimizers
def test_lbfgs_steps_with_a_closure_that_resimulates_the_window():
    """L-BFGS needs ``step(closure)``; it evaluates the loss several times per step, each time
    on the same window (same noise), and the history logs the first evaluation: at the start
    parameters, epoch 0's loss and BOLD equal Adam's."""
    adam = fit(small_model(), target(), config(epochs=1), progress=False)
    lbfgs = fit(small_model(), target(), config(),
                optimizer=lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=4), progress=False)
    assert lbfgs.history["loss"][0] == adam.history["loss"][0]
    assert lbfgs.history["evaluations"][0] > 1 and max(lbfgs.history["evaluations"]) <= 5
    assert adam.history["evaluations"] == [1]
    assert lbfgs.params["G"].item() != pytest.approx(5.0, rel=1e-6)          # it moved
    one_epoch = fit(small_model(), target(), config(epochs=1),
                    optimizer=lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=4), progress=False)
    assert torch.equal(one_epoch.bold, adam.bold)
    # Windowed: one L-BFGS step per window, the strong-Wolfe line search included.
    windowed = fit(small_model(), FitTarget(bold=torch.randn(12, N, dtype=torch.float64)),
                   config(epochs=1, window_trs=4, n_trs=12),
                   optimizer=lambda p: torch.optim.LBFGS(p, max_iter=3, line_search_fn="strong_wolfe"),
                   progress=False)
    assert windowed.history["evaluations"][0] >= 3 and windowed.bold.shape == (2, 12, N)

    class NoClosureSGD(torch.optim.SGD):             # a step() that takes no closure
        def step(self):
            return super().step()

    plain = fit(small_model(), target(), config(epochs=1),
                optimizer=lambda p: NoClosureSGD(p, lr=0.01), progress=False)
    assert plain.history["loss"] == adam.history["loss"] and plain.history["evaluations"] == [1]


def test_lbfgs_fit_resumes_exactly(tmp_path):
    make = lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=3)            # noqa: E731
    straight = fit(small_model(), target(), config(epochs=4), optimizer=make, progress=False)
    path = str(tmp_path / "fit.ckpt")
    with pytest.raises(Interrupt):
        fit(small_model(), target(), config(epochs=4), optimizer=make, checkpoint=path,
            progress=False, callback=interrupt_after(1))
    resumed = fit(small_model(), target(), config(epochs=4), optimizer=make, checkpoint=path,
                  resume=True, progress=False)
    assert_same_fit(resumed, straight)
    with pytest.raises(ValueError, match=r"resume: .* written with optimizer LBFGS, this fit has Adam"):
        fit(small_model(), target(), config(epochs=5), checkpoint=path, resume=True, progress=False)


def test_optimizer_and_scheduler_of_the_wrong_kind_are_refused():
    other = small_model()
    with pytest.raises(ValueError, match=r"optimizer: does not update the model's parameters "
                                         r"\['learned.G.raw', 'learned.w_EE.raw'\]"):
        fit(small_model(), target(), config(), optimizer=torch.optim.Adam(other.parameters()),
            progress=False)
    with pytest.raises(TypeError, match=r"optimizer: expected a torch.optim.Optimizer .* got str"):
        fit(small_model(), target(), config(), optimizer="adam", progress=False)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    elsewhere = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(other.parameters(), lr=0.1), 1)
    with pytest.raises(ValueError, match=r"scheduler: is attached to another optimizer"):
        fit(model, target(), config(), optimizer=optimizer, scheduler=elsewhere, progress=False)


# ---------------------------------------------------------------- schedulers
def test_scheduler_steps_once_per_epoch_and_resumes_exactly(tmp_path):
    make = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)  # noqa: E731
    straight = fit(small_model(), target(), config(epochs=5), scheduler=make, progress=False)
    assert straight.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025], rel=1e-12)
    path = str(tmp_path / "fit.ckpt")
    with pytest.raises(Interrupt):
        fit(small_model(), target(), config(epochs=5), scheduler=make, checkpoint=path,
            progress=False, callback=interrupt_after(2))
    resumed = fit(small_model(), target(), config(epochs=5), scheduler=make, checkpoint=path,
                  resume=True, progress=False)
    assert_same_fit(resumed, straight)
    with pytest.raises(ValueError, match=r"written with scheduler StepLR, this fit has None"):
        fit(small_model(), target(), config(epochs=6), checkpoint=path, resume=True, progress=False)
    # An instance built on the caller's optimizer works as well as a factory.
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    same = fit(model, target(), config(epochs=5), optimizer=optimizer,
               scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5),
               progress=False)
    assert_same_fit(same, straight)


def test_reduce_on_plateau_gets_the_epoch_loss():
    result = fit(small_model(), target(), config(epochs=6), progress=False,
                 scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
                     opt, factor=0.5, patience=0, threshold=0.0))
    lr, loss = result.history["lr"], result.history["loss"]
    best = math.inf
    for e in range(5):                                  # halved after every epoch not improving
        assert lr[e + 1] == pytest.approx(lr[e] * (1.0 if loss[e] < best else 0.5), rel=1e-12), e
        best = min(best, loss[e])
    assert len(set(lr)) > 1


# ---------------------------------------------------------------- the convergence verdict
def history_of(loss, **params):
    return {"loss": list(loss), **{f"params/{k}": list(v) for k, v in params.items()}}


def test_convergence_flags_a_parameter_still_climbing():
    epochs = torch.arange(60, dtype=torch.float64)
    noise = 0.01 * torch.sin(3.7 * epochs)                        # epoch-to-epoch jitter
    climbing = history_of(0.6 + noise, G=(100 + 0.2 * epochs).tolist(), w_EE=[5.0] * 60)
    verdict = convergence(climbing, convergence_window=10, param_rtol=0.01)
    assert verdict["converged"] is False
    assert verdict["reason"].startswith("not converged: over the last 10 epochs G drifted +1.6%")
    assert verdict["param_drift"]["G"] == pytest.approx(0.2 * 9 / (100 + 0.2 * 54.5), rel=1e-9)
    assert verdict["param_drift"]["w_EE"] == 0.0
    # Settled parameters with a loss that only jitters: converged, the loss judged by its noise.
    flat = history_of(0.6 + noise, G=(100 + 0.01 * torch.sin(epochs)).tolist(), w_EE=[5.0] * 60)
    verdict = convergence(flat, convergence_window=10, param_rtol=0.01, loss_rtol=0.0)
    assert verdict["converged"] is True, verdict["reason"]
    assert verdict["reason"].startswith("converged: over the last 10 epochs every parameter")
    # A loss still falling beyond its noise is not converged, whatever the parameters do.
    falling = history_of(1.0 - 0.01 * epochs + 0.001 * torch.sin(3.7 * epochs), G=[1.0] * 60)
    verdict = convergence(falling)
    assert not verdict["converged"] and "the loss drifted" in verdict["reason"]
    assert verdict["loss_drift"] < -0.01


def test_convergence_of_vectors_short_and_broken_histories():
    regions = [[1.0 + 0.05 * e, 2.0, 3.0] for e in range(10)]       # one region still moving
    verdict = convergence(history_of([1.0] * 10, w_EE=regions))
    expected = math.hypot(0.45, 0) / math.sqrt((1.0 + 0.05 * 4.5) ** 2 + 4 + 9)
    assert verdict["param_drift"]["w_EE"] == pytest.approx(expected, rel=1e-9)
    assert not verdict["converged"] and "w_EE drifted +" in verdict["reason"]
    short = convergence(history_of([1.0] * 4, G=[1.0] * 4))
    assert not short["converged"]
    assert short["reason"] == ("not judged: 4 epoch(s) run, the verdict needs the last 10 "
                               "(convergence_window)")
    broken = convergence(history_of([1.0] * 9 + [float("nan")], G=[1.0] * 10))
    assert not broken["converged"] and "the loss not finite" in broken["reason"]
    # w_bb-like matrices are judged by their mean; their spread is not a parameter.
    matrix = {"loss": [1.0] * 10, "params/w_bb/mean": [1.0] * 10,
              "params/w_bb/std": [float(e) for e in range(10)]}
    assert convergence(matrix)["converged"] and set(convergence(matrix)["param_drift"]) == {"w_bb/mean"}


def test_fit_reports_its_verdict_in_result_history_and_saved_files(tmp_path):
    moving = fit(small_model(), target(), config(epochs=4, lr=0.3, convergence_window=3),
                 progress=False)
    assert moving.converged is False and moving.history["converged"] == [False] * 4
    assert moving.convergence["reason"].startswith("not converged: over the last 3 epochs")
    assert moving.convergence["stopped"] is None and moving.convergence["epochs_run"] == 4
    moving.save(str(tmp_path / "res"))
    again = FitResult.load(str(tmp_path / "res"))
    assert again.convergence == moving.convergence and again.converged is False


def test_early_stop_ends_a_converged_fit_and_resume_keeps_it_stopped(tmp_path):
    """lr = 1e-12: the parameters stay put, the loss only jitters with the noise, so the verdict
    holds as soon as the window is full (3 epochs) and the fit stops there, not at 20."""
    settings = dict(epochs=20, lr=1e-12, convergence_window=3, loss_rtol=1.0, early_stop=True)
    straight = fit(small_model(), target(), config(**settings), progress=False)
    assert straight.history["epoch"] == [0, 1, 2]
    assert straight.history["converged"] == [False, False, True]
    assert straight.converged and straight.convergence["stopped"] == "early_stop"
    path = str(tmp_path / "fit.ckpt")
    with pytest.raises(Interrupt):
        fit(small_model(), target(), config(**settings), checkpoint=path, progress=False,
            callback=interrupt_after(1))
    resumed = fit(small_model(), target(), config(**settings), checkpoint=path, resume=True,
                  progress=False)
    assert_same_fit(resumed, straight)
    assert resumed.convergence == straight.convergence
    again = fit(small_model(), target(), config(**settings), checkpoint=path, resume=True,
                progress=False)
    assert again.history["epoch"] == [0, 1, 2] and again.convergence["stopped"] == "early_stop"
    # Without early stopping the same fit runs on (the stopping rule may change on resume).
    longer = fit(small_model(), target(), config(**dict(settings, early_stop=False, epochs=4)),
                 checkpoint=path, resume=True, progress=False)
    assert longer.history["epoch"] == [0, 1, 2, 3] and longer.convergence["stopped"] is None


def test_a_callback_can_stop_the_fit():
    def enough(epoch, history):
        if epoch == 1:
            raise StopFit("loss low enough")
    result = fit(small_model(), target(), config(epochs=5), callback=enough, progress=False)
    assert result.history["epoch"] == [0, 1]
    assert result.convergence["stopped"] == "callback: loss low enough"


@pytest.mark.parametrize("change, match", [
    (dict(convergence_window=2), r"convergence_window: must be an integer >= 3"),
    (dict(param_rtol=-0.1), r"param_rtol: must be a finite fraction >= 0"),
    (dict(loss_rtol=float("nan")), r"loss_rtol: must be a finite fraction >= 0"),
    (dict(early_stop="yes"), r"early_stop: must be True or False"),
])
def test_bad_stopping_settings(change, match):
    with pytest.raises(ValueError, match=match):
        config(**change).validate()
