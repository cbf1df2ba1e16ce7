"""The GPU backend (Triton): :mod:`.backend` (the :class:`ScanBackend`), the kernels
(:mod:`.forward`, :mod:`.adjoint`, one step in :mod:`.step`, the noise in :mod:`.philox`,
accurate math in :mod:`.mathfn`), the tile shapes (:mod:`.config`) and the ahead-of-time compile
check (``python -m rww.ops.triton.aot``). See README.md beside this file. Importing this package
imports nothing from triton; the backend imports the kernels on first use, and only the kernel
modules import triton."""
