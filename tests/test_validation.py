"""Bad input gets a clear error that names the argument."""

import math

import pytest
import torch

from rww import RWWBold, SimulationDiverged
from rww.model import initial_state
from rww.ops.reference import reference_scan
from rww.ops.scan import rww_scan
from rww.ops.spec import ScanSpec
from rww.params import get_preset, pack_parameters, resolve_haemo

SC = torch.rand(5, 5)
SC = (SC + SC.T) / 2


@pytest.mark.parametrize("sc, match", [
    (torch.rand(5, 4), r"sc: expected a square matrix"),
    (torch.rand(5), r"sc: expected a square matrix"),
    (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), r"sc: contains NaN or infinite values \(first at index \[0, 1\]\)"),
    (torch.tensor([[0.0, float("inf")], [1.0, 0.0]]), r"sc: contains NaN or infinite"),
    (torch.tensor([[0.0, -1.0], [1.0, 0.0]]), r"sc: contains negative weights \(first at index \[0, 1\]"),
])
def test_bad_connectome(sc, match):
    with pytest.raises(ValueError, match=match):
        RWWBold(sc)


def test_stack_of_connectomes_needs_matching_batch():
    with pytest.raises(ValueError, match=r"sc: a stack of 3 connectomes needs batch=3, got batch=2"):
        RWWBold(torch.rand(3, 5, 5), batch=2)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"preset": "deco2015"}, ValueError, r"preset: unknown preset 'deco2015'; choose one of"),
    ({"G_global": 1.0}, ValueError, r"unknown parameter 'G_global' for preset 'deco2014'"),
    ({"g": 1.0}, ValueError, r"unknown parameter 'g' for preset 'deco2014'"),
    ({"dt": 0.0}, ValueError, r"dt: must be a positive finite number"),
    ({"dt": -0.1}, ValueError, r"dt: must be a positive finite number"),
    ({"dt": 0.7, "tr": 0.72}, ValueError, r"tr=0.72 s is not a whole number of steps of dt=0.7"),
    ({"tr": 0.0}, ValueError, r"tr: must be a positive number of seconds"),
    ({"batch": 0}, ValueError, r"batch: must be a positive integer"),
    ({"backend": "cuda"}, ValueError, r"backend: unknown backend 'cuda'"),
    ({"dtype": torch.float16}, TypeError, r"dtype: torch.float16 is not supported"),
    ({"G": torch.ones(7)}, ValueError, r"parameter G: length 7 matches neither n_nodes=5 nor batch=2"),
    ({"G": torch.ones(2, 3)}, ValueError, r"parameter G: shape \(2, 3\) does not broadcast to \(batch=2, n_nodes=5\)"),
    ({"w_IE": float("nan")}, ValueError, r"parameter w_IE: contains NaN"),
    ({"learn": ["J_NMDA"], "preset": "griffiths2022"}, ValueError, r"learn: J_NMDA does not enter the griffiths2022"),
    ({"haemo": {"kappa": -1.0}}, ValueError, r"haemo: kappa must be a positive finite number"),
    ({"haemo": {"tau": 1.0}}, ValueError, r"haemo: unknown constant 'tau'"),
    ({"w_bb": True}, ValueError, r"w_bb: the connection gain exists only in the griffiths2022 preset"),
])
def test_bad_model_arguments(kwargs, error, match):
    kwargs = dict(kwargs)
    kwargs.setdefault("batch", 2)
    with pytest.raises(error, match=match):
        RWWBold(SC, **kwargs)


def test_ambiguous_one_dimensional_parameter():
    with pytest.raises(ValueError, match=r"parameter G: a 1-d tensor of length 5 is ambiguous"):
        RWWBold(SC, batch=5, G=torch.ones(5))
    RWWBold(SC, batch=5, G=torch.ones(1, 5))      # explicit per-region is fine


