"""Storage side of a sweep: its settings (what a resume must match) and their hashes, atomic
writes, the per-batch files in ``OUT/batches/``, the output folder's checks, :class:`SweepResult`
(the table, ``sweep.csv``) and the ``sweep.json`` summary.

Every JSON file here is standard JSON (``allow_nan=False``): numbers that are not finite (inf,
NaN) are written as ``null``, which jq and JavaScript read; see :data:`COLUMN_DOC`."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import uuid
from dataclasses import dataclass, field

import numpy as np
import torch

from ..params import PARAM_DOC
from .figures import FIGURE_FILES
from .scoring import COLUMN_DOC, SweepEvaluator, column_name

__all__ = ["SweepResult", "SweepSettingsError"]

_FORMAT = 1


class SweepSettingsError(ValueError):
    """A sweep folder holds results of other settings; the message names each differing setting
    with both values."""


# ------------------------------------------------------------------------------ settings
def _sha(x) -> str | None:
    if x is None:
        return None
    if torch.is_tensor(x):
        x = x.detach().cpu().to(torch.float64).contiguous().numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()[:16]


def _jsonable(value):
    if torch.is_tensor(value):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _finite(value):
    """``value`` (JSON-able: dicts, lists, numbers...) with every non-finite float (inf, NaN)
    replaced by ``None``: standard JSON (``null``), which jq and JavaScript read."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps(value, **kwargs) -> str:
    """Standard JSON of ``value`` (tensors and arrays as lists, non-finite numbers as null)."""
    return json.dumps(_finite(_jsonable(value)), allow_nan=False, **kwargs)


def _settings(space, ev: SweepEvaluator, method, n, points, seed, values) -> dict:
    from ..ops import scan
    st = ev.target
    backend = scan.auto_backend_name(ev.device) if ev.backend == "auto" else ev.backend
    hem = None if ev.hemispheres is None else torch.as_tensor(ev.hemispheres).tolist()
    s = {
        "format": _FORMAT, "names": space.names,
        "bounds": {k: [float(a), float(b)] for k, (a, b) in space.bounds.items()},
        "log": list(space.log), "method": method, "n": n, "points": points, "design_seed": seed,
        "n_candidates": int(values.shape[0]), "design_sha256": _sha(values),
        "batch_size": ev.batch_size, "score_chunk": ev.score_chunk, "dt_ms": ev.dt,
        "tr_s": ev.tr, "n_trs": ev.n_trs,
        "burn_in_trs": ev.burn_in_trs, "noise_seed": ev.seed, "fixed": _jsonable(ev.fixed),
        "fic_Hz": ev.fic, "maps_sha256": {k: _sha(v) for k, v in ev.maps.items()},
        "hemispheres": hem, "backend": backend, "device": ev.device.type,
        "dtype": str(ev.dtype).replace("torch.", ""),
        "haemo": _jsonable(ev.haemo), "rate_band_Hz": list(ev.rate_band),
        "rate_weight": ev.rate_weight, "n_regions": ev.n_nodes, "sc_sha256": _sha(ev.sc),
        "target_fc_sha256": _sha(st.fc), "target_fcd_all_sha256": _sha(st.fcd_all),
        "target_fcd_nonoverlap_sha256": _sha(st.fcd_nonoverlap),
        "fcd_window_trs": st.fcd_window, "fcd_step_trs": st.fcd_step,
        "fcd_convention": st.convention,
    }
    return json.loads(_dumps(s))              # as read back from a file


def _settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: dict, new: dict, where=("there", "now")) -> list:
    """``"name (old where[0], new where[1])"`` for each setting that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            a, b = (json.dumps(d.get(key, "<absent>")) for d in (old, new))
            a, b = (v if len(v) <= 60 else v[:57] + "..." for v in (a, b))
            out.append(f"{key} ({a} {where[0]}, {b} {where[1]})")
    return out


def _rank_differences(everyone: list) -> str | None:
    """Rank 0: given every rank's ``(settings key, settings)``, a message naming the ranks whose
    settings differ from rank 0's and how, or None when all agree."""
    key0, settings0 = everyone[0]
    bad = [r for r, (key, _) in enumerate(everyone) if key != key0]
    if not bad:
        return None
    detail = "; ".join(f"rank {r}: " + ", ".join(_differences(settings0, everyone[r][1],
                                                              ("on rank 0", f"on rank {r}")))
                       for r in bad)
    return (f"the sweep's settings differ between ranks: rank(s) {', '.join(map(str, bad))} "
            f"differ from rank 0 ({detail}); every rank must run the same sweep")


def _atomic_write(path: str, text: str):
    tmp = f"{path}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


_BATCH_FILE = re.compile(r"^batch_(\d{6,})\.json$")


def _batch_path(out: str, k: int) -> str:
    return os.path.join(out, "batches", f"batch_{k:06d}.json")


def _finished_batches(out: str, key: str, n_batches: int) -> list:
    folder = os.path.join(out, "batches")
    done = []
    if not os.path.isdir(folder):
        return done
    for name in os.listdir(folder):
        match = _BATCH_FILE.match(name)
        if not match or int(match.group(1)) >= n_batches:
            continue
        try:
            with open(os.path.join(folder, name)) as fh:
                record = json.load(fh)
        except (OSError, json.JSONDecodeError):
            continue                                # not a finished batch: redone
        if record.get("settings_key") == key:
            done.append(int(match.group(1)))
    return sorted(done)


