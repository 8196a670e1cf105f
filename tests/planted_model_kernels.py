"""Small kernels that plant each hazard the speed model charges (benchmarks/hopper_model.py), compiled for
sm_90a: run as a script (TRITON_INTERPRET unset), it prints one JSON line {name: compile_kernel row}.

- `pipelined`: a 128x128x64 K loop, 8 warps, 3 stages: loads in flight while the wgmmas run; no hazard.
- `one_stage`: the same loop at 1 stage: each iteration's tiles go LDG -> STS and are waited for ("exposed load").
- `chained`: two dependent dots per iteration (the second consumes GELU of the first, as token mixing does): the
  first is drained before the elementwise work ("drained chain").
- `one_warpgroup`: a 64x128x64 tile on 4 warps: one warpgroup reads both wgmma operands from shared memory while
  cp.async refills it (about 190 B/clk against 128: "smem-bound" when the SMs are full).
"""
import json
import sys

import triton
import triton.language as tl


@triton.jit
def _gemm(A, B, C, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rm, rn, rk = pid * BLOCK_M + tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(A + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(B + (k + rk)[:, None] * BLOCK_N + rn[None, :])
        acc = tl.dot(a, b, acc)
    tl.store(C + rm[:, None] * BLOCK_N + rn[None, :], acc.to(C.dtype.element_ty))


@triton.jit
def _chained(A, B, C, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rm, rn, rk = pid * BLOCK_M + tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_K)
    a = tl.load(A + rm[:, None] * BLOCK_K + rk[None, :])
    out = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
    for k in range(0, K, BLOCK_N):
        w1 = tl.load(B + rk[:, None] * K + (k + rn)[None, :])            # [BLOCK_K, BLOCK_N]
        h = tl.dot(a, w1)
        h = h * tl.sigmoid(1.702 * h)                                    # GELU-like, on the dot's result
        w2 = tl.load(B + (k + rn)[:, None] * BLOCK_K + rk[None, :])      # [BLOCK_N, BLOCK_K]
        out = tl.dot(h.to(tl.bfloat16), w2, out)
    tl.store(C + rm[:, None] * BLOCK_K + rk[None, :], out.to(C.dtype.element_ty))


# name: (kernel, constexprs, warps, stages)
CASES = {
    "pipelined": (_gemm, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64), 8, 3),
    "one_stage": (_gemm, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64), 8, 1),
    "chained": (_chained, dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=64), 8, 2),
    "one_warpgroup": (_gemm, dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64), 4, 3),
}


def main(names=None):
    from mixer_kernels.ops._compile_check import compile_kernel
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(4)}
    sig = {"A": "*bf16", "B": "*bf16", "C": "*bf16", "K": "i32", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr",
           "BLOCK_K": "constexpr"}
    rows = {name: compile_kernel(fn, sig, consts, attrs, warps, stages, 90)
            for name, (fn, consts, warps, stages) in CASES.items() if not names or name in names}
    print(json.dumps(rows))
    sys.exit(1 if any(r["error"] for r in rows.values()) else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
