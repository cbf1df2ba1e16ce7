"""``RWWBold``: the connectome-based RWW + Balloon-Windkessel model as an ``nn.Module``."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .coupling import griffiths_laplacian, griffiths_normalise_sc, validate_connectome
from .delays import DEFAULT_VELOCITY, delay_steps
from .noise import check_seed, check_sim_offset, draw_seed, observation_noise
from .ops.reference import ScanResult
from .ops.scan import BACKENDS, auto_backend_name, raise_if_vmapped, rww_scan
from .ops.spec import STATE_NAMES, ScanSpec, steps_per_tr_from
from .params import (PARAM_INDEX, PARAM_NAMES, canonical_name, get_preset, pack_parameters,
                     replace_row, resolve_haemo)
from .transforms import make_learnable

# Initial state used when none is given: low activity, haemodynamics at rest. Transients from it
# last a few seconds of simulated time (tau_E = 100 ms; Balloon ~10 s): discard a burn-in.
#: Default initial state: gating variables at 0.1, the Balloon at rest (``f_dev = f - 1`` etc.).
DEFAULT_INITIAL = {"S_E": 0.1, "S_I": 0.1, "x": 0.0, "f_dev": 0.0, "v_dev": 0.0, "q_dev": 0.0}


def initial_state(batch: int, n_nodes: int, dtype=torch.float32, device="cpu",
                  max_delay: int = 0) -> torch.Tensor:
    """The default initial state ``(6 + max_delay, B, N)``: the values in
    :data:`DEFAULT_INITIAL`, then (with conduction delays of up to ``max_delay`` steps) a
    constant S_E history equal to the initial S_E."""
    values = torch.tensor([DEFAULT_INITIAL[k] for k in STATE_NAMES]
                          + [DEFAULT_INITIAL["S_E"]] * max_delay, dtype=dtype, device=device)
    rows = 6 + max_delay
    return values.view(rows, 1, 1).expand(rows, batch, n_nodes).contiguous()


def _normalise_learn(learn, griffiths: bool) -> dict:
    """``learn`` as a dict name -> transform spec, with each name's default transform."""
    if isinstance(learn, str):
        learn = [learn]
    if isinstance(learn, dict):
        return dict(learn)
    defaults = {"w_bb": "identity", "sigma_out": "identity" if griffiths else "positive"}
    return {name: defaults.get(name, "positive") for name in learn}


# Longest conduction lag [ms] that is not flagged as a units mistake: cortico-cortical delays are
# up to a few tens of ms (e.g. 235 mm at 3 m/s is 78 ms); 1 s means mm/m or m/s/mm/ms mixed up.
MAX_PLAUSIBLE_LAG_MS = 1000.0
# Longest tract [mm] below which lengths are taken for a units mistake (metres for millimetres).
MIN_PLAUSIBLE_TRACT_MM = 1.0

# Smallest neural step float32 resolves, as dt / (largest synaptic time constant): each Euler step
# changes S_E and S_I by about dt/tau of their value, and below ~1e-5 that change is only a few
# hundred float32 roundings. Measured float32-vs-float64 S_E (deco2014, 7 regions, 4 ms, tau_E =
# 100 ms): 2.5e-6 relative at dt = 1e-3 ms, 8.1e-5 at 1e-4 ms, 5.1e-3 at 1e-5 ms. (The Balloon
# state, held as deviations from rest, resolves any step: float32 BOLD is within 5e-6 of float64
# from the first TR at dt = 1e-3 to 0.1 ms.)
FLOAT32_MIN_STEP_OVER_TAU = 1e-5


