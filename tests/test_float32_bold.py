"""float32 BOLD is right from the first TR: every backend against the float64 reference at
dt = 0.1 ms and TR = 0.01 s (100 steps per TR), and at a step a hundred times smaller.

Until the Balloon state was held as deviations from rest (f - 1, v - 1, q - 1), f, v and q sat
near 1 in float32 and their per-step increments rounded away: this problem's float32 BOLD was
exactly 0 in the first TRs (relative error 1.0), and 7e-3 / 5.5e-2 off at dt = 0.01 / 0.001 ms.
Measured now (7 regions, G = 0.8, seed 3), worst over the TRs: numba 1.3e-6, torch and
torch-checkpoint 1.2e-6, Triton (interpreter, 2 TRs) 5.0e-7 at 0.1 ms; numba 1.4e-6 at 1e-3 ms
(TR 0.2 ms). The issue's bound is 1e-3; the tolerances here are 2e-5 and 5e-5 (15-35x the
measured errors).
"""

from __future__ import annotations

import pytest
import torch

import rww
from rww.ops.scan import backend_available

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def connectome() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    sc = torch.rand(7, 7, generator=gen, dtype=torch.float64)
    sc = (sc + sc.T) / 2
    sc.fill_diagonal_(0)
    return sc / sc.sum(1).mean()


def bold(dtype, backend: str, dt: float, tr: float, n_trs: int) -> torch.Tensor:
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    model = rww.RWWBold(connectome().to(dtype), dt=dt, tr=tr, G=0.8, dtype=dtype,
                        backend=backend, device=device)
    with torch.no_grad():
        return model.simulate(n_trs, seed=3).bold.double().cpu()


@pytest.mark.parametrize("backend, dt, tr, n_trs, tol", [
    ("numba", 0.1, 0.01, 4, 2e-5),
    ("torch", 0.1, 0.01, 4, 2e-5),
    ("torch-checkpoint", 0.1, 0.01, 4, 2e-5),
    ("triton", 0.1, 0.01, 2, 2e-5),          # under the interpreter on CPU: ~10 s
    ("numba", 1e-3, 2e-4, 3, 5e-5),
])
def test_float32_bold_matches_float64_from_the_first_tr(backend, dt, tr, n_trs, tol):
    ok, why = backend_available(backend)
    if not ok:
        pytest.skip(why)
    expected = bold(torch.float64, "torch", dt, tr, n_trs)
    actual = bold(torch.float32, backend, dt, tr, n_trs)
    for k in range(n_trs):
        scale = expected[:, k].abs().max()
        assert scale > 0
        err = ((actual[:, k] - expected[:, k]).abs().max() / scale).item()
        assert err <= tol, f"TR {k}: float32 BOLD relative error {err:.2e} > {tol:.0e}"
