"""``rww explore``: a parameter sweep (grid or Latin hypercube) scored against a target, written
as a table and heat maps; resumable; split over ranks under torchrun.

Registered into the ``rww`` command line by :mod:`rww.cli` (``add_parser``; the handler is
:func:`run`); the work is :func:`rww.explore.sweep`. Writes, into ``--out``:

- ``settings.json`` and ``batches/batch_NNNNNN.json`` (each finished batch, atomically): a rerun
  of the same command continues where a killed or stopped (``--max-batches``) one left off, on
  any number of ranks; other settings are refused with the differing settings named;
- ``sweep.csv``: one row per candidate, columns with their units (``rate_mean_Hz``, ...); a
  value that is not a finite number (an unscored candidate's loss, no G_c) is an empty cell;
- ``sweep.json``: settings, column descriptions, the best candidate, what this run simulated
  (standard JSON, as every file here: such values are ``null``);
- ``sweep_heatmaps.png``: FC r (all edges, within hemispheres), FCD KS and the mean rate over
  G (or G/G_c) x the next swept parameter.
"""

from __future__ import annotations

import sys
import time


def add_parser(subparsers):
    """Add the ``explore`` subcommand to an argparse ``subparsers`` object."""
    from .common import add_connectome_arguments, add_model_options

    p = subparsers.add_parser(
        "explore", help="sweep a grid or Latin hypercube of parameters against a target",
        description="Parameter sweep (deco2014 with FIC by default): a grid or Latin hypercube "
                    "over named parameters (G_rel = G/G_c, fic_target, w_EE, sigma, ...), "
                    "simulated in batches and scored against the target (FC r over all and "
                    "intra-hemispheric edges, FCD KS in both window conventions, rates, FIC "
                    "failures), written as sweep.csv, sweep.json and sweep_heatmaps.png. "
                    "Resumable: rerun the same command after a kill or --max-batches to continue "
                    "(finished batches are not simulated again). Distributed: launch with "
                    "torchrun (gloo on CPU, NCCL with --device cuda); candidates are split over "
                    "the ranks and the table is the same as one process's, bit for bit.",
        epilog="Examples: rww explore --demo --bounds G_rel=0.5:1.0,w_EE=0.5:1.5 --points 8 "
               "--n-trs 300 --out sweep1; rww explore sc.npy --fc fc.npy --bounds "
               "G_rel=0.6:1,sigma=0.004:0.012 --design lhs --candidates 256 --out sweep2; "
               "torchrun --nproc_per_node 2 -m rww explore --demo --bounds G_rel=0.5:1 "
               "--points 64 --out sweep3")
    add_connectome_arguments(p, demo_help="sweep against the embedded HCP Schaefer-100 data "
                                          "(SC, group FC and FCD; hemispheres: halves)")
    tgt = p.add_argument_group("target (what candidates are scored against)")
    tgt.add_argument("--fc", metavar="FILE", help="empirical FC (N x N, Pearson r)")
    tgt.add_argument("--bold", metavar="FILE", help="empirical BOLD; its FC (unless --fc) and "
                     "FCD are the target, its length the default --n-trs")
    tgt.add_argument("--layout", choices=["time-regions", "regions-time"],
                     help="layout of --bold (detected when unambiguous)")
    tgt.add_argument("--fcd", metavar="FILE", help="empirical FCD: a square FCD matrix or a vector "
                     "of FCD values (over pairs of windows sharing no TR)")
    tgt.add_argument("--fcd-window", type=int, metavar="TRS",
                     help="FCD window in TRs (default 30; demo: 43)")
    tgt.add_argument("--fcd-step", type=int, metavar="TRS", help="FCD step in TRs (default 5; "
                     "demo: 7)")
    tgt.add_argument("--hemispheres", choices=("halves", "none"),
                     help="hemisphere labels for FC r within hemispheres: halves = the first N/2 "
                          "regions left, the rest right (default: halves with --demo, else none)")

    sw = p.add_argument_group("sweep")
    sw.add_argument("--bounds", required=True, metavar="NAME=LO:HI,...",
                    help="swept parameters and their bounds, e.g. G_rel=0.5:1.0,w_EE=0.5:1.5 "
                         "(G_rel = G/G_c, needs FIC; G for absolute coupling; fic_target in Hz; "
                         "any deco2014 parameter but w_IE)")
    sw.add_argument("--maps", metavar="NAME[=FILE],...", default="",
                    help="regional maps for PARAM:MAP coefficients in --bounds (e.g. "
                         "w_EE:myelin=-1:1): with --demo the embedded myelin and fc_gradient by "
                         "name; NAME=FILE loads N values (.npy, .txt, .csv) for any connectome")
    sw.add_argument("--log", metavar="NAME,...", default="",
                    help="names spaced logarithmically (positive bounds)")
    sw.add_argument("--design", choices=("grid", "lhs"), default="grid",
                    help="grid (--points per dimension) or Latin hypercube (--candidates)")
    sw.add_argument("--points", default="8", metavar="K|NAME=K,...",
                    help="grid points per dimension: one number, or per name (default 8)")
    sw.add_argument("--candidates", type=int, default=64, metavar="N",
                    help="Latin hypercube size (default 64)")
    sw.add_argument("--design-seed", type=int, default=0, help="seed of the Latin hypercube")
    sw.add_argument("--batch-size", type=int, default=32, metavar="B",
                    help="candidates simulated together (default 32); part of the settings a "
                         "resume must match")
    sw.add_argument("--max-batches", type=int, metavar="K",
                    help="stop after K batches (all ranks together); rerun to continue")
    sw.add_argument("--overwrite", action="store_true",
                    help="discard a sweep of other settings found in --out")

    model = p.add_argument_group("model (deco2014)")
    model.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="fixed value of a parameter that is not swept, repeatable; VALUE a "
                            "number or a comma-separated list per region")
    model.add_argument("--params", metavar="FILE.json",
                       help="JSON object of fixed parameter values")
    model.add_argument("--tr", type=float, default=0.72, help="repetition time [s] (default 0.72)")
    model.add_argument("--dt", type=float, default=1.0,
                       help="integration step [ms] (default 1.0: sweeps trade accuracy for speed; "
                            "score a chosen point at 0.1 ms with rww fit / rww.evaluate)")
    add_model_options(model)

    sim = p.add_argument_group("simulation")
    sim.add_argument("--n-trs", type=int, metavar="TRS",
                     help="scored TRs per candidate (default: the --bold length, else 1200)")
    sim.add_argument("--burn-in", type=int, default=42, metavar="TRS",
                     help="TRs simulated and discarded first (default 42, ~30 s at TR 0.72 s)")
    sim.add_argument("--seed", type=int, default=0,
                     help="noise seed; candidate i draws noise index i (default 0)")
    sim.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    sim.add_argument("--backend", default="auto", help="auto, torch, numba, triton")
    sim.add_argument("--device", default="cpu",
                     help="cpu or cuda: where candidates are simulated and scored (FIC and G_c "
                          "on the CPU); under torchrun with cuda, each rank uses "
                          "cuda:LOCAL_RANK and NCCL")
    sim.add_argument("--threads", type=int, help="CPU threads per process: torch's, which also cap "
                     "the numba backend's worker threads")
    sim.add_argument("--score-memory", metavar="BYTES", default="512MiB",
                     help="memory bound of the FC/FCD scoring per batch (default 512MiB; "
                          "e.g. 2GB): the batch is scored in chunks that fit; part of the "
                          "settings a resume must match (the chunk size changes the last bits "
                          "of the FCD W1 distances)")

    out = p.add_argument_group("output")
    out.add_argument("--out", default="rww-explore", metavar="DIR",
                     help="output folder (default rww-explore)")
    out.add_argument("--no-figures", action="store_true", help="skip the heat maps")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
    return p


