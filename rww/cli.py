"""The ``rww`` command line.

    rww simulate CONNECTOME|--demo [options]   simulate BOLD, write bold.npz, summary.json, PNGs
    rww info [--json] [--warmup]               versions, backends, devices, numba compile cache
    rww fit ...                                (from :mod:`rww.cli_fit`, see COMMANDS below)

Every command has ``--help``. Errors end the command with exit status 1 and one line on stderr,
``rww <command>: error: <what went wrong>``; ``--debug`` prints the traceback as well. Usage
errors exit with status 2 (argparse), an interrupt with 130.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shlex
import sys
import time

# ------------------------------------------------------------------------------------------------
# Subcommands contributed by other modules (the place to register one).
#
# Each entry maps a command name to a module exposing ``add_parser(subparsers)``, which adds that
# subcommand's parser and sets its ``handler`` default: a function ``handler(args) -> int`` (the
# exit status) that raises ValueError / TypeError / OSError / RuntimeError on errors, which
# :func:`main` reports in one line. Registering a command is one line here. A module that fails
# to import still gets its command name, whose handler then reports the import error.
# ------------------------------------------------------------------------------------------------
COMMANDS: dict[str, str] = {
    "fit": "rww.cli_fit",
}

DEFAULT_DURATION_S = 60.0


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------

def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _finite(x):
    """A float for JSON, or None for NaN/inf (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _tolist(value):
    """Tensors, lists and floats as JSON-safe nested lists of floats (NaN/inf -> None)."""
    import torch
    if torch.is_tensor(value):
        value = value.detach().cpu().tolist()
    if isinstance(value, (list, tuple)):
        return [_tolist(v) for v in value]
    if isinstance(value, float):
        return _finite(value)
    return value


def _add_debug(parser: argparse.ArgumentParser):
    try:
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="print the full traceback on errors")
    except argparse.ArgumentError:
        pass                                  # the command defines its own --debug


# ------------------------------------------------------------------------------------------------
# rww simulate
# ------------------------------------------------------------------------------------------------

def add_connectome_arguments(p: argparse.ArgumentParser, demo_help: str):
    """The connectome options shared by ``rww simulate`` and ``rww fit`` (read back by
    :func:`load_connectome_from_args`)."""
    src = p.add_argument_group("connectome")
    src.add_argument("connectome", nargs="?",
                     help="structural connectivity file (.npy/.npz/.csv/.tsv/.txt/.mat; "
                          "FILE:NAME picks an array in .npz/.mat)")
    src.add_argument("--demo", action="store_true", help=demo_help)
    src.add_argument("--key", help="array / variable name inside an .npz or .mat file")
    src.add_argument("--normalise", default="auto",
                     choices=("auto", "none", "max", "frobenius", "mean_row_sum"),
                     help="SC normalisation (default auto: mean_row_sum for deco2014; none for "
                          "griffiths2022, whose model normalises the SC itself)")
    src.add_argument("--symmetrise", action="store_true", help="use (W + W^T)/2")
    src.add_argument("--zero-diagonal", action="store_true", help="set self-connections to 0")
    src.add_argument("--log1p", action="store_true", help="use log(1 + W) (before normalising)")
    return src


def load_connectome_from_args(args, preset, include_bold: bool = False):
    """Load the connectome the options of :func:`add_connectome_arguments` name.

    Returns:
        ``(sc, labels, metadata, demo)``: ``sc`` a float64 ``(N, N)`` tensor, preprocessed as
        the options say (``--normalise auto``: mean row sum 1 for ``deco2014``, none for
        ``griffiths2022``, whose model normalises the SC itself); ``labels`` region names or None;
        ``metadata`` a JSON-able description (source, preprocessing); ``demo`` the
        :class:`rww.data.DemoData` with ``--demo`` (subject BOLD loaded if ``include_bold``),
        else None.
    """
    from . import data as rdata
    normalise = args.normalise
    if normalise == "auto":
        normalise = "mean_row_sum" if preset.code == 0 else None
    elif normalise == "none":
        normalise = None
    prep = dict(symmetrise=args.symmetrise, zero_diagonal=args.zero_diagonal, log1p=args.log1p,
                normalise=normalise)
    if args.demo and args.connectome:
        raise ValueError("give a connectome file or --demo, not both")
    if args.demo:
        demo = rdata.load_demo(include_bold=include_bold, **prep)
        sc, labels = demo.sc, demo.labels
        metadata = {"source": "embedded demo: HCP-YA Schaefer-100 group SC (group-train706), "
                              "cuBNM example data", "n_regions": demo.n_regions,
                    "preprocessing": demo.metadata["preprocessing"],
                    "licence": demo.metadata["licence"], "citation": demo.metadata["citation"]}
        return sc, labels, metadata, demo
    if args.connectome:
        sc, metadata = rdata.load_connectome(args.connectome, args.key, return_metadata=True, **prep)
        return sc, metadata.pop("labels", None), metadata, None
    raise ValueError("connectome: give a structural connectivity file, or --demo for the "
                     "embedded HCP Schaefer-100 SC")


