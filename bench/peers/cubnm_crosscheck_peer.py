#!/usr/bin/env python
"""cuBNM's half of ``bench/cubnm_crosscheck.py``: run in cuBNM's own virtualenv
(``.venv-peers/cubnm/bin/python``), never in rww's (and rww is never imported here).

Usage::

    .venv-peers/cubnm/bin/python bench/peers/cubnm_crosscheck_peer.py REQUEST.npz RESULT.npz

``REQUEST.npz`` (written by the driver) holds the connectome in cuBNM's orientation (rows are
sources, columns targets) and the settings of each run; ``RESULT.npz`` gets cuBNM's outputs. Only
cuBNM's public ``rWWSimGroup`` API is used, in CPU mode (``force_cpu=True``), as in
``peers/cubnm_rww.py``. The runs:

``fic``     analytical FIC only (``do_fic=True``, ``max_fic_trials=0``): the ``wIE`` cuBNM writes
            back to ``param_lists["wIE"]`` after ``run()``, per simulation (G, w_p, J_N given),
            and ``fic_unstable`` (cuBNM's flag for a failed FIC, where it sets wIE = 1).
``off``     noise off (sigma = 0), FIC on, TR-sampled states (``states_ts=True``) and BOLD,
            Balloon every 0.1-ms step (``bw_dt="0.1"``), nothing discarded (``bold_remove_s=0``).
``fine``    the same for a few seconds with the states sampled every 1 ms
            (``states_sampling=0.001``, cuBNM's finest).
``noise``   sigma > 0, FIC on, one run per noise seed (``sim_seed``); the BOLD, the time-averaged
            states after ``bold_remove_s`` (cuBNM's ``states_ts=False`` output) and cuBNM's own FC
            and FCD lower triangles (window 30 s, step 5 s: 43 and 7 TRs at TR 0.72).

cuBNM's C++ prints progress to stdout; file descriptor 1 is pointed at stderr so that nothing but
this script's own files carries results.
"""

from __future__ import annotations

import os
import sys
import time

from decimal import Decimal

import numpy as np


def _group(sc, *, duration, tr, bw_dt, states_ts, states_sampling, do_fc, bold_remove_s,
           noise_segment_length, seed, n_sims):
    from cubnm import sim

    # cuBNM checks whole milliseconds through Decimal(duration): pass the decimal text, not the
    # binary float (Decimal(43.2) is 43.2000000000000028...).
    duration = Decimal(repr(float(duration)))
    kw = dict(duration=duration, TR=tr, sc=sc, dt="0.1", bw_dt=bw_dt, force_cpu=True,
              states_ts=states_ts, states_sampling=states_sampling, do_fc=do_fc, do_fcd=do_fc,
              gof_terms=["+fc_corr", "-fcd_ks"] if do_fc else [], window_size=30, window_step=5,
              bold_remove_s=bold_remove_s, do_fic=True, max_fic_trials=0, sim_seed=seed,
              noise_segment_length=noise_segment_length, sim_verbose=False)
    group = sim.rWWSimGroup(**kw)
    group.N = n_sims
    return group


def _set_params(group, G, w_p, J_N, sigma):
    group.param_lists["G"] = np.ascontiguousarray(G, dtype=float)
    group.param_lists["w_p"] = np.ascontiguousarray(w_p, dtype=float)
    group.param_lists["J_N"] = np.ascontiguousarray(J_N, dtype=float)
    group.param_lists["sigma"] = np.ascontiguousarray(sigma, dtype=float)
    group._set_default_params()


def _run(group, what):
    t0 = time.perf_counter()
    try:
        group.run()
    except UnboundLocalError as err:
        # cuBNM 0.1.0's SimGroup.run swallows a RuntimeError of its core that is not a CUDA error
        # and then fails on the unset output; say so instead of the confusing traceback.
        raise RuntimeError(f"cuBNM run '{what}' failed inside its core (SimGroup.run in cuBNM "
                           "0.1.0 hides the core's error message)") from err
    return time.perf_counter() - t0


