"""Numerical kernels: block formats, matrix products and the per-token operations."""

# Bump when any kernel's arithmetic changes (the bits it produces), so transcripts and the
# server's system_fingerprint tell outputs of different kernels apart.
KERNEL_VERSION = "1"
