"""The checkpoint interval from a memory budget (rww.ops.memory)."""

import math

import pytest
import torch

from rww.errors import ScanMemoryError
from rww.ops.memory import choose_checkpoint_every, gradient_bytes, parse_bytes
from rww.ops.scan import ScanBackend
from rww.ops.triton.backend import TritonBackend


def test_parse_bytes():
    assert parse_bytes("40GB") == 40 * 10**9
    assert parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes("1e9") == 10**9
    for bad in ("lots", "10 parsecs", "-5GB", "0"):
        with pytest.raises(ValueError, match="memory size"):
            parse_bytes(bad)


def test_full_scan_at_cubnm_scale_does_not_fit_and_says_what_would():
    """W4 over a whole HCP scan (B = 32768, N = 100, T = 8.64 million steps): the default
    K = ceil(sqrt(T)) would hold 231 GB of checkpoints alone; no K fits an H200's ~126 GB."""
    triton = TritonBackend()
    t, b, n = 8_640_000, 32768, 100
    k = math.ceil(math.sqrt(t))
    assert math.ceil(t / k) * 6 * b * n * 4 == pytest.approx(231e9, rel=0.01)
    budget = 126 * 10**9
    with pytest.raises(ScanMemoryError, match=r"needs at least 534 GB .* Simulate at most 77") as info:
        choose_checkpoint_every(triton, t, b, n, 4, "cpu", budget=budget)
    err = info.value
    assert err.budget == budget and err.needed > budget
    # The advice holds: that many simulations fit.
    k_fit = choose_checkpoint_every(triton, t, err.max_batch, n, 4, "cpu", budget=budget)
    assert gradient_bytes(triton, t, k_fit, err.max_batch, n, 4) <= budget


def test_interval_moves_only_when_the_default_does_not_fit():
    backend = ScanBackend()                      # the default estimate (autograd graph)
    t, b, n = 100_000, 8, 50
    k_default = math.ceil(math.sqrt(t))
    assert choose_checkpoint_every(backend, t, b, n, 8, "cpu", budget=10**15) == k_default
    default_bytes = gradient_bytes(backend, t, k_default, b, n, 8)
    k = choose_checkpoint_every(backend, t, b, n, 8, "cpu", budget=int(0.6 * default_bytes))
    assert k < k_default                         # sqrt(6 T / 60) = 100 < 317
    assert gradient_bytes(backend, t, k, b, n, 8) <= 0.6 * default_bytes
    assert gradient_bytes(backend, t, k, b, n, 8) <= min(
        gradient_bytes(backend, t, kk, b, n, 8) for kk in range(1, 1000))


def test_budget_from_the_environment_reaches_the_model(monkeypatch):
    """RWW_MEMORY_BUDGET applies to a model's gradient: the chosen interval when the default
    does not fit, a ScanMemoryError naming the budget when nothing does."""
    from rww.model import RWWBold
    from rww.ops import scan

    seen = []
    real_apply = scan.RWWScanFunction.apply
    monkeypatch.setattr(scan.RWWScanFunction, "apply",
                        lambda *args: seen.append(args[5]) or real_apply(*args))   # K
    sc = torch.rand(4, 4, dtype=torch.float64)
    model = RWWBold(sc, tr=0.05, dt=0.5, backend="torch-checkpoint", G=0.3, learn=["G"],
                    dtype=torch.float64)            # 100 steps per TR
    backend = scan.get_backend("torch-checkpoint", torch.device("cpu"))
    least = min(gradient_bytes(backend, 1000, k, 1, 4, 8) for k in range(1, 1001))
    monkeypatch.setenv("RWW_MEMORY_BUDGET", str(least + 1))
    model(n_trs=10, seed=0)[0].sum().backward()     # 1000 steps
    assert seen[-1] == 10 and gradient_bytes(backend, 1000, 10, 1, 4, 8) == least
    monkeypatch.setenv("RWW_MEMORY_BUDGET", "1KB")
    with pytest.raises(ScanMemoryError, match=r"more than the 0.001 MB available"):
        model(n_trs=10, seed=0)
    monkeypatch.setenv("RWW_MEMORY_BUDGET", "plenty")
    with pytest.raises(ValueError, match="RWW_MEMORY_BUDGET: memory size 'plenty'"):
        model(n_trs=10, seed=0)


def test_delays_enter_the_memory_estimate():
    """With conduction delays of up to D steps a checkpoint holds 6 + D rows, and each backend's
    segment working set grows by what it keeps for the delays (the gathered lagged S_E for the
    autograd backends, the history rings for numba, rings and the dL/dC buffer for Triton)."""
    from rww.ops import scan

    t, k, b, n, d = 10_000, 100, 4, 50, 300
    for name in ("torch-checkpoint", "numba", "triton"):
        ok, _ = scan.backend_available(name)
        if not ok:
            continue
        backend = scan._load_backend(name)
        plain = backend.segment_bytes(k, b, n, 4)
        delayed = backend.segment_bytes(k, b, n, 4, max_delay=d)
        assert delayed > plain, name
        extra_checkpoints = (gradient_bytes(backend, t, k, b, n, 4, state_rows=6 + d)
                             - gradient_bytes(backend, t, k, b, n, 4))
        assert extra_checkpoints == math.ceil(t / k) * d * b * n * 4 + delayed - plain, name
