"""Benchmarks: ponder against llama.cpp and against the machine's limits (`ponder bench ...`)."""
