#!/usr/bin/env python
"""Cross-check rww against cuBNM (the peer simulator, CPU mode) on the embedded demo connectome.

Usage (from the repository root, in rww's virtualenv)::

    python bench/cubnm_crosscheck.py            # full run (~10-15 min on 2 shared cores)
    python bench/cubnm_crosscheck.py --quick    # shorter runs, fewer G values (~2 min)

cuBNM runs in its own virtualenv (``.venv-peers/cubnm/bin/python``, or the Python named by
``RWW_PEER_PYTHON_CUBNM``) through ``bench/peers/cubnm_crosscheck_peer.py``; the two processes
exchange ``.npz`` files in a temporary folder, one cuBNM process per kind of run (cuBNM 0.1.0
aborts with ``munmap_chunk(): invalid pointer`` when one process re-initialises its session from
a run without FC/FCD to one with them: it frees the FCD buffers according to the new settings).
Without that virtualenv the check is skipped with a message (exit status 0, nothing written).
The full run writes ``bench/results/cubnm-crosscheck.json``; ``--quick`` writes only with
``--out``.

What is compared (every setting is recorded in the results file):

Connectome. The demo SC (``rww.data.load_demo``, Schaefer-100, symmetric, zero diagonal) divided
by its mean row sum, float64. rww gets it as is (row i = inputs of region i); cuBNM gets its
transpose (cuBNM's rows are sources), identical here since the SC is symmetric. Parameters: rww's
deco2014 preset; cuBNM's ``w_p`` = rww ``w_EE``, ``J_N`` = rww ``J_NMDA`` (cuBNM also uses J_N as
the E->I weight, so rww ``w_EI`` = 1), ``wIE`` = rww ``w_IE``; the other constants are equal.

1. FIC weights. rww's :func:`rww.fic.analytic_fic` (float64) against the ``wIE`` cuBNM's
   analytical FIC writes back after ``run()``, over G x w_EE and two runs with regional w_EE or
   J_NMDA. cuBNM targets its isolated-node steady state (``r_E_ss = 3.0773270642`` Hz with its
   constants ``S_E_ss``, ``I_E_ss`` rounded to 10 decimals) and solves for I_I by Brent's method
   with a relative tolerance of 1e-3; rww is called with target_rate = r_E_ss and, the other way,
   with target_rate = H_E(I_E_ss) (rww's transfer function at cuBNM's current). Pass: max relative
   difference <= 1e-6 for both. Reported besides: rww's 3-Hz default against cuBNM (a different
   target, not a check), and cuBNM's inhibitory-current root recovered from its weights, i.e.
   how far Brent actually stopped from the exact root.

2. Noise off (sigma = 0). Same initial state (S_E = S_I = 0.001, x = 0, f = v = q = 1), dt =
   0.1 ms, Balloon advanced every 0.1-ms step in both (cuBNM ``bw_dt="0.1"``), float64 and the
   same w_IE (cuBNM's FIC weights, given to rww explicitly, so that check 1's small differences do
   not enter). Alignments needed:
   - cuBNM samples BOLD and states every ``int(0.72 / 1e-4)`` Balloon steps, and that float
     division is 7199.999999999999, so it samples every 7199 steps (not 7200) when ``bw_dt`` is
     0.1 ms. rww is run with ``steps_per_tr=7199`` for this comparison (with cuBNM's default
     ``bw_dt`` of 1 ms it is 720 Balloon steps = 7200 steps, exact).
   - cuBNM's ``r_E``/``r_I``/``I_E``/``I_I`` outputs are the values computed in the last step
     before the sample (from the state before that step); rww records r_E averaged over each TR.
     Rates are therefore compared in a run of the first seconds with cuBNM sampling every 1 ms
     (``states_sampling=0.001``, 10 steps) and rww recording every step (``steps_per_tr=1``),
     taking rww's step 10m (1-based) for cuBNM's sample m. ``S_E``/``S_I`` are the states after
     the sampled step in both.
   - cuBNM's BOLD uses V_0 = 2 (percent): 100 x rww's V_0 = 0.02; rww's BOLD is multiplied by
     100 for the comparison. ``bold_remove_s=0``: cuBNM returns every sample in ``sim_bold``
     anyway (its burn-in removal only affects its FC/FCD and state means).
   - The Balloon is integrated differently: rww takes an explicit Euler step of all four
     variables from the state before the step, driven by S_E before the neural step; cuBNM
     drives it with S_E after the neural step and updates x first, f from the new x, v from the
     old f, q from the old f and the new v. Transient BOLD therefore differs at O(dt); both reach
     the same fixed point. Checks: (a) S_E, S_I at every sample of the long run and of the
     1-ms run, r_E, r_I in the 1-ms run; (b) BOLD over the last TRs of the long run (steady);
     (c) cuBNM's transient BOLD against cuBNM's Balloon order applied in this script to rww's
     per-step S_E (the scheme written out from cuBNM's equations), which shows that the transient
     difference is the scheme alone. All to <= 1e-9 relative. Reported: the raw transient BOLD
     difference, and the steady r_E against the FIC target.

3. Noise on (sigma = 0.01, FIC on in each simulator with its own weights, rww at cuBNM's target
   r_E_ss; float64; same initial state). Noise is generated differently (rww: counter-based
   Philox normals per step; cuBNM: one 30-s segment of Mersenne-Twister normals, shared by all
   simulations of a run and reused with nodes and 1-ms blocks shuffled), so only statistics can
   agree. Over a G sweep: region-mean and region-max of the time-averaged r_E, BOLD std (rww
   units, cuBNM's / 100; mean over regions), FC r with the demo group FC, FCD KS against the
   demo FCD values (windows of 43 TRs, step 7, all window pairs), computed with rww's functions
   (``rww.objectives``) from both simulators' BOLD after the same burn-in. cuBNM's own FC r and
   FCD KS (its C++ FC/FCD, window 30 s = 43 TRs, step 5 s = 7 TRs) are listed too. Alignments:
   - cuBNM's time-averaged states are means of the values at the TR instants after its burn-in
     (``states_ts=False``); rww's are means over every step (its TR-averaged r_E record). Both
     estimate the same mean, but cuBNM's per-region estimate scatters more, so the max over
     regions of cuBNM's is biased upwards: max r_E is reported, not checked.
   - cuBNM's core reads ``bold_remove_s`` with ``std::stoi`` (whole seconds) and removes
     ``int(s * 1000 / TR_ms)`` samples, so the burn-in is a whole number of seconds and of TRs
     (18 s = 25 TRs, 36 s = 50 TRs) and cuBNM's state means and FC/FCD drop the same samples.
   - cuBNM runs with its default ``bw_dt`` of 1 ms here (exact TR sampling, faster); rww
     advances the Balloon every 0.1-ms step.
   Pass (only below the critical coupling G_c of the FIC fixed point, where both sit in the FIC
   regime; above it the numbers are reported only): relative difference in mean r_E <= 10 %,
   in BOLD std <= 15 %, |difference in FC r| <= 0.15, in FCD KS <= 0.2: about 3 standard
   deviations of the difference between two single realisations at the --quick length, from
   ``--quick --seeds 4`` (per-seed sd at G = 0.8, rww / cuBNM: mean r_E 1.8 % / 3.4 %, BOLD std
   2.6 % / 4.1 %, FC r 0.048 / 0.022, FCD KS 0.017 / 0.038). ``--seeds K`` runs K noise seeds in
   each simulator and compares means over seeds.

Exit status: 0 when every check passes (or the peer is absent: skipped), 1 when one fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SCRIPT = os.path.join(REPO, "bench", "peers", "cubnm_crosscheck_peer.py")
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "cubnm-crosscheck.json")

# cuBNM's isolated-node steady state (src/ext/models/rww.cpp, rWWModel::init_constants).
CUBNM_R_E_SS = 3.0773270642
CUBNM_I_E_SS = 0.3773805650
CUBNM_S_E_SS = 0.1647572075
CUBNM_BREN_RTOL = 1e-3          # gsl_root_test_interval(x_lo, x_hi, 0, 0.001) in rww_fic.cpp
CUBNM_BOLD_SCALE = 100.0        # cuBNM's V_0 = 0.02 * 100
TR = 0.72
DT_MS = 0.1
INIT_S = 0.001                  # cuBNM's h_init: S_E = S_I = 0.001
W_P, J_N = 1.4, 0.15            # rww's deco2014 w_EE, J_NMDA

SETTINGS = {
    "full": dict(
        fic_G=[0.5, 1.0, 1.5, 2.0], fic_w_EE=[1.2, 1.4, 1.6],
        off_G=[0.5, 0.9], off_duration=72.0, off_steady_trs=10, fine_duration=2.16,
        noise_G=[0.4, 0.6, 0.8, 1.0, 1.2], noise_duration=360.0, noise_burn_in=36.0,
        noise_seeds=[0], noise_sigma=0.01, noise_bw_dt="1.0"),
    "quick": dict(
        fic_G=[0.5, 1.0, 1.5, 2.0], fic_w_EE=[1.2, 1.4, 1.6],
        off_G=[0.5, 0.9], off_duration=43.2, off_steady_trs=5, fine_duration=2.16,
        noise_G=[0.4, 0.8, 1.2], noise_duration=108.0, noise_burn_in=18.0,
        noise_seeds=[0], noise_sigma=0.01, noise_bw_dt="1.0"),
}
# Check 3's tolerances: about 3 standard deviations of the difference between two single noise
# realisations at the --quick length (125 TRs analysed), from `--quick --seeds 4` (see the
# module docstring); the full run's 450 TRs scatter less.
TOL = dict(fic_rel=1e-6, off_rel=1e-9, noise_mean_r_E_rel=0.10, noise_bold_std_rel=0.15,
           noise_fc_r=0.15, noise_fcd_ks=0.2)


# ---------------------------------------------------------------------------------------- utils
def peer_python() -> str | None:
    path = os.environ.get("RWW_PEER_PYTHON_CUBNM") or os.path.join(
        REPO, ".venv-peers", "cubnm", "bin", "python")
    return path if os.path.exists(path) else None


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "python": platform.python_version()}
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def rel_diff(a, b, floor=0.0):
    """max |a - b| / max(|b|, floor)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor)))


