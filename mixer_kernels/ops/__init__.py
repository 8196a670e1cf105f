"""Fused Triton ops: one module per op (kernels, launcher, custom-op and autograd glue)."""