def add_simulate_parser(subparsers) -> argparse.ArgumentParser:
    from .ops.scan import BACKENDS
    from .params import PRESETS
    p = subparsers.add_parser(
        "simulate", help="simulate BOLD on a connectome",
        description="Simulate an RWW + Balloon-Windkessel network on a connectome and write "
                    "OUT/bold.npz (BOLD (batch, TRs, regions), TR, time, mean firing rates, FC, "
                    "metadata), OUT/summary.json (parameters, timings, firing rate, FC "
                    "statistics; with --demo the FC correlation with the embedded empirical "
                    "FC) and PNG figures.",
        epilog="Examples: rww simulate --demo --param G=0.8 --duration 120 --out run1; "
               "rww simulate sc.csv --normalise max --trs 200 --batch 4 --seed 1")
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
    run.add_argument("--batch", type=int, default=1, help="simulations run together (default 1)")
    run.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    run.add_argument("--backend", default="auto", choices=BACKENDS,
                     help="auto (numba on CPU when installed, triton on CUDA), torch, "
                          "torch-checkpoint, numba, triton")
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    run.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    run.add_argument("--chunk-trs", type=int, metavar="N",
                     help="TRs per call, continuing state and step index (default: about 1/50 "
                          "of the run); the progress bar advances per chunk")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")

    out = p.add_argument_group("output")
    out.add_argument("--out", default="rww-simulate", metavar="DIR",
                     help="output folder (created; files in it are overwritten)")
    out.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_simulate)
    return p


def add_model_options(group):
    """The model options shared by ``rww simulate`` and ``rww fit``: FIC, G relative to G_c and
    the haemodynamic model."""
    from .params import HAEMO_MODELS
    group.add_argument("--fic", nargs="?", type=float, const=3.0, default=None, metavar="HZ",
                       help="feedback inhibition control (deco2014): set w_IE per region so every "
                            "excitatory rate is HZ (default 3) at the fixed point (Deco et al. "
                            "2014, analytic form of Demirtas et al. 2019)")
    group.add_argument("--no-fic", action="store_true",
                       help="switch off FIC where a parameter file or --demo turns it on")
    group.add_argument("--g-relative", action="store_true",
                       help="read G as a fraction of the critical coupling G_c where the FIC "
                            "fixed point loses stability (needs --fic)")
    group.add_argument("--haemo", choices=sorted(HAEMO_MODELS), default=None,
                       help="haemodynamic (Balloon-Windkessel) model (default: the preset's; "
                            "deco2014: Deco et al. 2014's time constants; friston2003 is rww "
                            "0.1.0's)")


# Keys of a parameter file that are model options rather than parameter values.
PARAMS_FILE_OPTIONS = ("fic", "g_relative", "haemo", "preset", "dt", "tr", "note", "record")