def _points(text: str):
    text = text.strip()
    if "=" not in text:
        try:
            k = int(text)
        except ValueError:
            raise ValueError(f"--points: expected an integer or NAME=K,..., got {text!r}") from None
        return _at_least_one(k, text)
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, k = item.partition("=")
        try:
            out[name.strip()] = _at_least_one(int(k), item)
        except ValueError as err:
            if "--points" in str(err):
                raise
            raise ValueError(f"--points: expected NAME=K with an integer K, got {item!r}") from None
    return out


def _at_least_one(k: int, text: str) -> int:
    if k < 1:
        raise ValueError(f"--points: {text!r}: grid points per dimension must be >= 1 (1 keeps "
                         "the middle of the bounds)")
    return k


def run(args) -> int:
    """Run ``rww explore``; returns the exit status. Errors propagate as exceptions for
    :func:`rww.cli.main` to report in one line."""
    import torch

    from .. import distributed as rdist
    from ..params import get_preset
    from .common import _check_device

    tick = time.perf_counter()
    for flag, value, low in (("--n-trs", args.n_trs, 3), ("--burn-in", args.burn_in, 0),
                             ("--batch-size", args.batch_size, 1),
                             ("--candidates", args.candidates, 1),
                             ("--max-batches", args.max_batches, 1), ("--threads", args.threads, 1),
                             ("--fcd-window", args.fcd_window, 2),
                             ("--fcd-step", args.fcd_step, 1)):
        if value is not None and value < low:
            raise ValueError(f"{flag}: must be >= {low}, got {value}")
    if args.g_relative:
        raise ValueError("--g-relative: sweep G relative to G_c by naming G_rel in --bounds "
                         "(e.g. --bounds G_rel=0.5:1.0)")
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset("deco2014")
    args.preset = preset.name
    device = _check_device(args.device)
    ctx = rdist.init(device=device if device.type == "cuda" else None)
    try:
        code = _run(args, ctx, tick, preset, device)
    except BaseException:
        rdist.shutdown(ctx, barrier=False)       # another rank may never reach a barrier
        raise
    rdist.shutdown(ctx)
    return code


