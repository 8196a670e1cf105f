"""Microbenchmarks of mixer-kernels against eager PyTorch and torch.compile: `python -m benchmarks.run`."""
