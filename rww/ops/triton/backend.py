"""The Triton backend: fused forward and adjoint kernels behind :class:`RWWScanFunction`.

Chain: ``forward._rww_fwd_kernel`` -> ``forward.rww_fwd`` (launcher) -> :class:`TritonBackend`
-> :class:`rww.ops.scan.RWWScanFunction` -> :func:`rww.ops.scan.rww_scan` -> :class:`rww.RWWBold`;
the backward goes through ``adjoint.rww_bwd`` (modules of this package, :mod:`rww.ops.triton`).

Only the kernel modules import triton, and only when this backend is used: this module imports
them lazily, so ``import rww`` works without triton.

Where it runs: CUDA tensors; CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1``
set before triton and the kernel modules are imported), which is how the tests run it without a
GPU.
float32 only (the kernels' constants, noise and accumulators are float32); float64 raises a
``TypeError`` naming the backends that support it.
"""

from __future__ import annotations

import os
import sys

import torch

from ..scan import ForwardOutput, ScanBackend
from ..spec import ScanSpec


def _interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def scan_constants(spec: ScanSpec):
    """The kernels' :class:`rww.ops.triton.config.ScanConstants` for a :class:`ScanSpec`."""
    from .config import ScanConstants

    scale, k1, k2, k3 = spec.bold_coefficients
    h = spec.haemo
    return ScanConstants(
        griffiths=spec.preset.code == 1, dt=float(spec.dt), balloon_dt=float(spec.balloon_dt),
        steps_per_tr=spec.steps_per_tr, seed=spec.seed, t0=spec.t0, kappa=h["kappa"],
        gamma_h=h["gamma_h"], tau_0=h["tau_0"], alpha=h["alpha"], rho=h["rho"],
        bold_scale=scale, k1=k1, k2=k2, k3=k3, sim_offset=spec.sim_offset)


class TritonBackend(ScanBackend):
    """Fused Triton kernels: forward scan in one launch; backward per checkpoint segment
    (recompute, then adjoint sweep), see :mod:`rww.ops.triton.forward` and :mod:`rww.ops.triton.adjoint`.

    Args:
        **config: overrides of :class:`rww.ops.triton.config.KernelConfig` fields (``block_b``,
            ``block_j``, ``resident``, ``use_dot``, ``num_warps``) applied to both kernels, e.g.
            ``TritonBackend(block_j=4)`` forces the streamed coupling even for small N (tests).
    """

    name = "triton"
    # Conduction delays (ScanSpec.max_delay > 0): the streamed coupling variant, forward and
    # adjoint (choose_config picks it; resident/tl.dot overrides raise ValueError).
    supports_delays = True

    def __init__(self, **config):
        self.config = dict(config)

    def available(self) -> tuple[bool, str]:
        try:
            import triton  # noqa: F401

            from . import adjoint, forward  # noqa: F401
        except ImportError as err:
            return False, f"triton backend unavailable: {err}"
        return True, ""

    def supports(self, device: torch.device) -> tuple[bool, str]:
        device = torch.device(device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                return False, "CUDA tensors requested but torch.cuda.is_available() is False"
            return True, ""
        if device.type == "cpu":
            if not _interpreter_requested():
                return False, ("the Triton kernels run on CUDA tensors; CPU tensors only under "
                               "the Triton interpreter (set TRITON_INTERPRET=1 before importing "
                               "triton; slow, for tests). Use backend='numba' or 'torch' on CPU")
            mathfn = sys.modules.get(f"{__package__}.mathfn")
            if mathfn is not None and not mathfn.INTERPRET:
                return False, ("TRITON_INTERPRET=1 was set after the kernels were imported "
                               "(compiled for GPU); set it before importing triton/kernels")
            return True, ""
        return False, f"the Triton backend does not run on {device.type} tensors"

    def _cfg(self, batch, n_nodes, per_sim, kernel="fwd", delays=False):
        from .config import choose_config

        return choose_config(batch, n_nodes, per_sim, kernel, delays=delays, **self.config)

    @staticmethod
    def _check_dtype(*tensors):
        for t in tensors:
            if t.dtype != torch.float32:
                raise TypeError(
                    f"backend 'triton' computes in float32, got {t.dtype}; use dtype=float32, or "
                    "backend='torch' / 'torch-checkpoint' for float64")

    def segment_bytes(self, k: int, batch: int, n_nodes: int, itemsize: int,
                      max_delay: int = 0) -> int:
        """The adjoint's working set for one segment: the recomputed trajectory ``(k, 7, B, N)``,
        ``g_coup (k, B, N)`` and the ``(19, B, N)`` parameter partials, float32; with conduction
        delays also the S_E and ``g_coup`` rings (``(D + 1, B, N)`` each) and the per-simulation
        dL/dC buffer ``(B, N, N)``."""
        delayed = (2 * (max_delay + 1) + n_nodes) if max_delay else 0
        return (8 * k + 19 + delayed) * batch * n_nodes * 4

    def forward(self, params, coupling, state, spec: ScanSpec, checkpoint_every: int,
                delays=None) -> ForwardOutput:
        from .forward import rww_fwd

        self._check_dtype(params, coupling, state)
        batch, n_nodes = state.shape[1:]
        delays = delays if spec.max_delay else None
        out = rww_fwd(params, coupling, state, scan_constants(spec), spec.n_steps,
                      checkpoint_every, record=spec.record,
                      cfg=self._cfg(batch, n_nodes, coupling.dim() == 3,
                                    delays=delays is not None),
                      delays=delays)
        return ForwardOutput(bold=out["bold"], records=out["records"], state=out["state"],
                             checkpoints=out["checkpoints"], first_bad=out["first_bad"])

    def backward(self, params, coupling, checkpoints, spec: ScanSpec, checkpoint_every: int,
                 grad_bold, grad_records: dict, grad_state, need_coupling_grad: bool = True,
                 delays=None):
        from .adjoint import rww_bwd

        self._check_dtype(params, coupling, checkpoints)
        batch, n_nodes = checkpoints.shape[2:]
        per_sim = coupling.dim() == 3
        delays = delays if spec.max_delay else None
        delayed = delays is not None
        return rww_bwd(params, coupling, checkpoints, scan_constants(spec), spec.n_steps,
                       checkpoint_every, grad_bold, grad_records, grad_state,
                       cfg=self._cfg(batch, n_nodes, per_sim, "bwd", delayed),
                       fwd_cfg=self._cfg(batch, n_nodes, per_sim, "fwd", delayed),
                       delays=delays)


__all__ = ["TritonBackend", "scan_constants"]
