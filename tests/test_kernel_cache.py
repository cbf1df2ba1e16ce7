"""numba's on-disk cache of the kernels is invalidated by a change to any of their source files
(rww/ops/numba/cache.py), not only to the file that defines the cached function."""

import os
import subprocess
import sys

import pytest

numba = pytest.importorskip("numba")

from rww.ops.numba import cache  # noqa: E402


def test_every_cached_kernel_uses_the_package_locator():
    from rww.ops.numba import (adjoint, delayed, delayed_adjoint, forward, mathfn, split,  # noqa
                               step)

    modules = (adjoint, delayed, delayed_adjoint, forward, mathfn, split, step)
    cached = [obj for m in modules for obj in vars(m).values()
              if getattr(obj, "_cache", None) is not None and hasattr(obj._cache, "_impl")]
    assert len(cached) >= 10
    for kernel in cached:
        locator = kernel._cache._impl._locator
        assert isinstance(locator, cache.KernelSourcesLocator), kernel
        assert locator.get_source_stamp()[1] == cache.sources_digest()


def test_digest_covers_every_module_and_the_reference(tmp_path, monkeypatch):
    """The digest changes with any module of the package and with rww/ops/reference.py."""
    package = tmp_path / "numba_pkg"
    package.mkdir()
    for name in ("step.py", "forward.py"):
        (package / name).write_text(f"# {name}\n")
    reference = tmp_path / "reference.py"
    reference.write_text("PHI_SERIES = (1.0,)\n")
    monkeypatch.setattr(cache, "_PACKAGE_DIR", str(package))
    monkeypatch.setattr(cache, "_OTHER_SOURCES", (str(reference),))
    digests = []
    for change in (None, package / "step.py", reference):
        if change is not None:
            change.write_text(change.read_text() + "# changed\n")
        cache.sources_digest.cache_clear()
        digests.append(cache.sources_digest())
    cache.sources_digest.cache_clear()
    assert len(set(digests)) == 3


_CALLER = '''
from numba import njit
from . import cache  # noqa
from .callee import g

@njit(cache=True)
def f(x):
    return g(x) * 2
'''
_CALLEE = '''
from numba import njit

@njit(forceinline=True)
def g(x):
    return x + {k}
'''


def test_a_change_to_an_inlined_module_recompiles(tmp_path):
    """A package with this locator: its cached ``f`` inlines ``g`` from another file; after
    ``g``'s file changes, ``f`` is compiled again and computes with the new ``g`` (numba's own
    locator would load the stale machine code and print the old value)."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = open(cache.__file__).read()
    (package / "cache.py").write_text(source.replace(
        "_OTHER_SOURCES = (os.path.join(os.path.dirname(_PACKAGE_DIR), \"reference.py\"),)",
        "_OTHER_SOURCES = ()"))
    (package / "caller.py").write_text(_CALLER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "nc"))

    def run():
        out = subprocess.run(
            [sys.executable, "-c", "from pkg.caller import f; r = f(1); "
             "print(r, sum(f.stats.cache_hits.values()))"],
            env=env, capture_output=True, text=True, check=True).stdout.split()
        return int(out[0]), int(out[1])

    (package / "callee.py").write_text(_CALLEE.format(k=1))
    assert run() == (4, 0)                  # compiled
    assert run() == (4, 1)                  # loaded from the cache
    (package / "callee.py").write_text(_CALLEE.format(k=100))
    assert run() == (202, 0)                # the change seen: compiled again
    assert run() == (202, 1)