def test_parameter_on_another_device():
    with pytest.raises(ValueError, match=r"parameter G: on device meta, but the model runs on cpu"):
        RWWBold(SC, G=torch.ones(5, device="meta"))


def test_forward_arguments():
    model = RWWBold(SC, batch=2, tr=0.01)
    with pytest.raises(ValueError, match=r"state: expected shape \(6, 2, 5\), got \(6, 1, 5\)"):
        model(2, state=torch.ones(6, 1, 5))
    with pytest.raises(ValueError, match=r"n_trs: must be a non-negative integer"):
        model(2.5)
    with pytest.raises(TypeError, match=r"seed: expected an integer"):
        model(1, seed=1.5)
    with pytest.raises(ValueError, match=r"seed: must be in \[0, 2\*\*64\)"):
        model(1, seed=-1)


def scan_inputs(batch=2, n=5, dtype=torch.float32):
    pr = get_preset("deco2014")
    return (pack_parameters({}, pr, batch, n, dtype), SC.to(dtype), initial_state(batch, n, dtype),
            ScanSpec(pr, 0.1, 10, 20, haemo=resolve_haemo(pr, None)))


def test_scan_input_mismatches():
    table, coupling, state, spec = scan_inputs()
    with pytest.raises(ValueError, match=r"coupling: expected shape \(5, 5\) or \(2, 5, 5\)"):
        rww_scan(table, torch.rand(4, 4), state, spec)
    with pytest.raises(TypeError, match=r"coupling: dtype torch.float64 differs from the state's torch.float32"):
        rww_scan(table, coupling.double(), state, spec)
    with pytest.raises(ValueError, match=r"state: expected a tensor of shape \(6, B, N\)"):
        rww_scan(table, coupling, state[:5], spec)
    with pytest.raises(TypeError, match=r"state: dtype torch.int64 is not supported"):
        rww_scan(table, coupling, state.long(), spec)
    with pytest.raises(ValueError, match=r"coupling: on meta, but the state is on cpu"):
        rww_scan(table, coupling.to("meta"), state, spec)
    bad_state = state.clone()
    bad_state[3, 1, 2] = math.inf
    with pytest.raises(ValueError, match=r"state: contains NaN or infinite values"):
        rww_scan(table, coupling, bad_state, spec)


def test_spec_errors():
    pr = get_preset("deco2014")
    haemo = resolve_haemo(pr, None)
    with pytest.raises(ValueError, match=r"n_steps=25 is not a multiple of steps_per_tr=10"):
        ScanSpec(pr, 0.1, 10, 25, haemo=haemo)
    with pytest.raises(ValueError, match=r"record: unknown \['BOLD'\]"):
        ScanSpec(pr, 0.1, 10, 20, haemo=haemo, record=("BOLD",))


def test_divergence_is_reported_with_simulation_and_step():
    """A Balloon driven to f <= 0 is reported (which simulation, which step), never NaN.
    With x = -50 and f = 0.0123, f falls by dt_s * |x| ~ 5e-3 per step: 0.0073, 0.0023, then
    negative after the third step, i.e. global step t0 + 2."""
    table, coupling, state, spec = scan_inputs(batch=3, dtype=torch.float64)
    spec = ScanSpec(spec.preset, spec.dt, spec.steps_per_tr, spec.n_steps, t0=100, haemo=spec.haemo)
    state = state.clone()
    state[2, 1], state[3, 1] = -50.0, 0.0123 - 1.0   # x, f - 1
    with pytest.raises(SimulationDiverged, match=r"simulation 1 diverged at step 102 \(1 simulation") as info:
        reference_scan(table, coupling.double(), state, spec)
    assert (info.value.simulation, info.value.step, info.value.n_diverged) == (1, 102, 1)
    with pytest.raises(SimulationDiverged):
        rww_scan(table.double(), coupling.double(), state, spec, backend="torch-checkpoint",
                 checkpoint_every=3)
