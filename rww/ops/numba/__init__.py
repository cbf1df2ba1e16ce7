"""The compiled CPU backend (numba): :mod:`.backend` (the :class:`ScanBackend`), the kernels
(:mod:`.forward`, :mod:`.adjoint`, one step in :mod:`.step`, float32 math in :mod:`.mathfn`) and
the workspace layout they share (:mod:`.layout`). Importing this package imports nothing from
numba; the backend imports the kernels on first use."""
