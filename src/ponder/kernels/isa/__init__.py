"""Which instruction set the kernels run on: detection, the PONDER_ISA override, and each set's back end.

One module per instruction set (avx512_vnni, avx_vnni, avx2, portable) holds what is
specific to it: its lane count (output rows per vector, which fixes the packed
weight layout), its tile sizes for its register file, and how it emits a block's
integer dot product and its broadcasts.  The generic emitter (kernels/qmm_emit.py)
and the attention emitter (kernels/attention_emit.py) take a back end as a
parameter.  "scalar" is the plain Numba oracle: no SIMD IR at all.

The set is chosen once per process, from the CPU's features (the best one it can
run), or forced with PONDER_ISA=avx512_vnni|avx_vnni|avx2|portable|scalar for testing.
Forcing a set the CPU cannot run is a clear error (UnsupportedISAError), never a
crash in the kernel.  Every set gives the same bits (see qmatmul's contract), so
the choice changes speed only.

Public API: current(), supported(name), available(), backend(name), lanes(name),
layout_id(name), describe().  Engine, bench and the server's /health read these.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

from ponder.errors import PonderError

# Fastest first: detection takes the first one the CPU can run.
NAMES = ("avx512_vnni", "avx_vnni", "avx2", "portable", "scalar")
ENV = "PONDER_ISA"
# Bump when a packed weight layout changes (the bytes pack() writes for a lane count).
LAYOUT_VERSION = 1


class UnsupportedISAError(PonderError):
    code = "unsupported_isa"


@lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    """The CPU features Numba compiles for (names as LLVM spells them: avx2, avx512vnni, ...).

    That is the host's, unless NUMBA_CPU_FEATURES overrides them (e.g. to build code for an
    older CPU): a back end the compiler may not use is not available either.
    """
    forced = os.environ.get("NUMBA_CPU_FEATURES", "").strip()   # read as Numba reads it, without importing it
    if forced:
        return frozenset(f[1:] for f in forced.split(",") if f.startswith("+"))
    import llvmlite.binding as llvm

    try:
        f = llvm.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot tell on some hosts: assume nothing
        return frozenset()
    return frozenset(k for k in f if f[k])


def backend(name: str):
    """The module of an instruction set's back end (None for scalar)."""
    if name not in NAMES:
        raise UnsupportedISAError(f"unknown instruction set {name!r}; choose one of {', '.join(NAMES)}")
    if name == "scalar":
        return None
    return importlib.import_module(f"ponder.kernels.isa.{name}")


def supported(name: str, features: frozenset[str] | None = None) -> bool:
    """Whether this CPU (or the given feature set) can run the back end."""
    mod = backend(name)
    if mod is None:
        return True
    feats = host_features() if features is None else features
    return any(req <= feats for req in mod.REQUIRES)


def available() -> list[str]:
    """Every instruction set this CPU can run, fastest first."""
    return [n for n in NAMES if supported(n)]


def _choose() -> str:
    forced = os.environ.get(ENV, "").strip()
    if not forced:
        return available()[0]
    if forced not in NAMES:
        raise UnsupportedISAError(f"{ENV}={forced!r} is not an instruction set ponder knows; "
                                  f"choose one of {', '.join(NAMES)}")
    if not supported(forced):
        raise UnsupportedISAError(f"{ENV}={forced} but this CPU cannot run it (it can run: "
                                  f"{', '.join(available())})")
    return forced


_current: str | None = None


def current() -> str:
    """The instruction set of this process: chosen once, on first use."""
    global _current
    if _current is None:
        _current = _choose()
    return _current


def lanes(name: str | None = None) -> int:
    """Output rows per vector of the back end, which is what its packed layout depends on."""
    mod = backend(name or current())
    return 8 if mod is None else mod.LANES


def layout_id(name: str | None = None) -> str:
    """Names the packed weight layout pack() produces for the instruction set (a cache key).

    Sets with the same lane count share the layout, so the id names the layout, not the set.
    """
    return f"rows{lanes(name)}.v{LAYOUT_VERSION}"


def describe(name: str | None = None) -> str:
    """One line for logs, bench output and /health, e.g. 'avx2 (forced by PONDER_ISA; CPU can run avx512_vnni)'."""
    name = name or current()
    best = available()[0]
    if os.environ.get(ENV, "").strip() and name != best:
        return f"{name} (forced by {ENV}; this CPU can run {best})"
    return name
