"""Helpers shared by the example scripts (run as ``python examples/<script>.py``, so this folder
is on the import path): the provenance every recorded result carries."""

from __future__ import annotations

import os
import subprocess


def git_revision() -> dict:
    """``{"revision": HEAD's hash, "dirty": uncommitted changes present}`` of this repository
    (``None`` values outside a git checkout)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"revision": None, "dirty": None}
    return {"revision": rev, "dirty": dirty}


def replot(path: str, plot) -> dict:
    """Redraw the figure of a recorded results file: ``plot(results, png)`` with ``png`` next to
    ``path``. Returns the results."""
    import json
    with open(path) as fh:
        results = json.load(fh)
    fig = os.path.splitext(path)[0] + ".png"
    plot(results, fig)
    print(f"wrote {fig}")
    return results
