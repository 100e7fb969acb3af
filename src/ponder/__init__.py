"""ponder: an exact, reproducible engine for test-time reasoning on your own CPU.

Engine, GenerationResult and SamplingParams are imported on first use (PEP 562): the
engine brings in Numba, and a command or module that needs only ponder.errors, the
store or the CLI's parser (`ponder --help`, `ponder runs`) should not pay for it.
"""

from ponder.errors import PonderError

__version__ = "0.1.0"

__all__ = ["Engine", "GenerationResult", "PonderError", "SamplingParams", "__version__"]

_LAZY = {"Engine": "ponder.engine.llm_engine", "GenerationResult": "ponder.engine.llm_engine",
         "SamplingParams": "ponder.engine.sampling_params"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'ponder' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
