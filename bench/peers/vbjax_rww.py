"""vbjax (``pip install vbjax tqdm``: vbjax 0.0.19 imports tqdm without declaring it; on JAX): the Deco et al. 2014 RWW equations written here as a
drift function for vbjax's integrators, with vbjax's BOLD (Balloon-Windkessel) equations.

Two variants:
- ``vbjax``: vbjax's SDE integrator ``make_sde`` (stochastic Heun: two drift evaluations per
  step) for the neural state and its ``make_bold`` monitor (Heun) for the haemodynamics;
- ``vbjax-euler``: vbjax's ``euler_step`` for both (Euler-Maruyama, one drift evaluation per
  step: the same amount of work per step as rww).

Both: float32, dt = 0.1 ms, S clamped to [0, 1] after every step (vbjax's ``adhoc`` hook), noise
drawn with ``jax.random`` in chunks of at most 1000 steps (so memory does not grow with the run),
BOLD sampled at the end of every TR; the whole run is one jitted ``lax.scan`` over TRs of scans
over chunks of scans over steps, ``vmap``-ed over the batch. vbjax's BOLD uses its own constants (Stephan et al. 2007 form), not
rww's; the cost per step is the same.
"""

from __future__ import annotations

import numpy as np

from . import PeerRunner, check_finite, forward_only


class VbjaxRunner(PeerRunner):
    def __init__(self, workload, sc, meta, euler: bool):
        super().__init__(meta)
        import jax
        import jax.numpy as jnp
        import vbjax as vb
        import workloads as wl
        from vbjax.loops import euler_step

        forward_only(workload, "vbjax")
        p = wl.DECO_PARAMS
        dt = workload.dt                                   # ms
        spt = round(workload.tr * 1000.0 / dt)
        n_trs, n, batch = workload.n_trs, workload.n_nodes, workload.batch
        cmat = jnp.asarray(sc, dtype=jnp.float32)
        bold_p = vb.bold_default_theta
        dt_s = dt / 1000.0

        def rate(current, a, b, d):
            y = a * current - b
            return y / (1.0 - jnp.exp(-d * y))

        def dfun(x, g):
            s_e, s_i = x[0], x[1]
            j = p["J_NMDA"]
            i_e = (p["W_E"] * p["I_0"] + p["w_EE"] * j * s_e + g * j * (cmat @ s_e)
                   - p["w_IE"] * s_i)
            i_i = p["W_I"] * p["I_0"] + p["w_EI"] * j * s_e - s_i
            r_e = rate(i_e, p["a_E"], p["b_E"], p["d_E"])
            r_i = rate(i_i, p["a_I"], p["b_I"], p["d_I"])
            return jnp.stack([-s_e / p["tau_E"] + (1.0 - s_e) * p["gamma_E"] * r_e,
                              -s_i / p["tau_I"] + p["gamma_I"] * r_i])

        def clamp(x, g):
            return jnp.clip(x, 0.0, 1.0)

        sigma = p["sigma"]
        bold0, bold_heun, bold_sample = vb.make_bold((n,), dt_s, bold_p)
        if euler:
            def neural_step(x, z, g):
                return euler_step(x, dfun, dt, g, add=sigma * np.sqrt(dt) * z, adhoc=clamp)

            def bold_step(b, s_e):
                return euler_step(b, vb.bold_dfun, dt_s, s_e, bold_p)
        else:
            sde_step, _ = vb.make_sde(dt, dfun, sigma, adhoc=clamp)

            def neural_step(x, z, g):
                return sde_step(x, z, g)

            bold_step = bold_heun

        # Noise is drawn in chunks of at most 1000 steps inside the scan, so that memory does not
        # grow with the run or the TR (a whole TR of noise for a batch of 64 is ~350 MB).
        chunk = max(c for c in range(1, min(spt, 1000) + 1) if spt % c == 0)
        n_chunks = spt // chunk

        def one_chunk(carry, key):
            x, b, g = carry
            zs = jax.random.normal(key, (chunk, 2, n), dtype=jnp.float32)

            def op(c, z):
                x, b = c
                x = neural_step(x, z, g)
                b = bold_step(b, x[0])
                return (x, b), None

            (x, b), _ = jax.lax.scan(op, (x, b), zs)
            return (x, b, g), None

        def one_tr(carry, key):
            carry, _ = jax.lax.scan(one_chunk, carry, jax.random.split(key, n_chunks))
            _, y = bold_sample(carry[1])
            return carry, y

        def simulate(g, key):
            x0 = jnp.full((2, n), 0.1, dtype=jnp.float32)
            keys = jax.random.split(key, n_trs)
            _, bold = jax.lax.scan(one_tr, (x0, bold0.astype(jnp.float32), g), keys)
            return bold                                       # (n_trs, n)

        run_batch = jax.jit(jax.vmap(simulate))
        g = jnp.full((batch,), p["G"], dtype=jnp.float32)
        keys = jax.random.split(jax.random.PRNGKey(0), batch)
        self._call = lambda: run_batch(g, keys).block_until_ready()

    def run(self):
        check_finite("vbjax", np.asarray(self._call()))


def build(workload, sc, variant="vbjax"):
    import importlib.metadata as md

    import jax

    euler = variant == "vbjax-euler"
    meta = {"peer": "vbjax" + (" (Euler)" if euler else " (Heun)"),
            "versions": {"vbjax": md.version("vbjax"), "jax": jax.__version__,
                         "jaxlib": md.version("jaxlib"), "numpy": np.__version__},
            "dtype": "float32",
            "integrator": ("euler_step (Euler-Maruyama), BOLD Euler" if euler else
                           "make_sde (stochastic Heun, 2 drift evaluations per step), BOLD Heun"),
            "install": "pip install vbjax tqdm",
            "notes": "RWW drift written for vbjax's integrators; jax.random noise per 1000 steps; "
                     "jit(vmap(scan)); vbjax's BOLD constants"}
    return VbjaxRunner(workload, sc, meta, euler)
