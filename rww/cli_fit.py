"""``rww fit``: fit a model to an FC matrix, BOLD time series or the embedded demo dataset.

Registered into the ``rww`` command line by :mod:`rww.cli` (``add_parser`` / ``run``).
"""

from __future__ import annotations

import json
import os
import time

import torch

DEMO_DEFAULTS = dict(preset="griffiths2022", learn="G,w_EE,w_IE,w_EI", epochs=3, window_trs=20,
                     n_trs=1200, lr=0.01, weights="fc_log=1,bifurcation=1,entropy=1")


def add_parser(subparsers):
    """Add the ``fit`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "fit", help="fit model parameters to empirical FC / BOLD",
        description="Fit the learnable parameters of an RWW + Balloon model with Adam. With --demo, "
                    "fits the embedded HCP Schaefer-100 training-group FC with the paper's setting "
                    "(griffiths2022, 20-TR windows) and reports FC r on the held-out halves of the "
                    "embedded subject's scan when present.")
    p.add_argument("connectome", nargs="?", help="structural connectivity file (.npy/.npz/.csv/.txt/.mat)")
    p.add_argument("--demo", action="store_true", help="use the embedded dataset (SC and target FC)")
    p.add_argument("--fc", help="target FC file (N x N)")
    p.add_argument("--bold", help="target BOLD file (time x regions unless --layout says otherwise)")
    p.add_argument("--layout", choices=["time-regions", "regions-time"], help="layout of --bold")
    p.add_argument("--preset", default=None, help="deco2014 or griffiths2022 (demo: griffiths2022)")
    p.add_argument("--learn", default=None, help="comma-separated parameters to fit (default G,w_EE,w_IE,w_EI)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="initial/fixed parameter value (repeatable)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--window-trs", type=int, default=None, help="TRs per window; 0 = full-length BPTT")
    p.add_argument("--n-trs", type=int, default=None, help="TRs simulated per epoch")
    p.add_argument("--burn-in", type=int, default=10, help="TRs simulated without gradient first")
    p.add_argument("--realisations", type=int, default=1, help="noise realisations per step (batch)")
    p.add_argument("--weights", default=None, help="loss weights, e.g. fc_corr=1,fcd=0.5")
    p.add_argument("--tr", type=float, default=None, help="repetition time [s]")
    p.add_argument("--dt", type=float, default=None, help="integration step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="rww-fit", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/fit.ckpt")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run)
    return p


def _parse_pairs(text: str, what: str) -> dict:
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


def run(args) -> int:
    """Run ``rww fit``; returns the exit code. Errors propagate as exceptions for the CLI to
    report in one line."""
    import rww
    from rww import objectives as obj
    from rww import data as rdata
    from rww.fit import FitConfig, FitTarget, evaluate, fit

    settings = dict(DEMO_DEFAULTS) if args.demo else dict(preset="deco2014", learn="G", epochs=50,
                                                          window_trs=20, n_trs=None, lr=0.01,
                                                          weights="fc_corr=1")
    for key in ("preset", "learn", "epochs", "window_trs", "n_trs", "lr", "weights"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    held_out = None
    if args.demo:
        demo = rdata.load_demo()
        sc, target_fc = demo.sc, demo.fc
        bold = None
        if demo.subject_bold:                     # held-out check: a subject's second half
            first = next(iter(demo.subject_bold.values()))
            held_out = first[first.shape[0] // 2:]
    else:
        if not args.connectome:
            raise ValueError("connectome: give a structural connectivity file, or --demo")
        sc = rdata.load_connectome(args.connectome)
        bold = rdata.load_bold(args.bold, n_regions=sc.shape[0], layout=args.layout) if args.bold else None
        target_fc = rdata.load_fc(args.fc) if args.fc else None
        if bold is None and target_fc is None:
            raise ValueError("target: give --fc or --bold (or --demo)")
    sc = torch.as_tensor(sc, dtype=torch.float32)
    preset = settings["preset"]
    if preset == "deco2014":
        sc = sc / sc.sum(1).mean()               # deco2014 expects a normalised SC
    params = {k: v for k, v in _parse_pairs(",".join(args.param), "--param").items()}
    learn = [s.strip() for s in settings["learn"].split(",") if s.strip()]
    kwargs = dict(preset=preset, batch=args.realisations, learn=learn, backend=args.backend,
                  device=args.device)
    if args.tr is not None:
        kwargs["tr"] = args.tr
    if args.dt is not None:
        kwargs["dt"] = args.dt
    if preset == "deco2014" and "G" in learn and "G" not in params:
        params["G"] = 0.5                         # deco2014's default G = 0 cannot start a softplus
    model = rww.RWWBold(sc, **kwargs, **params)
    window = settings["window_trs"] or None
    config = FitConfig(epochs=int(settings["epochs"]), lr=float(settings["lr"]), window_trs=window,
                       n_trs=settings["n_trs"], burn_in_trs=args.burn_in, seed=args.seed,
                       weights=_parse_pairs(settings["weights"], "--weights"))
    target = FitTarget(fc=target_fc, bold=bold)
    os.makedirs(args.out, exist_ok=True)
    tick = time.perf_counter()
    result = fit(model, target, config, checkpoint=os.path.join(args.out, "fit.ckpt"),
                 resume=args.resume, progress=not args.no_progress)
    seconds = time.perf_counter() - tick
    result.save(os.path.join(args.out, "fit"))
    target_fc_t = target.validate(model.n_nodes, torch.float32, "cpu").fc
    summary = {"preset": preset, "learned": {k: v.tolist() for k, v in result.params.items()},
               "fc_r_train": float(obj.fc_correlation(result.fc.cpu(), target_fc_t)),
               "epochs": config.epochs, "seconds": seconds, "backend": args.backend,
               "model": repr(model)}
    if held_out is not None:
        held_fc = obj.fc(torch.as_tensor(held_out, dtype=torch.float32))
        summary["held_out"] = evaluate(model, held_fc, n_trs=held_out.shape[0], seed=10_000 + args.seed)
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    try:
        from rww import figures
        figures.fc_comparison(target_fc_t, result.fc.cpu(), os.path.join(args.out, "fc.png"))
        figures.history(result.history, os.path.join(args.out, "history.png"))
    except (ImportError, AttributeError) as err:
        summary["figures"] = f"not written: {err}"
    print(json.dumps({k: summary[k] for k in ("fc_r_train", "learned", "seconds")}))
    return 0