def cubnm_iterations(ms: float, bw_dt_ms: float) -> int:
    """What cuBNM's core computes for a span of ``ms`` milliseconds in Balloon steps:
    ``int((ms / 1000.0) / (bw_dt_ms / 1000.0))`` (include/cubnm/models/base.hpp; bw_dt is kept in
    seconds there), truncated, so 0.72 s at bw_dt 0.1 ms is 7199 steps."""
    return int((float(ms) / 1000.0) / (float(bw_dt_ms) / 1000.0))


def validate_durations(cfg):
    """Refuse a duration whose Balloon step count cuBNM would truncate: its last BOLD sample
    would then never be written (cuBNM still returns duration/TR samples)."""
    for key, bw in (("off_duration", 0.1), ("fine_duration", 0.1),
                    ("noise_duration", float(cfg["noise_bw_dt"]))):
        ms = round(cfg[key] * 1000)
        if abs(cfg[key] * 1000 - ms) > 1e-6 or cubnm_iterations(ms, bw) != round(ms / bw):
            raise ValueError(f"{key}={cfg[key]} s: cuBNM would run {cubnm_iterations(ms, bw)} "
                             f"Balloon steps of {bw} ms, not {ms / bw:g}; pick another duration")
        n_tr = ms / (TR * 1000)
        if abs(n_tr - round(n_tr)) > 1e-9:
            raise ValueError(f"{key}={cfg[key]} s is not a whole number of TRs")
    # cuBNM's core reads bold_remove_s with std::stoi (whole seconds) and removes
    # int(seconds * 1000 / TR_ms) samples: use a burn-in that is whole seconds and whole TRs.
    burn = cfg["noise_burn_in"]
    if burn != int(burn) or (int(burn) * 1000) % int(TR * 1000):
        raise ValueError(f"noise_burn_in={burn} s: must be whole seconds (cuBNM truncates it) "
                         f"and a whole number of TRs, e.g. 18 or 36")


