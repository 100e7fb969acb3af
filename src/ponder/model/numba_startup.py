"""What the fast path does once per process before its first kernel runs.

Numba imports its NumPy support (numba.np.arraymath) when the first kernel is
loaded from its cache, and that module imports scipy.linalg, where installed,
only to set a flag that picks a BLAS inner product for np.convolve/np.correlate
(measured: most of a second, in a process that needs neither).  No ponder kernel
calls those, and np.dot in a kernel still imports BLAS itself when it compiles,
so the flag is set with scipy's BLAS module briefly hidden.
"""

from __future__ import annotations

import sys

_BLAS = "scipy.linalg.cython_blas"


def import_numba_numpy_support() -> None:
    if "numba.np.arraymath" in sys.modules or _BLAS in sys.modules:
        return
    sys.modules[_BLAS] = None  # an import of it now fails at once, without importing scipy
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules[_BLAS]
