import os
import sys

# Triton kernels run under the interpreter on machines without a GPU. The variable must be set
# before anything imports triton (torch may import it lazily from any test), so set it here, for
# the whole session, unless a GPU is present or the caller chose explicitly.
if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidia0"):
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Every test starts from the same global RNG state (the scans use their own Philox seed)."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_torch_thread():
    """Small eigen-decompositions and linear solves on one torch thread (restored after): two
    threads contending for busy cores made a 200 x 200 eig 300 times slower here."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