def model_options(args, file_options: dict) -> dict:
    """``fic``, ``g_relative`` and ``haemo`` keyword arguments of :class:`rww.RWWBold` from the
    command line, falling back to a parameter file's entries."""
    fic = file_options.get("fic")
    if args.fic is not None:
        fic = args.fic
    if getattr(args, "no_fic", False):
        fic = None
    g_relative = bool(args.g_relative or file_options.get("g_relative", False))
    from_file = "G" in file_options.get("_file_parameters", set())
    given = any(item.split("=", 1)[0].strip() == "G" for item in getattr(args, "param", []))
    if args.g_relative and from_file and not given and not file_options.get("g_relative"):
        raise ValueError("--g-relative: the parameter file's G is absolute (its record has "
                         "G/G_c); drop --g-relative, or give the fraction with --param G=...")
    if g_relative and fic is None:
        raise ValueError("--g-relative: G relative to the critical coupling needs --fic (G_c is "
                         "defined at the FIC fixed point)")
    haemo = args.haemo or file_options.get("haemo")
    return {"fic": False if fic is None else float(fic), "g_relative": g_relative,
            "haemo": haemo}


def _parse_value(name: str, text: str):
    parts = [t.strip() for t in str(text).split(",") if t.strip()]
    if not parts:
        raise ValueError(f"--param {name}: empty value")
    try:
        values = [float(t) for t in parts]
    except ValueError:
        raise ValueError(f"--param {name}: {text!r} is not a number or a comma-separated list "
                         "of numbers") from None
    return values[0] if len(values) == 1 else values


