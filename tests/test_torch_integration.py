"""The scan as a PyTorch citizen: a registered custom op that torch.compile treats as one op,
torch.func transforms, and a clear message for vmap."""

import pytest
import torch

from rww.model import RWWBold

CPU_BACKENDS = ["torch", "torch-checkpoint", "numba"]


def _model(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    sc = torch.rand(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return RWWBold(sc, tr=0.005, dt=0.5, backend=backend, dtype=torch.float64, G=0.6,
                   learn=["G", "w_EE"])


def _loss(model):
    bold, state = model(n_trs=2, seed=3)
    return bold.pow(2).sum() + state[0].pow(2).sum()


def test_scan_is_a_registered_op():
    assert hasattr(torch.ops.rww, "scan") and hasattr(torch.ops.rww, "scan_backward")


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_compiled_model_equals_eager(backend):
    """torch.compile(model): forward and backward equal to eager (the scan is one opaque op; the
    plain reference loop runs eagerly inside the compiled function)."""
    torch._dynamo.reset()
    model = _model(backend)
    params = list(model.parameters())
    eager = _loss(model)
    g_eager = torch.autograd.grad(eager, params)
    compiled = _loss(torch.compile(model))
    g_compiled = torch.autograd.grad(compiled, params)
    torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=0)
    for a, b in zip(g_compiled, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_func_grad_equals_autograd(backend):
    model = _model(backend)
    params = dict(model.named_parameters())
    g_autograd = torch.autograd.grad(_loss(model), list(params.values()))

    def loss(p):
        bold, state = torch.func.functional_call(model, p, (2,), {"seed": 3})
        return bold.pow(2).sum() + state[0].pow(2).sum()

    g_func = torch.func.grad(loss)(params)
    for name, expected in zip(params, g_autograd):
        torch.testing.assert_close(g_func[name], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", ["torch-checkpoint", "numba"])
def test_vmap_says_what_to_do_instead(backend):
    model = _model(backend)
    g_values = torch.tensor([0.5, 0.6], dtype=torch.float64)

    def bold_for(g):
        p = {name: t for name, t in model.named_parameters()}
        p["learned.G.raw"] = g
        return torch.func.functional_call(model, p, (1,))[0]

    with pytest.raises(ValueError, match=r"vmap over the RWW scan .* already batched"):
        torch.vmap(bold_for)(g_values)
