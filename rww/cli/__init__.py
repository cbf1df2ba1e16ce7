"""The ``rww`` command line.

    rww simulate CONNECTOME|--demo [options]   simulate BOLD, write bold.npz, summary.json, PNGs
    rww info [--json] [--warmup]               versions, backends, devices, numba compile cache
    rww fit ...                                (from :mod:`rww.cli.fit`, see COMMANDS below)
    rww explore ...                            (from :mod:`rww.cli.explore`: parameter sweeps)

Every command has ``--help``. Errors end the command with exit status 1 and one line on stderr,
``rww <command>: error: <what went wrong>``; ``--debug`` prints the traceback as well. Usage
errors exit with status 2 (argparse), an interrupt with 130.

Modules: :mod:`.simulate` and :mod:`.info` (built-in commands), :mod:`.fit` and :mod:`.recipe`
(``rww fit``, registered in :data:`COMMANDS`), :mod:`.common` (helpers they share).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .common import _add_debug, _one_line
from .info import add_info_parser
from .simulate import add_simulate_parser


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
    "fit": "rww.cli.fit",
    "explore": "rww.cli.explore",
}



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
    from .. import __version__
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
    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        # Library warnings (precision, data, plausibility) as one line each, like errors.
        print(f"{prog}: warning: {_one_line(message)}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, MemoryError) as err:
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

