"""Fused CPU kernels of the scan, compiled with numba: the layout and conventions they share.

The kernels: :mod:`.mathfn` (vectorisable float32 math), :mod:`.step` (one step),
:mod:`.forward` (the K-step scan) and :mod:`.adjoint` (the discrete adjoint); with conduction
delays :mod:`.delayed` and :mod:`.delayed_adjoint` (the same step with a delayed coupling input
read from a ring buffer of the S_E history, outside the workspace). Only jit functions
and the constants they read live in those modules; :mod:`rww.ops.numba.backend` prepares the
arrays, runs the kernels on a thread pool and wraps them as a :class:`ScanBackend`. This module
imports nothing from numba, so reading its constants compiles nothing.

Layout and conventions (shared by both kernels)
------------------------------------------------
- One call simulates a list of simulations ``sims`` one after the other, each in a workspace
  ``W`` of shape (N_WROWS, LANES) whose rows hold the state, the coefficients and every per-node
  intermediate of a step. LANES is a compile-time constant (see its comment): that is what lets
  LLVM vectorise loops touching many rows. The node loops run over ``NP`` lanes, N rounded up by
  the caller (``backend.padded_nodes``; the kernels read NP from the padded coupling's
  width). On AVX-512 hosts LLVM runs most loops 16 or 32 lanes per iteration and the rest as a
  scalar remainder; padding further costs more than that remainder, except in
  :func:`_flush_coupling`, which pads its own loop. Lanes ``N..NP-1`` are
  padding: they compute harmless values (a copy of node 0, uncoupled), never feed real lanes (the
  padded columns of the coupling matrices are zero and the coupling loops run over real rows
  only) and are masked out of the divergence check.
- Each step is a few separate loops over nodes (Philox words; Box-Muller; coupling; rates;
  Balloon; S_E, S_I) because that is what LLVM vectorises without spilling: a loop that mixes
  the 64-bit Philox arithmetic with float work, or calls a libm function, stays scalar, and one
  loop holding the whole step needs more than 16 vector registers.
- Kernels are generic over float32 and float64 (``T = W.dtype.type``; every literal goes through
  ``T(...)``, since a bare Python float would promote float32 arithmetic to float64). float32
  uses the vectorisable exp/expm1/log/sincos/tanh written below (max errors measured in the
  tests); float64 calls libm at scalar speed (float64 is the accuracy mode).
- Fast-math is limited to FMA contraction (see :data:`FASTMATH`): NaN and inf propagate into the
  divergence check, a continued run equals one long run exactly, and a segment recomputed in the
  backward pass reproduces the forward trajectory bit for bit (clamp masks and squash derivatives
  are evaluated on exactly the states the forward produced; checked at every checkpoint).
  ``error_model='numpy'`` removes numba's division-by-zero checks, which keep loops scalar.

Parameters reach the kernels as 17 *coefficients* per node (:data:`COEF_NAMES`), computed from the
parameter table by differentiable torch code in the backend (products such as ``G*J_NMDA``,
reciprocals of the time constants, the griffiths2022 ``0.001 + relu(.)`` gains and noise
amplitude). The adjoint kernel returns gradients with respect to these coefficients and autograd
maps them back to the 19 parameters, so relu/abs conventions there are torch's own.
"""

from __future__ import annotations


# ----------------------------------------------------------------------------- coefficients
# Rows of the coefficient table (per simulation and node). Currents:
#   I_E = c_E0 + c_EE*S_E + c_G*(C @ S_E) - c_IE*S_I      (griffiths2022: tanh(relu(.)) of it)
#   I_I = c_I0 + c_EI*S_E - S_I
# rates r = H(a*I - b; d); S_E += dt*(-k_E*S_E + (1 - S_E)*gamma_E*r_E) + amp*xi_E, and S_I alike.
COEF_NAMES = ("c_E0", "c_EE", "c_G", "c_IE", "c_I0", "c_EI", "a_E", "b_E", "d_E", "a_I", "b_I",
              "d_I", "k_E", "k_I", "gamma_E", "gamma_I", "amp")
N_COEF = len(COEF_NAMES)
(C_E0, C_EE, C_G, C_IE, C_I0, C_EI, C_AE, C_BE, C_DE, C_AI, C_BI, C_DI, C_KE, C_KI, C_GE, C_GI,
 C_AMP) = range(N_COEF)

