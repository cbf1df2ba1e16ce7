import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Every test starts from the same global RNG state (the scans use their own Philox seed)."""
    torch.manual_seed(0)
    yield