def _collect_parameters(args, preset, file_options: dict | None = None) -> dict:
    """Parameter values from --params FILE and --param NAME=VALUE, names validated; the file's
    model options (:data:`PARAMS_FILE_OPTIONS`) go into ``file_options`` when given."""
    import torch
    from .params import canonical_name
    values: dict = {}
    if args.params:
        if not os.path.exists(args.params):
            raise FileNotFoundError(f"parameter file not found: {args.params}")
        try:
            with open(args.params) as fh:
                loaded = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{args.params}: not valid JSON ({_one_line(err)})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.params}: expected a JSON object of name -> value, got "
                             f"{type(loaded).__name__}")
        for name, value in loaded.items():
            if name in PARAMS_FILE_OPTIONS:
                if file_options is not None:
                    file_options[name] = value
                continue
            if file_options is not None:
                file_options.setdefault("_file_parameters", set()).add(name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) or (
                isinstance(value, list) and value and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
            if not ok:
                raise ValueError(f"{args.params}: parameter {name} must be a number or a list of "
                                 f"numbers, got {value!r}")
            values[name] = value
    for item in args.param:
        if "=" not in item:
            raise ValueError(f"--param: expected NAME=VALUE, got {item!r}")
        name, text = (s.strip() for s in item.split("=", 1))
        values[name] = _parse_value(name, text)
    out = {}
    for name, value in values.items():
        if name != "sigma_out":
            canonical_name(name, preset)          # raises naming the known parameters
        out[name] = torch.tensor(value, dtype=torch.float64) if isinstance(value, list) else float(value)
    return out


def _demo_scores(bold, demo, tr: float, warnings: list):
    """Scores of simulated BOLD ``(B, T, N)`` against the embedded demo data (FC r over all and
    intra-hemispheric edges, FC level, FCD KS in the demo's convention), per simulation, or None
    (with a warning) when the run cannot be compared."""
    from . import objectives as obj
    from .evaluate import score_batch
    from .fit import FitTarget
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


def _check_device(name: str):
    import torch
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device: {_one_line(err)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (torch "
                         f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use "
                         "--device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda devices are supported")
    return device


def _backend_supports(name: str, device) -> tuple[bool, str]:
    """Whether backend ``name`` can simulate tensors on ``device`` here, and if not why."""
    from .ops.scan import backend_available, get_backend
    ok, why = backend_available(name)
    if not ok:
        return False, why
    try:
        get_backend(name, device)
    except (ValueError, RuntimeError) as err:
        return False, _one_line(err)
    return True, ""


def _resolve_backend(name: str, device) -> str:
    from .ops.scan import auto_backend_name
    used = auto_backend_name(device) if name == "auto" else name
    ok, why = _backend_supports(used, device)
    if not ok:
        raise ValueError(f"--backend {used}: cannot run on {device} here ({why}); use "
                         "--backend torch, or see `rww info`")
    return used


def run_simulate(args) -> int:
    """``rww simulate``: see :func:`add_simulate_parser`."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from . import __version__
    from . import data as rdata
    from . import objectives as obj
    from .errors import SimulationDiverged
    from .model import RWWBold
    from .params import PARAM_INDEX, PARAM_NAMES, get_preset

    tick = time.perf_counter()
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    for flag, value, low in (("--batch", args.batch, 1), ("--burn-in", args.burn_in, 0),
                             ("--trs", args.trs, 1), ("--chunk-trs", args.chunk_trs, 1)):
        if value is not None and value < low:
            raise ValueError(f"{flag}: must be >= {low}, got {value}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise ValueError(f"--duration: must be a positive number of seconds, got {args.duration}")
    device = _check_device(args.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32

    sc, labels, connectome, demo = load_connectome_from_args(args, preset)
    file_options: dict = {}
    if demo is not None and not args.params and not args.param:
        # A newcomer's first simulation: the demo's fitted working point (rww fit --demo).
        args.params = str(rdata.DEMO_FITTED_PARAMS)
    params = _collect_parameters(args, preset, file_options)
    options = model_options(args, file_options)
    sigma_out = params.pop("sigma_out", None)
    backend = _resolve_backend(args.backend, device)
    model = RWWBold(sc, preset=args.preset, dt=args.dt, tr=args.tr, batch=args.batch,
                    backend=backend, dtype=dtype, device=device, sigma_out=sigma_out,
                    **options, **params)
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
    kept, rate_sum = [], torch.zeros(model.batch, n_regions, dtype=torch.float64)
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
            state, t0 = result.state, t0 + k * spt
            first = max(0, burn - done)           # the burn-in may end inside this chunk
            if first < k:
                kept.append(result.bold[:, first:].detach().cpu())
                rate_sum += result.records["r_E"][:, first:].detach().cpu().double().sum(1)
            done += k
            bar.update(k)
    simulate_s = time.perf_counter() - tick

    tick = time.perf_counter()
    bold = torch.cat(kept, dim=1)                                 # (B, n_trs, N)
    rate = rate_sum / n_trs                                       # (B, N) Hz
    warnings = []
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
    def param_value(value):
        # float32 values as the shortest decimal that maps to the same float32 (0.382, not
        # 0.38199999928474426): exact, and what the user typed.
        if dtype == torch.float32:
            value = np.vectorize(lambda v: float(str(np.float32(v))))(value.detach().cpu().numpy())
        return _tolist(torch.as_tensor(value))

    parameters = {name: param_value(getattr(model, name)) for name in PARAM_NAMES}
    parameters["sigma_out"] = param_value(model.sigma_out)
    bifurcation = None
    if model.fic_target is not None:
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
    metadata = {
        "rww_version": __version__, "preset": preset.name, "n_regions": n_regions,
        "batch": model.batch, "tr_s": model.tr, "dt": model.dt,
        "dt_unit": "ms" if preset.code == 0 else "TR units (s), the paper's convention",
        "steps_per_tr": spt, "n_trs": n_trs, "burn_in_trs": burn, "seed": args.seed,
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
    figures = []
    if not args.no_figures:
        from . import figures as fig
        figures.append(fig.bold_traces(bold[0], os.path.join(args.out, "bold_traces.png"),
                                       tr=model.tr, labels=labels,
                                       title=f"simulation 0 of {model.batch} ({preset.name})"))
        if sim_fc is not None:
            figures.append(fig.fc_matrix(sim_fc[0], os.path.join(args.out, "fc_simulated.png"),
                                         title="simulated FC (simulation 0)", labels=labels))
        if demo_r is not None:
            figures.append(fig.fc_comparison(
                demo.fc, sim_fc[0], os.path.join(args.out, "fc_vs_empirical.png"),
                title="HCP Schaefer-100 group FC (group-train706) vs simulation 0"))
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
        "warnings": warnings,
    })
    summary_path = os.path.join(args.out, "summary.json")
    with open(summary_path, "w") as fh:
        json.dump(summary, fh, indent=1, allow_nan=False)
    line = (f"simulated {model.batch} x {n_trs} TRs x {n_regions} regions "
            f"({simulated_s:g} s incl. {burn} burn-in TRs) in {simulate_s:.2f} s on {backend}; "
            f"mean r_E {summary['firing_rate_E_hz']['mean']:.3g} Hz")
    if bifurcation is not None:
        line += f"; G/G_c {float(ratio.mean()):.3f} (G_c {float(g_c.mean()):.4g})"
    if demo_r is not None:
        line += f"; FC r with the demo FC {float(demo_r.mean()):.3f}"
    if demo_scores and demo_scores.get("fcd_ks_mean") is not None:
        line += f", FCD KS {demo_scores['fcd_ks_mean']:.3f}"
    print(line)
    print(f"wrote {bold_path}, {summary_path}" + "".join(f", {f}" for f in figures))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------
# rww info
# ------------------------------------------------------------------------------------------------

def add_info_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info", help="versions, backends, devices and the numba compile cache",
        description="Report the versions of rww and its dependencies, which simulation backends "
                    "can run here (and why not), the devices torch sees, and the numba CPU "
                    "kernels' compile cache.")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--warmup", action="store_true",
                   help="compile (or load from the cache) the numba CPU kernels and report the time")
    p.set_defaults(handler=run_info)
    return p


def _version(dist: str):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _numba_cache(warmup: bool) -> dict:
    import importlib.util
    info: dict = {}
    try:
        module = importlib.import_module("rww.ops.numba_backend")
    except Exception as err:      # an optional backend: any import failure just disables it
        return {"installed": False, "reason": f"CPU (numba) backend not installed: {_one_line(err)}"}
    spec = importlib.util.find_spec("rww.ops.numba_kernels")
    info["installed"] = True
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if not folder and spec is not None and spec.origin:
        folder = os.path.join(os.path.dirname(spec.origin), "__pycache__")
    info["cache_dir"] = folder
    if folder and os.path.isdir(folder):
        names = [n for n in os.listdir(folder) if n.startswith("numba_kernels") and
                 n.endswith((".nbi", ".nbc"))]
        info["cache_index_files"] = sum(n.endswith(".nbi") for n in names)
        info["cache_data_files"] = sum(n.endswith(".nbc") for n in names)
    else:
        info["cache_index_files"] = info["cache_data_files"] = 0
    if warmup:
        if not callable(getattr(module, "warmup", None)):
            info["warmup_s"] = None
            info["warmup"] = "rww.ops.numba_backend has no warmup() function"
        else:
            info["warmup_s"] = float(module.warmup())
    return info


def collect_info(warmup: bool = False) -> dict:
    """Everything ``rww info`` reports, as a JSON-serialisable dict."""
    import torch

    from . import __version__
    from .ops.scan import BACKENDS, auto_backend_name, backend_available

    versions = {"rww": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for dist in ("numpy", "scipy", "triton", "numba", "matplotlib", "tqdm"):
        versions[dist] = _version(dist)
    cuda = torch.cuda.is_available()
    backends = {}
    for name in BACKENDS:
        if name == "auto":
            continue
        entry = {}
        try:
            ok, why = backend_available(name)
            entry = {"available": bool(ok), "reason": why or None}
            if ok:
                for device in ("cpu", "cuda") if cuda else ("cpu",):
                    dev_ok, dev_why = _backend_supports(name, device)
                    entry[device] = {"supported": dev_ok, "reason": dev_why or None}
        except Exception as err:      # report, never crash, on a broken optional backend
            entry = {"available": False, "reason": f"{type(err).__name__}: {_one_line(err)}"}
        backends[name] = entry
    devices = {"cuda_available": cuda, "torch_cuda_build": torch.version.cuda,
               "cuda_devices": [], "cpu_count": os.cpu_count(),
               "torch_threads": torch.get_num_threads()}
    if cuda:
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            devices["cuda_devices"].append({"index": i, "name": prop.name,
                                            "memory_gib": round(prop.total_memory / 2**30, 1),
                                            "capability": f"{prop.major}.{prop.minor}"})
    auto = {}
    for device in ("cpu", "cuda"):
        try:
            auto[device] = auto_backend_name(device) if device == "cpu" or cuda else None
        except Exception as err:      # a broken optional backend module
            auto[device] = f"error: {type(err).__name__}: {_one_line(err)}"
    return {"versions": versions, "backends": backends, "auto_backend": auto, "devices": devices,
            "triton_interpret": os.environ.get("TRITON_INTERPRET"),
            "numba_cache": _numba_cache(warmup)}


def format_info(info: dict) -> str:
    """Human-readable text of :func:`collect_info`'s dict."""
    v = info["versions"]
    lines = [f"rww {v['rww']}",
             "versions: " + ", ".join(f"{k} {v[k] or 'not installed'}" for k in v if k != "rww"),
             "backends:"]
    for name, b in info["backends"].items():
        if not b["available"]:
            lines.append(f"  {name:<17}unavailable: {b['reason']}")
            continue
        where = [d for d in ("cpu", "cuda") if b.get(d, {}).get("supported")]
        text = f"  {name:<17}available on {', '.join(where)}" if where else f"  {name:<17}installed"
        for d in ("cpu", "cuda"):
            if d in b and not b[d]["supported"]:
                text += f"; not on {d}: {b[d]['reason']}"
        lines.append(text)
    auto = info["auto_backend"]
    lines.append(f"  auto picks       {auto['cpu']} on cpu" +
                 (f", {auto['cuda']} on cuda" if auto["cuda"] else ""))
    d = info["devices"]
    lines.append("devices:")
    if d["cuda_available"]:
        for dev in d["cuda_devices"]:
            lines.append(f"  cuda:{dev['index']} {dev['name']} ({dev['memory_gib']} GiB, "
                         f"compute capability {dev['capability']})")
    else:
        why = "torch built without CUDA" if not d["torch_cuda_build"] else "no GPU found"
        lines.append(f"  CUDA not available ({why})")
    lines.append(f"  cpu: {d['cpu_count']} cores, torch uses {d['torch_threads']} threads")
    if info.get("triton_interpret") not in (None, "", "0"):
        lines.append(f"  TRITON_INTERPRET={info['triton_interpret']} (Triton kernels run in the interpreter)")
    n = info["numba_cache"]
    lines.append("numba compile cache:")
    if not n.get("installed"):
        lines.append(f"  {n['reason']}")
    else:
        lines.append(f"  {n['cache_dir']}: {n['cache_index_files']} index and "
                     f"{n['cache_data_files']} compiled files")
        if "warmup_s" in n:
            lines.append(f"  warm-up (compile or load every kernel variant): {n['warmup_s']:.2f} s"
                         if n["warmup_s"] is not None else f"  {n['warmup']}")
        else:
            lines.append("  (rww info --warmup compiles or loads the kernels and times it)")
    return "\n".join(lines)


def run_info(args) -> int:
    """``rww info``: see :func:`add_info_parser`."""
    info = collect_info(warmup=args.warmup)
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


# ------------------------------------------------------------------------------------------------
# Parser and entry point
# ------------------------------------------------------------------------------------------------

def _add_unavailable(subparsers, name: str, module: str, err: BaseException):
    reason = f"{module} failed to import ({type(err).__name__}: {_one_line(err)})"
    p = subparsers.add_parser(name, help=f"(unavailable: {reason})", add_help=True)

    def handler(args):
        raise RuntimeError(f"rww {name} is unavailable: {reason}")

    p.set_defaults(handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``rww`` parser: built-in commands, then those of :data:`COMMANDS`."""
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="rww", description="Differentiable Reduced Wong-Wang + Balloon-Windkessel whole-brain "
                                "simulation: simulate BOLD, fit models to fMRI, inspect the setup.")
    parser.add_argument("--version", action="version", version=f"rww {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (add_simulate_parser, add_info_parser):
        _add_debug(add(subparsers))
    for name, module in COMMANDS.items():
        try:
            sub = importlib.import_module(module).add_parser(subparsers)
        except Exception as err:      # a broken extra command must not take the others down
            sub = _add_unavailable(subparsers, name, module, err)
        _add_debug(sub)
    return parser


def main(argv=None) -> int:
    """Run the ``rww`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit
    status (0 success, 1 error, 2 usage error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"rww {args.command}"
    debug = getattr(args, "debug", False)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        if debug:
            import traceback
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        if debug:
            import traceback
            traceback.print_exc()
        print(f"{prog}: internal error: {type(err).__name__}: {_one_line(err)} (rerun with "
              "--debug for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
