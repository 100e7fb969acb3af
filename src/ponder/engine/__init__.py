"""The engine: sequences, KV cache, scheduling, sampling and the generate loop."""
