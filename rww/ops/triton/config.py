"""Host-side choices shared by the launchers: the scan's scalar constants and the tile shapes.

No autotuning: one launch of these kernels is a whole simulation (or a whole checkpoint segment)
that writes its outputs, so benchmarking configurations at launch time would re-run entire
simulations. The shapes come from a deterministic rule (:func:`choose_config`) based on register
budgets measured ahead of time (``python -m rww.ops.triton.aot``), and every choice can be overridden
(tests force small streamed tiles; ``bench/gpu.py`` can compare alternatives).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ScanConstants:
    """Scalars of one scan, as the kernels take them.

    Attributes:
        griffiths: preset flag (False: deco2014, True: griffiths2022).
        dt: neural step (ms for deco2014). balloon_dt: haemodynamic step (s for deco2014).
        steps_per_tr: steps per BOLD sample. seed: Philox key (64-bit). t0: global step of local 0.
        sim_offset: noise index of simulation 0 (the counter's simulation word is sim_offset + b).
        kappa, gamma_h, tau_0, alpha, rho: Balloon constants. bold_scale, k1, k2, k3: BOLD
        ``scale*(k1(1-q) + k2(1-q/v) + k3(1-v))``.
    """

    griffiths: bool
    dt: float
    balloon_dt: float
    steps_per_tr: int
    seed: int
    t0: int
    kappa: float
    gamma_h: float
    tau_0: float
    alpha: float
    rho: float
    bold_scale: float
    k1: float
    k2: float
    k3: float
    sim_offset: int = 0

    def kernel_floats(self) -> tuple:
        """``(dt, sqrt_dt, dtb, kappa, gamma_h, 1/tau_0, 1/alpha, ln(1-rho), 1/rho)`` computed in
        float64 (rounded once to float32 by the launch)."""
        return (self.dt, math.sqrt(self.dt), self.balloon_dt, self.kappa, self.gamma_h,
                1.0 / self.tau_0, 1.0 / self.alpha, math.log1p(-self.rho), 1.0 / self.rho)


@dataclass(frozen=True)
class KernelConfig:
    """Tile shapes and flags of one launch.

    Attributes:
        block_b: simulations per program. block_n: nodes per program (power of two >= N).
        block_j: streamed mat-vec: columns of C unrolled per loop iteration, or the K-chunk of
            the tl.dot product (unused when ``resident`` without tl.dot).
        resident: C held in registers for the whole launch (small N).
        use_dot: shared-C mat-vecs of the tile's simulations as one ``tl.dot`` (block_b >= 16).
        num_warps: warps per program.
    """

    block_b: int
    block_n: int
    block_j: int
    resident: bool
    use_dot: bool
    num_warps: int


# Largest BLOCK_N whose C tile stays in registers without spilling (the spill columns of
# ``python -m rww.ops.triton.aot``). Forward: 64 regions with 8 warps (~210 registers), no spills
# on sm_80/sm_90. The adjoint holds 19 gradient accumulators and 6 adjoint states per
# element on top of the forward's live set: with C resident it reached 255 registers and spilled
# at BLOCK_N = 32 and 64 (one simulation per program, 4 or 8 warps), 248 registers at 16; the
# streamed adjoint needs ~150-170 at BLOCK_N = 32..128 and does not spill.
RESIDENT_MAX = {"fwd": 64, "bwd": 16}
# Register budget of the register-resident product: floats of the (BLOCK_B, BLOCK_N, BLOCK_N)
# temporary per thread.
CHUNK_ELEMS_PER_THREAD = 32
# tl.dot tiles for shared-C batches (every C element fetched serves 16 simulations): in fp32
# "ieee" precision tl.dot is an FMA product whose operand fragments (16 rows x K-chunk, K-chunk x
# BLOCK_N) sit in registers next to 16 x BLOCK_N elements of state, and at N = 100
# (BLOCK_N = 128) the forward spills ~0.9 KB per thread on sm_80/sm_90 even with 8 warps and a
# 16-wide K-chunk (the adjoint ~7 KB). Spills and all, it was the fastest forward measured for
# W4 (N = 100, B = 32768) on an H200 (bench/results/gpu-tune-h200.json): 195 us per step against
# 292 for one streamed simulation per program and 208 for four (block_b = 4), 1.50x the
# streamed default of the time. So the forward uses it from DOT_MIN_BATCH simulations sharing one
# C (at least 256 programs of 16 simulations: two per SM of an H100/H200), for BLOCK_N up to
# DOT_MAX_BLOCK_N (the size measured; wider tiles hold more state next to the operands and spill
# more). The adjoint never does (its spills are 8x larger; its batches are fits, not sweeps).
DOT_MIN_BATCH = 4096
DOT_MAX_BLOCK_N = 128
# Streamed forward (one simulation per program) measured on an H200, same file:
# - N = 100 (BLOCK_N = 128, 4 warps): 16 columns unrolled per iteration, 2.85 us per step, against
#   3.46 with 8, 3.22 with 32 and 4.23 with 4: more independent column loads in flight per
#   thread hide L1 latency; 1, 2 and 8 warps were 7.74, 4.50 and 3.55 us.
# - N = 1000 (BLOCK_N = 1024): 16 warps, 62 us per step, against 83 with 8, 107 with 4 and 67
#   with 32 (about two rows per thread); 8 or 32 unrolled columns made no difference there
#   (62.2 and 62.5 us), so BLOCK_N > 256 keeps 8.
# The adjoint's streamed configuration was not re-measured (its 8 warps for W6 were 0.87x of 4).
STREAMED_FWD_BLOCK_J = 16
# Streamed columns per iteration with conduction delays (forward and adjoint), see choose_config.
DELAYED_BLOCK_J = 8


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def choose_config(batch: int, n_nodes: int, per_sim: bool, kernel: str = "fwd",
                  delays: bool = False, **overrides) -> KernelConfig:
    """Tile shapes for ``batch`` simulations of ``n_nodes`` regions.

    Args:
        batch, n_nodes: B and N.
        per_sim: the coupling is ``(B, N, N)``.
        kernel: ``"fwd"`` (forward and the adjoint's recomputation) or ``"bwd"`` (adjoint sweep).
        delays: conduction delays (``ScanSpec.max_delay > 0``): the streamed variant, the only
            one that simulates them (resident or tl.dot overrides raise ``ValueError``).
        **overrides: any :class:`KernelConfig` field (``block_j`` alone forces the streamed
            variant; ``resident=True`` forces registers, which spills beyond RESIDENT_MAX).

    Returns:
        :class:`KernelConfig`.
    """
    unknown = set(overrides) - set(KernelConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown kernel config fields {sorted(unknown)}")
    if delays and (overrides.get("resident") or overrides.get("use_dot")):
        raise ValueError("conduction delays run in the streamed coupling variant only "
                         "(resident=False, use_dot=False); leave resident/use_dot unset or False")
    use_dot = overrides.get("use_dot")
    if use_dot is None and delays:
        use_dot = False
    if use_dot is None:
        use_dot = (kernel == "fwd" and not per_sim and DOT_MIN_BATCH is not None
                   and batch >= DOT_MIN_BATCH and 16 <= n_nodes <= DOT_MAX_BLOCK_N)
    if use_dot and per_sim:
        raise ValueError("use_dot needs a shared (N, N) coupling")
    block_n = next_pow2(n_nodes)
    if use_dot:
        block_n = max(block_n, 16)
    resident = overrides.get("resident")
    if resident is None and delays:
        resident = False
    if resident is None:
        resident = "block_j" not in overrides and block_n <= RESIDENT_MAX[kernel]
    num_warps = overrides.get("num_warps")
    if num_warps is None:
        if use_dot:
            # 16 x BLOCK_N fp32 FMA-dot tiles: every thread holds its rows and columns of both
            # operands for the whole K-chunk, so more threads (8 warps) and a 16-wide K-chunk
            # keep the operand footprint down (4 warps with K = 32 spilled ~3 KB per thread).
            num_warps = 8
        elif resident:
            # 8 warps from BLOCK_N = 32: the forward's resident C at 32 regions and 4 warps
            # hit ptxas's 128-register target and spilled 12 bytes (griffiths2022, sm_80).
            num_warps = 8 if block_n >= 32 else 4
        elif kernel == "fwd":
            num_warps = 4 if block_n <= 256 else 16    # measured, see STREAMED_FWD_BLOCK_J
        else:
            num_warps = 4 if block_n <= 256 else (8 if block_n <= 1024 else 16)
    threads = 32 * num_warps
    # Under the Triton interpreter every tl op costs ~0.1 ms whatever its size, so one program
    # covering the whole batch is much faster; per-lane arithmetic is the same, and tests force
    # one simulation per program explicitly where it matters.
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    block_b = overrides.get("block_b")
    if block_b is None and interpret and not use_dot:
        block_b = next_pow2(batch)
    if block_b is None:
        if use_dot:
            block_b = 16
        else:
            # About one element per thread: more programs (SMs) rather than more registers; the
            # adjoint holds 19 gradient accumulators per element, so this suits both kernels.
            block_b = max(1, min(next_pow2(batch), threads // block_n))
            if resident:
                while block_b > 1 and block_b * block_n * block_n > CHUNK_ELEMS_PER_THREAD * threads:
                    block_b //= 2
    block_j = overrides.get("block_j")
    if block_j is None:
        # tl.dot: K-chunk of 16 (the smallest dot tile). Streamed columns: 16 unrolled per
        # iteration in the forward up to BLOCK_N = 256 (measured, see STREAMED_FWD_BLOCK_J),
        # else 8 (two rounds of the 4 accumulators), and 8 in the adjoint.
        if use_dot:
            block_j = 16
        elif delays:
            # Each delayed column is three loads (C, the lag, the gathered S_E or g_coup), so 8
            # columns already keep 24 loads in flight; 16 made the griffiths2022 forward spill
            # 8 bytes on sm_80 (80 registers), 8 does not (python -m rww.ops.triton.aot).
            block_j = min(DELAYED_BLOCK_J, block_n)
        else:
            fwd_j = STREAMED_FWD_BLOCK_J if block_n <= 256 else 8
            block_j = min(fwd_j if kernel == "fwd" else 8, block_n)
    cfg = KernelConfig(block_b=block_b, block_n=block_n, block_j=block_j, resident=resident,
                       use_dot=use_dot, num_warps=num_warps)
    for name in ("block_b", "block_n", "block_j"):
        value = getattr(cfg, name)
        if value < 1 or value & (value - 1):
            raise ValueError(f"{name}={value} must be a power of two")
    if cfg.block_n < n_nodes:
        raise ValueError(f"block_n={cfg.block_n} < n_nodes={n_nodes}")
    if use_dot and min(cfg.block_b, cfg.block_n, cfg.block_j if not resident else 16) < 16:
        raise ValueError("use_dot needs block_b, block_n and block_j >= 16 (tl.dot tiles)")
    return replace(cfg)
