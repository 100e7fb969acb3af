"""The Llama-family forward pass: a float64 reference and the fast path on Numba kernels."""
