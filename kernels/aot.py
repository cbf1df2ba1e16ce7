"""Ahead-of-time compilation of every kernel variant for real GPUs, without a GPU.

``python -m kernels.aot`` compiles the forward and adjoint kernels (both presets, shared and
per-simulation coupling, register-resident, streamed and tl.dot coupling variants, at the tile
shapes :func:`kernels.config.choose_config` picks for representative sizes) for sm_80 and sm_90,
reads registers, stack (local memory: spills), shared memory and spill bytes from the cubin, prints
a table, and exits non-zero if a variant declared register-resident spills.

How: the launch arguments come from the launchers' own ``fwd_kernel_args``/``bwd_kernel_args``
(with small CPU stand-in tensors), Triton's JIT binder turns them into exactly the signature,
specialisation (16-byte alignment, ints equal to 1 folded) and constexprs a real launch would
compile, and ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` runs the whole
pipeline to a cubin with the ptxas that ships in Triton's wheel. Resources are read with that
wheel's ``cuobjdump --dump-resource-usage`` (REG, STACK, SHARED, LOCAL) and spill bytes with
``ptxas -v`` (the same ptxas and arch name Triton uses) on the generated PTX. This must run without ``TRITON_INTERPRET`` (interpreted
functions cannot be compiled).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
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
    overrides: tuple = ()  # KernelConfig overrides as (name, value) pairs

    def config(self) -> KernelConfig:
        return choose_config(self.batch, self.n_nodes, self.per_sim, **dict(self.overrides))


def _sizes(full: bool):
    """(batch, n_nodes, per_sim options) of the table; ``full`` adds the large-N and dot rows."""
    rows = [
        (64, 5, (False, True)),     # resident, 16 simulations x 8 nodes per program
        (1, 64, (False, True)),     # resident at the declared limit (8 warps)
        (1, 68, (False, True)),     # streamed: the atlas sizes (BLOCK_N = 128)
    ]
    if full:
        rows += [
            (1, 1000, (False, True)),   # streamed, BLOCK_N = 1024
            (4096, 64, (False,)),       # tl.dot tiles, C resident
            (32768, 100, (False,)),     # tl.dot tiles, C streamed (throughput workload W4)
        ]
    return rows


def variants(full: bool = True, kernels=("fwd", "bwd"), presets=("deco2014", "griffiths2022")):
    """The variants of the table (see :func:`_sizes`)."""
    out = []
    for kernel in kernels:
        for preset in presets:
            for batch, n_nodes, per_sims in _sizes(full):
                for per_sim in per_sims:
                    out.append(Variant(kernel, preset, per_sim, batch, n_nodes))
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
    from . import rww_bwd, rww_fwd

    cfg = v.config()
    b = min(v.batch, 64)        # tensors only stand in; the batch value itself is not specialised
    n = v.n_nodes
    params = torch.ones(19, 1, 1)
    coupling = torch.ones(b, n, n) if v.per_sim else torch.ones(n, n)
    state = torch.ones(6, b, n)
    consts = _consts(v.preset)

    def buf():
        return torch.empty(64)

    if v.kernel == "fwd":
        outs = {k: buf() for k in ("final", "ckpt", "bold", "S_E", "S_I", "r_E", "r_I", "traj",
                                   "vec")}
        outs["bad"] = torch.empty(64, dtype=torch.int32)
        c_op = rww_fwd.forward_coupling_operand(coupling, cfg)
        _, args, kwargs = rww_fwd.fwd_kernel_args(params, c_op, state, consts, cfg, 1000, 0,
                                                  31, 10, outs, True, 15, False)
        kernel = rww_fwd._rww_fwd_kernel
    else:
        grads = {k: buf() for k in ("S_E", "S_I", "r_E", "r_I")}
        _, args, kwargs = rww_bwd.bwd_kernel_args(params, coupling, buf(), buf(), state, buf(),
                                                  buf(), grads, consts, cfg, 0, 31, 10)
        kernel = rww_bwd._rww_bwd_kernel
    # The launcher's argument list uses the real batch; restore it (do_not_specialize anyway).
    args = tuple(v.batch if (i == _batch_index(kernel)) else a for i, a in enumerate(args))
    return kernel, args, kwargs


def _batch_index(kernel) -> int:
    return kernel.arg_names.index("B")


def compile_variant(v: Variant, arch: int):
    """Compile ``v`` for ``sm_<arch>``; returns the CompiledKernel (cubin in ``.asm["cubin"]``)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("kernels.aot must run without TRITON_INTERPRET (interpreted kernels "
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
    return triton.compile(src, target=target, options=options.__dict__)


def _nvidia_tool(name: str) -> str:
    pattern = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    found = glob.glob(pattern)
    if not found:
        raise FileNotFoundError(f"{name} not found in Triton's wheel ({pattern})")
    return found[0]


def resources(compiled, arch: int, with_ptxas: bool = True) -> dict:
    """Registers, stack, local and shared memory (cuobjdump), spill bytes (ptxas -v)."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as fh:
            fh.write(compiled.asm["cubin"])
        text = subprocess.run([_nvidia_tool("cuobjdump"), "--dump-resource-usage", cubin],
                              capture_output=True, text=True, check=True).stdout
        found = {k: int(x) for k, x in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}
        res = {"regs": found["REG"], "stack": found["STACK"], "local": found["LOCAL"],
               "static_shared": found["SHARED"], "dyn_shared": int(compiled.metadata.shared)}
        if with_ptxas:
            # The ptxas Triton itself uses for this arch (the wheel ships 12.x for sm < 90 and
            # 13.x, "ptxas-blackwell", for sm >= 90), on the same PTX and the same arch name.
            from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

            ptx = os.path.join(tmp, "k.ptx")
            with open(ptx, "w") as fh:
                fh.write(compiled.asm["ptx"])
            cmd = [get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}",
                   ptx, "-o", os.path.join(tmp, "v.o")]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            log = out.stdout + out.stderr
            stores = re.search(r"(\d+) bytes spill stores", log)
            loads = re.search(r"(\d+) bytes spill loads", log)
            res["spill_stores"] = int(stores.group(1)) if stores else None
            res["spill_loads"] = int(loads.group(1)) if loads else None
    res["spills"] = res["stack"] > 0 or res["local"] > 0 or bool(res.get("spill_stores"))
    return res


def run(variant_list, archs=ARCHS, with_ptxas=True, out=sys.stdout):
    """Compile every variant for every arch; returns a list of result rows (dicts)."""
    rows = []
    header = (f"{'kernel':6} {'preset':13} {'C':7} {'B':>6} {'N':>5} {'BB':>3} {'BN':>5} {'BJ':>4} "
              f"{'mode':9} {'warps':>5} {'sm':>3} {'regs':>4} {'stack':>5} {'spill':>6} "
              f"{'smem':>6}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for v in variant_list:
        cfg = v.config()
        mode = ("dot-" if cfg.use_dot else "") + ("resident" if cfg.resident else "streamed")
        for arch in archs:
            res = resources(compile_variant(v, arch), arch, with_ptxas)
            row = {**asdict(v), **asdict(cfg), "arch": arch, **res, "mode": mode}
            rows.append(row)
            spill = res.get("spill_stores")
            print(f"{v.kernel:6} {v.preset:13} {'per-sim' if v.per_sim else 'shared':7} "
                  f"{v.batch:>6} {v.n_nodes:>5} {cfg.block_b:>3} {cfg.block_n:>5} "
                  f"{cfg.block_j if not cfg.resident else '-':>4} {mode:9} {cfg.num_warps:>5} "
                  f"{arch:>3} {res['regs']:>4} {res['stack']:>5} "
                  f"{'-' if spill is None else spill:>6} "
                  f"{res['static_shared'] + res['dyn_shared']:>6}", file=out, flush=True)
    return rows


def resident_spills(rows):
    """Rows of register-resident variants that spill (must be empty)."""
    return [r for r in rows if r["resident"] and r["spills"]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="only the small/atlas sizes (skip N=1000 and the tl.dot rows)")
    parser.add_argument("--arch", type=int, action="append", help="80, 90 (default both)")
    parser.add_argument("--no-ptxas", action="store_true", help="skip the ptxas -v spill count")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = run(variants(full=not args.quick), tuple(args.arch or ARCHS), not args.no_ptxas)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    bad = resident_spills(rows)
    if bad:
        print(f"\nFAIL: {len(bad)} register-resident variant(s) spill", file=sys.stderr)
        return 1
    print(f"\n{len(rows)} compilations; no register-resident variant spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
