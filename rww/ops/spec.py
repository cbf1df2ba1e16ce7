"""The description of one scan (what every backend is asked to compute) and input validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..noise import check_seed, check_sim_offset
from ..params import HAEMO_NAMES, N_PARAMS, Preset, bold_coefficients, same_device

# Rows of the state tensor (6, B, N). Every backend uses this order.
# The Balloon's flow f, volume v and deoxyhaemoglobin q are held as deviations from rest (f - 1,
# v - 1, q - 1, all 0 at rest): in float32 their small changes would round away against the 1
# (rww.ops.reference.balloon_derivatives gives the equations in this form).
STATE_NAMES: tuple[str, ...] = ("S_E", "S_I", "x", "f_dev", "v_dev", "q_dev")
# Quantities that may be recorded at TR resolution: S_E, S_I instantaneous at the end of each TR
# (like BOLD); r_E, r_I averaged over the steps of the TR (the rates that drove them).
RECORDABLE: tuple[str, ...] = ("S_E", "S_I", "r_E", "r_I")


@dataclass(frozen=True)
class ScanSpec:
    """Everything about a scan that is not a tensor.

    Attributes:
        preset: equations variant (:class:`rww.params.Preset`).
        dt: neural step (ms for deco2014; the paper's unit for griffiths2022).
        steps_per_tr: steps between BOLD samples.
        n_steps: steps to simulate, a multiple of ``steps_per_tr``.
        seed: noise seed in [0, 2**64).
        t0: global index of the first step (noise counter), so a run continues across calls.
        sim_offset: noise index of the batch's first simulation (noise counter), so a batch
            split over calls draws the noise of the whole batch (:mod:`rww.noise`).
        haemo: Balloon-Windkessel constants (:func:`rww.params.resolve_haemo`).
        record: names from :data:`RECORDABLE` to return at TR resolution.
        max_delay: D, the longest conduction delay in steps (0: no delays). With D > 0 the scan
            takes an integer ``delays`` tensor (lags in steps, ``(N, N)`` or ``(B, N, N)``,
            entries in ``[0, D]``) and the state carries the S_E history: ``(6 + D, B, N)``,
            rows ``6 + d - 1`` holding S_E ``d`` steps before the current one (d = 1..D).
    """

    preset: Preset
    dt: float
    steps_per_tr: int
    n_steps: int
    seed: int = 0
    t0: int = 0
    sim_offset: int = 0
    haemo: dict = field(default_factory=dict)
    record: tuple = ()
    max_delay: int = 0

    def __post_init__(self):
        if not (isinstance(self.dt, (int, float)) and math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt: must be a positive finite number, got {self.dt!r}")
        if not isinstance(self.steps_per_tr, int) or self.steps_per_tr < 1:
            raise ValueError(f"steps_per_tr: must be a positive integer, got {self.steps_per_tr!r}")
        if not isinstance(self.n_steps, int) or self.n_steps < 0:
            raise ValueError(f"n_steps: must be a non-negative integer, got {self.n_steps!r}")
        if self.n_steps % self.steps_per_tr:
            raise ValueError(
                f"n_steps={self.n_steps} is not a multiple of steps_per_tr={self.steps_per_tr}; "
                "BOLD is sampled at the end of every TR, so simulate whole TRs"
            )
        check_seed(self.seed)
        if not isinstance(self.t0, int) or not 0 <= self.t0 < 2**63:
            raise ValueError(f"t0: must be a non-negative integer, got {self.t0!r}")
        check_sim_offset(self.sim_offset)
        if not isinstance(self.max_delay, int) or self.max_delay < 0:
            raise ValueError(f"max_delay: must be a non-negative integer number of steps, got "
                             f"{self.max_delay!r}")
        bad = [r for r in self.record if r not in RECORDABLE]
        if bad:
            raise ValueError(f"record: unknown {bad}; choose from {RECORDABLE}")
        for key in HAEMO_NAMES:
            if key not in self.haemo:
                raise ValueError(f"haemo: missing constant {key!r}")

    @property
    def n_state_rows(self) -> int:
        """Rows of the scan's state tensor: the 6 of :data:`STATE_NAMES` plus the S_E history."""
        return len(STATE_NAMES) + self.max_delay

    @property
    def n_trs(self) -> int:
        return self.n_steps // self.steps_per_tr

    @property
    def balloon_dt(self) -> float:
        """Haemodynamic step in seconds (deco2014: dt/1000; griffiths2022: dt)."""
        return self.dt * self.preset.balloon_dt_scale

    @property
    def bold_coefficients(self) -> tuple[float, float, float, float]:
        return bold_coefficients(self.preset, self.haemo)


def steps_per_tr_from(tr: float, dt: float, balloon_dt_scale: float = 1e-3) -> int:
    """Number of steps in one TR; a TR that is not a whole number of steps is an error.

    Args:
        tr: repetition time in seconds.
        dt: step (ms for deco2014, where ``balloon_dt_scale`` is 1e-3; seconds for griffiths2022).
    """
    if not (isinstance(tr, (int, float)) and math.isfinite(tr) and tr > 0):
        raise ValueError(f"tr: must be a positive number of seconds, got {tr!r}")
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt: must be a positive finite number, got {dt!r}")
    ratio = tr / (dt * balloon_dt_scale)
    steps = round(ratio)
    if steps < 1 or abs(ratio - steps) > 1e-9 * max(1.0, ratio):
        raise ValueError(
            f"tr={tr} s is not a whole number of steps of dt={dt} "
            f"({ratio:.6g} steps); choose dt so that tr/dt is an integer"
        )
    return steps


def validate_scan_inputs(params: torch.Tensor, coupling: torch.Tensor, state: torch.Tensor,
                         max_delay: int = 0, delays: torch.Tensor | None = None):
    """Check shapes, dtypes, devices and finiteness of the scan's tensors.

    Args:
        params: ``(P, Bp, Np)`` table from :func:`rww.params.pack_parameters`.
        coupling: ``(N, N)`` shared or ``(B, N, N)`` per-simulation effective coupling matrix.
        state: ``(6 + D, B, N)`` initial state in the order of :data:`STATE_NAMES`, then the S_E
            history (``D = max_delay``, :class:`ScanSpec`).
        max_delay: ``D`` [steps].
        delays: with ``D > 0``, integer lags [steps] ``(N, N)`` or ``(B, N, N)`` in ``[0, D]``
            (row: the receiving region, column: the sending one, as in ``coupling``); with
            ``D = 0``, ``None``.

    Returns:
        ``(B, N)``.
    """
    rows = len(STATE_NAMES) + max_delay
    if not torch.is_tensor(state) or state.dim() != 3 or state.shape[0] != rows:
        shape = tuple(state.shape) if torch.is_tensor(state) else type(state).__name__
        extra = (f" (6 state rows plus {max_delay} rows of S_E history for delays of up to "
                 f"{max_delay} steps: rww.initial_state(..., max_delay={max_delay}))"
                 if max_delay else "")
        raise ValueError(f"state: expected a tensor of shape ({rows}, B, N){extra}, got {shape}")
    _, batch, n_nodes = state.shape
    if state.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"state: dtype {state.dtype} is not supported; use float32 or float64")
    dtype, device = state.dtype, state.device
    if not torch.is_tensor(coupling):
        raise TypeError(f"coupling: expected a tensor, got {type(coupling).__name__}")
    if coupling.dim() == 2:
        ok = coupling.shape == (n_nodes, n_nodes)
    elif coupling.dim() == 3:
        ok = coupling.shape == (batch, n_nodes, n_nodes)
    else:
        ok = False
    if not ok:
        raise ValueError(
            f"coupling: expected shape ({n_nodes}, {n_nodes}) or ({batch}, {n_nodes}, {n_nodes}) "
            f"to match the state's B={batch}, N={n_nodes}; got {tuple(coupling.shape)}"
        )
    if params.dim() != 3 or params.shape[0] != N_PARAMS or params.shape[1] not in (1, batch) \
            or params.shape[2] not in (1, n_nodes):
        raise ValueError(
            f"params: expected a table ({N_PARAMS}, 1 or {batch}, 1 or {n_nodes}), "
            f"got {tuple(params.shape)}"
        )
    for name, t in (("coupling", coupling), ("params", params)):
        if t.dtype != dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from the state's {dtype}")
        if not same_device(t.device, device):
            raise ValueError(f"{name}: on {t.device}, but the state is on {device}")
    for name, t in (("state", state), ("coupling", coupling), ("params", params)):
        if not torch.isfinite(t.detach()).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
    check_delays(delays, max_delay, batch, n_nodes, device)
    return batch, n_nodes