class RWWBold(nn.Module):
    """Whole-brain RWW neural masses on a connectome, observed through Balloon-Windkessel BOLD.

    Args:
        sc: structural connectivity ``(N, N)`` shared by all simulations or ``(B, N, N)`` one per
            simulation (non-negative, finite). deco2014 uses it as given (normalise it yourself,
            e.g. max or mean row sum); griffiths2022 applies the paper's ``log1p`` + Frobenius
            normalisation and builds the Laplacian every forward.
        preset: ``"deco2014"`` or ``"griffiths2022"`` (see :mod:`rww.params`).
        dt: integration step (ms for deco2014, default 0.1; the paper's 0.05 for griffiths2022).
        tr: repetition time in seconds (default 0.72, HCP); must be a whole number of steps.
        batch: number of simulations B run together (parameter sets, subjects or noise seeds).
        learn: parameters to fit: a list of names (each learned through the ``"positive"``
            softplus transform, or ``"identity"`` for ``w_bb`` and griffiths2022's ``sigma_out``),
            or a dict name -> transform (``"identity"``, ``"positive"``, ``("interval", lo, hi)``,
            :class:`rww.transforms.RegionalMap`); see :mod:`rww.transforms`. Learned values live
            in ``model.learned[name]`` (raw ``nn.Parameter`` s); ``model.<name>`` reads the
            physical value. Other parameters are buffers.
        backend: ``"auto"`` or one of :data:`rww.ops.scan.BACKENDS`.
        dtype, device: of the model's tensors.
        haemo: the haemodynamic model: a name from :data:`rww.params.HAEMO_MODELS`
            (``"deco2014"``, the deco2014 preset's default; ``"friston2003"``, rww 0.1.0's;
            ``"heinzle2016_3t"``; ``"stephan2007"``) or a dict of overrides of its constants
            (``kappa``, ``gamma_h``, ``tau_0``, ``alpha``, ``rho``, ``V_0``, ``k_1``, ``k_2``,
            ``k_3``; key ``"model"`` names the base), see :func:`rww.params.resolve_haemo`.
        steps_per_tr: override the steps per TR (the paper code used 14 at TR 0.75, dt 0.05).
        checkpoint_every: steps per checkpoint segment for checkpointed backends.
        w_bb: griffiths2022 only: learn the paper's ``N x N`` connection gain (init 0.05).
        sigma_out: BOLD observation noise: deco2014 adds ``sigma_out * xi`` (default 0, none);
            griffiths2022 adds ``(0.001 + relu(sigma_out)) * xi`` (default 0.02, the paper's).
        lengths: tract lengths [mm] ``(N, N)`` (row: receiving region) for conduction delays:
            the coupling input to region i becomes ``sum_j C_ij S_E,j(t - tau_ij)``,
            ``tau_ij = lengths_ij / velocity`` rounded to whole steps (:mod:`rww.delays`; TVB's
            rounding). The state then carries the S_E history (``6 + D`` rows, D the longest
            lag). Default ``None``: no delays. ``g_relative``'s G_c
            (:func:`rww.stability.critical_coupling`) is that of the system without delays:
            the fixed point is the same, but delays can change where it loses stability.
        velocity: conduction velocity [m/s], a number or a ``(B,)`` tensor, one per simulation
            (default :data:`rww.delays.DEFAULT_VELOCITY`, 3 m/s, with ``lengths``). Lags are
            whole steps, so neither lengths nor velocity receive gradients.
        fic: feedback inhibition control (deco2014 only): ``False`` (default) uses ``w_IE`` as
            given; ``True`` or a target rate [Hz] (a number, or a ``(B,)`` tensor, one per
            simulation; ``True`` means 3 Hz) sets ``w_IE`` per region and simulation by the
            analytic FIC of :func:`rww.fic.analytic_fic`, recomputed from the current parameters
            at every forward, so gradients with respect to G, w_EE, J_NMDA, ... see it.
            :meth:`refine_fic` adds a numerical correction for noise. A region whose FIC fails
            (negative weight) raises :class:`rww.fic.FICFailed` naming it. ``model.w_IE`` keeps
            the value given (unused); the weights simulated are in :meth:`parameter_table`.
        g_relative: interpret ``G`` as a fraction of the critical coupling ``G_c`` where the FIC
            fixed point loses stability (:func:`rww.stability.critical_coupling`, recomputed
            from the current parameters at every forward and differentiable in them); needs
            ``fic``. ``G = 0.95`` then means 95% of the way to the bifurcation; ``model.G``
            reads that fraction, :meth:`parameter_table` holds the absolute G simulated.
        **params: any neural parameter by name (:data:`rww.params.PARAM_NAMES`, or the paper's
            names for griffiths2022), as a number or a tensor ``()``, ``(N,)``, ``(B,)``,
            ``(B, N)``.

    Example:
        >>> sc = torch.rand(68, 68); sc = (sc + sc.T) / 2
        >>> model = RWWBold(sc / sc.sum(1).mean(), G=0.5, batch=4, learn=["G"])
        >>> bold, state = model(n_trs=20, seed=0)      # bold (4, 20, 68), state (6, 4, 68)
    """

    def __init__(self, sc, preset: str = "deco2014", dt: float | None = None, tr: float | None = None,
                 batch: int = 1, learn=(), backend: str = "auto", dtype=torch.float32,
                 device=None, haemo: str | dict | None = None, steps_per_tr: int | None = None,
                 checkpoint_every: int | None = None, w_bb: bool = False,
                 sigma_out: float | None = None, fic=False, g_relative: bool = False,
                 lengths=None, velocity=None, **params):
        super().__init__()
        self.preset = get_preset(preset)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: {dtype} is not supported; use torch.float32 or torch.float64")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: must be a positive integer, got {batch!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; choose one of {BACKENDS}")
        sc = validate_connectome(sc).to(dtype=dtype)
        if device is not None:
            sc = sc.to(device)
        if sc.dim() == 3 and sc.shape[0] != batch:
            raise ValueError(f"sc: a stack of {sc.shape[0]} connectomes needs batch={sc.shape[0]}, "
                             f"got batch={batch}")
        self.n_nodes, self.batch = sc.shape[-1], batch
        self.dt = float(self.preset.dt if dt is None else dt)
        self.tr = float((0.72 if self.preset.code == 0 else 0.75) if tr is None else tr)
        if steps_per_tr is None:
            steps_per_tr = steps_per_tr_from(self.tr, self.dt, self.preset.balloon_dt_scale)
        elif not isinstance(steps_per_tr, int) or steps_per_tr < 1:
            raise ValueError(f"steps_per_tr: must be a positive integer, got {steps_per_tr!r}")
        self.steps_per_tr = steps_per_tr
        self.haemo = resolve_haemo(self.preset, haemo)
        self.backend = backend
        self.checkpoint_every = checkpoint_every
        self.last_seed: int | None = None      # the noise seed of the last simulation
        griffiths = self.preset.code == 1
        self.register_buffer("sc", griffiths_normalise_sc(sc) if griffiths else sc)

        learn = _normalise_learn(learn, griffiths)
        learn_canon = {}
        for name, spec in learn.items():
            canon = name if name in ("sigma_out", "w_bb") else canonical_name(name, self.preset)
            if canon not in ("sigma_out", "w_bb") and canon not in self.preset.used:
                raise ValueError(f"learn: {canon} does not enter the {self.preset.name} equations")
            learn_canon[canon] = spec
        values = {canonical_name(k, self.preset): v for k, v in params.items()}
        # Validate shapes once, now, so mistakes surface at construction.
        pack_parameters(values, self.preset, batch, self.n_nodes, dtype, sc.device)
        self.learned = nn.ModuleDict()
        for name in PARAM_NAMES:
            value = values.get(name, self.preset.defaults[name])
            tensor = torch.as_tensor(value, dtype=dtype, device=sc.device).detach().clone()
            if name in learn_canon:
                self.learned[name] = make_learnable(name, tensor, learn_canon[name], self.n_nodes)
            else:
                self.register_buffer(name, tensor)

        if sigma_out is None:
            sigma_out = 0.02 if griffiths else 0.0
        sigma_out_t = torch.as_tensor(sigma_out, dtype=dtype, device=sc.device).clone()
        if "sigma_out" in learn_canon:
            self.learned["sigma_out"] = make_learnable("sigma_out", sigma_out_t, learn_canon["sigma_out"])
        else:
            self.register_buffer("sigma_out", sigma_out_t)
        if w_bb or "w_bb" in learn_canon:
            if not griffiths:
                raise ValueError("w_bb: the connection gain exists only in the griffiths2022 preset")
            init = torch.full((self.n_nodes, self.n_nodes), 0.05, dtype=dtype, device=sc.device)
            self.learned["w_bb"] = make_learnable("w_bb", init, learn_canon.get("w_bb", "identity"))
        self.has_w_bb = "w_bb" in self.learned
        self._init_fic(fic, g_relative, learn_canon, dtype, sc.device)
        self._init_delays(lengths, velocity, sc.device)
        if dtype == torch.float32:
            self._warn_if_float32_cannot_resolve(values)

    def _warn_if_float32_cannot_resolve(self, values: dict):
        """RuntimeWarning when dt is too small a fraction of the synaptic time constants for
        float32 (see :data:`FLOAT32_MIN_STEP_OVER_TAU`)."""
        tau = max(float(torch.as_tensor(values.get(n, self.preset.defaults[n])).max())
                  for n in ("tau_E", "tau_I"))
        ratio = self.dt / tau
        if ratio < FLOAT32_MIN_STEP_OVER_TAU:
            warnings.warn(
                f"dt = {self.dt:g} ms is too small for float32: each step changes S_E and S_I by "
                f"about dt/tau = {ratio:.1e} of their value (tau = {tau:g} ms), only a few float32 "
                "roundings (measured S_E error against float64 after 4 ms: 8e-5 at dt 1e-4 ms, "
                "5e-3 at 1e-5 ms). Use dtype=torch.float64 (rww simulate --dtype float64) or "
                f"dt >= {FLOAT32_MIN_STEP_OVER_TAU * tau:g} ms", RuntimeWarning, stacklevel=3)

    def _init_delays(self, lengths, velocity, device):
        """Validate and store tract lengths and conduction velocity (see the class docstring)."""
        if lengths is None:
            if velocity is not None:
                raise ValueError("velocity: conduction delays need tract lengths too; pass "
                                 "lengths=(N, N) in mm (rww.data loaders return them)")
            self.lengths = self.velocity = None
            return
        lengths = torch.as_tensor(lengths, dtype=torch.float64, device=device)
        if tuple(lengths.shape) != (self.n_nodes, self.n_nodes):
            raise ValueError(f"lengths: expected ({self.n_nodes}, {self.n_nodes}) tract lengths "
                             f"[mm] matching the connectome, got {tuple(lengths.shape)}")
        velocity = DEFAULT_VELOCITY if velocity is None else velocity
        if isinstance(velocity, (str, bytes)):
            raise TypeError(f"velocity: expected a number of m/s or a ({self.batch},) tensor, got "
                            f"the string {velocity!r}")
        velocity = torch.as_tensor(velocity, dtype=torch.float64, device=device)
        if velocity.dim() > 1 or (velocity.dim() == 1 and velocity.shape[0] != self.batch):
            raise ValueError(f"velocity: expected a number or one value per simulation "
                             f"({self.batch},) [m/s], got shape {tuple(velocity.shape)}")
        lags = delay_steps(lengths, velocity, self.dt)   # validates; raises with advice
        self.register_buffer("lengths", lengths)
        self.register_buffer("velocity", velocity)
        longest_ms = float(lags.max()) * self.dt
        longest_mm = float(lengths.max())
        if 0 < longest_mm < MIN_PLAUSIBLE_TRACT_MM or (longest_mm > 0 and int(lags.max()) == 0):
            effect = ("so the delays have no effect" if int(lags.max()) == 0 else
                      f"the longest lag is {int(lags.max())} step(s)")
            warnings.warn(
                f"lengths: the longest tract is {longest_mm:.3g} mm ({effect} at "
                f"{velocity.min().item():g} m/s); tract lengths are in mm (not m), cortical "
                "tracts are tens of mm", RuntimeWarning, stacklevel=3)
        elif longest_ms > MAX_PLAUSIBLE_LAG_MS:
            warnings.warn(
                f"lengths/velocity: the longest conduction lag is {longest_ms:.4g} ms "
                f"({int(lags.max())} steps, kept in the state of every simulation); brain "
                f"conduction delays are under ~{MAX_PLAUSIBLE_LAG_MS:g} ms: tract lengths are in "
                "mm and the velocity in m/s (= mm/ms)", RuntimeWarning, stacklevel=3)

    def delays(self) -> torch.Tensor | None:
        """Conduction lags in steps, int64 ``(N, N)`` (one velocity) or ``(B, N, N)`` (one per
        simulation), :func:`rww.delays.delay_steps` of ``lengths`` and ``velocity`` at this
        model's dt; ``None`` without tract lengths or when every lag rounds to 0 steps."""
        if self.lengths is None:
            return None
        lags = delay_steps(self.lengths, self.velocity, self.dt)
        return lags if int(lags.max()) > 0 else None

    @property
    def max_delay(self) -> int:
        """The longest conduction lag D [steps]; the state has ``6 + D`` rows."""
        lags = self.delays()
        return 0 if lags is None else int(lags.max())

    def _init_fic(self, fic, g_relative: bool, learn_canon: dict, dtype, device):
        """Validate and store the FIC and relative-coupling settings (see the class docstring)."""
        if fic is False or fic is None:
            self.fic_target = None
        else:
            if self.preset.code != 0:
                raise ValueError("fic: feedback inhibition control exists only for the deco2014 "
                                 "preset")
            if "w_IE" in learn_canon:
                raise ValueError("learn: w_IE is set by FIC when fic is on; drop it from learn= "
                                 "or build the model with fic=False")
            target = 3.0 if fic is True else fic
            target = torch.as_tensor(target, dtype=torch.float64, device=device).detach().clone()
            if target.dim() > 1 or (target.dim() == 1 and target.shape[0] not in (1, self.batch)):
                raise ValueError(f"fic: the target rate must be a number or a ({self.batch},) "
                                 f"tensor, one per simulation; got shape {tuple(target.shape)}")
            if not (torch.isfinite(target).all() and (target > 0).all()):
                raise ValueError(f"fic: the target rate must be positive and finite [Hz], got "
                                 f"{target.tolist()}")
            self.fic_target = target.view(-1, 1) if target.dim() == 1 else target
        if g_relative and self.fic_target is None:
            raise ValueError("g_relative: G as a fraction of the critical coupling G_c needs "
                             "fic=True (G_c is defined at the FIC fixed point)")
        self.g_relative = bool(g_relative)
        # Numerical FIC correction (refine_fic), added to the analytic weights; None until set.
        self.register_buffer("fic_correction", None)
        self.last_fic = None

    @property
    def learnable(self) -> list:
        """Names of the learnable parameters, in table order."""
        order = list(PARAM_NAMES) + ["sigma_out", "w_bb"]
        return sorted(self.learned.keys(), key=order.index)

    def __getattr__(self, name: str):
        # Learnable parameters read as their physical value: model.G is softplus(raw) etc.
        learned = self.__dict__.get("_modules", {}).get("learned")
        if learned is not None and name in learned._modules:
            return learned[name]()
        return super().__getattr__(name)

    # --- pieces of forward, public so that fits and tests can reuse them -----------------------
    def parameter_table(self) -> torch.Tensor:
        """Current ``(P, Bp, Np)`` parameter table (differentiable in learnable parameters), with
        G scaled by G_c (``g_relative``) and w_IE set by FIC (``fic``) when those are on."""
        table = self._given_table()
        if self.fic_target is not None and self.fic_target.dim() and self.fic_target.shape[0] > 1:
            table = table.expand(-1, self.batch, -1)      # one FIC target per simulation
        if self.g_relative:
            g_c = self.critical_coupling(table)
            table = replace_row(table, "G", table[PARAM_INDEX["G"]] * g_c.to(table.dtype).view(-1, 1))
        if self.fic_target is not None:
            from .fic import FICFailed, analytic_fic, with_w_IE
            fic = analytic_fic(table, self.coupling(), self._fic_target_tensor())
            self.last_fic = fic.to(fic.w_IE.dtype)
            if fic.any_failed:
                raise FICFailed(fic.describe() + "; change the parameters of those simulations "
                                "(higher I_0, w_EE or G; lower FIC target) or use fic=False")
            w_ie = fic.w_IE
            if self.fic_correction is not None:
                w_ie = w_ie + self.fic_correction
            table = with_w_IE(table, w_ie)
        return table

    def _given_table(self) -> torch.Tensor:
        """The parameters as given (G as given, w_IE as given), packed ``(P, Bp, Np)``."""
        values = {name: getattr(self, name) for name in PARAM_NAMES}
        return pack_parameters(values, self.preset, self.batch, self.n_nodes, self.sc.dtype,
                               self.sc.device)

    def _fic_target_tensor(self):
        target = self.fic_target
        return target if target.dim() else float(target)

    def critical_coupling(self, table: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` float64 critical coupling G_c of the current parameters (FIC at the model's
        target; :func:`rww.stability.critical_coupling`, searched in G in [0, 10]),
        differentiable in them.

        Raises:
            ValueError: a simulation has no G_c in [0, 10] (its FIC fixed point stays stable up
                to G = 10, or is already unstable at G = 0, e.g. with a very large w_EE); the
                message says which. Use :func:`rww.stability.critical_coupling` directly (NaN
                there, ``g_max`` adjustable) to explore such parameters."""
        from .stability import critical_coupling
        if self.fic_target is None:
            raise ValueError("critical_coupling: defined at the FIC fixed point; build the model "
                             "with fic=True")
        if table is None:
            table = self._given_table()
        coupling = self.coupling()
        needs_grad = torch.is_grad_enabled() and (table.requires_grad or coupling.requires_grad)
        key = None
        if not needs_grad:
            # G_c depends on every row but G and w_IE: reuse it while they are unchanged (a
            # chunked simulation calls this once per chunk; each solve costs ~0.1-1 s).
            rows = [i for n, i in PARAM_INDEX.items() if n not in ("G", "w_IE")]
            key = (table[rows].detach().cpu().numpy().tobytes(), tuple(table.shape),
                   coupling.data_ptr(), coupling._version, float(self.fic_target.sum()))
            cached = getattr(self, "_g_c_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1]
        g_c = critical_coupling(table, coupling, self._fic_target_tensor())
        if torch.isnan(g_c).any():
            from .stability import leading_eigenvalue
            bad = torch.nonzero(torch.isnan(g_c)).flatten().tolist()
            at_zero = leading_eigenvalue(table.detach().index_fill(
                0, torch.tensor([PARAM_INDEX["G"]], device=table.device), 0.0), coupling,
                self._fic_target_tensor())
            why = ("the FIC fixed point is already unstable at G = 0 (lower w_EE or J_NMDA, or "
                   "the FIC target)" if bool((at_zero[bad] >= 0).any()) else
                   "the FIC fixed point stays stable up to G = 10 (weaker coupling matrix?)")
            raise ValueError(f"critical_coupling: simulations {bad[:10]} have no critical coupling "
                             f"in G = 0..10: {why}; G/G_c is undefined there")
        if key is not None:
            self._g_c_cache = (key, g_c.detach().expand(self.batch))
        return g_c.expand(self.batch)

    def coupling_ratio(self) -> torch.Tensor:
        """``(B,)`` G / G_c of the current parameters (detached, float64): below 1 the FIC fixed
        point is stable, above it the network leaves it."""
        with torch.no_grad():
            if self.g_relative:                   # G is the ratio itself: no G_c solve needed
                g = self._given_table()[PARAM_INDEX["G"]].to(torch.float64)
                return g.expand(self.batch, -1).mean(-1).clone()
            g = self.parameter_table()[PARAM_INDEX["G"]].to(torch.float64)
            g = g.expand(self.batch, -1).mean(-1)
            return g / self.critical_coupling()

    def refine_fic(self, **kwargs):
        """Numerical FIC: correct the analytic weights for the shift of the mean rate under
        noise, by simulation (:func:`rww.fic.refine_fic`; keyword arguments go there, e.g.
        ``duration_s``, ``seed``, ``max_iter``, ``tol_hz``). The correction (refined minus
        analytic ``w_IE``, ``(B, N)``) is stored in the buffer ``fic_correction`` and added to
        the analytic weights at every later forward; it carries no gradient. Returns the
        :class:`rww.fic.RefineResult` (check ``.failed``)."""
        from .fic import refine_fic
        if self.fic_target is None:
            raise ValueError("refine_fic: build the model with fic=True")
        if self.fic_target.dim():
            raise ValueError("refine_fic: needs one FIC target for the batch")
        self.fic_correction = None
        with torch.no_grad():
            table = self.parameter_table()
            analytic = self.last_fic.w_IE
            kwargs.setdefault("dt", self.dt)
            kwargs.setdefault("tr", self.tr)
            kwargs.setdefault("haemo", self.haemo)
            kwargs.setdefault("backend", self.backend)
            kwargs.setdefault("delays", self.delays())
            result = refine_fic(table, self.coupling(), analytic, target_rate=float(self.fic_target),
                                **kwargs)
        self.fic_correction = (result.w_IE - analytic).detach()
        return result

    def coupling(self) -> torch.Tensor:
        """Effective coupling matrix: SC (deco2014) or the paper's Laplacian (griffiths2022)."""
        if self.preset.code == 1:
            return griffiths_laplacian(self.sc, self.w_bb if self.has_w_bb else None)
        return self.sc

    def initial_state(self) -> torch.Tensor:
        """Default initial state ``(6 + D, B, N)`` (D = :attr:`max_delay` rows of S_E history,
        constant at the initial S_E)."""
        return initial_state(self.batch, self.n_nodes, self.sc.dtype, self.sc.device,
                             self.max_delay)

    def spec(self, n_trs: int, seed: int = 0, t0: int = 0, record=(),
             sim_offset: int = 0, max_delay: int | None = None) -> ScanSpec:
        """The :class:`ScanSpec` of ``n_trs`` TRs (``max_delay`` default :attr:`max_delay`)."""
        if not isinstance(n_trs, int) or n_trs < 0:
            raise ValueError(f"n_trs: must be a non-negative integer, got {n_trs!r}")
        return ScanSpec(self.preset, self.dt, self.steps_per_tr, n_trs * self.steps_per_tr,
                        seed=check_seed(seed), t0=t0,
                        sim_offset=check_sim_offset(sim_offset, self.batch), haemo=self.haemo,
                        record=tuple(record),
                        max_delay=self.max_delay if max_delay is None else max_delay)

    def simulate(self, n_trs: int, state: torch.Tensor | None = None, seed: int | None = None,
                 t0: int = 0, record=(), sim_offset: int = 0) -> ScanResult:
        """Simulate ``n_trs`` TRs; like :meth:`forward` but returns a
        :class:`rww.ops.reference.ScanResult` with ``records`` (``S_E``, ``S_I`` at TR ends;
        ``r_E``, ``r_I`` averaged over each TR, in Hz), each ``(B, n_trs, N)``."""
        raise_if_vmapped(*self.parameters(), *self.buffers())
        if seed is None:
            seed = draw_seed()
        self.last_seed = seed
        lags = self.delays()                  # once per call: D and the lags from one rounding
        spec = self.spec(n_trs, seed, t0, record, sim_offset,
                         max_delay=0 if lags is None else int(lags.max()))
        rows = spec.n_state_rows
        if state is None:
            state = initial_state(self.batch, self.n_nodes, self.sc.dtype, self.sc.device,
                                  spec.max_delay)
        elif not torch.is_tensor(state) or tuple(state.shape) != (rows, self.batch, self.n_nodes):
            got = tuple(state.shape) if torch.is_tensor(state) else type(state).__name__
            why = (f" (6 state rows and {rows - 6} of S_E history for this model's conduction "
                   "delays)" if rows > 6 else "")
            raise ValueError(f"state: expected shape ({rows}, {self.batch}, {self.n_nodes})"
                             f"{why}, got {got}")
        result = rww_scan(self.parameter_table(), self.coupling(), state, spec,
                          backend=self.backend, checkpoint_every=self.checkpoint_every,
                          delays=lags)
        result.bold = self._observe(result.bold, spec)
        result.seed = spec.seed
        return result

    def _observe(self, bold: torch.Tensor, spec: ScanSpec) -> torch.Tensor:
        griffiths = self.preset.code == 1
        sigma_out = self.sigma_out
        if spec.n_trs == 0 or (not griffiths and not sigma_out.requires_grad
                               and float(sigma_out) == 0.0):
            return bold
        amplitude = 0.001 + torch.relu(sigma_out) if griffiths else sigma_out
        ends = spec.t0 + torch.arange(1, spec.n_trs + 1) * spec.steps_per_tr - 1
        xi = observation_noise(spec.seed, ends, self.n_nodes, self.batch, bold.dtype, bold.device,
                               spec.sim_offset)
        return bold + amplitude * xi

    def forward(self, n_trs: int, state: torch.Tensor | None = None, seed: int | None = None,
                t0: int = 0, sim_offset: int = 0):
        """Simulate ``n_trs`` TRs.

        Args:
            n_trs: number of BOLD samples to produce.
            state: ``(6 + D, B, N)`` state to start from (default :meth:`initial_state`; D
                rows of S_E history with conduction delays, :attr:`max_delay`).
            seed: noise seed in [0, 2**64). None (the default): drawn from torch's random
                number generator (so ``torch.manual_seed`` fixes it) and kept in
                ``model.last_seed``; pass it back, with ``t0``, to continue the same noise.
            t0: global index of the first step; pass ``t0 = previous n_trs * steps_per_tr`` with
                the returned state to continue a run exactly.
            sim_offset: noise index of this batch's first simulation: the noise of simulation b
                is that of simulation ``sim_offset + b`` of one large batch with the same seed,
                so a batch split over calls (or processes) reproduces the whole batch, and
                member b can be rerun alone (``batch=1, sim_offset=b``).

        Returns:
            ``(bold, state)``: ``(B, n_trs, N)`` BOLD and the ``(6 + D, B, N)`` final state.

        Raises:
            ValueError: ``sim_offset`` negative or ``sim_offset + B > 2**32``.
        """
        result = self.simulate(n_trs, state, seed, t0, sim_offset=sim_offset)
        return result.bold, result.state

    # --- state dicts: the connectome is checked on load, never replaced silently ---------------
    #: What :meth:`load_state_dict` may do with the saved connectome (``sc=``).
    SC_ON_LOAD = ("check", "keep", "replace")
    _sc_on_load = "check"

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False, *,
                        sc: str = "check"):
        """Load parameters and buffers, as :meth:`torch.nn.Module.load_state_dict`, with the
        connectome (buffer ``sc``, which :meth:`state_dict` carries) handled by ``sc``:

        - ``"check"`` (default): load only if the saved SC equals this model's (same shape,
          values equal within 64 units in the last place of the coarser of the two dtypes), so
          a state fitted on one subject cannot silently replace another subject's connectome.
          Otherwise raise ``ValueError`` saying how they differ and what to do.
        - ``"keep"``: load everything but the SC; this model keeps its own (to apply parameters
          fitted on one connectome to another of the same number of regions).
        - ``"replace"``: take the saved SC (``nn.Module``'s own behaviour).

        The same check applies when the model is loaded as part of a larger module (through
        that module's ``load_state_dict``), with ``"check"``. A state without ``sc`` (saved
        with ``strict=False`` in mind) leaves the SC as it is.

        Raises:
            ValueError: ``sc="check"`` and the saved SC differs; or ``sc`` is not one of
                :attr:`SC_ON_LOAD`.
            RuntimeError: as ``nn.Module`` (missing or unexpected keys, shape mismatches).
        """
        if sc not in self.SC_ON_LOAD:
            raise ValueError(f"load_state_dict: sc={sc!r} is not one of {self.SC_ON_LOAD}: "
                             "'check' refuses a different connectome, 'keep' keeps this model's, "
                             "'replace' takes the saved one")
        self._sc_on_load = sc
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        finally:
            del self._sc_on_load                     # back to the class default, "check"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        self._check_saved_delays(state_dict, prefix)
        key = prefix + "sc"
        policy = self._sc_on_load
        if key in state_dict and policy == "check":
            why = _sc_difference(state_dict[key], self.sc)
            if why is not None:
                raise ValueError(
                    f"load_state_dict: the saved connectome '{key}' differs from this model's "
                    f"({why}), and loading it would replace this model's SC. To apply the saved "
                    "parameters to this model's connectome (e.g. another subject's), call "
                    "load_state_dict(state, sc='keep'); to take the saved connectome, "
                    "sc='replace'; or build the model on the connectome the state was saved "
                    "from (rww fit --resume: the same connectome and preprocessing options as "
                    "the run that wrote the checkpoint)")
        if key in state_dict and policy == "keep":
            state_dict = {k: v for k, v in state_dict.items() if k != key}
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                          missing_keys, unexpected_keys, error_msgs)
            if key in missing_keys:
                missing_keys.remove(key)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _check_saved_delays(self, state_dict, prefix: str):
        """Refuse a state whose conduction delays (tract lengths, velocity) differ from this
        model's: loading would silently replace them (or fail on unexpected keys)."""
        saved = {name: state_dict.get(prefix + name) for name in ("lengths", "velocity")}
        mine = {"lengths": self.lengths, "velocity": self.velocity}
        if all(v is None for v in saved.values()) and self.lengths is None:
            return
        differ = [name for name in saved
                  if (saved[name] is None) != (mine[name] is None)
                  or (saved[name] is not None and not torch.equal(
                      torch.as_tensor(saved[name], dtype=torch.float64).cpu(),
                      mine[name].to(torch.float64).cpu()))]
        if not differ:
            return

        def describe(lengths, velocity):
            if lengths is None:
                return "no delays"
            return (f"tract lengths up to {float(torch.as_tensor(lengths).max()):.4g} mm at "
                    f"{torch.as_tensor(velocity).flatten().tolist()} m/s")

        raise ValueError(
            f"load_state_dict: the saved conduction delays ({describe(**saved)}) differ from this "
            f"model's ({describe(**mine)}): {' and '.join(differ)}. Build the model with the "
            "lengths and velocity the state was saved with (rww fit --resume: the same --lengths "
            "and --velocity as the run that wrote the checkpoint)")

    def extra_repr(self) -> str:
        backend = self.backend
        if backend == "auto":
            backend = f"auto -> {auto_backend_name(self.sc.device)}"
        shared = "shared" if self.sc.dim() == 2 else "per-simulation"
        fic = "off" if self.fic_target is None else f"{self.fic_target.flatten().tolist()} Hz"
        delays = ("off" if self.lengths is None else
                  f"up to {self.max_delay} steps at {self.velocity.flatten().tolist()} m/s")
        return (f"preset={self.preset.name}, n_nodes={self.n_nodes}, batch={self.batch}, "
                f"fic={fic}, g_relative={self.g_relative}, delays={delays}, "
                f"haemo={self.haemo['model']}, "
                f"dt={self.dt}, tr={self.tr} s ({self.steps_per_tr} steps), sc={shared}, "
                f"learn={self.learnable}, backend={backend}, dtype={self.sc.dtype}, "
                f"device={self.sc.device}")


def _sc_difference(saved, current: torch.Tensor) -> str | None:
    """How a saved connectome differs from a model's, or ``None`` if they are equal: same
    shape and every entry within 64 units in the last place (of the coarser dtype) of the
    largest weight, so a float32 copy of a float64 SC counts as equal."""
    if not torch.is_tensor(saved):
        return None                                  # nn.Module reports what is wrong with it
    if tuple(saved.shape) != tuple(current.shape):
        return f"shape {tuple(saved.shape)}, this model's {tuple(current.shape)}"
    if saved.is_meta or current.is_meta or saved.numel() == 0:
        return None                                  # no values to compare
    a = saved.detach().to("cpu", torch.float64)
    b = current.detach().to("cpu", torch.float64)
    if not torch.isfinite(a).all():
        return "the saved one has NaN or infinite entries"
    eps = max(torch.finfo(saved.dtype).eps if saved.is_floating_point() else 0.0,
              torch.finfo(current.dtype).eps)
    scale = float(torch.maximum(a.abs().max(), b.abs().max()))
    diff = (a - b).abs()
    worst = float(diff.max())
    if worst > 64 * eps * scale:
        where = [int(i) for i in torch.nonzero(diff == worst)[0]]
        return (f"largest difference {worst:.3g} at {where}, relative to the largest weight "
                f"{scale:.3g}")
    return None
