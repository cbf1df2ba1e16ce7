"""Triton kernels of rww (the only package that imports triton)."""