def check_delays(delays, max_delay: int, batch: int, n_nodes: int, device) -> None:
    """Raise unless ``delays`` suits ``max_delay`` (see :func:`validate_scan_inputs`)."""
    if max_delay == 0:
        if delays is not None:
            raise ValueError("delays: given, but the scan's max_delay is 0; build the ScanSpec "
                             "with max_delay=int(delays.max()) (or pass delays=None)")
        return
    if not torch.is_tensor(delays):
        raise TypeError(f"delays: max_delay={max_delay} needs an integer tensor of lags in "
                        f"steps, got {type(delays).__name__}")
    if delays.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"delays: dtype {delays.dtype}; expected int32 or int64 steps (round "
                        "lengths / (velocity * dt) with rww.delays.delay_steps)")
    if tuple(delays.shape) not in ((n_nodes, n_nodes), (batch, n_nodes, n_nodes)):
        raise ValueError(f"delays: expected shape ({n_nodes}, {n_nodes}) or ({batch}, {n_nodes}, "
                         f"{n_nodes}), got {tuple(delays.shape)}")
    if not same_device(delays.device, device):
        raise ValueError(f"delays: on {delays.device}, but the state is on {device}")
    lo, hi = int(delays.min()), int(delays.max())
    if lo < 0 or hi > max_delay:
        raise ValueError(f"delays: lags must lie in [0, max_delay={max_delay}] steps, got "
                         f"[{lo}, {hi}]")