def _run(args, ctx, tick, preset, device) -> int:
    import torch

    from .. import data as rdata
    from ..explore import SweepEvaluator, sweep
    from ..fit import FitTarget
    from ..ops.memory import parse_bytes
    from ..scoring import split_hemispheres
    from ..search import SearchSpace
    from .common import (_collect_parameters, _resolve_backend, load_bold_for_connectome,
                         load_connectome_from_args, load_fc_for_connectome)
    from .recipe import _parse_bounds

    device = ctx.device if ctx.device.type == "cuda" else device
    sc, _, connectome, demo = load_connectome_from_args(args, preset, include_bold=False)
    n = sc.shape[0]
    bold = fcd_values = target_fc = None
    fcd_window, fcd_step, all_pairs = 30, 5, False
    if demo is not None:
        if args.fc or args.bold or args.fcd:
            raise ValueError("--demo sweeps against the embedded data; drop --fc/--bold/--fcd, or "
                             "give a connectome file instead of --demo")
        target_fc, fcd_values = demo.fc, demo.fcd_values
        fcd_window, fcd_step, all_pairs = demo.fcd_window_trs, demo.fcd_step_trs, True
    else:
        if args.bold:
            bold, note = load_bold_for_connectome(args.bold, "--bold", n, connectome, args.layout)
            if note and ctx.is_main:
                print(f"rww explore: note: {note}", file=sys.stderr)
        if args.fc:
            target_fc, note = load_fc_for_connectome(args.fc, n, connectome)
            if note and ctx.is_main:
                print(f"rww explore: note: {note}", file=sys.stderr)
        if args.fcd:
            fcd_values = rdata.load_fcd_values(args.fcd)
        if bold is None and target_fc is None:
            raise ValueError("target: give --fc FILE or --bold FILE (or --demo)")
    target = FitTarget(fc=target_fc, bold=bold, fcd_values=fcd_values,
                       fcd_window=args.fcd_window or fcd_window, fcd_step=args.fcd_step or fcd_step,
                       fcd_exclude_overlapping=not all_pairs)
    hem_choice = args.hemispheres or ("halves" if demo is not None else "none")
    hemispheres = split_hemispheres(n) if hem_choice == "halves" else None

    fixed = _collect_parameters(args, preset, {})
    if "sigma_out" in fixed:
        raise ValueError("--param sigma_out: observation noise is not supported by rww explore")
    bounds = _parse_bounds(args.bounds)
    maps = _load_maps(args.maps, demo, n)
    for name in bounds:
        if ":" in name and name.split(":", 1)[1] not in maps:
            map_name = name.split(":", 1)[1]
            raise ValueError(f"--bounds {name}: needs the regional map {map_name!r}; add --maps "
                             f"{map_name}" + ("" if demo is not None else "=FILE (N values)"))
    log = tuple(s.strip() for s in args.log.split(",") if s.strip())
    space = SearchSpace(bounds, log=log)
    fic = 3.0 if args.fic is None else float(args.fic)
    if args.no_fic:
        fic = None
    if fic is None and "G_rel" in bounds:
        raise ValueError("--bounds G_rel: G relative to G_c needs FIC (G_c is defined at the FIC "
                         "fixed point); drop --no-fic, or sweep absolute G")
    if fic is None and "fic_target" in bounds:
        raise ValueError("--bounds fic_target: sweeping the FIC target needs FIC; drop --no-fic")
    swept_fixed = [k for k in fixed if k in bounds or (k == "G" and "G_rel" in bounds)]
    if swept_fixed:
        raise ValueError(f"--param {', '.join(swept_fixed)}: swept in --bounds; drop the fixed "
                         "value")
    backend = _resolve_backend(args.backend, device)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    evaluator = SweepEvaluator(sc, target, device=device, n_trs=args.n_trs,
                               burn_in_trs=args.burn_in,
                               dt=args.dt, tr=args.tr, fixed=fixed, fic=fic,
                               hemispheres=hemispheres, maps=maps,
                               batch_size=args.batch_size, seed=args.seed,
                               backend=backend, haemo=args.haemo, dtype=dtype,
                               score_max_bytes=int(parse_bytes(args.score_memory)))
    points = _points(args.points) if args.design == "grid" else None
    try:
        result = sweep(space, evaluator, args.design, n=args.candidates, points=points,
                       seed=args.design_seed, out=args.out, overwrite=args.overwrite,
                       max_batches=args.max_batches, figures=not args.no_figures,
                       progress=not args.no_progress, ctx=ctx)
    except KeyboardInterrupt:
        if ctx.is_main:
            print(f"rww explore: interrupted; every finished batch is in {args.out}/batches: "
                  "rerun the same command to continue", file=sys.stderr)
        raise
    if not ctx.is_main:
        return 0
    m = result.settings["n_candidates"]
    n_batches = -(-m // args.batch_size)
    line = (f"{len(result.simulated_batches)} batch(es) simulated on {ctx.world_size} rank(s), "
            f"{len(result.reused_batches)} reused, of {n_batches} ({m} candidates, "
            f"{time.perf_counter() - tick:.1f} s)")
    if not result.complete:
        print(line + f"; stopped early: rerun the same command to continue ({args.out})")
        return 0
    best = result.best(1)
    if best:
        b = best[0]
        swept = ", ".join(f"{k}={b[k]:.4g}" for k in result.names)
        line += f"; best {swept}: FC r {b['fc_r']:.3f}"
        if b.get("fcd_ks") is not None:
            line += f", FCD KS {b['fcd_ks']:.3f}"
        line += f", mean r_E {b['rate_mean']:.2f} Hz"
    else:
        line += "; no candidate could be scored (see the status column)"
    print(line)
    written = [result.paths["csv"], result.paths["json"]] + result.paths.get("figures", [])
    print("wrote " + ", ".join(written))
    return 0


def _load_maps(text: str, demo, n: int) -> dict:
    """``--maps``: name -> ``(N,)`` float64 map (the demo's by name, or NAME=FILE)."""
    import numpy as np
    import torch

    maps = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, _, path = item.partition("=")
        name = name.strip()
        if path:
            values = (np.load(path) if path.endswith(".npy")
                      else np.loadtxt(path, delimiter="," if path.endswith(".csv") else None))
            values = np.asarray(values, dtype=np.float64).ravel()
            if values.shape[0] != n or not np.isfinite(values).all():
                raise ValueError(f"--maps {name}={path}: expected {n} finite values (one per "
                                 f"region), got {values.shape[0]}")
            maps[name] = torch.as_tensor(values)
        elif demo is not None and name in demo.maps:
            maps[name] = demo.maps[name]
        else:
            known = sorted(demo.maps) if demo is not None else []
            raise ValueError(f"--maps {name}: " + (f"the embedded maps are {known}" if known else
                             "no embedded maps without --demo; give NAME=FILE with N values"))
    return maps
