"""What `pip install .` puts into site-packages: only the `rww` package (a top-level `kernels`
package would collide with an unrelated distribution of that name on the package index)."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_only_rww_is_installed():
    setuptools = pytest.importorskip("setuptools")
    with open(os.path.join(ROOT, "pyproject.toml")) as fh:
        text = fh.read()
    section = text.split("[tool.setuptools.packages.find]", 1)[1]
    include = re.search(r"include\s*=\s*\[([^\]]*)\]", section).group(1)
    patterns = [p.strip().strip("\"'") for p in include.split(",") if p.strip()]
    packages = setuptools.find_packages(ROOT, include=patterns)
    assert "rww.ops.triton" in packages and "rww.ops.numba" in packages
    assert {name.split(".")[0] for name in packages} == {"rww"}, packages


def test_importing_rww_imports_neither_kernel_compiler():
    """numba and triton are imported by the backends on first use, not by `import rww` (a
    fresh interpreter, since the test session may have imported them already)."""
    import subprocess
    import sys

    code = ("import sys, rww, rww.ops.numba, rww.ops.triton, rww.ops.triton.config, "
            "rww.ops.numba.layout; print('numba' in sys.modules, 'triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_triton_is_required_only_where_it_has_wheels():
    """triton publishes wheels for Linux only: elsewhere (macOS, Windows) rww installs without it
    and runs on the numba backend."""
    with open(os.path.join(ROOT, "pyproject.toml")) as fh:
        text = fh.read()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    triton = [line for line in deps.splitlines() if '"triton' in line]
    assert len(triton) == 1 and "platform_system == 'Linux'" in triton[0], triton
