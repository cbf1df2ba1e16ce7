"""Ahead-of-time compilation of every kernel variant for real GPUs, without a GPU.

``python -m rww.ops.triton.aot`` compiles the forward and adjoint kernels (both presets, shared and
per-simulation coupling, register-resident, streamed and tl.dot coupling variants, the streamed
variant with conduction delays, at the tile
shapes :func:`rww.ops.triton.config.choose_config` picks for representative sizes) for sm_80 and sm_90,
prints registers, stack frame, spill bytes and shared memory per variant, and exits non-zero if a
variant of a size declared supported in registers spills.

How: the launch arguments come from the launchers' own ``fwd_kernel_args``/``bwd_kernel_args``
(with small CPU stand-in tensors; parameter tables vary over simulations and regions, the
register-heaviest layout), Triton's JIT binder turns them into exactly the signature,
specialisation (16-byte alignment, ints equal to 1 folded) and constexprs a real launch would
compile, and ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` runs the whole
pipeline to a cubin with the ptxas that ships in Triton's wheel. Triton already runs that ptxas
with ``-v``; its log (registers, stack frame, spill stores/loads, static shared memory) is
captured (``knobs.nvidia.dump_ptxas_log``, cache bypassed with ``always_compile``), so the numbers
are those of the very cubin a launch would load. Dynamic shared memory comes from the kernel's
metadata. Compilations run in parallel processes (``--jobs``). This must run without
``TRITON_INTERPRET`` (interpreted functions cannot be compiled).

Gate: a spill (ptxas "bytes spill stores/loads" > 0) in a variant marked ``gate``. A stack frame
without spills is not a failure: libdevice's accurate ``sinf``/``cosf`` (the Box-Muller noise)
keep a small local array for their slow-path argument reduction (a 32-byte frame, never touched
for the angles in [0, 2 pi) the noise uses). Variants outside the declared register budget (the
adjoint at N ~ 1000, the tl.dot throughput tiles) are compiled and reported, not gated; their
spills go to local memory (L1-cached) and are discussed in ``rww/ops/triton/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import torch
import triton

from .config import KernelConfig, ScanConstants, choose_config

ARCHS = (80, 90)


@dataclass(frozen=True)
class Variant:
    """One compiled variant: which kernel, preset, coupling layout and size."""

    kernel: str            # "fwd" or "bwd"
    preset: str            # "deco2014" or "griffiths2022"
    per_sim: bool
    batch: int
    n_nodes: int
    gate: bool = True      # declared supported in registers: a spill fails the check
    overrides: tuple = ()  # KernelConfig overrides as (name, value) pairs
    max_delay: int = 0     # conduction delays of up to D steps (HAS_DELAY, streamed)

    def config(self) -> KernelConfig:
        return choose_config(self.batch, self.n_nodes, self.per_sim, self.kernel,
                             delays=self.max_delay > 0, **dict(self.overrides))


# Sizes declared supported in registers (gated), as (batch, n_nodes, per_sim):
GATED_SIZES = (
    (64, 5, False),     # C resident, 16 simulations x 8 nodes per program (both kernels)
    (1, 16, True),      # the adjoint's largest resident C, one C per simulation
    (1, 64, False),     # the forward's largest resident C (8 warps); the adjoint streams
    (3, 83, True),      # atlas sizes: C streamed by columns (BLOCK_N = 128), per simulation
)
# Conduction delays (HAS_DELAY, streamed coupling with per-edge lag gathers from the S_E ring
# in the forward, the g_coup ring pull and per-edge dL/dC in the adjoint), D = 200 steps (D is a
# runtime argument: the compiled code does not depend on it), shared C and per-simulation lags
# (the register-heavier case is the same code). Gated: no spills on sm_80/sm_90.
DELAYED_SIZES = (
    (1, 100, False, 200),
    (64, 68, False, 200),
)
# Reported, not gated (beyond the register budget; see rww/ops/triton/README.md).
REPORTED_SIZES = (
    (1, 1000, False),   # streamed, BLOCK_N = 1024 (the adjoint spills: ~2 elements per thread)
    (32768, 100, False),  # throughput: shared C as tl.dot tiles (opt-in; the forward only
                          # unless --full)
)


def jobs_list(full: bool = False, archs=ARCHS, kernels=("fwd", "bwd"),
              presets=("deco2014", "griffiths2022")):
    """``(variant, arch)`` pairs: gated variants for both presets and every arch; reported ones
    for deco2014 on the last arch only (``full``: every preset and arch, and per-simulation C at
    N = 1000 too). The default keeps the check near 2.5 minutes on two cores."""
    out = []
    for kernel in kernels:
        for preset in presets:
            for batch, n_nodes, per_sim in GATED_SIZES:
                out += [(Variant(kernel, preset, per_sim, batch, n_nodes, True), a) for a in archs]
            for batch, n_nodes, per_sim, max_delay in DELAYED_SIZES:
                out += [(Variant(kernel, preset, per_sim, batch, n_nodes, True,
                                 max_delay=max_delay), a) for a in archs]
            reported = list(REPORTED_SIZES) + ([(1, 1000, True)] if full else [])
            for batch, n_nodes, per_sim in reported:
                dot = (("use_dot", True),) if batch >= 4096 else ()
                if dot and kernel == "bwd" and not full:
                    continue
                v = Variant(kernel, preset, per_sim, batch, n_nodes, False, dot)
                if full:
                    out += [(v, a) for a in archs]
                elif preset == "deco2014":
                    out.append((v, archs[-1]))
    return out


def _consts(preset: str) -> ScanConstants:
    griffiths = preset == "griffiths2022"
    return ScanConstants(griffiths=griffiths, dt=0.05 if griffiths else 0.1,
                         balloon_dt=0.05 if griffiths else 1e-4, steps_per_tr=7200, seed=1, t0=0,
                         kappa=0.65, gamma_h=0.41, tau_0=0.98, alpha=0.32, rho=0.34,
                         bold_scale=0.02, k1=2.38, k2=2.0, k3=0.48)


def _launch_args(v: Variant):
    """``(kernel, args, kwargs)`` of a representative launch of ``v`` (CPU stand-in tensors:
    compilation reads only dtypes, alignment and the integer values)."""
    from . import adjoint, forward

    cfg = v.config()
    b = min(v.batch, 64)        # tensors only stand in; the batch value itself is not specialised
    n = v.n_nodes
    # A table varying over simulations (when B > 1) and regions: every parameter is a tile.
    params = torch.ones(19, b, n)
    coupling = torch.ones(b, n, n) if v.per_sim else torch.ones(n, n)
    state = torch.ones(6 + v.max_delay, b, n)
    consts = _consts(v.preset)
    lags = torch.zeros(b, n, n, dtype=torch.int32) if v.max_delay else None

    def buf():
        return torch.empty(64)

    if v.kernel == "fwd":
        outs = {k: buf() for k in ("final", "ckpt", "bold", "S_E", "S_I", "r_E", "r_I", "traj",
                                   "vec")}
        outs["bad"] = torch.empty(64, dtype=torch.int32)
        c_op = forward.forward_coupling_operand(coupling, cfg)
        lag_op = None
        if v.max_delay:
            outs["ring"] = buf()
            lag_op = forward.forward_lag_operand(lags)
        _, args, kwargs = forward.fwd_kernel_args(params, c_op, state, consts, cfg, 1000, 0,
                                                  31, 10, outs, True, 15, False, lag_op)
        kernel = forward._rww_fwd_kernel
    else:
        grads = {k: buf() for k in ("S_E", "S_I", "r_E", "r_I")}
        gparam = torch.empty(64, dtype=torch.float64)       # float64 sums across segments
        delay = None
        if v.max_delay:
            delay = {"lag": lags, "gring": buf(), "dc": buf(), "hgrad": buf(), "ck0": buf(),
                     "total": 1000}
        _, args, kwargs = adjoint.bwd_kernel_args(params, coupling, buf(), buf(), state, gparam,
                                                  buf(), grads, consts, cfg, 0, 31, 10, delay)
        kernel = adjoint._rww_bwd_kernel
    # The launcher's argument list uses the stand-in batch; restore the real one.
    index = kernel.arg_names.index("B")
    args = tuple(v.batch if i == index else a for i, a in enumerate(args))
    return kernel, args, kwargs


def compile_variant(v: Variant, arch: int):
    """Compile ``v`` for ``sm_<arch>``. Returns ``(CompiledKernel, ptxas log)``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("rww.ops.triton.aot must run without TRITON_INTERPRET (interpreted kernels "
                           "cannot be compiled)")
    kernel, args, kwargs = _launch_args(v)
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    # The JIT's own binder and argument packing: the same specialisation a launch would use.
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound,
                                                              specialization, options)
    src = ASTSource(kernel, signature, constexprs, attrs)
    # Triton runs ptxas -v and prints its log when asked; a cache hit would skip ptxas.
    triton.knobs.compilation.always_compile = True
    triton.knobs.nvidia.dump_ptxas_log = True
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        compiled = triton.compile(src, target=target, options=options.__dict__)
    return compiled, captured.getvalue()


