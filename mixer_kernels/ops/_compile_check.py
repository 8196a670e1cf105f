"""Compile every registered Triton kernel for NVIDIA targets on any machine, GPU or not.

    python -m mixer_kernels.ops._compile_check [--arch 90 80] [--json]

Builds each registered CompileCase with Triton's own compiler (`triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32))`), specialised as a real launch would be (DESIGN.md §6), then runs
the ptxas shipped in Triton's wheel with -v on the PTX to read registers, spills and shared memory.
Must run with TRITON_INTERPRET unset (the interpreter replaces @triton.jit functions), so the tests
call it in a subprocess.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile


def _import_all_ops():
    import mixer_kernels.ops as ops
    for m in pkgutil.iter_modules(ops.__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"mixer_kernels.ops.{m.name}")


def _ptxas_report(ptx: str, arch: int) -> dict:
    import triton
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    sm = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([ptxas, f"-arch={sm}", "-v", src, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ptxas failed:\n{r.stderr[-2000:]}")
    text = r.stderr + r.stdout
    def grab(pattern):
        m = re.search(pattern, text)
        return int(m.group(1)) if m else 0
    return dict(registers=grab(r"Used (\d+) registers"), spill_stores=grab(r"(\d+) bytes spill stores"),
                spill_loads=grab(r"(\d+) bytes spill loads"), stack=grab(r"(\d+) bytes stack frame"))


def compile_all(archs=(90, 80), only: str | None = None) -> list[dict]:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET: the compile check needs real @triton.jit functions")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from mixer_kernels.ops._registry import KERNELS, jit_function, signature_of
    _import_all_ops()
    results = []
    for entry in KERNELS.values():
        if only and only not in entry.name:
            continue
        for case in entry.cases():
            sig, constexprs, attrs = signature_of(entry.kernel, case.args)
            for arch in archs:
                row = dict(kernel=entry.name, case=case.name, arch=arch, num_warps=case.num_warps,
                           num_stages=case.num_stages, expect_no_spills=case.expect_no_spills)
                try:
                    src = ASTSource(jit_function(entry.kernel), sig, constexprs, attrs)
                    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                        options=dict(num_warps=case.num_warps, num_stages=case.num_stages))
                    row.update(_ptxas_report(ck.asm["ptx"], arch))
                    row["shared"] = ck.metadata.shared
                    ptx = ck.asm["ptx"]
                    row["wgmma"] = "wgmma" in ptx
                    row["mma"] = "mma.sync" in ptx or "wgmma" in ptx
                    row["error"] = None
                except Exception as e:  # reported, and the test fails on it
                    row["error"] = f"{type(e).__name__}: {str(e)[-1500:]}"
                results.append(row)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    p.add_argument("--only", default=None, help="substring of the kernel names to compile")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    rows = compile_all(tuple(a.arch), a.only)
    if a.json:
        print(json.dumps(rows))
        return
    print(f"{'kernel':36} {'case':24} {'sm':>3} {'warps':>5} {'regs':>4} {'spill':>5} {'smem':>6} mma")
    for r in rows:
        if r["error"]:
            print(f"{r['kernel']:36} {r['case']:24} {r['arch']:>3} ERROR {r['error'][:200]}")
        else:
            print(f"{r['kernel']:36} {r['case']:24} {r['arch']:>3} {r['num_warps']:>5} {r['registers']:>4} "
                  f"{r['spill_stores']:>5} {r['shared']:>6} {'wgmma' if r['wgmma'] else 'mma' if r['mma'] else '-'}")
    sys.exit(1 if any(r["error"] for r in rows) else 0)


if __name__ == "__main__":
    main()