def fmt(x, spec=".2e"):
    return "n/a" if x is None else format(x, spec)


# ------------------------------------------------------------------------------------ the peer
def run_peer(python: str, request: dict, workdir: str) -> tuple[dict, float]:
    req_path = os.path.join(workdir, "request.npz")
    res_path = os.path.join(workdir, "result.npz")
    log_path = os.path.join(workdir, "peer.log")
    np.savez(req_path, **request)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run([python, PEER_SCRIPT, req_path, res_path], cwd=REPO,
                              stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not os.path.exists(res_path):
        with open(log_path) as fh:
            tail = fh.read()[-4000:]
        raise RuntimeError(f"cuBNM peer failed (exit {proc.returncode}); its output ends with:\n"
                           f"{tail}")
    with np.load(res_path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}, wall


# ------------------------------------------------------------------------------------ rww side
def rww_initial_state(batch, n, torch):
    from rww.model import initial_state

    state = initial_state(batch, n, torch.float64).clone()
    state[0] = INIT_S            # S_E
    state[1] = INIT_S            # S_I   (x = 0 and the Balloon at rest, f - 1 = v - 1 = q - 1 = 0,
                                 # are rww's defaults already)
    return state


def cubnm_balloon_bold(s_e_steps, bw_dt_s, sample_every):
    """BOLD (in cuBNM's percent units) from per-step S_E, advanced in cuBNM's update order
    (written out here from the equations of its src/ext/models/bw.cpp for this check only):
    x first; f from the new x; v from the old f; q from the old f and the new v; driven by the
    S_E after each neural step. ``s_e_steps`` (T, B, N): S_E after steps 1..T. Returns the
    samples after steps sample_every, 2*sample_every, ... as (B, n_samples, N)."""
    rho, alpha, tau, gamma_h, kappa = 0.34, 0.32, 0.98, 1.0 / 0.41, 1.0 / 0.65
    v0 = 0.02 * CUBNM_BOLD_SCALE
    k1, k2, k3 = 7 * rho, 2.0, 2 * rho - 0.2
    ialpha, dt_itau = 1.0 / alpha, bw_dt_s * (1.0 / tau)
    shape = s_e_steps.shape[1:]
    x, f, v, q = np.zeros(shape), np.ones(shape), np.ones(shape), np.ones(shape)
    out = []
    for k in range(s_e_steps.shape[0]):
        x = x + bw_dt_s * (s_e_steps[k] - kappa * x - gamma_h * (f - 1.0))
        f_new = f + bw_dt_s * x
        v = v + dt_itau * (f - v ** ialpha)
        q = q + dt_itau * (f * (1.0 - (1.0 - rho) ** (1.0 / f)) / rho - v ** ialpha * q / v)
        f = f_new
        if (k + 1) % sample_every == 0:
            out.append(v0 * (k1 * (1 - q) + k2 * (1 - q / v) + k3 * (1 - v)))
    return np.stack(out, axis=1)


# ------------------------------------------------------------------------------------- checks
def check_fic(cfg, sc, maps, peer, torch):
    from rww.fic import analytic_fic
    from rww.fic import inverse_transfer_deco
    from rww.ops.reference import transfer_deco
    from rww.params import get_preset, pack_parameters

    pr = get_preset("deco2014").defaults
    n = sc.shape[0]
    G, w_ee, j_n, labels = peer["_fic_G"], peer["_fic_w_EE"], peer["_fic_J_N"], peer["_labels"]
    s = G.shape[0]
    table = pack_parameters({"G": torch.tensor(G).view(s, 1), "w_EE": torch.tensor(w_ee),
                             "J_NMDA": torch.tensor(j_n), "w_EI": 1.0},
                            get_preset("deco2014"), s, n, torch.float64)
    sct = torch.tensor(sc)
    r_from_i = float(transfer_deco(torch.tensor(CUBNM_I_E_SS, dtype=torch.float64),
                                   pr["a_E"], pr["b_E"], pr["d_E"]))
    cub = peer["fic_wIE"]
    res = {}
    for key, target in (("target_r_E_ss", CUBNM_R_E_SS), ("target_H_E_of_I_E_ss", r_from_i),
                        ("target_3Hz_rww_default", 3.0)):
        fic = analytic_fic(table, sct, target)
        w = fic.w_IE.numpy()
        per_sim = np.max(np.abs(w - cub) / np.abs(cub), axis=1)
        res[key] = {"target_rate_hz": target, "max_rel_diff": float(per_sim.max()),
                    "max_rel_diff_per_sim": per_sim.tolist(), "rww_failed": int(fic.failed.sum()),
                    "rww_S_E": float(fic.S_E[0, 0]), "rww_I_E": float(fic.I_E[0, 0])}
        if key == "target_r_E_ss":
            exact = fic
    # cuBNM's inhibitory root recovered from its weights: with its constants, the excitatory
    # balance gives S_I = (W_E I_0 + w_EE J S_E_ss + G J (C S_E_ss) - I_E_ss) / wIE, then
    # r_I = S_I / (gamma_I tau_I) and I_I = H_I^{-1}(r_I); compare with rww's exact root.
    Gt = G.reshape(s, 1)
    exc = (pr["W_E"] * pr["I_0"] + w_ee * j_n * CUBNM_S_E_SS
           + Gt * j_n * (sc @ np.full(n, CUBNM_S_E_SS))[None, :] - CUBNM_I_E_SS)
    s_i = exc / cub
    r_i = s_i / (pr["gamma_I"] * pr["tau_I"])
    i_i, _ = inverse_transfer_deco(torch.tensor(r_i), pr["a_I"], pr["b_I"], pr["d_I"])
    i_i_err = np.abs(i_i.numpy() - exact.I_I.numpy()) / exact.I_I.numpy()
    res["cubnm_brent_root"] = {
        "tolerance_rel": CUBNM_BREN_RTOL,
        "max_rel_error_I_I": float(i_i_err.max()),
        "note": "cuBNM's I_I recovered from its wIE with its 10-decimal constants, against rww's "
                "Newton root (to 1e-14): how far GSL's Brent iteration actually stopped"}
    # the same weights built from cuBNM's rounded constants and rww's exact S_I
    w_cubconst = exc / exact.S_I.numpy()
    res["rww_S_I_with_cubnm_constants"] = {
        "max_rel_diff": rel_diff(w_cubconst, cub),
        "note": "w_IE from cuBNM's rounded S_E_ss, I_E_ss and rww's exact inhibitory root: what "
                "is left is Brent's stopping error"}
    res["cubnm_fic_unstable"] = int(np.sum(peer["fic_unstable"]))
    res["runs"] = [{"label": lab, "G": float(g)} for lab, g in zip(labels, G)]
    ok = (res["target_r_E_ss"]["max_rel_diff"] <= TOL["fic_rel"]
          and res["target_H_E_of_I_E_ss"]["max_rel_diff"] <= TOL["fic_rel"]
          and res["cubnm_fic_unstable"] == 0 and res["target_r_E_ss"]["rww_failed"] == 0)
    res["pass"] = bool(ok)
    res["tolerance_rel"] = TOL["fic_rel"]
    return res


def check_noise_off(cfg, sc, peer, torch):
    import rww

    n = sc.shape[0]
    G = np.asarray(cfg["off_G"], dtype=float)
    b = G.shape[0]
    sct = torch.tensor(sc)
    w_ie = peer["off_wIE"]
    bw_dt_s = DT_MS * 1e-3
    # cuBNM's samples: int(0.72 / (0.1 / 1000)) = int(7199.999999999999) = 7199 steps per TR.
    spt_cubnm = cubnm_iterations(int(TR * 1000), 0.1)
    res = {"G": G.tolist(), "w_IE": "cuBNM's FIC weights, given to rww",
           "steps_per_sample_cubnm": spt_cubnm, "steps_per_tr_rww_nominal": 7200}

    def model(steps_per_tr):
        return rww.RWWBold(sct, G=torch.tensor(G), w_IE=torch.tensor(w_ie), sigma=0.0, batch=b,
                           dtype=torch.float64, backend="numba", steps_per_tr=steps_per_tr)

    # (a) long run at cuBNM's TR sampling
    t0 = time.perf_counter()
    n_trs = peer["off_bold"].shape[1]
    out = model(spt_cubnm).simulate(n_trs, state=rww_initial_state(b, n, torch), seed=0,
                                    record=("S_E", "S_I", "r_E", "r_I"))
    res["rww_seconds_long"] = time.perf_counter() - t0
    rec = {k: v.numpy() for k, v in out.records.items()}
    bold_rww = out.bold.numpy() * CUBNM_BOLD_SCALE
    bold_cub = peer["off_bold"]
    steady = cfg["off_steady_trs"]
    res["long"] = {
        "duration_s": cfg["off_duration"], "samples": int(n_trs),
        "S_E_max_rel_diff": rel_diff(rec["S_E"], peer["off_S_E"]),
        "S_I_max_rel_diff": rel_diff(rec["S_I"], peer["off_S_I"]),
        "bold_steady_trs": steady,
        "bold_steady_max_rel_diff": rel_diff(bold_rww[:, -steady:], bold_cub[:, -steady:]),
        "bold_all_max_rel_diff": rel_diff(bold_rww, bold_cub, floor=np.abs(bold_cub).max() * 1e-3),
        "bold_steady_value_range_percent": [float(bold_cub[:, -1].min()),
                                            float(bold_cub[:, -1].max())],
        "r_E_steady_max_rel_diff": rel_diff(rec["r_E"][:, -steady:], peer["off_r_E"][:, -steady:]),
        "r_E_final_minus_target_hz_cubnm": float(np.abs(peer["off_r_E"][:, -1]
                                                        - CUBNM_R_E_SS).max()),
        "r_E_final_minus_target_hz_rww": float(np.abs(rec["r_E"][:, -1] - CUBNM_R_E_SS).max()),
        "bold_change_over_steady_window_rel": rel_diff(bold_cub[:, -1], bold_cub[:, -steady]),
    }
    res["long"]["r_E_final_minus_target_hz_per_G_cubnm_weights"] = np.abs(
        rec["r_E"][:, -1] - CUBNM_R_E_SS).max(axis=1).tolist()
    # the same with rww's own FIC weights (exact root): how well FIC holds the target when the
    # weights carry no 1e-9 error (the steady rate is sensitive to w_IE through the recurrent
    # excitation, more so near G_c)
    t0 = time.perf_counter()
    own = rww.RWWBold(sct, G=torch.tensor(G), fic=CUBNM_R_E_SS, sigma=0.0, batch=b,
                      dtype=torch.float64, backend="numba", steps_per_tr=spt_cubnm)
    own_out = own.simulate(n_trs, state=rww_initial_state(b, n, torch), seed=0, record=("r_E",))
    res["rww_seconds_own_weights"] = time.perf_counter() - t0
    res["long"]["r_E_final_minus_target_hz_per_G_rww_weights"] = np.abs(
        own_out.records["r_E"].numpy()[:, -1] - CUBNM_R_E_SS).max(axis=1).tolist()
    # (b) the first seconds, every step in rww and every 1 ms (10 steps) in cuBNM
    t0 = time.perf_counter()
    n_steps = int(round(cfg["fine_duration"] * 1000 / DT_MS))
    fine = model(1).simulate(n_steps, state=rww_initial_state(b, n, torch), seed=0,
                             record=("S_E", "S_I", "r_E", "r_I"))
    res["rww_seconds_fine"] = time.perf_counter() - t0
    frec = {k: v.numpy() for k, v in fine.records.items()}
    every = 10                                   # cuBNM: states_sampling 1 ms = 10 steps
    idx = np.arange(every - 1, n_steps, every)   # rww's 1-based step 10m
    fine_res = {"duration_s": cfg["fine_duration"], "samples": int(idx.size)}
    for var in ("S_E", "S_I", "r_E", "r_I"):
        fine_res[f"{var}_max_rel_diff"] = rel_diff(frec[var][:, idx], peer[f"fine_{var}"])
    # BOLD: cuBNM's Balloon order applied to rww's per-step S_E, sampled every 7199 steps
    s_e_steps = np.moveaxis(frec["S_E"], 1, 0)               # (T, B, N)
    emulated = cubnm_balloon_bold(s_e_steps, bw_dt_s, spt_cubnm)
    bold_cub_f = peer["fine_bold"]
    m = min(emulated.shape[1], bold_cub_f.shape[1])
    rww_scheme = fine.bold.numpy()[:, spt_cubnm - 1::spt_cubnm][:, :m] * CUBNM_BOLD_SCALE
    fine_res["bold_samples"] = m
    fine_res["bold_cubnm_order_max_rel_diff"] = rel_diff(emulated[:, :m], bold_cub_f[:, :m])
    fine_res["bold_rww_scheme_max_rel_diff"] = rel_diff(rww_scheme, bold_cub_f[:, :m])
    # if cuBNM sampled at 7200 steps instead, the emulation would disagree:
    at_7200 = cubnm_balloon_bold(s_e_steps, bw_dt_s, 7200)[:, :m]
    fine_res["bold_cubnm_order_at_7200_steps_max_rel_diff"] = rel_diff(at_7200, bold_cub_f[:, :m])
    res["fine"] = fine_res
    checks = {
        "S_E": max(res["long"]["S_E_max_rel_diff"], fine_res["S_E_max_rel_diff"]),
        "S_I": max(res["long"]["S_I_max_rel_diff"], fine_res["S_I_max_rel_diff"]),
        "r_E": fine_res["r_E_max_rel_diff"], "r_I": fine_res["r_I_max_rel_diff"],
        "bold_steady": res["long"]["bold_steady_max_rel_diff"],
        "bold_transient_cubnm_order": fine_res["bold_cubnm_order_max_rel_diff"],
    }
    res["checked_max_rel_diff"] = checks
    res["tolerance_rel"] = TOL["off_rel"]
    res["pass"] = bool(all(v <= TOL["off_rel"] for v in checks.values()))
    return res


def stats_of(bold, target_fc, target_fcd, torch):
    """BOLD (T, N) in rww units, after burn-in -> std, FC r, FCD KS (rww's functions)."""
    from rww import objectives as obj

    x = torch.as_tensor(bold, dtype=torch.float64)
    fc = obj.fc(x)
    fcd_v = obj.fcd_values(obj.fcd(x, 43, 7))
    return {"bold_std": float(x.std(dim=0).mean()),
            "fc_r": float(obj.fc_correlation(fc, target_fc)),
            "fcd_ks": obj.ks_statistic(fcd_v, target_fcd)}


STAT_KEYS = ("mean_r_E", "max_r_E", "bold_std", "fc_r", "fcd_ks")


def check_noise(cfg, sc, demo, peer, torch):
    import rww
    from rww.params import get_preset, pack_parameters
    from rww.stability import critical_coupling
    from scipy.stats import ks_2samp

    n = sc.shape[0]
    G = np.asarray(cfg["noise_G"], dtype=float)
    b = G.shape[0]
    sct = torch.tensor(sc)
    n_trs = int(round(cfg["noise_duration"] / TR))
    burn = int(round(cfg["noise_burn_in"] / TR))
    table = pack_parameters({}, get_preset("deco2014"), 1, n, torch.float64)
    g_c = float(critical_coupling(table, sct, CUBNM_R_E_SS)[0])
    target_fc = demo.fc.to(torch.float64)
    target_fcd = demo.fcd_values.to(torch.float64)
    emp_tril = demo.fc.numpy()[np.tril_indices(n, -1)]     # cuBNM's FC order (i > j, row-major)
    seeds = list(cfg["noise_seeds"])
    per_seed = {"rww": [], "cubnm": [], "cubnm_own": []}    # [seed][G] -> stats
    timing, w_ie_diff, unstable = {}, 0.0, False
    for k, seed in enumerate(seeds):
        model = rww.RWWBold(sct, G=torch.tensor(G), batch=b, fic=CUBNM_R_E_SS,
                            sigma=cfg["noise_sigma"], dtype=torch.float64, backend="numba")
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.simulate(n_trs, state=rww_initial_state(b, n, torch), seed=seed,
                                 record=("r_E",))
        timing[f"rww_seed{seed}"] = time.perf_counter() - t0
        bold_r = out.bold.numpy()[:, burn:]
        r_e = out.records["r_E"].numpy()[:, burn:].mean(axis=1)          # (B, N) time means
        bold_c = peer[f"noise{k}_bold"][:, burn:] / CUBNM_BOLD_SCALE
        r_e_c = peer[f"noise{k}_mean_r_E"]                              # cuBNM's own means
        w_ie_diff = max(w_ie_diff, rel_diff(model.last_fic.w_IE.numpy(), peer[f"noise{k}_wIE"]))
        unstable = unstable or bool(np.any(peer[f"noise{k}_fic_unstable"]))
        for name, bold, rate in (("rww", bold_r, r_e), ("cubnm", bold_c, r_e_c)):
            per_seed[name].append([
                {"mean_r_E": float(rate[i].mean()), "max_r_E": float(rate[i].max()),
                 **stats_of(bold[i], target_fc, target_fcd, torch)} for i in range(b)])
        per_seed["cubnm_own"].append([
            {"fc_r": float(np.corrcoef(peer[f"noise{k}_fc_tril"][i], emp_tril)[0, 1]),
             "fcd_ks": float(ks_2samp(peer[f"noise{k}_fcd_tril"][i],
                                      demo.fcd_values.numpy()).statistic)} for i in range(b)])
    own_vs_ours = max(abs(per_seed["cubnm_own"][k][i][key] - per_seed["cubnm"][k][i][key])
                      for k in range(len(seeds)) for i in range(b) for key in ("fc_r", "fcd_ks"))
    rows = []
    for i, g in enumerate(G):
        row = {"G": float(g), "G_over_G_c": float(g / g_c)}
        for name in ("rww", "cubnm", "cubnm_own"):
            vals = [per_seed[name][k][i] for k in range(len(seeds))]
            row[name] = {key: float(np.mean([v[key] for v in vals])) for key in vals[0]}
            if len(seeds) > 1:
                row[name + "_seed_sd"] = {key: float(np.std([v[key] for v in vals], ddof=1))
                                          for key in vals[0]}
            row[name + "_per_seed"] = vals
        d = {key: row["rww"][key] - row["cubnm"][key] for key in STAT_KEYS}
        d["mean_r_E_rel"] = d["mean_r_E"] / row["cubnm"]["mean_r_E"]
        d["bold_std_rel"] = d["bold_std"] / row["cubnm"]["bold_std"]
        row["diff"] = d
        row["checked"] = bool(g < g_c)
        row["pass"] = bool(not row["checked"] or (
            abs(d["mean_r_E_rel"]) <= TOL["noise_mean_r_E_rel"]
            and abs(d["bold_std_rel"]) <= TOL["noise_bold_std_rel"]
            and abs(d["fc_r"]) <= TOL["noise_fc_r"]
            and abs(d["fcd_ks"]) <= TOL["noise_fcd_ks"]))
        rows.append(row)
    return {"G_c": g_c, "n_trs": n_trs, "burn_in_trs": burn, "seeds": seeds,
            "cubnm_burn_in_trs": int(int(cfg["noise_burn_in"]) * 1000 // int(TR * 1000)),
            "fic_w_IE_max_rel_diff": w_ie_diff, "cubnm_fic_unstable": unstable,
            "cubnm_own_fc_fcd_vs_rww_functions_max_abs_diff": own_vs_ours,
            "rows": rows, "timing_s": timing,
            "tolerances": {k: v for k, v in TOL.items() if k.startswith("noise")},
            "pass": bool(all(r["pass"] for r in rows) and not unstable)}


# -------------------------------------------------------------------------------------- report
def print_report(doc):
    p, res = print, doc["results"]
    f = res["fic"]
    p("\n== 1. FIC weights (rww analytic_fic vs cuBNM analytical FIC), "
      f"{len(f['runs'])} runs ==")
    p(f"  target r_E_ss = {CUBNM_R_E_SS} Hz           max rel diff "
      f"{fmt(f['target_r_E_ss']['max_rel_diff'])}")
    p(f"  target H_E(I_E_ss) = {f['target_H_E_of_I_E_ss']['target_rate_hz']:.10f} Hz  "
      f"max rel diff {fmt(f['target_H_E_of_I_E_ss']['max_rel_diff'])}")
    p(f"  (rww default 3 Hz target: max rel diff {fmt(f['target_3Hz_rww_default']['max_rel_diff'])}"
      ", a different target)")
    p(f"  cuBNM's Brent root for I_I: rel error {fmt(f['cubnm_brent_root']['max_rel_error_I_I'])}"
      f" (its tolerance {CUBNM_BREN_RTOL}); rww's S_I with cuBNM's constants: "
      f"{fmt(f['rww_S_I_with_cubnm_constants']['max_rel_diff'])}")
    p(f"  -> {'PASS' if f['pass'] else 'FAIL'} (tolerance {TOL['fic_rel']:g})")
    o = res["noise_off"]
    p(f"\n== 2. Noise off, G = {o['G']}, float64, same w_IE ==")
    lo, fi = o["long"], o["fine"]
    p(f"  {lo['duration_s']} s, {lo['samples']} samples every {o['steps_per_sample_cubnm']} steps:"
      f" S_E {fmt(lo['S_E_max_rel_diff'])}, S_I {fmt(lo['S_I_max_rel_diff'])}, steady BOLD "
      f"(last {lo['bold_steady_trs']}) {fmt(lo['bold_steady_max_rel_diff'])}, steady r_E "
      f"{fmt(lo['r_E_steady_max_rel_diff'])}")
    p(f"  first {fi['duration_s']} s every 1 ms: S_E {fmt(fi['S_E_max_rel_diff'])}, S_I "
      f"{fmt(fi['S_I_max_rel_diff'])}, r_E {fmt(fi['r_E_max_rel_diff'])}, r_I "
      f"{fmt(fi['r_I_max_rel_diff'])}")
    p("  transient BOLD: cuBNM's Balloon order on rww's S_E "
      f"{fmt(fi['bold_cubnm_order_max_rel_diff'])}; rww's own scheme "
      f"{fmt(fi['bold_rww_scheme_max_rel_diff'])} (the schemes differ at O(dt)); all samples "
      f"of the long run {fmt(lo['bold_all_max_rel_diff'])}")
    p("  steady r_E - target with cuBNM's weights: cuBNM "
      f"{fmt(lo['r_E_final_minus_target_hz_cubnm'])} Hz, rww "
      f"{fmt(lo['r_E_final_minus_target_hz_rww'])} Hz; with rww's own FIC weights: "
      + ", ".join(f"G={g}: {fmt(v)} Hz" for g, v in
                  zip(o["G"], lo["r_E_final_minus_target_hz_per_G_rww_weights"])))
    p(f"  -> {'PASS' if o['pass'] else 'FAIL'} (tolerance {TOL['off_rel']:g} relative)")
    nz = res["noise"]
    seeds = nz["seeds"]
    p(f"\n== 3. Noise on (sigma {doc['settings']['noise_sigma']}), FIC, {nz['n_trs']} TRs "
      f"({nz['burn_in_trs']} discarded), G_c = {nz['G_c']:.4f}, noise seeds {seeds}"
      f"{' (means over seeds; sd in brackets)' if len(seeds) > 1 else ''} ==")
    p(f"  {'G':>5} {'G/Gc':>5} {'sim':>6} {'mean rE':>8} {'max rE':>8} {'BOLD std':>9} "
      f"{'FC r':>6} {'FCD KS':>7}   cuBNM's own FC r / FCD KS")
    for r in nz["rows"]:
        for name in ("rww", "cubnm"):
            s = r[name]
            extra = (f"   {r['cubnm_own']['fc_r']:.3f} / {r['cubnm_own']['fcd_ks']:.3f}"
                     if name == "cubnm" else "")
            p(f"  {r['G']:>5.2f} {r['G_over_G_c']:>5.2f} {name:>6} {s['mean_r_E']:>8.3f} "
              f"{s['max_r_E']:>8.3f} {s['bold_std']:>9.2e} {s['fc_r']:>6.3f} {s['fcd_ks']:>7.3f}"
              f"{extra}")
            sd = r.get(name + "_seed_sd")
            if sd:
                p(f"  {'':>5} {'':>5} {'(sd)':>6} {sd['mean_r_E']:>8.3f} {sd['max_r_E']:>8.3f} "
                  f"{sd['bold_std']:>9.1e} {sd['fc_r']:>6.3f} {sd['fcd_ks']:>7.3f}")
        d = r["diff"]
        flag = ("PASS" if r["pass"] else "FAIL") if r["checked"] else "(above G_c: reported only)"
        p(f"  {'':>5} {'':>5} {'diff':>6} {100 * d['mean_r_E_rel']:>+7.1f}% {d['max_r_E']:>+8.3f}"
          f" {100 * d['bold_std_rel']:>+8.1f}% {d['fc_r']:>+6.3f} {d['fcd_ks']:>+7.3f}   {flag}")
    t = nz["tolerances"]
    p(f"  FIC weights in these runs: max rel diff {fmt(nz['fic_w_IE_max_rel_diff'])}; cuBNM's own "
      f"FC r / FCD KS vs rww's functions on cuBNM's BOLD: max abs diff "
      f"{fmt(nz['cubnm_own_fc_fcd_vs_rww_functions_max_abs_diff'])}")
    p(f"  -> {'PASS' if nz['pass'] else 'FAIL'} (below G_c: |mean r_E| "
      f"{100 * t['noise_mean_r_E_rel']:g}%, BOLD std {100 * t['noise_bold_std_rel']:g}%, "
      f"FC r {t['noise_fc_r']}, FCD KS {t['noise_fcd_ks']})")


# ----------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, fewer G values (~3 min)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="noise seeds per simulator in check 3 (default 1); with several, the "
                         "table shows means over seeds and their standard deviations")
    ap.add_argument("--out", default=None,
                    help=f"results JSON (default {os.path.relpath(DEFAULT_OUT, REPO)} for the "
                         "full run; --quick writes none unless --out is given)")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    out_path = args.out or (DEFAULT_OUT if mode == "full" else None)
    python = peer_python()
    if python is None:
        print("SKIPPED: cuBNM's virtualenv (.venv-peers/cubnm, or RWW_PEER_PYTHON_CUBNM) is "
              "absent; create it with `python3.11 -m venv .venv-peers/cubnm && "
              ".venv-peers/cubnm/bin/pip install cubnm` (see bench/README.md). Nothing written.")
        return 0

    import torch

    import rww
    from rww.data import load_demo

    cfg = dict(SETTINGS[mode])
    if args.seeds is not None:
        if args.seeds < 1:
            ap.error("--seeds must be >= 1")
        cfg["noise_seeds"] = list(range(args.seeds))
    validate_durations(cfg)
    t_start = time.perf_counter()
    demo = load_demo(include_bold=False)
    sc_raw = demo.sc.numpy().astype(np.float64)
    mean_row_sum = float(sc_raw.sum(axis=1).mean())
    sc = sc_raw / mean_row_sum
    n = sc.shape[0]
    sc_cubnm = np.ascontiguousarray(sc.T)

    # FIC runs: G x w_EE, plus one with regional w_EE and one with regional J_NMDA
    fic_G, fic_wee, fic_jn, labels = [], [], [], []
    for g in cfg["fic_G"]:
        for w in cfg["fic_w_EE"]:
            fic_G.append(g)
            fic_wee.append(np.full(n, w))
            fic_jn.append(np.full(n, J_N))
            labels.append(f"G={g} w_EE={w}")
    myelin = demo.maps["myelin"].numpy().astype(float)
    grad = demo.maps["fc_gradient"].numpy().astype(float)
    fic_G += [1.0, 1.0]
    fic_wee += [W_P + 0.1 * myelin, np.full(n, W_P)]
    fic_jn += [np.full(n, J_N), J_N + 0.01 * grad]
    labels += ["G=1.0 w_EE=1.4+0.1*myelin (regional)", "G=1.0 J_NMDA=0.15+0.01*fc_gradient"]
    fic_G = np.asarray(fic_G)
    fic_wee, fic_jn = np.stack(fic_wee), np.stack(fic_jn)

    request = dict(
        tasks=np.array(["fic", "off", "fine", "noise"]), sc_cubnm=sc_cubnm, tr=np.array(TR),
        w_p=np.array(W_P), J_N=np.array(J_N),
        fic_G=fic_G, fic_w_p=fic_wee, fic_J_N=fic_jn,
        off_G=np.asarray(cfg["off_G"], dtype=float), off_duration=np.array(cfg["off_duration"]),
        fine_duration=np.array(cfg["fine_duration"]),
        noise_G=np.asarray(cfg["noise_G"], dtype=float),
        noise_duration=np.array(cfg["noise_duration"]),
        noise_burn_in_s=np.array(cfg["noise_burn_in"]),
        noise_seeds=np.asarray(cfg["noise_seeds"]), noise_sigma=np.array(cfg["noise_sigma"]),
        noise_bw_dt=np.array(cfg["noise_bw_dt"]))
    print(f"cuBNM cross-check ({mode}): running cuBNM in {python} ...", flush=True)
    # One cuBNM process per run kind: cuBNM 0.1.0's core frees FCD buffers according to the
    # *new* configuration when a session is re-initialised, so a run with FC/FCD after one
    # without them in the same process can abort ("munmap_chunk(): invalid pointer").
    peer, peer_wall, peer_walls = {}, 0.0, {}
    with tempfile.TemporaryDirectory(prefix="rww-cubnm-") as work:
        for task in ("fic", "off", "fine", "noise"):
            part, wall = run_peer(python, dict(request, tasks=np.array([task])), work)
            peer.update(part)
            peer_wall += wall
            peer_walls[task] = wall
            print(f"  cuBNM {task}: {wall:.0f} s", flush=True)
    print("  running rww ...", flush=True)
    peer.update(_fic_G=fic_G, _fic_w_EE=fic_wee, _fic_J_N=fic_jn, _labels=labels)

    t_rww = time.perf_counter()
    results = {"fic": check_fic(cfg, sc, demo.maps, peer, torch)}
    results["noise_off"] = check_noise_off(cfg, sc, peer, torch)
    results["noise"] = check_noise(cfg, sc, demo, peer, torch)
    rww_wall = time.perf_counter() - t_rww

    import numba
    doc = {
        "what": "rww vs cuBNM cross-check (bench/cubnm_crosscheck.py)",
        "mode": mode,
        "command": "python bench/cubnm_crosscheck.py" + (" --quick" if args.quick else "")
                   + (f" --seeds {args.seeds}" if args.seeds else ""),
        "machine": machine(),
        "git_revision": git_revision(),
        "versions": {"rww": rww.__version__, "torch": torch.__version__,
                     "numba": numba.__version__, "numpy": np.__version__,
                     "cubnm": str(peer["cubnm_version"]),
                     "cubnm_revision": str(peer["cubnm_revision"]),
                     "cubnm_numpy": str(peer["numpy_version"])},
        "connectome": {
            "source": "rww.data.load_demo().sc (Schaefer-100, group-train706)",
            "normalisation": "divided by its mean row sum",
            "mean_row_sum": mean_row_sum, "n_nodes": n,
            "symmetric": bool(np.array_equal(sc, sc.T)),
            "sha1_rww": hashlib.sha1(np.ascontiguousarray(sc).tobytes()).hexdigest(),
            "sha1_cubnm": hashlib.sha1(sc_cubnm.tobytes()).hexdigest(),
            "passed_to_cubnm": "the transpose (cuBNM's rows are sources), float64"},
        "settings": {**cfg, "dt_ms": DT_MS, "tr_s": TR, "w_EE": W_P, "J_NMDA": J_N,
                     "initial_state": {"S_E": INIT_S, "S_I": INIT_S, "x": 0.0, "f": 1.0,
                                       "v": 1.0, "q": 1.0},
                     "rww": "RWWBold(dtype=float64, backend='numba'), deco2014 preset and "
                            "Balloon (kappa 1/0.65, gamma_h 1/0.41, V_0 0.02)",
                     "cubnm": "rWWSimGroup(force_cpu=True, dt='0.1', do_fic=True, "
                              "max_fic_trials=0); BOLD in percent (V_0 = 2)",
                     "cubnm_fic_constants": {"r_E_ss": CUBNM_R_E_SS, "I_E_ss": CUBNM_I_E_SS,
                                             "S_E_ss": CUBNM_S_E_SS}},
        "timing_s": {"cubnm_process_wall": peer_wall, "cubnm_process_wall_per_task": peer_walls,
                     "cubnm_runs": {k[:-len("_seconds")]: float(v) for k, v in peer.items()
                                    if k.endswith("_seconds")},
                     "rww_checks_wall": rww_wall,
                     "total_wall": time.perf_counter() - t_start},
        "results": results,
        "pass": {k: v["pass"] for k, v in results.items()},
    }
    doc["all_pass"] = bool(all(doc["pass"].values()))
    print_report(doc)
    print(f"\ncuBNM {doc['timing_s']['cubnm_process_wall']:.0f} s, rww "
          f"{rww_wall:.0f} s, total {doc['timing_s']['total_wall']:.0f} s")
    if out_path:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        print(f"wrote {os.path.relpath(out_path, REPO)}")
    print("all checks pass" if doc["all_pass"] else "SOME CHECKS FAIL")
    return 0 if doc["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
