"""The checkpointed autograd.Function with the torch backend against the plain reference loop."""

import pytest
import torch
from helpers import compare_with_reference


@pytest.mark.parametrize("preset", ["deco2014", "griffiths2022"])
@pytest.mark.parametrize("per_sim_coupling", [False, True])
def test_torch_checkpoint_matches_reference(preset, per_sim_coupling):
    # 3 TRs of 10 steps, K = 7: segments cross TR boundaries and the last one is partial.
    compare_with_reference("torch-checkpoint", checkpoint_every=7, preset=preset, batch=3,
                           n_nodes=5, per_sim_coupling=per_sim_coupling, dtype=torch.float64)
