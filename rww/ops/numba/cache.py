"""numba's on-disk cache of the kernels, invalidated by a change to any of their source files.

Why: numba keys a cached function on the source of the file that defines it, not on the files
it calls into. The kernels in :mod:`.forward` or :mod:`.adjoint` inline the step from
:mod:`.step`, the layout from :mod:`.layout`, the math of :mod:`.mathfn`, the coupling product
of :mod:`.symmetric` and a constant of :mod:`rww.ops.reference`; after an edit or a ``git pull``
that changes one of those alone, numba would load the old machine code and compute with the old
equations, silently. (Checked with numba 0.68: a cached function that inlines a function from
another file kept returning the old result after that file changed.)

How: importing this module (every kernel module does, before its first ``@njit(cache=True)``)
puts :class:`KernelSourcesLocator` first in numba's list of cache locators. For a function
defined in this package it wraps the locator numba would have chosen (``NUMBA_CACHE_DIR``,
``__pycache__`` next to the source, or the user-wide cache) and adds to its source stamp a SHA-1
of every module of this package and of :mod:`rww.ops.reference`: any change to any of them
makes every cached kernel stale, and the kernels are compiled again on first use. Functions of
other packages are left to numba's own locators.
"""

from __future__ import annotations

import functools
import hashlib
import os

from numba.core import caching

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Modules outside this package whose code the kernels inline.
_OTHER_SOURCES = (os.path.join(os.path.dirname(_PACKAGE_DIR), "reference.py"),)


@functools.cache
def sources_digest() -> str:
    """SHA-1 of the names and contents of this package's ``.py`` files and of
    :data:`_OTHER_SOURCES` (computed once per process)."""
    digest = hashlib.sha1()
    names = sorted(os.path.join(_PACKAGE_DIR, n) for n in os.listdir(_PACKAGE_DIR)
                   if n.endswith(".py"))
    for path in names + list(_OTHER_SOURCES):
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


class KernelSourcesLocator(caching._CacheLocator):
    """numba's own locator for a kernel of this package, with :func:`sources_digest` in its
    source stamp."""

    _standard = tuple(caching.CacheImpl._locator_classes)

    def __init__(self, inner):
        self._inner = inner

    def ensure_cache_path(self):
        return self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_source_stamp(self):
        return (self._inner.get_source_stamp(), sources_digest())

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _PACKAGE_DIR:
            return None
        for standard in cls._standard:
            inner = standard.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner)
        return None


if not any(c.__name__ == KernelSourcesLocator.__name__ for c in caching.CacheImpl._locator_classes):
    caching.CacheImpl._locator_classes.insert(0, KernelSourcesLocator)
