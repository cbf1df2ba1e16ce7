"""``rww info``: versions, backends, devices and the numba compile cache."""

from __future__ import annotations

import argparse
import json
import os
import platform

from .common import _backend_supports, _one_line

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
        module = importlib.import_module("rww.ops.numba.backend")
    except Exception as err:      # an optional backend: any import failure just disables it
        return {"installed": False, "reason": f"CPU (numba) backend not installed: {_one_line(err)}"}
    spec = importlib.util.find_spec("rww.ops.numba.forward")
    info["installed"] = True
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if not folder and spec is not None and spec.origin:
        folder = os.path.join(os.path.dirname(spec.origin), "__pycache__")
    info["cache_dir"] = folder
    if folder and os.path.isdir(folder):
        # numba names cache files "<module>.<function>-<line>.py<version>.nb[ic]".
        kernel_modules = ("forward.", "adjoint.", "step.", "mathfn.")
        names = [n for n in os.listdir(folder) if n.startswith(kernel_modules) and
                 n.endswith((".nbi", ".nbc"))]
        info["cache_index_files"] = sum(n.endswith(".nbi") for n in names)
        info["cache_data_files"] = sum(n.endswith(".nbc") for n in names)
    else:
        info["cache_index_files"] = info["cache_data_files"] = 0
    if warmup:
        if not callable(getattr(module, "warmup", None)):
            info["warmup_s"] = None
            info["warmup"] = "rww.ops.numba.backend has no warmup() function"
        else:
            info["warmup_s"] = float(module.warmup())
    return info


def collect_info(warmup: bool = False) -> dict:
    """Everything ``rww info`` reports, as a JSON-serialisable dict."""
    import torch

    from .. import __version__
    from ..ops.scan import BACKENDS, auto_backend_name, backend_available

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
