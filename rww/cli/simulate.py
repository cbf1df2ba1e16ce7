"""``rww simulate``: simulate BOLD on a connectome (or the embedded demo) and write bold.npz,
summary.json and figures."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time

from .common import (DEFAULT_DURATION_S, _check_device, _collect_parameters, _finite, _one_line,
                     _resolve_backend, _tolist, add_connectome_arguments, add_delay_options,
                     add_model_options, delay_options,
                     load_connectome_from_args, model_options)

def add_simulate_parser(subparsers) -> argparse.ArgumentParser:
    from ..ops.scan import BACKENDS
    from ..params import PRESETS
    p = subparsers.add_parser(
        "simulate", help="simulate BOLD on a connectome",
        description="Simulate an RWW + Balloon-Windkessel network on a connectome and write "
                    "OUT/bold.npz (BOLD (batch, TRs, regions), TR, time, mean firing rates, FC, "
                    "metadata), OUT/summary.json (parameters, timings, firing rate, FC "
                    "statistics; with --demo the FC correlation with the embedded empirical "
                    "FC) and PNG figures.",
        epilog="Examples: rww simulate --demo --param G=0.8 --duration 120 --out run1; "
               "rww simulate sc.csv --normalise max --trs 200 --batch 4 --seed 1; "
               "rww simulate --demo --fic --g-relative --param G=0.6,0.7,0.8,0.9 --out sweep "
               "(a sweep: one simulation per value, figures across the batch)")
    add_connectome_arguments(p, demo_help="use the embedded HCP Schaefer-100 group SC (100 regions) "
                             "and compare with its empirical FC")

    model = p.add_argument_group("model")
    model.add_argument("--preset", default="deco2014", choices=sorted(PRESETS),
                       help="model equations and defaults (default deco2014)")
    model.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="parameter value, repeatable; VALUE a number or a comma-separated "
                            "list (per region, or per simulation); e.g. --param G=0.8")
    model.add_argument("--params", metavar="FILE.json",
                       help="JSON object of parameter values (numbers or lists), e.g. the "
                            "params.json that `rww fit` writes (its fic, g_relative and haemo "
                            "entries are applied too); --param and the flags below win")
    add_model_options(model)
    add_delay_options(model)

    run = p.add_argument_group("simulation")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, metavar="SECONDS",
                        help=f"simulated time kept after the burn-in, rounded up to whole TRs "
                             f"(default {DEFAULT_DURATION_S:g} s)")
    length.add_argument("--trs", type=int, metavar="N", help="number of TRs kept after the burn-in")
    run.add_argument("--tr", type=float, metavar="SECONDS",
                     help="repetition time (default 0.72 for deco2014, 0.75 for griffiths2022)")
    run.add_argument("--dt", type=float,
                     help="integration step (ms for deco2014, default 0.1; griffiths2022: the "
                          "paper's 0.05 in TR units)")
    run.add_argument("--burn-in", type=int, default=10, metavar="TRS",
                     help="TRs simulated first and discarded (default 10)")
    run.add_argument("--batch", type=int, default=None,
                     help="simulations run together (default: the length of the per-simulation "
                          "parameter lists, e.g. 3 for --param G=0.2,0.4,0.6, a sweep; else 1)")
    run.add_argument("--seed", type=int, default=None,
                     help="noise seed in [0, 2**64) (default: drawn at random and recorded in "
                          "summary.json, so a run can be repeated with --seed)")
    run.add_argument("--backend", default="auto", choices=BACKENDS,
                     help="auto (numba on CPU when installed, triton on CUDA), torch, "
                          "torch-checkpoint, numba, triton")
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    run.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    run.add_argument("--chunk-trs", type=int, metavar="N",
                     help="TRs per call, continuing state and step index (default: about 1/50 "
                          "of the run); the progress bar advances per chunk")
    run.add_argument("--threads", type=int, help="CPU threads: torch's, which also cap the numba backend's worker "
                     "threads (default: torch's choice)")

    out = p.add_argument_group("output")
    out.add_argument("--out", default="rww-simulate", metavar="DIR",
                     help="output folder (created; files in it are overwritten)")
    out.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_simulate)
    return p



def _demo_scores(bold, demo, tr: float, warnings: list):
    """Scores of simulated BOLD ``(B, T, N)`` against the embedded demo data (FC r over all and
    intra-hemispheric edges, FC level, FCD KS in the demo's convention), per simulation, or None
    (with a warning) when the run cannot be compared."""
    from .. import objectives as obj
    from ..evaluate import score_batch
    from ..fit import FitTarget
    if abs(tr - demo.tr) > 1e-9:
        warnings.append(f"FCD not compared with the demo: TR {tr} s differs from the data's "
                        f"{demo.tr} s")
        return None
    if bold.shape[1] < 3:
        warnings.append(f"not compared with the demo data: {bold.shape[1]} TRs are too few for "
                        "an FC (3 at least)")
        return None
    target = FitTarget(fc=demo.fc, fcd_values=demo.fcd_values, fcd_window=demo.fcd_window_trs,
                       fcd_step=demo.fcd_step_trs, fcd_exclude_overlapping=False)
    fcd_ok = bold.shape[1] >= demo.fcd_window_trs + demo.fcd_step_trs
    if not fcd_ok:
        warnings.append(f"FCD not compared with the demo: {bold.shape[1]} TRs are fewer than two "
                        f"FCD windows ({demo.fcd_window_trs} TRs every {demo.fcd_step_trs}); "
                        "simulate longer (the data's scans are 1200 TRs)")
    scores = score_batch(bold.double(), target, demo.hemispheres, fcd=fcd_ok)
    out = {k: [_finite(x) for x in v] for k, v in scores.items()}
    out["fcd_ks_mean"] = _finite(scores["fcd_ks"].mean()) if "fcd_ks" in scores else None
    n_windows = len(obj.fcd_windows(bold.shape[1], demo.fcd_window_trs, demo.fcd_step_trs)) \
        if fcd_ok else 0
    if fcd_ok and n_windows < 20:
        warnings.append(f"FCD from only {n_windows} windows: its KS against the data's 1200-TR "
                        "scans is a coarse estimate; simulate the data's length for a comparison")
    out["conventions"] = (f"FC r: lower triangles (fc_r_intra: within hemispheres); FCD: windows "
                          f"of {demo.fcd_window_trs} TRs every {demo.fcd_step_trs}, all pairs of "
                          "distinct windows, against the group's pooled values; per simulation")
    return out


def _check_arguments(args):
    """The numeric options' ranges (argparse checks only their types)."""
    for flag, value, low in (("--batch", args.batch, 1), ("--burn-in", args.burn_in, 0),
                             ("--trs", args.trs, 1), ("--chunk-trs", args.chunk_trs, 1)):
        if value is not None and value < low:
            raise ValueError(f"{flag}: must be >= {low}, got {value}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise ValueError(f"--duration: must be a positive number of seconds, got {args.duration}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: must be >= 1, got {args.threads}")


def _build_model(args, preset, device, dtype):
    """``(model, backend, labels, connectome, demo)`` from the connectome and model options
    (with ``--demo`` and no parameters, the demo's fitted working point)."""
    from .. import data as rdata
    from ..model import RWWBold

    sc, labels, connectome, demo, source_lengths = load_connectome_from_args(args, preset,
                                                                             with_lengths=True)
    delays, delay_record = delay_options(args, source_lengths, sc.shape[-1])
    connectome["delays"] = delay_record
    file_options: dict = {}
    if demo is not None and not args.params and not args.param:
        # A newcomer's first simulation: the demo's fitted working point (rww fit --demo).
        args.params = str(rdata.DEMO_FITTED_PARAMS)
    params = _collect_parameters(args, preset, file_options)
    options = model_options(args, file_options)
    sigma_out = params.pop("sigma_out", None)
    backend = _resolve_backend(args.backend, device)
    import torch

    velocity = delays.get("velocity")
    n_velocities = int(velocity.shape[0]) if torch.is_tensor(velocity) else None
    if args.batch is None:
        args.batch = _batch_from_lists(params, sc.shape[-1])
        if n_velocities is not None and args.batch == 1:
            args.batch = n_velocities
    if n_velocities is not None and n_velocities != args.batch:
        raise ValueError(f"--velocity: {n_velocities} values for {args.batch} simulation(s); give "
                         "one velocity, or one per simulation")
    try:
        model = RWWBold(sc, preset=args.preset, dt=args.dt, tr=args.tr, batch=args.batch,
                        backend=backend, dtype=dtype, device=device, sigma_out=sigma_out,
                        **options, **delays, **params)
    except ValueError as err:
        n = sc.shape[-1]
        if "matches neither n_nodes" in str(err):
            raise ValueError(f"{_one_line(err)}; give {args.batch} values (one per simulation of "
                             f"--batch {args.batch}) or {n} (one per region), or drop --batch: "
                             "it is then the lists' length (one simulation per value)") from None
        if "ambiguous when batch == n_nodes" in str(err):
            raise ValueError(f"{_one_line(err)}. On the command line a list of --batch values "
                             f"is one per simulation and a list of {n} values one per region; "
                             f"with --batch {n} (as many as the regions) a list of {n} cannot be "
                             "told apart: sweep over another number of values") from None
        raise
    if delay_record is not None:
        delay_record["max_delay_steps"] = model.max_delay
        delay_record["note"] = ("lags rint(length / (velocity dt)) steps, TVB's rounding; G_c and "
                                "G/G_c are those of the system without delays (same fixed "
                                "point, but delays can change its stability)")
    return model, backend, labels, connectome, demo


def _batch_from_lists(params: dict, n_regions: int) -> int:
    """The batch a sweep asks for when --batch is not given: the length of the parameter lists
    that are not one value per region (all the same length), else 1."""
    lengths = {name: int(v.shape[0]) for name, v in params.items()
               if hasattr(v, "dim") and v.dim() == 1 and v.shape[0] not in (1, n_regions)}
    if len(set(lengths.values())) > 1:
        given = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ValueError(f"--param: per-simulation lists of different lengths ({given}); give "
                         "each list one value per simulation (the same length), or "
                         f"{n_regions} values (one per region)")
    return next(iter(lengths.values()), 1)


def _simulate_in_chunks(model, args, total: int, burn: int, chunk: int):
    """Run ``total`` TRs in chunks of ``chunk`` (a progress bar per chunk), keeping what follows
    the first ``burn``. Returns ``(bold (B, total - burn, N) on the CPU, mean r_E (B, N) [Hz])``."""
    import torch
    from tqdm import tqdm

    from ..errors import SimulationDiverged

    kept, rate_sum = [], torch.zeros(model.batch, model.n_nodes, dtype=torch.float64)
    state, t0, done = None, 0, 0
    with torch.no_grad(), tqdm(total=total, unit="TR", desc="rww simulate", file=sys.stderr,
                               disable=args.no_progress, dynamic_ncols=True, leave=False,
                               mininterval=0) as bar:        # redraw per chunk (~50 by default)
        while done < total:
            k = min(chunk, total - done)
            try:
                result = model.simulate(k, state=state, seed=args.seed, t0=t0, record=("r_E",))
            except SimulationDiverged as err:
                raise SimulationDiverged(err.simulation, err.step, err.n_diverged,
                                         "try a smaller --dt or G, or --dtype float64") from None
            state, t0 = result.state, t0 + k * model.steps_per_tr
            first = max(0, burn - done)           # the burn-in may end inside this chunk
            if first < k:
                kept.append(result.bold[:, first:].detach().cpu())
                rate_sum += result.records["r_E"][:, first:].detach().cpu().double().sum(1)
            done += k
            bar.update(k)
    return torch.cat(kept, dim=1), rate_sum / (total - burn)


def _parameters_record(model, dtype):
    """``(parameters, bifurcation)`` for the summary: every parameter as simulated (with FIC, the
    w_IE it set and the G it used), and G_c with G/G_c when FIC is on (else None)."""
    import numpy as np
    import torch

    from ..params import PARAM_INDEX, PARAM_NAMES

    def param_value(value):
        # float32 values as the shortest decimal that maps to the same float32 (0.382, not
        # 0.38199999928474426): exact, and what the user typed.
        if dtype == torch.float32:
            value = np.vectorize(lambda v: float(str(np.float32(v))))(value.detach().cpu().numpy())
        return _tolist(torch.as_tensor(value))

    parameters = {name: param_value(getattr(model, name)) for name in PARAM_NAMES}
    parameters["sigma_out"] = param_value(model.sigma_out)
    if model.fic_target is None:
        return parameters, None
    with torch.no_grad():
        table = model.parameter_table()
        parameters["w_IE"] = param_value(table[PARAM_INDEX["w_IE"]])
        parameters["G"] = param_value(table[PARAM_INDEX["G"]].mean(-1))
        g_c = model.critical_coupling()
        ratio = model.coupling_ratio()
    bifurcation = {"G_c": [_finite(v) for v in g_c], "G_over_Gc": [_finite(v) for v in ratio],
                   "meaning": "G_c: the global coupling where the FIC fixed point loses "
                              "stability (leading eigenvalue of the noise-free Jacobian "
                              "crosses 0); G/G_c < 1 is below it"}
    return parameters, bifurcation


def _sweep(model, bifurcation) -> dict:
    """What varies across the simulations of a batch, for the figures' x axis: ``{"x": (B,)
    values, "label", "swept": [names], "marks": {label: x}}``. One swept parameter (the same in
    every region of a simulation, or its mean over regions) gives its values (G as G/G_c with
    --g-relative; with FIC, G_c marked when it is the same in every simulation); none or several
    give the simulation index."""
    import numpy as np
    import torch

    from ..params import PARAM_INDEX, PARAM_NAMES
    b = model.batch
    index = {"x": list(range(b)), "label": "simulation", "swept": [], "marks": {}}
    if b == 1:
        return index
    with torch.no_grad():
        table = model.parameter_table().detach()                        # (P, Bp, Np)
    single = table.dtype == torch.float32
    table = table.cpu().double().expand(-1, b, -1)
    ratio = bifurcation["G_over_Gc"] if bifurcation is not None else None
    relative = model.g_relative and ratio is not None and None not in ratio
    swept = []
    for name in PARAM_NAMES:
        if name == "w_IE" and model.fic_target is not None:
            continue                                  # set by FIC from the others
        row = table[PARAM_INDEX[name]]                                  # (B, Np)
        if name == "G" and relative:                  # the fraction given, not G_c x fraction
            row = torch.tensor(ratio, dtype=torch.float64).view(b, 1)
        per_sim = row.mean(-1)
        if not torch.allclose(per_sim, per_sim[0].expand(b), rtol=1e-6, atol=0.0):
            swept.append((name, per_sim, bool((row != per_sim[:, None]).any())))
    velocity = getattr(model, "velocity", None)
    if velocity is not None and velocity.dim() == 1 and bool((velocity != velocity[0]).any()):
        # conduction velocity per simulation [m/s] (--velocity V1,V2,...)
        swept.append(("velocity", velocity.detach().cpu().double(), False))
    if len(swept) != 1:
        names = [n for n, _, _ in swept]
        label = ("simulation (noise realisations of one parameter set)" if not names else
                 f"simulation (varying: {', '.join(names)})")
        return dict(index, label=label, swept=names)
    name, values, regional = swept[0]
    # float32 values as the shortest decimal of the same float32 (0.2, not 0.20000000298...).
    x = [float(str(np.float32(v))) if single else float(v) for v in values.tolist()]
    if name == "G" and relative:
        return {"x": x, "label": "G / G_c", "swept": [name], "marks": {"G_c": 1.0}}
    marks = {}
    g_c = [v for v in bifurcation["G_c"] if v is not None] if bifurcation is not None else []
    if name == "G" and len(g_c) == b and max(g_c) - min(g_c) <= 1e-6 * abs(max(g_c)):
        marks[f"G_c = {g_c[0]:.4g}"] = g_c[0]
    unit = " [m/s]" if name == "velocity" else ""
    return {"x": x, "label": name + unit + (" (mean over regions)" if regional else ""),
            "swept": [name], "marks": marks}


def _batch_choice(sweep, demo_r, sim_fc) -> dict:
    """The simulations a batch's figures pick out, role -> index, with the criterion: by FC r
    with the empirical FC when there is one (best, median, worst), else along the sweep (lowest,
    middle, highest value), else by mean FC (noise realisations)."""
    import numpy as np

    def pick(order, names, criterion, ranked=False):
        out = {}
        for role, k in zip(names, (0, len(order) // 2, len(order) - 1)):
            i = int(order[k])
            if i not in out.values():
                out[role] = i
        return {"criterion": criterion, "ranked": ranked, "simulations": out}

    if demo_r is not None:
        r = np.asarray([np.nan if v is None else float(v) for v in demo_r])
        ok = np.flatnonzero(np.isfinite(r))
        if ok.size:
            order = ok[np.argsort(-r[ok], kind="stable")]
            return pick(order, ("best FC r", "median FC r", "worst FC r"),
                        "FC r with the empirical FC (lower triangles)", ranked=True)
    if sweep["swept"] and len(sweep["swept"]) == 1:
        order = np.argsort(np.asarray(sweep["x"], dtype=float), kind="stable")
        name = sweep["label"]
        return pick(order, (f"lowest {name}", f"middle {name}", f"highest {name}"),
                    f"the swept parameter ({name})")
    if sim_fc is None:
        return {"criterion": "simulation index", "ranked": False,
                "simulations": {"simulation 0": 0}}
    from .. import objectives as obj
    level = obj.lower_triangle(sim_fc).mean(-1).numpy()
    ok = np.flatnonzero(np.isfinite(level))
    if not ok.size:
        return {"criterion": "simulation index", "ranked": False,
                "simulations": {"simulation 0": 0}}
    order = ok[np.argsort(level[ok], kind="stable")]
    return pick(order, ("lowest mean FC", "median mean FC", "highest mean FC"),
                "mean off-diagonal FC")


def _write_figures(args, model, preset, bold, sim_fc, demo, labels, rate, demo_r, demo_scores,
                   bifurcation) -> tuple[list, dict | None]:
    """The PNGs of a simulation (none with ``--no-figures``). One simulation: its BOLD traces and
    FC (with --demo, against the empirical FC). A batch: the same for its representative (the
    best FC r with --demo, else simulation 0), plus batch_summary.png (mean r_E, mean FC and,
    with --demo, FC r and FCD KS per simulation against the swept parameter or the simulation
    index) and fc_batch.png (the FC of the chosen simulations: best, median and worst FC r with
    --demo, else along the sweep). Returns ``(paths, batch record for the summary or None)``."""
    if args.no_figures:
        return [], None
    import numpy as np

    from .. import figures as fig
    from ..objectives import RATE_BAND_HZ

    b = model.batch
    sweep = _sweep(model, bifurcation) if b > 1 else None
    choice = _batch_choice(sweep, None if demo_r is None else demo_r.tolist(), sim_fc) \
        if b > 1 else None
    rep, why = 0, ""
    if choice is not None and choice["criterion"].startswith("FC r"):
        rep, why = choice["simulations"]["best FC r"], ", best FC r"

    def name_of(i):
        if b == 1:
            return "simulation 0"
        value = sweep["x"][i]
        at = f", {sweep['label']} = {value:.4g}" if sweep["swept"] else ""
        return f"simulation {i} of {b}{at}"

    # BOLD = V_0 (...) is a fractional signal change (deco2014); griffiths2022 scales it by
    # 100 / rho as the paper's code does (rww.params.bold_coefficients).
    unit = "(fractional signal change)" if preset.code == 0 else "(paper units: 100/rho x frac.)"
    figures = [fig.bold_traces(bold[rep], os.path.join(args.out, "bold_traces.png"), tr=model.tr,
                               labels=labels, unit=unit,
                               title=f"{name_of(rep)}{why} ({preset.name})")]
    if sim_fc is not None:
        figures.append(fig.fc_matrix(sim_fc[rep], os.path.join(args.out, "fc_simulated.png"),
                                     title=f"simulated FC, {name_of(rep)}{why}", labels=labels))
        if demo is not None:
            figures.append(fig.fc_comparison(
                demo.fc, sim_fc[rep], os.path.join(args.out, "fc_vs_empirical.png"),
                title=f"HCP Schaefer-100 group FC (group-train706) vs {name_of(rep)}{why}"))
    if b == 1:
        return figures, None
    from .. import objectives as obj
    scores = {"mean r_E [Hz]": rate.numpy()}
    if sim_fc is not None:
        scores["mean FC (off-diagonal r)"] = obj.lower_triangle(sim_fc).mean(-1).numpy()
    if demo_r is not None:
        scores["FC r with the empirical FC (higher is better)"] = demo_r.numpy()
    if demo_scores and demo_scores.get("fcd_ks") is not None:
        scores["FCD KS with the empirical FCD (lower is better)"] = np.asarray(
            [np.nan if v is None else v for v in demo_scores["fcd_ks"]], dtype=float)
    roles = choice["simulations"]
    what = (f"sweep over {sweep['swept'][0]}" if len(sweep["swept"]) == 1 else
            "noise realisations" if not sweep["swept"] else
            f"{', '.join(sweep['swept'])} varied together")
    figures.append(fig.batch_summary(
        sweep["x"], scores, os.path.join(args.out, "batch_summary.png"), x_label=sweep["label"],
        chosen=roles, marks=sweep["marks"], ranked=choice["ranked"],
        bands={"mean r_E [Hz]": (*RATE_BAND_HZ, f"{RATE_BAND_HZ[0]:g}-{RATE_BAND_HZ[1]:g} Hz: "
                                                "spontaneous cortical rates")},
        title=f"batch of {b} simulations: {what} ({preset.name}, {bold.shape[1]} TRs of "
              f"{model.tr:g} s)"))
    if sim_fc is not None:
        figures.append(fig.fc_batch(
            sim_fc, os.path.join(args.out, "fc_batch.png"), list(roles.values()),
            titles=[f"{role}: {name_of(i)}" for role, i in roles.items()],
            empirical=None if demo is None else demo.fc,
            empirical_title="HCP group FC (group-train706)",
            title=f"FC of {len(roles)} of the {b} simulations, chosen by {choice['criterion']}"))
    record = {"x": sweep["x"], "x_label": sweep["label"], "swept": sweep["swept"],
              "chosen_by": choice["criterion"], "chosen": roles,
              "representative": rep,
              "meaning": "the simulations batch_summary.png marks and fc_batch.png shows; "
                         "bold_traces.png and fc_simulated.png (fc_vs_empirical.png) show the "
                         "representative (the best FC r with --demo, else simulation 0)"}
    return figures, record


def run_simulate(args) -> int:
    """``rww simulate``: see :func:`add_simulate_parser`. Steps: check the options, build the
    model, simulate in chunks, score (FC; with ``--demo`` against the data), write bold.npz,
    the figures and summary.json, print one line."""
    import numpy as np
    import torch

    from .. import __version__
    from .. import objectives as obj
    from ..params import get_preset

    tick = time.perf_counter()
    _check_arguments(args)
    seed_drawn = args.seed is None
    if seed_drawn:
        from ..noise import draw_seed
        args.seed = draw_seed()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    device = _check_device(args.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    model, backend, labels, connectome, demo = _build_model(args, preset, device, dtype)
    n_regions, spt = model.n_nodes, model.steps_per_tr
    if args.trs is not None:
        n_trs = args.trs
    else:
        duration = DEFAULT_DURATION_S if args.duration is None else args.duration
        n_trs = max(1, math.ceil(duration / model.tr - 1e-9))
    burn = args.burn_in
    total = burn + n_trs
    chunk = args.chunk_trs or max(1, math.ceil(total / 50))
    load_s = time.perf_counter() - tick

    tick = time.perf_counter()
    bold, rate = _simulate_in_chunks(model, args, total, burn, chunk)   # (B, n_trs, N), (B, N) Hz
    simulate_s = time.perf_counter() - tick

    tick = time.perf_counter()
    from ..plausibility import check as plausibility

    warnings = plausibility(model, rate)
    sim_fc = None
    if n_trs >= 2:
        try:
            sim_fc = obj.fc(bold.double())                        # (B, N, N)
        except ValueError as err:
            warnings.append(f"FC not computed: {_one_line(err)}")
    else:
        warnings.append("FC not computed: fewer than 2 TRs")
    demo_r = demo_scores = None
    if demo is not None and sim_fc is not None:
        demo_r = obj.fc_correlation(sim_fc, demo.fc)              # (B,)
        demo_scores = _demo_scores(bold, demo, model.tr, warnings)
    parameters, bifurcation = _parameters_record(model, dtype)
    metadata = {
        "rww_version": __version__, "preset": preset.name, "n_regions": n_regions,
        "batch": model.batch, "tr_s": model.tr, "dt": model.dt,
        "dt_unit": "ms" if preset.code == 0 else "TR units (s), the paper's convention",
        "steps_per_tr": spt, "n_trs": n_trs, "burn_in_trs": burn, "seed": args.seed,
        "seed_drawn": seed_drawn,
        "backend": {"requested": args.backend, "used": backend}, "device": str(device),
        "dtype": args.dtype, "chunk_trs": chunk, "connectome": connectome,
        "parameters": parameters, "haemodynamics": model.haemo,
        "fic": None if model.fic_target is None else {
            "target_hz": _tolist(model.fic_target), "g_relative": model.g_relative,
            "method": "analytic (Deco et al. 2014; Demirtas et al. 2019)"},
        "bifurcation": bifurcation,
    }
    os.makedirs(args.out, exist_ok=True)
    arrays = {"bold": bold.numpy(), "tr": np.float64(model.tr),
              "time_s": np.arange(1, n_trs + 1) * model.tr,
              "rate_E_mean": rate.numpy(), "metadata": np.array(json.dumps(metadata))}
    if sim_fc is not None:
        arrays["fc"] = sim_fc.numpy()
    if labels is not None:
        arrays["labels"] = np.array([str(s) for s in labels])
    bold_path = os.path.join(args.out, "bold.npz")
    np.savez_compressed(bold_path, **arrays)
    analysis_s = time.perf_counter() - tick

    tick = time.perf_counter()
    figures, batch_figures = _write_figures(args, model, preset, bold, sim_fc, demo, labels,
                                            rate, demo_r, demo_scores, bifurcation)
    figures_s = time.perf_counter() - tick

    lower = obj.lower_triangle(sim_fc) if sim_fc is not None else None
    simulated_s = total * model.tr
    summary = dict(metadata)
    summary.update({
        "command": "rww " + shlex.join(getattr(args, "argv", [])),
        "duration_s": n_trs * model.tr, "simulated_s": simulated_s,
        "firing_rate_E_hz": {"mean": _finite(rate.mean()),
                             "per_simulation": [_finite(v) for v in rate.mean(1)],
                             "min_region": _finite(rate.min()), "max_region": _finite(rate.max())},
        "bold": {"shape": list(bold.shape), "mean": _finite(bold.double().mean()),
                 "std": _finite(bold.double().std()) if bold.numel() > 1 else None,
                 "min": _finite(bold.min()), "max": _finite(bold.max())},
        "fc": None if lower is None else {
            "mean_off_diagonal": [_finite(v) for v in lower.mean(-1)]},
        "fc_correlation_with_demo": None if demo_r is None else {
            "per_simulation": [_finite(v) for v in demo_r], "mean": _finite(demo_r.mean()),
            "empirical": "HCP Schaefer-100 group FC, group-train706 (embedded)"},
        "scores_with_demo": demo_scores,
        "timings": {"load_s": load_s, "simulate_s": simulate_s, "analysis_s": analysis_s,
                    "figures_s": figures_s,
                    "total_s": load_s + simulate_s + analysis_s + figures_s,
                    "simulated_s_per_wall_s": _finite(simulated_s * model.batch / simulate_s)
                    if simulate_s > 0 else None,
                    "steps_per_s": _finite(total * spt * model.batch / simulate_s)
                    if simulate_s > 0 else None},
        "outputs": {"bold": bold_path, "figures": figures},
        "batch_figures": batch_figures,
        "warnings": warnings,
    })
    summary_path = os.path.join(args.out, "summary.json")
    with open(summary_path, "w") as fh:
        json.dump(summary, fh, indent=1, allow_nan=False)
    line = (f"simulated {model.batch} x {n_trs} TRs x {n_regions} regions "
            f"({simulated_s:g} s incl. {burn} burn-in TRs) in {simulate_s:.2f} s on {backend}; "
            f"mean r_E {summary['firing_rate_E_hz']['mean']:.3g} Hz")
    if bifurcation is not None:
        def mean(values):                       # None marks a NaN/inf (no crossing found)
            finite = [v for v in values if v is not None]
            return sum(finite) / len(finite) if finite else float("nan")
        line += (f"; G/G_c {mean(bifurcation['G_over_Gc']):.3f} "
                 f"(G_c {mean(bifurcation['G_c']):.4g})")
    if demo_r is not None:
        line += f"; FC r with the demo FC {float(demo_r.mean()):.3f}"
    if demo_scores and demo_scores.get("fcd_ks_mean") is not None:
        line += f", FCD KS {demo_scores['fcd_ks_mean']:.3f}"
    print(line)
    print(f"wrote {bold_path}, {summary_path}" + "".join(f", {f}" for f in figures))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0