def parse_ptxas_log(log: str) -> dict:
    """Registers, stack frame, spill stores/loads and static shared memory from ``ptxas -v``."""
    def grab(pattern):
        found = re.search(pattern, log)
        if not found:
            raise ValueError(f"ptxas log lacks {pattern!r}:\n{log}")
        return int(found.group(1))

    return {"regs": grab(r"Used (\d+) registers"),
            "stack": grab(r"(\d+) bytes stack frame"),
            "spill_stores": grab(r"(\d+) bytes spill stores"),
            "spill_loads": grab(r"(\d+) bytes spill loads"),
            "static_shared": int(m.group(1)) if (m := re.search(r"(\d+) bytes smem", log)) else 0}


def _compile_row(job):
    v, arch = job
    start = time.perf_counter()
    compiled, log = compile_variant(v, arch)
    res = parse_ptxas_log(log)
    res["dyn_shared"] = int(compiled.metadata.shared)
    res["spills"] = res["spill_stores"] > 0 or res["spill_loads"] > 0
    cfg = v.config()
    mode = (("dot-" if cfg.use_dot else "") + ("resident" if cfg.resident else "streamed")
            + (f"+D{v.max_delay}" if v.max_delay else ""))
    return {**asdict(v), **asdict(cfg), "arch": arch, "mode": mode, **res,
            "compile_s": round(time.perf_counter() - start, 1)}


