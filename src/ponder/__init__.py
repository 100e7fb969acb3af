"""ponder: an exact, reproducible engine for test-time reasoning on your own CPU."""

from ponder.engine.sampling_params import SamplingParams
from ponder.engine.llm_engine import Engine, GenerationResult
from ponder.errors import PonderError

__version__ = "0.1.0"

__all__ = ["Engine", "GenerationResult", "PonderError", "SamplingParams", "__version__"]
