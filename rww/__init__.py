"""rww: differentiable, kernel-fused simulation of connectome-based Reduced Wong-Wang networks
with Balloon-Windkessel BOLD, for fitting whole-brain models to fMRI with PyTorch optimizers."""

from .errors import SimulationDiverged
from .model import RWWBold, initial_state
from .objectives import fc, fc_correlation, fcd
from .ops.reference import reference_scan
from .ops.scan import rww_scan
from .ops.spec import RECORDABLE, STATE_NAMES, ScanSpec
from .params import PARAM_NAMES, PRESETS, get_preset, pack_parameters

__version__ = "0.2.0.dev0"

# Submodules loaded on first use, so that ``import rww`` stays light and ``rww.data.load_demo()``
# works without a separate ``import rww.data``.
_LAZY_SUBMODULES = ("cohort", "data", "delays", "distributed", "evaluate", "explore", "fic",
                    "figures", "fit", "linear", "linear_fit", "plausibility", "recipe", "scoring",
                    "search", "stability")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'rww' has no attribute {name!r}")

__all__ = [
    "RWWBold", "initial_state", "rww_scan", "reference_scan", "ScanSpec", "STATE_NAMES",
    "RECORDABLE", "PARAM_NAMES", "PRESETS", "get_preset", "pack_parameters", "fc", "fcd",
    "fc_correlation", "SimulationDiverged", "__version__",
]
