"""Small kernels with known speed hazards or known SASS, to test the detector of ops/_sass.py and
ops/_compile_check.py (tests/test_speed_model.py, tests/test_sass_reader.py). Run as a script
(TRITON_INTERPRET unset), `python tests/planted_kernels.py [name ...]` compiles the named cases (default: all)
for sm_90a and prints one JSON line: {name: compile_kernel row}.

- `_serialised`: two copies of a K loop merging one accumulator under an `if` (as the channel weight-
  gradient kernel had them): ptxas serialises the wgmmas (C7515), with triton 3.6 and 3.8.
- `_mma_sync`: a 16-row dot: below wgmma's 64 rows per warpgroup, Triton emits mma.sync (HMMA).
- `_clean`: a plain 128x128x64 K loop, 8 warps: wgmma from shared memory, pipelined, no hazard.
- `fp16`: `_clean` on fp16 operands (SASS `HGMMA.64x128x16.F32`, no operand-type suffix).
- `fp8`: `_k_major`, a 128x128x128 K loop on float8e4nv operands with B stored N x K (the K-major B that
  fp8 wgmma reads from shared memory; stored K x N, Triton 3.8 transposes it through registers with byte
  stores and the loop drains every iteration), fp32 accumulator, 8 warps (SASS `QGMMA.64x128x32.F32.E4M3.E4M3`).
"""
import json
import sys

import triton
import triton.language as tl


@triton.jit
def _k_loop(A, B, acc, s, rm, rn, rk, K, SUM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    for k in range(0, K, BLOCK_K):
        a = tl.load(A + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(B + (k + rk)[:, None] * BLOCK_N + rn[None, :])
        if SUM:
            s += tl.sum(a.to(tl.float32), axis=1)
        acc = tl.dot(a, b, acc)
    return acc, s


@triton.jit
def _serialised(A, B, C, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # two copies of the K loop (one also summing rows) merging one accumulator under an `if`: the shape
    # of the channel weight-gradient kernel that ptxas serialised
    rm, rn, rk = tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    s = tl.zeros([BLOCK_M], dtype=tl.float32)
    if tl.program_id(0) == 0:
        acc, s = _k_loop(A, B, acc, s, rm, rn, rk, K, True, BLOCK_N, BLOCK_K)
    else:
        acc, s = _k_loop(A, B, acc, s, rm, rn, rk, K, False, BLOCK_N, BLOCK_K)
    tl.store(C + rm[:, None] * BLOCK_N + rn[None, :], acc + s[:, None])


@triton.jit
def _mma_sync(A, B, C, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rm, rn, rk = tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(A + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(B + (k + rk)[:, None] * BLOCK_N + rn[None, :])
        acc = tl.dot(a, b, acc)
    # stored as bf16: with triton 3.6, a K loop of dots whose fp32 accumulator is stored as it is was
    # serialised by ptxas (C7515; not with 3.8, nor once converted)
    tl.store(C + rm[:, None] * BLOCK_N + rn[None, :], acc.to(C.dtype.element_ty))


_clean = triton.jit(_mma_sync.fn)   # the same source; the 128-row launch below makes it wgmma-sized


@triton.jit
def _k_major(A, B, C, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # C = A @ B^T with B stored N x K
    rm, rn, rk = tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(A + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(B + rn[None, :] * K + (k + rk)[:, None])
        acc = tl.dot(a, b, acc)
    tl.store(C + rm[:, None] * BLOCK_N + rn[None, :], acc.to(C.dtype.element_ty))


# name: (kernel, constexprs, warps, A/B element type, C element type)
CASES = {
    "serialised": (_serialised, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64), 8, "bf16", "bf16"),
    "mma_sync": (_mma_sync, dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=64), 4, "bf16", "bf16"),
    "clean": (_clean, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64), 8, "bf16", "bf16"),
    "fp16": (_clean, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64), 8, "fp16", "fp16"),
    "fp8": (_k_major, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128), 8, "fp8e4nv", "bf16"),
}


def main(names=None):
    from mixer_kernels.ops._compile_check import compile_kernel
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(4)}
    rows = {}
    for name, (fn, consts, warps, ab, c) in CASES.items():
        if names and name not in names:
            continue
        sig = {"A": f"*{ab}", "B": f"*{ab}", "C": f"*{c}", "K": "i32", "BLOCK_M": "constexpr",
               "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"}
        rows[name] = compile_kernel(fn, sig, consts, attrs, warps, 3, 90)
    print(json.dumps(rows))
    sys.exit(1 if any(r["error"] for r in rows.values()) else 0)


if __name__ == "__main__":
    unknown = set(sys.argv[1:]) - set(CASES)
    if unknown:
        sys.exit(f"unknown cases {sorted(unknown)}; known: {sorted(CASES)}")
    main(sys.argv[1:])
