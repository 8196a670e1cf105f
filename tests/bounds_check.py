"""Out-of-bounds memory checks for the Triton interpreter: every load and store a kernel makes must fall
inside one of the tensors passed to that launch (the extent of the view, not only its storage).

On a GPU an unmasked or mis-masked access past a tensor reads garbage, corrupts a neighbour or faults
with an illegal address; under the interpreter it silently reads or writes host memory next to the
tensor, and a NaN-poisoned output does not always show it (a stray read multiplied by zero, a write into
another buffer). This check turns each such access into a test failure naming the kernel.

Installed by tests/conftest.py for every interpreter run (MIXER_KERNELS_BOUNDS_CHECK=0 turns it off).
It wraps two methods of Triton's interpreter (triton/runtime/interpreter.py, the same in 3.5-3.8):
GridExecutor._init_args_hst (to record each launch's tensors, after they are put on the host) and
InterpreterBuilder.create_masked_load/store (to check the addresses whose mask is true).
"""
from __future__ import annotations

import numpy as np
import torch


class OutOfBounds(AssertionError):
    pass


_state = {"ranges": None, "kernel": None}


def _extent(t: torch.Tensor) -> tuple[int, int] | None:
    """[first byte, last byte + 1) of the elements a strided view can address; None when empty."""
    if t.numel() == 0:
        return None
    lo = hi = 0
    for n, s in zip(t.shape, t.stride(), strict=True):
        if s < 0:
            lo += (n - 1) * s
        else:
            hi += (n - 1) * s
    start = t.data_ptr()
    return start + lo * t.element_size(), start + (hi + 1) * t.element_size()


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif hasattr(obj, "base") and isinstance(obj.base, torch.Tensor):   # a TensorDescriptor
        yield obj.base


def _record(executor, args_hst, kwargs_hst):
    spans = sorted(e for t in _tensors(list(args_hst) + list(kwargs_hst.values())) if (e := _extent(t)))
    _state["ranges"] = (np.array([s for s, _ in spans], dtype=np.uint64),
                        np.array([e for _, e in spans], dtype=np.uint64))
    fn = getattr(executor, "fn", None)
    _state["kernel"] = getattr(fn, "__name__", repr(fn))


def _check(ptrs: np.ndarray, mask: np.ndarray, itemsize: int, what: str):
    if _state["ranges"] is None:
        return
    addrs = np.broadcast_to(ptrs, np.broadcast_shapes(ptrs.shape, np.shape(mask)))
    addrs = addrs[np.broadcast_to(mask, addrs.shape)].astype(np.uint64).ravel()
    if addrs.size == 0:
        return
    starts, ends = _state["ranges"]
    i = np.searchsorted(starts, addrs, side="right").astype(np.int64) - 1
    ok = i >= 0
    ok[ok] = addrs[ok] + np.uint64(itemsize) <= ends[i[ok]]
    if not ok.all():
        bad = addrs[~ok]
        raise OutOfBounds(f"{_state['kernel']}: {what} of {bad.size} element(s) outside every tensor of the launch "
                          f"(first address {int(bad[0]):#x}; tensors at "
                          f"{[(hex(int(s)), int(e - s)) for s, e in zip(starts, ends, strict=True)]})")


def install():
    """Wrap the interpreter; returns a function that undoes it."""
    from triton.runtime import interpreter as it

    grid_init = it.GridExecutor._init_args_hst
    load, store = it.InterpreterBuilder.create_masked_load, it.InterpreterBuilder.create_masked_store

    def init_args_hst(self, args_dev, kwargs):
        args_hst, kwargs_hst = grid_init(self, args_dev, kwargs)
        _record(self, args_hst, kwargs_hst)
        return args_hst, kwargs_hst

    def masked_load(self, ptrs, mask, other, *a, **k):
        _check(ptrs.data, mask.data, it._get_np_dtype(ptrs.get_element_ty()).itemsize, "load")
        return load(self, ptrs, mask, other, *a, **k)

    def masked_store(self, ptrs, value, mask, *a, **k):
        _check(ptrs.data, mask.data, it._get_np_dtype(ptrs.get_element_ty()).itemsize, "store")
        return store(self, ptrs, value, mask, *a, **k)

    it.GridExecutor._init_args_hst = init_args_hst
    it.InterpreterBuilder.create_masked_load = masked_load
    it.InterpreterBuilder.create_masked_store = masked_store

    def undo():
        it.GridExecutor._init_args_hst = grid_init
        it.InterpreterBuilder.create_masked_load, it.InterpreterBuilder.create_masked_store = load, store
        _state["ranges"] = None
    return undo