# Haemodynamic constants, as a float64 vector (cast to the state dtype inside the kernels).
HAEMO_FIELDS = ("dt", "dtb", "kappa", "gamma_h", "inv_tau0", "inv_alpha", "ln_1mrho", "inv_rho",
                "bold_scale", "k1", "k2", "k3", "one_m_rho", "one_m_rho_over_rho")
(H_DT, H_DTB, H_KAPPA, H_GAMMA, H_ITAU0, H_IALPHA, H_LNR, H_IRHO, H_SCALE, H_K1, H_K2,
 H_K3, H_OMR, H_OMRR) = range(len(HAEMO_FIELDS))

# Workspace of one simulation: a local (N_WROWS, LANES) array. LANES is a compile-time constant,
# so the distance between any two rows is known to LLVM and the node loops, which read and write
# many rows, vectorise without run-time alias checks (with rows of run-time length LLVM gives up:
# "too many memory checks needed"; measured 4.6x slower). Only the first NP lanes are used, so
# the rows are padded to 2048 + 72 floats: rows then start 4.5 cache lines apart modulo the L1
# set period, and N = 68 uses 21 KB of the workspace per step.
MAX_NODES = 2048
LANES = MAX_NODES + 72
# Rows 0..N_TAPE-1 are also the fields of the backward pass's tape (the state before every step
# and what the adjoint needs from it, so that the sweep evaluates no transcendental function and
# regenerates no noise): copying them is one loop per row.
# The state rows hold S_E, S_I, x and the Balloon's deviations from rest f - 1, v - 1, q - 1.
(W_SE, W_SI, W_X, W_F, W_V, W_Q,                         # state
 W_CS,                                                   # C @ S_E
 W_RE, W_HYE, W_HDE, W_RI, W_HYI, W_HDI,                 # rates, dr/dy, dr/dd
 W_IE, W_II,                                             # currents (griffiths: squashed)
 W_XIE, W_XII,                                           # noise
 W_P, W_R,                                               # v**(1/alpha), (1-rho)**(1/f)
 W_PE, W_PI) = range(21)                                 # S_E, S_I before clamp / squash
N_TAPE = 21
W_U0, W_U1 = 21, 22                                      # uniforms
W_COEF = 23                                              # N_COEF rows of coefficients
W_NXT = W_COEF + N_COEF                                  # adjoint: state after the step (6)
W_LAM = W_NXT + 6                                        # adjoint of the state (6)
W_BLK = W_LAM + 6                                        # gradient partial sums (N_COEF)
W_LCS = W_BLK + N_COEF                                   # adjoint of C @ S_E
W_EXT = W_LCS + 1                                        # C^T (adjoint of C @ S_E)
W_GRE, W_GRI = W_EXT + 1, W_EXT + 2                      # record gradients of r_E, r_I / spt
# Parameter-gradient sums are accumulated in the state dtype over at most FLUSH steps, then added
# to float64 totals: float32 partial sums of <= 16 terms lose at most ~16 ulp relative to the sum
# of magnitudes, and the float64 totals keep long runs (10^5-10^6 steps) exact enough.
# (_flush_coupling is written out for FLUSH = 16.)
FLUSH = 16
# The coupling gradient sum_t g_t S_t^T (g = dL/d(C @ S_E)) as one rank-FLUSH product per FLUSH
# steps instead of a rank-1 update per step: the adjoint sweep parks g_t and S_t in these rows,
# and _flush_coupling adds G^T S (FLUSH x N by FLUSH x NP) into the float64 totals, its FLUSH-term
# dot products held in registers (a rank-1 update loads and stores the whole N x NP block every
# step; measured 0.8 -> 0.1 us per step at N = 68).
W_GL = W_GRI + 1                                         # g_t of the block (FLUSH rows)
W_GS = W_GL + FLUSH                                      # S_E,t of the block (FLUSH rows)
W_SCR = W_GS + FLUSH                                     # second part of a packed coupling product
N_WROWS = W_SCR + 1

# Only FMA contraction of the fast-math flags: it changes results by rounding alone, and it is
# decided per multiply (a product is fused into its single add), which the forward kernel and the
# backward pass's recomputation share instruction for instruction (the tape stores only sums,
# quotients and function values, never a product that also feeds an add), so the recomputed
# trajectory stays bitwise equal to the forward one; the backward kernel verifies this at every
# checkpoint. No nnan/ninf: the divergence check needs NaN and inf. Measured: 1.7 -> 1.1 us per
# step at N = 68, float32.
FASTMATH = {"contract"}
_OV_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy", "forceinline": True}