#: Files a finished sweep writes into ``OUT`` (removed with the batches by ``overwrite``).
_OUTPUTS = ("sweep.csv", "sweep.json") + FIGURE_FILES


def _prepare_folder(out: str, settings: dict, overwrite: bool) -> str | None:
    """Rank 0: create or check ``out``; returns an error message or None (an OSError of the
    folder propagates)."""
    os.makedirs(os.path.join(out, "batches"), exist_ok=True)
    path = os.path.join(out, "settings.json")
    if os.path.exists(path):
        try:
            with open(path) as fh:
                old = json.load(fh)
        except (OSError, json.JSONDecodeError) as err:
            old = {"unreadable settings.json": str(err)}
        diff = _differences(old, settings)
        if diff and not overwrite:
            n_done = len([f for f in os.listdir(os.path.join(out, "batches"))
                          if _BATCH_FILE.match(f)])
            return (f"{out} holds a sweep with other settings ({n_done} finished batches): "
                    + "; ".join(diff) + ". Use another output folder, the same settings to "
                    "resume, or overwrite=True (--overwrite) to discard it")
        if diff:
            for name in os.listdir(os.path.join(out, "batches")):
                if _BATCH_FILE.match(name):
                    os.remove(os.path.join(out, "batches", name))
            for name in _OUTPUTS:
                if os.path.exists(os.path.join(out, name)):
                    os.remove(os.path.join(out, name))
    _atomic_write(path, _dumps(settings, indent=1))
    return None


# ------------------------------------------------------------------------------ the result
@dataclass
class SweepResult:
    """Outcome of :func:`sweep`.

    Attributes:
        rows: one dict per candidate in design order (keys: the swept names, then those of
            :data:`COLUMN_DOC`); on ranks other than 0, ``None``. Only finished candidates when
            the sweep stopped early (``complete`` False). Values that are not finite numbers
            (an unscored candidate's loss, no G_c...) are ``None``, as in the batch files'
            standard JSON (``null``), so a resumed table equals an uninterrupted one.
        names: the swept names.
        settings: the settings that a resume must match (see ``OUT/settings.json``).
        complete: every batch finished.
        simulated_batches: batches this call simulated (all ranks).
        reused_batches: finished batches found in ``out`` and not simulated again.
        paths: ``{"csv", "json", "figures": [...]}`` written by rank 0 (empty without ``out`` or
            while incomplete).
        seconds: wall time of this call [s] (up to writing ``sweep.json``, which records this
            same number).
        world_size: ranks that ran this call.
    """

    rows: list | None
    names: list
    settings: dict
    complete: bool
    simulated_batches: list = field(default_factory=list)
    reused_batches: list = field(default_factory=list)
    paths: dict = field(default_factory=dict)
    seconds: float = 0.0
    world_size: int = 1

    @property
    def columns(self) -> list:
        """The table's row keys in column order."""
        return ["candidate", "batch"] + list(self.names) + [c for c in COLUMN_DOC
                                                            if c not in ("candidate", "batch")]

    def column(self, name: str) -> np.ndarray:
        """Values of one row key ``(M,)`` float64 (NaN where missing)."""
        return np.array([np.nan if r.get(name) is None else float(r[name]) for r in self.rows],
                        dtype=np.float64)

    def best(self, k: int = 1) -> list:
        """The ``k`` rows of lowest loss (scored candidates only)."""
        ranked = sorted((r for r in self.rows if r.get("loss") is not None
                         and math.isfinite(r["loss"])), key=lambda r: r["loss"])
        return ranked[:k]

    def to_csv(self, path: str) -> str:
        """Write the table (one row per candidate, header :func:`column_name` of every column:
        units appended), atomically. Floats in full precision (``repr``); missing values and
        those that are not finite numbers (``None`` in :attr:`rows`) empty, never ``inf``/``nan``
        text."""
        import io
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([column_name(c) for c in self.columns])
        for r in self.rows:
            writer.writerow(["" if r.get(c) is None else r[c] for c in self.columns])
        _atomic_write(path, buf.getvalue())
        return path


# ------------------------------------------------------------------------------ the summary
def _write_summary(result: SweepResult, out: str, run_id: str):
    columns = {column_name(c): COLUMN_DOC.get(c) or _searched_doc(c) for c in result.columns}
    summary = {"settings": result.settings, "columns": columns, "run": run_id,
               "world_size": result.world_size, "simulated_batches": result.simulated_batches,
               "reused_batches": result.reused_batches, "seconds": result.seconds,
               "n_scored": sum(1 for r in result.rows if r["status"] == "ok"),
               "best": result.best(1)[0] if result.best(1) else None,
               "noise": "candidate i simulated with noise index i (sim_offset = i, seed = "
                        "settings.noise_seed): independent noise per candidate",
               "paths": result.paths}
    _atomic_write(os.path.join(out, "sweep.json"), _dumps(summary, indent=1))


def _searched_doc(name: str) -> str:
    from ..search import SPECIAL_NAMES
    if name in SPECIAL_NAMES:
        return "swept: " + SPECIAL_NAMES[name]
    if ":" in name:
        param, map_name = name.split(":")
        return (f"swept: coefficient of map {map_name} on {param} (dimensionless; param_i = "
                f"softplus(softplus^-1({param}) + c * map_i))")
    return "swept: " + PARAM_DOC.get(name, name)