def format_row(r) -> str:
    return (f"{r['kernel']:4} {r['preset']:13} {'per-sim' if r['per_sim'] else 'shared':7} "
            f"{r['batch']:>6} {r['n_nodes']:>5} {r['block_b']:>3} {r['block_n']:>5} "
            f"{r['block_j'] if not r['resident'] else '-':>3} {r['mode']:12} {r['num_warps']:>5} "
            f"{r['arch']:>3} {r['regs']:>4} {r['stack']:>5} {r['spill_stores']:>6} "
            f"{r['spill_loads']:>6} {r['static_shared'] + r['dyn_shared']:>6} "
            f"{'gated' if r['gate'] else 'report':>6}"
            f"{'  SPILLS' if r['spills'] and r['gate'] else ''}")


HEADER = (f"{'kern':4} {'preset':13} {'C':7} {'B':>6} {'N':>5} {'BB':>3} {'BN':>5} {'BJ':>3} "
          f"{'mode':12} {'warps':>5} {'sm':>3} {'regs':>4} {'stack':>5} {'spillS':>6} "
          f"{'spillL':>6} {'smem':>6} {'check':>6}")


def run(work, jobs=None, out=sys.stdout):
    """Compile every ``(variant, arch)`` of ``work`` (``jobs`` processes); returns the rows."""
    jobs = jobs or min(len(work), os.cpu_count() or 1)
    print(HEADER, file=out)
    print("-" * len(HEADER), file=out, flush=True)
    rows = []
    if jobs <= 1:
        results = map(_compile_row, work)
    else:
        pool = ProcessPoolExecutor(jobs)
        results = pool.map(_compile_row, work)
    for row in results:
        rows.append(row)
        print(format_row(row), file=out, flush=True)
    if jobs > 1:
        pool.shutdown()
    return rows


def gated_spills(rows):
    """Rows of variants declared supported in registers that spill (must be empty)."""
    return [r for r in rows if r["gate"] and r["spills"]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="report the large-N and tl.dot variants for both presets and every "
                             "arch, and per-simulation C at N = 1000")
    parser.add_argument("--gated-only", action="store_true",
                        help="only the variants declared supported in registers")
    parser.add_argument("--arch", type=int, action="append", help="80, 90 (default both)")
    parser.add_argument("--jobs", type=int, help="parallel compilations (default: CPU count)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")   # the default launches use
    work = [(v, a) for v, a in jobs_list(args.full, tuple(args.arch or ARCHS))
            if v.gate or not args.gated_only]
    start = time.perf_counter()
    rows = run(work, args.jobs)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    bad = gated_spills(rows)
    reported = sum(r["spills"] for r in rows if not r["gate"])
    print(f"\n{len(rows)} compilations in {time.perf_counter() - start:.0f} s; "
          f"{reported} reported (ungated) variant(s) spill")
    if bad:
        print(f"FAIL: {len(bad)} variant(s) declared supported in registers spill",
              file=sys.stderr)
        return 1
    print("OK: no variant declared supported in registers spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
