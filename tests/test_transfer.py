"""The guarded transfer function H(I) = y / (1 - exp(-d y)), y = a I - b, across y = 0."""

import mpmath
import numpy as np
import pytest
import torch

from rww.ops.reference import H_SERIES_THRESHOLD, transfer_deco

mpmath.mp.dps = 50

POPULATIONS = {"E": (310.0, 125.0, 0.16), "I": (615.0, 177.0, 0.087)}


def exact_rate_and_slope(y: float, a: float, d: float):
    """H and dH/dI at y, evaluated with 50 significant digits (the y = 0 limits analytically)."""
    y = mpmath.mpf(y)
    if y == 0:
        return 1 / mpmath.mpf(d), a * mpmath.mpf(0.5)
    h = y / (1 - mpmath.exp(-d * y))
    dh_dy = 1 / (1 - mpmath.exp(-d * y)) - y * d * mpmath.exp(-d * y) / (1 - mpmath.exp(-d * y)) ** 2
    return h, a * dh_dy


def sample_points(d: float) -> np.ndarray:
    """y values dense around 0 and both sides of the series switch |d y| = threshold."""
    switch = H_SERIES_THRESHOLD / d
    near = np.concatenate([np.linspace(-3 * switch, 3 * switch, 601), [0.0, 1e-9, -1e-9, 1e-4, -1e-4]])
    around_switch = np.concatenate([s * switch * (1 + np.array([-1e-6, -1e-9, 0.0, 1e-9, 1e-6]))
                                    for s in (1, -1)])
    wide = np.linspace(-60, 60, 241)
    return np.concatenate([near, around_switch, wide])


# Measured worst relative errors (value, slope) over sample_points: float32 3.9e-7 / 3.3e-6,
# float64 ~1e-15 / ~1e-12. The float32 slope error is the cancellation of the exact form just
# above the switch (~eps/z) plus the rounding of y = a*I - b itself.
TOL = {torch.float32: (1e-6, 1e-5), torch.float64: (1e-13, 1e-11)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("population", ["E", "I"])
def test_rate_and_slope_match_high_precision(dtype, population):
    a, b, d = POPULATIONS[population]
    y_target = sample_points(d)
    current = torch.tensor((y_target + b) / a, dtype=dtype, requires_grad=True)
    rate = transfer_deco(current, a, b, d)
    (slope,) = torch.autograd.grad(rate.sum(), current)
    # Compare at the y the dtype actually represents (a*I - b rounded as the model computes it).
    y_used = (a * current.detach() - b).double().numpy()
    expected = [exact_rate_and_slope(y, a, d) for y in y_used]
    exp_rate = np.array([float(h) for h, _ in expected])
    exp_slope = np.array([float(s) for _, s in expected])
    rate_err = np.abs(rate.detach().double().numpy() - exp_rate) / np.abs(exp_rate)
    slope_err = np.abs(slope.double().numpy() - exp_slope) / np.abs(exp_slope)
    tol_rate, tol_slope = TOL[dtype]
    assert np.isfinite(rate.detach().numpy()).all() and np.isfinite(slope.numpy()).all()
    assert rate_err.max() < tol_rate, f"worst rate error {rate_err.max():.2e} at y={y_used[rate_err.argmax()]}"
    assert slope_err.max() < tol_slope, f"worst slope error {slope_err.max():.2e} at y={y_used[slope_err.argmax()]}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_across_series_switch(dtype):
    """Value and slope just inside and just outside |d y| = threshold agree to rounding."""
    a, b, d = POPULATIONS["E"]
    eps = torch.finfo(dtype).eps
    for sign in (1.0, -1.0):
        y_switch = sign * H_SERIES_THRESHOLD / d
        y = torch.tensor([y_switch * (1 - 1e-5), y_switch * (1 + 1e-5)], dtype=torch.float64)
        current = ((y + b) / a).to(dtype).requires_grad_(True)
        rate = transfer_deco(current, a, b, d)
        (slope,) = torch.autograd.grad(rate.sum(), current)
        # Over a step of 2e-5 in y the true function changes by ~1e-5 * y * H'(y) / H(y).
        assert abs(rate[1] - rate[0]) / rate[0] < 1e-5 + 100 * eps
        assert abs(slope[1] - slope[0]) / slope[0] < 1e-5 + 100 * eps
