"""Numerical kernels: block formats, matrix products and the per-token operations."""
