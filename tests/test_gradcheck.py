"""float64 gradcheck of the reference scan: parameters of every shape, connectome, initial state."""

import pytest
import torch

from rww.ops.reference import reference_scan
from helpers import make_problem


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
@pytest.mark.parametrize("per_sim_coupling", [False, True])
def test_gradcheck_reference(preset, per_sim_coupling):
    leaves, build, spec = make_problem(preset, batch=2, n_nodes=3, per_sim_coupling=per_sim_coupling,
                                       dtype=torch.float64, n_trs=2, steps_per_tr=3)
    names = list(leaves["params"])
    bold_scale = 100.0 if preset == "deco2014" else 1.0
    inputs = [leaves["params"][n] for n in names] + [leaves["coupling"], leaves["state"]]

    def outputs(*tensors):
        leaves["params"] = dict(zip(names, tensors[:len(names)]))
        leaves["coupling"], leaves["state"] = tensors[len(names):]
        result = reference_scan(*build(), spec)
        # deco2014's BOLD is ~1e-2: scale it up so its finite differences are not lost in the
        # state's; griffiths2022's is already ~100x larger (its 100 / rho factor)
        return (bold_scale * result.bold, result.state) + tuple(result.records[k] for k in spec.record)

    assert torch.autograd.gradcheck(outputs, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
