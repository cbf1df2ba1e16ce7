"""Counter-based noise: Philox4x32-10 and Box-Muller, vectorised in torch.

The noise contract (stated here and in README.md, "Noise contract") makes noise a pure function of
``(seed, step, node, simulation)``: a backward pass regenerates it instead of storing it, and every
backend (this reference, the Triton kernels, the CPU kernels) produces the same trajectory.

- key ``(k0, k1) = (seed & 0xFFFFFFFF, seed >> 32)``
- counter ``(t & 0xFFFFFFFF, t >> 32, node, simulation)``, t the global step index and
  simulation the member's index in the batch plus the batch's ``sim_offset`` (default 0): a
  batch split over calls or processes, each part given its offset, draws the same noise as the
  whole batch, and member b of a batch can be rerun alone with ``sim_offset = b``
- ``u_k = ((x_k >> 8) + 0.5) * 2**-24`` for the output words ``x_k``: exactly ``(2k+1) 2**-25``
  in (0, 1) in float64. In float32 the sum ``k + 0.5`` needs 25 significant bits for k >= 2**23,
  so it rounds to nearest even: u is within 2**-25 of the exact value and reaches 1.0 for the
  largest k (probability 2**-24; xi is then 0, still finite), never 0. Every float32 backend
  evaluates this same expression in this order, so IEEE rounding makes them agree bit for bit.
- ``xi_E = sqrt(-2 ln u0) cos(2 pi u1)``, ``xi_I = sqrt(-2 ln u0) sin(2 pi u1)``;
  words 2 and 3 give the observation noise ``xi_obs = sqrt(-2 ln u2) cos(2 pi u3)``.

torch has no unsigned 32-bit multiply-high, so words live in int64 tensors and the 32x32-bit
products are split into 16-bit halves (every intermediate stays below 2**49).
"""

from __future__ import annotations

import math

import torch

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
PHILOX_ROUNDS = 10


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of the 64-bit product of int64 tensor ``a`` (< 2**32) and ``m``."""
    m_lo, m_hi = m & 0xFFFF, m >> 16
    p_lo = a * m_lo                     # < 2**48
    s = a * m_hi + (p_lo >> 16)         # < 2**49; a*m = s*2**16 + (p_lo & 0xFFFF)
    hi = s >> 16
    lo = ((s & 0xFFFF) << 16) | (p_lo & 0xFFFF)
    return hi, lo


def philox4x32(c0, c1, c2, c3, k0, k1, rounds: int = PHILOX_ROUNDS):
    """Philox4x32 block function on int64 tensors holding unsigned 32-bit words.

    Args:
        c0, c1, c2, c3: counter words, int64 tensors (broadcastable) with values in [0, 2**32).
        k0, k1: key words, ints or int64 tensors in [0, 2**32).
        rounds: number of rounds (10 for the contract).

    Returns:
        Tuple of four int64 tensors (x0, x1, x2, x3) with values in [0, 2**32).
    """
    k0 = torch.as_tensor(k0, dtype=torch.int64)
    k1 = torch.as_tensor(k1, dtype=torch.int64)
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def check_seed(seed) -> int:
    """Validate a seed: an int in [0, 2**64). Returns it as a Python int."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        try:
            import numpy as np
            if isinstance(seed, np.integer):
                seed = int(seed)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"seed: expected an integer, got {type(seed).__name__}") from None
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: must be in [0, 2**64), got {seed}")
    return seed


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A noise seed drawn from torch's random number generator (the default one unless
    ``generator`` is given), so that ``torch.manual_seed`` makes unseeded runs reproducible.
    Returns an int in [0, 2**63)."""
    return int(torch.randint(0, 2**63 - 1, (), generator=generator, dtype=torch.int64))


def check_sim_offset(sim_offset, batch: int | None = None) -> int:
    """Validate a simulation offset: an int >= 0 with ``sim_offset + batch <= 2**32`` (the
    counter word is 32-bit). Returns it as a Python int."""
    if isinstance(sim_offset, bool) or not isinstance(sim_offset, int) or sim_offset < 0:
        raise ValueError(f"sim_offset: must be a non-negative integer, got {sim_offset!r}")
    if batch is not None and sim_offset + batch > 2**32:
        raise ValueError(f"sim_offset: {sim_offset} + batch {batch} exceeds 2**32 simulations "
                         "(the noise counter's simulation word is 32-bit)")
    return sim_offset


def uniform_words(seed: int, steps: torch.Tensor, n_nodes: int, batch: int, device="cpu",
                  sim_offset: int = 0):
    """The four Philox output words for every (step, simulation, node).

    Args:
        seed: noise seed, int in [0, 2**64).
        steps: int64 tensor ``(T,)`` of global step indices.
        n_nodes: N.  batch: B.
        sim_offset: noise index of the batch's first simulation (see the module docstring).

    Returns:
        Tuple of four int64 tensors of shape ``(T, B, N)``.
    """
    seed = check_seed(seed)
    sim_offset = check_sim_offset(sim_offset, batch)
    steps = steps.to(device=device, dtype=torch.int64).view(-1, 1, 1)
    node = torch.arange(n_nodes, device=device, dtype=torch.int64).view(1, 1, -1)
    sim = torch.arange(sim_offset, sim_offset + batch, device=device,
                       dtype=torch.int64).view(1, -1, 1)
    shape = (steps.shape[0], batch, n_nodes)
    c0 = (steps & MASK32).expand(shape)
    c1 = (steps >> 32).expand(shape)
    return philox4x32(c0, c1, node.expand(shape), sim.expand(shape), seed & MASK32, seed >> 32)


def to_unit_interval(word: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """``((x >> 8) + 0.5) * 2**-24``: a 32-bit word to a uniform in (0, 1), exact in float32."""
    return ((word >> 8).to(dtype) + 0.5) * (2.0 ** -24)


def box_muller(u0: torch.Tensor, u1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent standard normals from two uniforms in (0, 1)."""
    radius = torch.sqrt(-2.0 * torch.log(u0))
    angle = (2.0 * math.pi) * u1
    return radius * torch.cos(angle), radius * torch.sin(angle)


def state_noise(seed: int, t_start: int, n_steps: int, n_nodes: int, batch: int,
                dtype=torch.float32, device="cpu",
                sim_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normal state noise (xi_E, xi_I) for global steps ``t_start .. t_start+n_steps-1``
    of simulations ``sim_offset .. sim_offset+batch-1``.

    Returns:
        Two tensors ``(n_steps, B, N)`` of ``dtype``.
    """
    steps = torch.arange(t_start, t_start + n_steps, dtype=torch.int64)
    x0, x1, _, _ = uniform_words(seed, steps, n_nodes, batch, device, sim_offset)
    return box_muller(to_unit_interval(x0, dtype), to_unit_interval(x1, dtype))


def observation_noise(seed: int, steps: torch.Tensor, n_nodes: int, batch: int,
                      dtype=torch.float32, device="cpu", sim_offset: int = 0) -> torch.Tensor:
    """Standard normal observation noise from Philox words 2 and 3 at the given global steps.

    Args:
        steps: int64 ``(T,)``, the global index of the step that ends each sampled TR.

    Returns:
        Tensor ``(B, T, N)`` (the layout of BOLD).
    """
    _, _, x2, x3 = uniform_words(seed, steps, n_nodes, batch, device, sim_offset)
    xi, _ = box_muller(to_unit_interval(x2, dtype), to_unit_interval(x3, dtype))
    return xi.transpose(0, 1)
