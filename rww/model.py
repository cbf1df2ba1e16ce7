"""``RWWBold``: the connectome-based RWW + Balloon-Windkessel model as an ``nn.Module``."""

from __future__ import annotations

import torch
from torch import nn

from .coupling import griffiths_laplacian, griffiths_normalise_sc, validate_connectome
from .noise import check_seed, observation_noise
from .ops.reference import ScanResult
from .ops.scan import BACKENDS, auto_backend_name, rww_scan
from .ops.spec import STATE_NAMES, ScanSpec, steps_per_tr_from
from .params import PARAM_NAMES, canonical_name, get_preset, pack_parameters, resolve_haemo
from .transforms import make_learnable

# Initial state used when none is given: low activity, haemodynamics at rest. Transients from it
# last a few seconds of simulated time (tau_E = 100 ms; Balloon ~10 s): discard a burn-in.
DEFAULT_INITIAL = {"S_E": 0.1, "S_I": 0.1, "x": 0.0, "f": 1.0, "v": 1.0, "q": 1.0}


def initial_state(batch: int, n_nodes: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The default initial state ``(6, B, N)`` (values in :data:`DEFAULT_INITIAL`)."""
    values = torch.tensor([DEFAULT_INITIAL[k] for k in STATE_NAMES], dtype=dtype, device=device)
    return values.view(6, 1, 1).expand(6, batch, n_nodes).contiguous()


def _normalise_learn(learn, griffiths: bool) -> dict:
    """``learn`` as a dict name -> transform spec, with each name's default transform."""
    if isinstance(learn, str):
        learn = [learn]
    if isinstance(learn, dict):
        return dict(learn)
    defaults = {"w_bb": "identity", "sigma_out": "identity" if griffiths else "positive"}
    return {name: defaults.get(name, "positive") for name in learn}


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
        haemo: overrides of the Balloon constants (``kappa``, ``gamma_h``, ``tau_0``, ``alpha``,
            ``rho``, ``V_0``).
        steps_per_tr: override the steps per TR (the paper code used 14 at TR 0.75, dt 0.05).
        checkpoint_every: steps per checkpoint segment for checkpointed backends.
        w_bb: griffiths2022 only: learn the paper's ``N x N`` connection gain (init 0.05).
        sigma_out: BOLD observation noise: deco2014 adds ``sigma_out * xi`` (default 0, none);
            griffiths2022 adds ``(0.001 + relu(sigma_out)) * xi`` (default 0.02, the paper's).
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
                 device=None, haemo: dict | None = None, steps_per_tr: int | None = None,
                 checkpoint_every: int | None = None, w_bb: bool = False,
                 sigma_out: float | None = None, **params):
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
        """Current ``(P, Bp, Np)`` parameter table (differentiable in learnable parameters)."""
        values = {name: getattr(self, name) for name in PARAM_NAMES}
        return pack_parameters(values, self.preset, self.batch, self.n_nodes, self.sc.dtype,
                               self.sc.device)

    def coupling(self) -> torch.Tensor:
        """Effective coupling matrix: SC (deco2014) or the paper's Laplacian (griffiths2022)."""
        if self.preset.code == 1:
            return griffiths_laplacian(self.sc, self.w_bb if self.has_w_bb else None)
        return self.sc

    def initial_state(self) -> torch.Tensor:
        """Default initial state ``(6, B, N)``."""
        return initial_state(self.batch, self.n_nodes, self.sc.dtype, self.sc.device)

    def spec(self, n_trs: int, seed: int = 0, t0: int = 0, record=()) -> ScanSpec:
        if not isinstance(n_trs, int) or n_trs < 0:
            raise ValueError(f"n_trs: must be a non-negative integer, got {n_trs!r}")
        return ScanSpec(self.preset, self.dt, self.steps_per_tr, n_trs * self.steps_per_tr,
                        seed=check_seed(seed), t0=t0, haemo=self.haemo, record=tuple(record))

    def simulate(self, n_trs: int, state: torch.Tensor | None = None, seed: int = 0, t0: int = 0,
                 record=()) -> ScanResult:
        """Simulate ``n_trs`` TRs; like :meth:`forward` but returns a
        :class:`rww.ops.reference.ScanResult` with ``records`` (``S_E``, ``S_I`` at TR ends;
        ``r_E``, ``r_I`` averaged over each TR, in Hz), each ``(B, n_trs, N)``."""
        spec = self.spec(n_trs, seed, t0, record)
        if state is None:
            state = self.initial_state()
        elif not torch.is_tensor(state) or tuple(state.shape) != (6, self.batch, self.n_nodes):
            got = tuple(state.shape) if torch.is_tensor(state) else type(state).__name__
            raise ValueError(f"state: expected shape (6, {self.batch}, {self.n_nodes}), got {got}")
        result = rww_scan(self.parameter_table(), self.coupling(), state, spec,
                          backend=self.backend, checkpoint_every=self.checkpoint_every)
        result.bold = self._observe(result.bold, spec)
        return result

    def _observe(self, bold: torch.Tensor, spec: ScanSpec) -> torch.Tensor:
        griffiths = self.preset.code == 1
        sigma_out = self.sigma_out
        if spec.n_trs == 0 or (not griffiths and not sigma_out.requires_grad
                               and float(sigma_out) == 0.0):
            return bold
        amplitude = 0.001 + torch.relu(sigma_out) if griffiths else sigma_out
        ends = spec.t0 + torch.arange(1, spec.n_trs + 1) * spec.steps_per_tr - 1
        xi = observation_noise(spec.seed, ends, self.n_nodes, self.batch, bold.dtype, bold.device)
        return bold + amplitude * xi

    def forward(self, n_trs: int, state: torch.Tensor | None = None, seed: int = 0, t0: int = 0):
        """Simulate ``n_trs`` TRs.

        Args:
            n_trs: number of BOLD samples to produce.
            state: ``(6, B, N)`` state to start from (default :meth:`initial_state`).
            seed: noise seed in [0, 2**64).
            t0: global index of the first step; pass ``t0 = previous n_trs * steps_per_tr`` with
                the returned state to continue a run exactly.

        Returns:
            ``(bold, state)``: ``(B, n_trs, N)`` BOLD and the ``(6, B, N)`` final state.
        """
        result = self.simulate(n_trs, state, seed, t0)
        return result.bold, result.state

    def extra_repr(self) -> str:
        backend = self.backend
        if backend == "auto":
            backend = f"auto -> {auto_backend_name(self.sc.device)}"
        shared = "shared" if self.sc.dim() == 2 else "per-simulation"
        return (f"preset={self.preset.name}, n_nodes={self.n_nodes}, batch={self.batch}, "
                f"dt={self.dt}, tr={self.tr} s ({self.steps_per_tr} steps), sc={shared}, "
                f"learn={self.learnable}, backend={backend}, dtype={self.sc.dtype}, "
                f"device={self.sc.device}")
