"""Accurate float32 special functions for the kernels, on GPU and under the Triton interpreter.

Why this module exists: ``tl.exp``/``tl.log``/``tl.cos``/``tl.sin``/``tl.sqrt`` lower to the
``.approx`` PTX instructions on NVIDIA GPUs (``ex2.approx.ftz``, ``lg2.approx``, ``sin.approx``
...), whose errors (up to ~2**-21 absolute for sin/cos over [0, 2 pi), flushed denormals) would
break the noise contract (same normals on every backend) and the float32 accuracy the tests ask
for (1e-5 relative against a float64 reference). libdevice has accurate versions (``__nv_cosf``
etc., within 1-2 ulp) and the functions triton.language lacks (``expm1``, ``log1p``, ``tanh``, ``pow``).

The Triton interpreter (``TRITON_INTERPRET=1``) cannot call libdevice (extern calls raise
``NotImplementedError`` there), so under the interpreter the same names are plain Python
functions applying the numpy float32 ufunc to the interpreter's numpy data. The choice is made
once, at import, exactly like ``triton.jit`` decides between compiling and interpreting.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

if INTERPRET:
    import numpy as np

    def _numpy_elementwise(ufunc):
        def apply(*args):
            # Interpreter tensors wrap numpy arrays in ``.handle.data``; plain Python floats
            # (kernel scalar arguments) become float32. The result keeps the type of the first
            # tensor argument (float32 in, float32 out, like the libdevice *f functions).
            from triton.runtime.interpreter import TensorHandle

            tensors = [a for a in args if isinstance(a, tl.core.tensor)]
            first = tensors[0]
            dtype = first.handle.data.dtype
            data = [a.handle.data if isinstance(a, tl.core.tensor) else dtype.type(a) for a in args]
            with np.errstate(all="ignore"):
                out = np.asarray(ufunc(*data)).astype(dtype, copy=False)
            return tl.core.tensor(TensorHandle(out, first.handle.dtype.scalar), first.type)

        apply.__name__ = ufunc.__name__
        return apply

    log = _numpy_elementwise(np.log)
    cos = _numpy_elementwise(np.cos)
    sin = _numpy_elementwise(np.sin)
    exp = _numpy_elementwise(np.exp)
    expm1 = _numpy_elementwise(np.expm1)
    log1p = _numpy_elementwise(np.log1p)
    tanh = _numpy_elementwise(np.tanh)
    pow = _numpy_elementwise(np.power)  # noqa: A001 (shadowing the builtin inside this module)
else:
    from triton.language.extra import libdevice

    @triton.jit
    def log(x):
        return libdevice.log(x)

    @triton.jit
    def cos(x):
        return libdevice.cos(x)

    @triton.jit
    def sin(x):
        return libdevice.sin(x)

    @triton.jit
    def exp(x):
        return libdevice.exp(x)

    @triton.jit
    def expm1(x):
        return libdevice.expm1(x)

    @triton.jit
    def log1p(x):
        return libdevice.log1p(x)

    @triton.jit
    def tanh(x):
        return libdevice.tanh(x)

    @triton.jit
    def pow(x, y):  # noqa: A001
        return libdevice.pow(x, y)

__all__ = ["INTERPRET", "log", "cos", "sin", "exp", "expm1", "log1p", "tanh", "pow"]
