"""The noise contract: Philox4x32-10 known answers, equality with Triton's philox, statistics."""

import math
import os

import numpy as np
import pytest
import torch
from scipy import stats

from rww.noise import (box_muller, observation_noise, philox4x32, state_noise, to_unit_interval,
                       uniform_words)


def words(*values):
    return [torch.tensor([v], dtype=torch.int64) for v in values]


def test_known_answer_zero():
    out = philox4x32(*words(0, 0, 0, 0), 0, 0)
    assert [int(x) for x in out] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_known_answer_pi():
    out = philox4x32(*words(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), 0xA4093822, 0x299F31D0)
    assert [int(x) for x in out] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_known_answer_all_ones():
    # Random123's third known-answer vector for philox4x32-10.
    m = 0xFFFFFFFF
    out = philox4x32(*words(m, m, m, m), m, m)
    assert [int(x) for x in out] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_counter_layout_and_seed_split():
    """uniform_words puts (t lo, t hi, node, sim) in the counter and splits the 64-bit seed."""
    seed = (0x299F31D0 << 32) | 0xA4093822
    t = (0x05A308D3 << 32) | 0x243F6A88                         # int64 step counter
    got = uniform_words(seed, torch.tensor([t, t + 1]), n_nodes=4, batch=3)
    for step in (0, 1):
        for sim in range(3):
            for node in range(4):
                direct = philox4x32(*words((t + step) & 0xFFFFFFFF, (t + step) >> 32, node, sim),
                                    0xA4093822, 0x299F31D0)
                assert [int(w[step, sim, node]) for w in got] == [int(d) for d in direct]


def test_uniforms_in_unit_interval():
    """float64: u = (2k + 1) 2**-25 exactly, in (0, 1). float32: (k + 0.5) rounds to nearest
    even above 2**23 (25 significant bits do not fit 24), so u is within 2**-25 of the float64
    value and may reach 1.0 (then xi = 0, finite); it is never 0. Every float32 backend computes
    ((x >> 8) + 0.5) * 2**-24 in this order, so IEEE rounding makes them agree bit for bit."""
    k = torch.tensor([0, 1, 2**23 - 1, 2**23, 2**23 + 1, 2**24 - 2, 2**24 - 1], dtype=torch.int64)
    w = k << 8 | 0xAB
    u64 = to_unit_interval(w, torch.float64)
    assert torch.equal(u64, (2 * k + 1).double() * 2.0**-25)
    assert (u64 > 0).all() and (u64 < 1).all()
    u32 = to_unit_interval(w, torch.float32)
    assert torch.equal(u32[:3].double(), u64[:3])               # exact below 2**23
    assert ((u32.double() - u64).abs() <= 2.0**-25).all()
    assert (u32 > 0).all() and (u32 <= 1).all()
    xi_e, xi_i = box_muller(u32, u32)
    assert torch.isfinite(xi_e).all() and torch.isfinite(xi_i).all()


def test_equals_triton_philox_under_interpreter(monkeypatch):
    """triton.language.philox computes the same function (run under TRITON_INTERPRET=1)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def philox_kernel(out_ptr, seed, t_lo, t_hi, N: tl.constexpr):
        o = tl.arange(0, N)
        c0 = tl.full((N,), 0, tl.uint32) + t_lo
        c1 = tl.full((N,), 0, tl.uint32) + t_hi
        c2 = o.to(tl.uint32)
        c3 = (o * 7 + 3).to(tl.uint32)
        x0, x1, x2, x3 = tl.philox(seed, c0, c1, c2, c3)
        tl.store(out_ptr + o * 4 + 0, x0.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + o * 4 + 1, x1.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + o * 4 + 2, x2.to(tl.int64) & 0xFFFFFFFF)
        tl.store(out_ptr + o * 4 + 3, x3.to(tl.int64) & 0xFFFFFFFF)

    if not getattr(philox_kernel, "__class__", None).__name__.startswith("Interpreted"):
        pytest.skip("TRITON_INTERPRET was not honoured (triton imported earlier without it)")
    n = 64
    for seed, t in [(0, 0), (12345, 987654321), ((0x299F31D0 << 32) | 0xA4093822, (5 << 32) | 17)]:
        out = torch.zeros(n, 4, dtype=torch.int64)
        philox_kernel[(1,)](out, seed, t & 0xFFFFFFFF, t >> 32, N=n)
        o = torch.arange(n, dtype=torch.int64)
        ours = philox4x32(torch.full((n,), t & 0xFFFFFFFF), torch.full((n,), t >> 32), o,
                          o * 7 + 3, seed & 0xFFFFFFFF, seed >> 32)
        assert torch.equal(out, torch.stack(ours, dim=1)), f"seed {seed}, t {t}"


def test_state_noise_statistics():
    """1.2M normals: mean, variance, normality (KS), and no correlation between xi_E and xi_I,
    consecutive steps, neighbouring nodes or simulations."""
    xi_e, xi_i = state_noise(seed=2024, t_start=10**9, n_steps=2000, n_nodes=100, batch=3,
                             dtype=torch.float64)
    n = xi_e.numel()
    for xi in (xi_e, xi_i):
        flat = xi.flatten().numpy()
        assert abs(flat.mean()) < 5 / math.sqrt(n)
        # var of the sample variance of N(0,1) is 2/n
        assert abs(flat.var() - 1) < 5 * math.sqrt(2 / n)
        assert stats.kstest(flat[:200000], "norm").pvalue > 1e-3
    bound = 5 / math.sqrt(n)

    def corr(a, b):
        return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])

    assert abs(corr(xi_e, xi_i)) < bound
    assert abs(corr(xi_e[1:], xi_e[:-1])) < 2 * bound
    assert abs(corr(xi_e[:, :, 1:], xi_e[:, :, :-1])) < 2 * bound
    assert abs(corr(xi_e[:, 1:], xi_e[:, :-1])) < 2 * bound


def test_noise_is_a_pure_function_of_the_counter():
    a_e, a_i = state_noise(7, 100, 20, 5, 2)
    b_e, b_i = state_noise(7, 110, 10, 5, 2)                    # later window of the same stream
    assert torch.equal(a_e[10:], b_e) and torch.equal(a_i[10:], b_i)
    c_e, _ = state_noise(8, 100, 20, 5, 2)
    assert not torch.equal(a_e, c_e)


def test_observation_noise_uses_words_2_and_3():
    steps = torch.tensor([9, 19, 29])
    obs = observation_noise(3, steps, 4, 2, torch.float64)
    _, _, x2, x3 = uniform_words(3, steps, 4, 2)
    expected, _ = box_muller(to_unit_interval(x2, torch.float64), to_unit_interval(x3, torch.float64))
    assert obs.shape == (2, 3, 4)
    assert torch.equal(obs, expected.transpose(0, 1))