def main(request_path: str, result_path: str) -> int:
    # Keep cuBNM's C++ chatter (it writes to fd 1) out of anything that might parse stdout.
    os.dup2(2, 1)
    import cubnm
    from cubnm import _version

    req = dict(np.load(request_path, allow_pickle=False))
    sc = np.ascontiguousarray(req["sc_cubnm"], dtype=float)
    n = sc.shape[0]
    out = {"cubnm_version": np.array(cubnm.__version__),
           "cubnm_revision": np.array(_version.get_versions().get("full-revisionid") or ""),
           "numpy_version": np.array(np.__version__)}
    tasks = [str(t) for t in req["tasks"]]

    if "fic" in tasks:
        G = req["fic_G"]
        s = G.shape[0]
        group = _group(sc, duration=1, tr=1.0, bw_dt="1.0", states_ts=False, states_sampling=None,
                       do_fc=False, bold_remove_s=0, noise_segment_length=1, seed=0, n_sims=s)
        _set_params(group, G, req["fic_w_p"], req["fic_J_N"], np.zeros((s, n)))
        out["fic_seconds"] = np.array(_run(group, "fic"))
        out["fic_wIE"] = np.array(group.param_lists["wIE"], dtype=float).reshape(s, n)
        out["fic_unstable"] = np.asarray(group.fic_unstable, dtype=bool)

    for name in ("off", "fine"):
        if name not in tasks:
            continue
        G = req["off_G"]
        s = G.shape[0]
        # Noise is multiplied by sigma = 0; a 1-s noise segment keeps its set-up cheap.
        group = _group(sc, duration=float(req[f"{name}_duration"]), tr=float(req["tr"]),
                       bw_dt="0.1", states_ts=True,
                       states_sampling=None if name == "off" else 0.001, do_fc=False,
                       bold_remove_s=0, noise_segment_length=1, seed=0, n_sims=s)
        _set_params(group, G, np.full((s, n), float(req["w_p"])),
                    np.full((s, n), float(req["J_N"])), np.zeros((s, n)))
        out[f"{name}_seconds"] = np.array(_run(group, name))
        out[f"{name}_wIE"] = np.array(group.param_lists["wIE"], dtype=float).reshape(s, n)
        out[f"{name}_fic_unstable"] = np.asarray(group.fic_unstable, dtype=bool)
        out[f"{name}_bold"] = np.array(group.sim_bold, dtype=float)
        for var in ("S_E", "S_I", "r_E", "r_I", "I_E", "I_I"):
            out[f"{name}_{var}"] = np.array(group.sim_states[var], dtype=float)

    if "noise" in tasks:
        G = req["noise_G"]
        s = G.shape[0]
        seeds = [int(x) for x in req["noise_seeds"]]
        burn = float(req["noise_burn_in_s"])
        for k, seed in enumerate(seeds):
            group = _group(sc, duration=float(req["noise_duration"]), tr=float(req["tr"]),
                           bw_dt=str(req["noise_bw_dt"]), states_ts=False, states_sampling=None,
                           do_fc=True, bold_remove_s=burn, noise_segment_length=30, seed=seed,
                           n_sims=s)
            _set_params(group, G, np.full((s, n), float(req["w_p"])),
                        np.full((s, n), float(req["J_N"])),
                        np.full((s, n), float(req["noise_sigma"])))
            out[f"noise{k}_seconds"] = np.array(_run(group, f"noise seed {seed}"))
            out[f"noise{k}_wIE"] = np.array(group.param_lists["wIE"], dtype=float).reshape(s, n)
            out[f"noise{k}_fic_unstable"] = np.asarray(group.fic_unstable, dtype=bool)
            out[f"noise{k}_bold"] = np.array(group.sim_bold, dtype=float)
            out[f"noise{k}_mean_r_E"] = np.array(group.sim_states["r_E"], dtype=float)
            out[f"noise{k}_fc_tril"] = np.array(group.sim_fc_trils, dtype=float)
            out[f"noise{k}_fcd_tril"] = np.array(group.sim_fcd_trils, dtype=float)
    np.savez(result_path, **out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
