"""FC and FCD against straightforward numpy computations."""

import numpy as np
import pytest
import torch

from rww.objectives import fc, fc_correlation, fcd, fcd_windows, lower_triangle


def test_fc_matches_numpy_corrcoef_batched():
    x = torch.randn(3, 50, 6, dtype=torch.float64)
    got = fc(x)
    for b in range(3):
        np.testing.assert_allclose(got[b].numpy(), np.corrcoef(x[b].numpy().T), rtol=1e-12, atol=1e-14)


def test_fc_constant_region_is_an_error():
    x = torch.randn(40, 4)
    x[:, 2] = 1.0
    with pytest.raises(ValueError, match=r"region series at index \[2\].*constant"):
        fc(x)


def test_fcd_windows_convention():
    assert fcd_windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert fcd_windows(9, 4, 3) == [(0, 4), (3, 7)]
    with pytest.raises(ValueError, match="window=12 is longer"):
        fcd_windows(10, 12, 1)


def test_fcd_matches_loop():
    x = torch.randn(2, 60, 5, dtype=torch.float64)
    got = fcd(x, window=20, step=7)
    for b in range(2):
        vecs = []
        for start, stop in fcd_windows(60, 20, 7):
            c = np.corrcoef(x[b, start:stop].numpy().T)
            vecs.append(c[np.tril_indices(5, -1)])
        np.testing.assert_allclose(got[b].numpy(), np.corrcoef(np.array(vecs)), rtol=1e-9, atol=1e-12)


def test_fc_correlation_and_lower_triangle():
    a, b = torch.randn(2, 30, 7, dtype=torch.float64).unbind(0)
    fa, fb = fc(a), fc(b)
    expected = np.corrcoef(fa.numpy()[np.tril_indices(7, -1)], fb.numpy()[np.tril_indices(7, -1)])[0, 1]
    assert abs(fc_correlation(fa, fb).item() - expected) < 1e-12
    assert fc_correlation(fa, fa).item() == pytest.approx(1.0, abs=1e-12)
    assert lower_triangle(torch.arange(9.0).view(3, 3)).tolist() == [3.0, 6.0, 7.0]


def test_fc_is_differentiable():
    x = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fc(t), (x,))
    assert torch.autograd.gradcheck(lambda t: fcd(t, window=10, step=5), (x,))
