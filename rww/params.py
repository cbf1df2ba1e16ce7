"""Model presets, parameter defaults with units, broadcasting and validation.

Two presets (equations and units in ``README.md``, "The model"):

``deco2014``
    The two-population Reduced Wong-Wang model of Deco et al. (2014, J Neurosci 34:7886) with the
    Balloon-Windkessel model as Deco et al.'s own code integrates it (haemodynamic model
    ``"deco2014"`` of :data:`HAEMO_MODELS`: 0.65 s and 0.41 s are *time constants*). Neural time in
    milliseconds, haemodynamic time in seconds: the Balloon advances by ``dt / 1000`` seconds per
    neural step. rww 0.1.0 used Friston et al. 2003's *rates* (0.65 and 0.41 s^-1) here; they
    remain available as ``haemo="friston2003"``.

``griffiths2022``
    The seed paper's own variant (GriffithsLab/whobpyt, class ``RNNWWD``), reproduced with its
    quirks: squashed currents ``tanh(relu(.))``, gains entering as ``0.001 + relu(.)``, a
    Laplacian coupling, noise ``(0.02 + relu(sigma))``, states squashed after every step, a
    Balloon with ``x / tau_s`` and ``(f - 1) / tau_f`` (so ``kappa = 1/0.65``,
    ``gamma_h = 1/0.41``), BOLD scaled by ``100 / rho``, and one step size ``dt`` used for both the
    neural (ms-valued constants) and haemodynamic equations.

Every neural parameter may be a Python number, a 0-d tensor, a per-region ``(N,)``, a
per-simulation ``(B,)`` or a full ``(B, N)`` tensor; :func:`pack_parameters` broadcasts them into
one ``(P, Bp, Np)`` table (``Bp`` in ``{1, B}``, ``Np`` in ``{1, N}``) that every backend reads.
Haemodynamic constants are plain floats shared by all nodes and simulations (not learnable); named
sets are in :data:`HAEMO_MODELS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# Order of the rows of the packed parameter table. Every backend (reference, Triton, CPU) reads
# parameters by these indices; changing the order is a contract change.
PARAM_NAMES: tuple[str, ...] = (
    "G", "w_EE", "w_IE", "w_EI", "J_NMDA", "I_0", "W_E", "W_I", "sigma",
    "a_E", "b_E", "d_E", "a_I", "b_I", "d_I", "tau_E", "tau_I", "gamma_E", "gamma_I",
)
PARAM_INDEX = {name: i for i, name in enumerate(PARAM_NAMES)}
N_PARAMS = len(PARAM_NAMES)

# Units and meaning, used in docstrings, the CLI and error messages.
PARAM_DOC: dict[str, str] = {
    "G": "global coupling (dimensionless)",
    "w_EE": "recurrent excitation w_+ (dimensionless; griffiths2022: g_EE)",
    "w_IE": "feedback inhibition weight J_i, the FIC weight (dimensionless; griffiths2022: g_IE)",
    "w_EI": "E->I weight scaling J_NMDA (dimensionless; griffiths2022: g_EI)",
    "J_NMDA": "NMDA synaptic coupling [nA] (unused by griffiths2022)",
    "I_0": "external input current [nA]",
    "W_E": "external input scale, excitatory (dimensionless)",
    "W_I": "external input scale, inhibitory (dimensionless)",
    "sigma": "noise amplitude [nA] (griffiths2022: std_in, entering as 0.02 + relu(std_in))",
    "a_E": "gain of H_E [1/nC]",
    "b_E": "threshold of H_E [Hz]",
    "d_E": "curvature of H_E [s]",
    "a_I": "gain of H_I [1/nC]",
    "b_I": "threshold of H_I [Hz]",
    "d_I": "curvature of H_I [s]",
    "tau_E": "decay time of S_E [ms]",
    "tau_I": "decay time of S_I [ms]",
    "gamma_E": "kinetic factor of S_E [1/ms per Hz]",
    "gamma_I": "kinetic factor of S_I [1/ms per Hz]",
}

# Haemodynamic (Balloon-Windkessel) constants: floats, shared, not learnable. The equations
# (time in seconds; every backend integrates exactly these):
#   dx/dt = S_E - kappa*x - gamma_h*(f - 1),  df/dt = x,  dv/dt = (f - v**(1/alpha)) / tau_0,
#   dq/dt = (f*(1 - (1 - rho)**(1/f))/rho - v**(1/alpha)*q/v) / tau_0,
#   BOLD  = scale*(k_1*(1 - q) + k_2*(1 - q/v) + k_3*(1 - v)),
# scale = V_0 (deco2014) or 100*V_0/rho (griffiths2022, the paper code's).
HAEMO_NAMES: tuple[str, ...] = ("kappa", "gamma_h", "tau_0", "alpha", "rho", "V_0", "k_1", "k_2",
                                "k_3")
HAEMO_DOC: dict[str, str] = {
    "kappa": "signal decay rate [1/s] (Deco's code: 1/tau_s with tau_s = 0.65 s)",
    "gamma_h": "flow-dependent elimination rate [1/s] (Deco's code: 1/tau_f, tau_f = 0.41 s)",
    "tau_0": "haemodynamic transit time [s]",
    "alpha": "Grubb's exponent (dimensionless)",
    "rho": "resting oxygen extraction fraction (dimensionless)",
    "V_0": "resting blood volume fraction (dimensionless)",
    "k_1": "BOLD coefficient of (1 - q) (dimensionless)",
    "k_2": "BOLD coefficient of (1 - q/v) (dimensionless)",
    "k_3": "BOLD coefficient of (1 - v) (dimensionless)",
}

_RHO = 0.34
# The "classical" BOLD coefficients k_1 = 7 rho, k_2 = 2, k_3 = 2 rho - 0.2 (Obata et al. 2004,
# NeuroImage 21:144, as used by Friston et al. 2003 and Deco et al. 2014; cuBNM's 'friston2003').
_CLASSICAL_K = dict(k_1=7.0 * _RHO, k_2=2.0, k_3=2.0 * _RHO - 0.2)
_DECO_BALLOON = dict(kappa=1.0 / 0.65, gamma_h=1.0 / 0.41, tau_0=0.98, alpha=0.32, rho=_RHO,
                     V_0=0.02)

#: Named haemodynamic models: ``{name: {constant: value}}`` (units in :data:`HAEMO_DOC`). Sources:
#:
#: ``"deco2014"``: the Balloon as Deco et al. 2014's own code integrates it, ``dx/dt = S_E -
#: x/0.65 - (f - 1)/0.41`` (0.65 s and 0.41 s are time constants), tau_0 = 0.98 s, alpha = 0.32,
#: rho = 0.34, V_0 = 0.02, classical coefficients. The same constants are in cuBNM
#: (``src/ext/models/bw.cpp``, which reports BOLD in percent: V_0 = 2, i.e. 100 times rww's BOLD)
#: and TVB's C++ BoldStephan2007.
#:
#: ``"friston2003"``: Friston, Harrison & Penny 2003 (NeuroImage 19:1273), table 1, read as
#: rates: kappa = 0.65 s^-1, gamma_h = 0.41 s^-1; otherwise as ``"deco2014"``. This was rww
#: 0.1.0's deco2014 Balloon. At one neural state it gives slower, smoother BOLD (lower FCD).
#:
#: ``"heinzle2016_3t"``: Deco's Balloon with the 3 T output coefficients of Heinzle et al. 2016
#: (NeuroImage 125:556), k_1 = 3.72, k_2 = 0.527, k_3 = 0.53, as cuBNM's ``'heinzle2016-3T'``.
#:
#: ``"stephan2007"``: Deco's Balloon with the revised output coefficients of Stephan et al. 2007
#: (NeuroImage 38:387) at 1.5 T as Deco's lab uses them: E_0 = rho = 0.4, V_0 = 0.04, TE = 0.04 s,
#: nu_0 = 40.3 s^-1, r_0 = 25 s^-1, epsilon = 1: k_1 = 4.3 nu_0 E_0 TE, k_2 = epsilon r_0 E_0 TE,
#: k_3 = 1 (as written in their code; Stephan's k_3 = 1 - epsilon).
#:
#: ``"griffiths2022"``: the seed paper code's constants (GriffithsLab/whobpyt ``RNNWWD``):
#: ``x/0.65`` and ``(f-1)/0.41`` like Deco, classical coefficients, scaled by 100/rho.
HAEMO_MODELS: dict[str, dict] = {
    "deco2014": dict(_DECO_BALLOON, **_CLASSICAL_K),
    "friston2003": dict(_DECO_BALLOON, kappa=0.65, gamma_h=0.41, **_CLASSICAL_K),
    "heinzle2016_3t": dict(_DECO_BALLOON, k_1=3.72, k_2=0.527, k_3=0.53),
    "stephan2007": dict(_DECO_BALLOON, rho=0.4, V_0=0.04, k_1=4.3 * 40.3 * 0.4 * 0.04,
                        k_2=25.0 * 0.4 * 0.04, k_3=1.0),
    "griffiths2022": dict(_DECO_BALLOON, **_CLASSICAL_K),
}

# The paper code's names, accepted as aliases when the preset is griffiths2022.
GRIFFITHS_ALIASES = {"g": "G", "g_EE": "w_EE", "g_IE": "w_IE", "g_EI": "w_EI", "std_in": "sigma"}

_NEURAL_COMMON = dict(
    a_E=310.0, b_E=125.0, d_E=0.16, a_I=615.0, b_I=177.0, d_I=0.087,
    tau_E=100.0, tau_I=10.0, gamma_E=0.641e-3, gamma_I=1e-3, W_E=1.0, W_I=0.7,
)


@dataclass(frozen=True)
class Preset:
    """Equations variant and its default constants.

    Attributes:
        name: ``"deco2014"`` or ``"griffiths2022"``.
        code: integer flag passed to kernels (0 deco2014, 1 griffiths2022).
        defaults: default value of every neural parameter (units in :data:`PARAM_DOC`).
        haemo: name of the default haemodynamic model in :data:`HAEMO_MODELS`.
        balloon_dt_scale: haemodynamic step per neural step, as a multiple of ``dt``
            (1e-3 for deco2014: dt in ms, Balloon in s; 1.0 for griffiths2022: the paper's
            single step size).
        dt: default step (ms for deco2014; the paper's 0.05 "s" for griffiths2022).
        used: names of the parameters the equations read (learning any other one is an error).
    """

    name: str
    code: int
    defaults: dict
    haemo: str
    balloon_dt_scale: float
    dt: float
    used: frozenset = field(default_factory=frozenset)


PRESETS: dict[str, Preset] = {
    "deco2014": Preset(
        name="deco2014",
        code=0,
        defaults=dict(_NEURAL_COMMON, G=0.0, w_EE=1.4, w_IE=1.0, w_EI=1.0, J_NMDA=0.15,
                      I_0=0.382, sigma=0.01),
        haemo="deco2014",
        balloon_dt_scale=1e-3,
        dt=0.1,
        used=frozenset(PARAM_NAMES),
    ),
    "griffiths2022": Preset(
        name="griffiths2022",
        code=1,
        # whobpyt RNNWWD initial values: g_EI = g_IE = 0.1, std_in = 0.05, g = 100, g_EE = 2.5.
        defaults=dict(_NEURAL_COMMON, G=100.0, w_EE=2.5, w_IE=0.1, w_EI=0.1, J_NMDA=1.0,
                      I_0=0.2, sigma=0.05),
        haemo="griffiths2022",
        balloon_dt_scale=1.0,
        dt=0.05,
        used=frozenset(PARAM_NAMES) - {"J_NMDA"},
    ),
}


def get_preset(name: str) -> Preset:
    """Return the :class:`Preset` called ``name``; raises ``ValueError`` naming the choices."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def canonical_name(name: str, preset: Preset) -> str:
    """Map a user-facing parameter name (including griffiths2022 aliases) to its canonical name."""
    if preset.name == "griffiths2022" and name in GRIFFITHS_ALIASES:
        return GRIFFITHS_ALIASES[name]
    if name in PARAM_INDEX:
        return name
    known = list(PARAM_NAMES)
    if preset.name == "griffiths2022":
        known += list(GRIFFITHS_ALIASES)
    raise ValueError(
        f"unknown parameter {name!r} for preset {preset.name!r}; known parameters: "
        f"{', '.join(known)} (haemodynamic constants go in haemo=: {', '.join(HAEMO_NAMES)})"
    )


def resolve_haemo(preset: Preset, haemo: str | dict | None) -> dict:
    """The Balloon-Windkessel constants to simulate with.

    Args:
        preset: supplies the default model (:attr:`Preset.haemo`).
        haemo: ``None`` (the preset's default), a name from :data:`HAEMO_MODELS`, or a dict of
            overrides of :data:`HAEMO_NAMES` applied to the preset's default model; the dict may
            name another base model under the key ``"model"``, e.g.
            ``{"model": "friston2003", "tau_0": 1.0}``.

    Returns:
        ``{constant: float}`` with every name of :data:`HAEMO_NAMES` plus ``"model"`` (the base
        model's name, ``"+custom"`` appended when a constant was overridden).

    Raises:
        ValueError: unknown model or constant names, a constant that is not a positive finite
            number (k_3 may be any finite number), or rho outside (0, 1).
    """
    if haemo is None or isinstance(haemo, str):
        haemo = {"model": haemo or preset.haemo}
    if not isinstance(haemo, dict):
        raise TypeError(f"haemo: expected a model name or a dict of constants, got "
                        f"{type(haemo).__name__}")
    overrides = dict(haemo)
    name = overrides.pop("model", None) or preset.haemo
    if name not in HAEMO_MODELS:
        base = name.split("+")[0] if isinstance(name, str) else name
        if base not in HAEMO_MODELS:
            raise ValueError(f"haemo: unknown haemodynamic model {name!r}; choose one of "
                             f"{sorted(HAEMO_MODELS)}")
        name = base
    out = dict(HAEMO_MODELS[name])
    changed = False
    for key, value in overrides.items():
        if key not in out:
            raise ValueError(f"haemo: unknown constant {key!r}; known: {', '.join(HAEMO_NAMES)}")
        value = float(value)
        if not math.isfinite(value) or (value <= 0 and key != "k_3"):
            raise ValueError(f"haemo: {key} must be a positive finite number, got {value}")
        changed = changed or value != out[key]
        out[key] = value
    if out["rho"] >= 1:
        raise ValueError(f"haemo: rho must be in (0, 1), got {out['rho']}")
    out["model"] = name + ("+custom" if changed else "")
    return out


def bold_coefficients(preset: Preset, haemo: dict) -> tuple[float, float, float, float]:
    """``(scale, k_1, k_2, k_3)`` of ``BOLD = scale*(k_1(1-q) + k_2(1-q/v) + k_3(1-v))``.

    deco2014: ``scale = V_0``; griffiths2022: ``scale = 100 * V_0 / rho`` (the paper code's).
    The k's come from ``haemo`` (:func:`resolve_haemo`).
    """
    rho = haemo["rho"]
    scale = haemo["V_0"] if preset.code == 0 else 100.0 * haemo["V_0"] / rho
    return scale, haemo["k_1"], haemo["k_2"], haemo["k_3"]


def same_device(a, b) -> bool:
    """Same device, counting ``cuda`` and ``cuda:0`` as the current one."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    return a.type == "cpu" or a.index is None or b.index is None or a.index == b.index


def _as_param_tensor(name: str, value, batch: int, n_nodes: int, dtype, device) -> torch.Tensor:
    """Validate one parameter value and return it as a tensor of shape (), (N,), (B,) or (B, N).

    A 1-d tensor of length N is per-region; of length B (when B != N) per-simulation. When
    B == N a 1-d tensor is ambiguous and must be given as (1, N) or (B, 1).
    """
    if not torch.is_tensor(value):
        try:
            value = torch.as_tensor(value, dtype=dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"parameter {name}: expected a number or tensor, got {type(value)}") from err
    if not value.is_floating_point():
        value = value.to(dtype)
    if not same_device(value.device, device):
        raise ValueError(
            f"parameter {name}: on device {value.device}, but the model runs on {device}; "
            f"move it with .to({str(device)!r})"
        )
    if not torch.isfinite(value.detach()).all():
        raise ValueError(f"parameter {name}: contains NaN or infinite values")
    if value.dim() == 1:
        if value.shape[0] == n_nodes and value.shape[0] == batch and batch > 1:
            raise ValueError(
                f"parameter {name}: a 1-d tensor of length {batch} is ambiguous when batch == "
                f"n_nodes; pass shape (1, {n_nodes}) for per-region or ({batch}, 1) for "
                "per-simulation values"
            )
        if value.shape[0] == n_nodes:
            value = value.view(1, n_nodes)
        elif value.shape[0] == batch:
            value = value.view(batch, 1)
        elif value.shape[0] == 1:
            value = value.view(1, 1)
        else:
            raise ValueError(
                f"parameter {name}: length {value.shape[0]} matches neither n_nodes={n_nodes} "
                f"nor batch={batch}"
            )
    elif value.dim() == 0:
        value = value.view(1, 1)
    elif value.dim() == 2:
        b_ok = value.shape[0] in (1, batch)
        n_ok = value.shape[1] in (1, n_nodes)
        if not (b_ok and n_ok):
            raise ValueError(
                f"parameter {name}: shape {tuple(value.shape)} does not broadcast to "
                f"(batch={batch}, n_nodes={n_nodes})"
            )
    else:
        raise ValueError(
            f"parameter {name}: expected shape (), (N,), (B,) or (B, N); got {tuple(value.shape)}"
        )
    return value


def pack_parameters(values: dict, preset: Preset, batch: int, n_nodes: int,
                    dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Broadcast every neural parameter into one table.

    Args:
        values: ``{name: value}`` for any subset of :data:`PARAM_NAMES` (aliases allowed for
            griffiths2022); missing ones take the preset defaults. Values may be numbers or
            tensors of shape ``()``, ``(N,)``, ``(B,)``, ``(B, N)``, ``(1, N)`` or ``(B, 1)``.
        preset: the :class:`Preset` supplying defaults.
        batch: number of simulations B.
        n_nodes: number of regions N.
        dtype, device: of the returned table.

    Returns:
        Tensor ``(P, Bp, Np)`` with ``P = len(PARAM_NAMES)``, ``Bp = B`` if any parameter varies
        across simulations else 1, ``Np = N`` if any varies across regions else 1. The table is
        built with differentiable ops, so gradients reach tensors in ``values``.
    """
    given = {}
    for name, value in values.items():
        canon = canonical_name(name, preset)
        if canon in given:
            raise ValueError(f"parameter {canon} given twice (as {name!r} and an alias)")
        given[canon] = value
    rows = []
    for name in PARAM_NAMES:
        value = given.get(name, preset.defaults[name])
        rows.append(_as_param_tensor(name, value, batch, n_nodes, dtype, device))
    bp = batch if any(r.shape[0] == batch and batch > 1 for r in rows) else 1
    np_ = n_nodes if any(r.shape[1] == n_nodes and n_nodes > 1 for r in rows) else 1
    return torch.stack([r.to(dtype).expand(bp, np_) for r in rows])


def unpack_parameters(table: torch.Tensor) -> dict:
    """Inverse of :func:`pack_parameters`: ``{name: (Bp, Np) tensor}`` views of the table rows."""
    return {name: table[i] for i, name in enumerate(PARAM_NAMES)}


def replace_row(table: torch.Tensor, name: str, value: torch.Tensor) -> torch.Tensor:
    """``table`` ``(P, Bp, Np)`` with parameter ``name``'s row replaced by ``value``, a tensor
    broadcastable to ``(B, N)``; the result takes the broadcast batch and region sizes
    ``(P, B', N')``. Differentiable in both (how FIC sets w_IE and G/G_c sets G).

    Raises:
        ValueError: ``value``'s shape does not broadcast with the table's ``(Bp, Np)``.
    """
    if not torch.is_tensor(value) or value.dim() > 2:
        raise ValueError(f"{name}: expected a tensor broadcastable to (B, N), got "
                         f"{tuple(value.shape) if torch.is_tensor(value) else type(value).__name__}")
    try:
        b, n = torch.broadcast_shapes(tuple(table.shape[1:]), tuple(value.shape))
    except RuntimeError as err:
        raise ValueError(f"{name}: shape {tuple(value.shape)} does not broadcast with the table's "
                         f"{tuple(table.shape[1:])}") from err
    rows = list(table.expand(-1, b, n).unbind(0))
    rows[PARAM_INDEX[name]] = value.to(table.dtype).expand(b, n)
    return torch.stack(rows)
