"""Compile every registered Triton kernel for NVIDIA targets on any machine, GPU or not.

    python -m mixer_kernels.ops._compile_check [--arch 90 80] [--json]

Builds each registered CompileCase with Triton's own compiler (`triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32))`), specialised as a real launch would be (docs/design.md, "Triton
on our machines") and with the options every launch passes (ops/_tuning.LAUNCH_OPTIONS), then has Triton's
backend assemble the PTX again with ptxas's -v report captured (the assembler and flags Triton picks for
the arch) to read registers, spills, shared memory and the wgmma serialisation notes, and (sm_90)
disassembles the cubin with Triton's nvdisasm for the SASS report of ops/_sass.py: tensor-core
instructions, loads, the main loop. Each case's speed hazards
(`hazards`: serialised wgmma, mma.sync on sm_90, spills) come with it; the speed model
(`python -m benchmarks.speed_model`) builds on the same function.
Must run with TRITON_INTERPRET unset (the interpreter replaces @triton.jit functions), so the tests
call it in a subprocess.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile

from mixer_kernels._config import triton_interpret
from mixer_kernels.ops import _sass
from mixer_kernels.ops._sass import ptxas_notes


def _tool(name: str, arch: int = 90) -> str:
    """The path of the CUDA tool ("ptxas" or "nvdisasm") that the installed Triton itself uses for sm_<arch>.
    Asked of Triton, not named here: 3.6 and 3.8 assemble sm_90 with `ptxas` (CUDA 12) and sm_100+ with
    `ptxas-blackwell`, 3.9 everything from sm_90 with its CUDA 13 `ptxas-blackwell` (whose PTX 9.x the older
    one refuses); 3.5 and older have no get_ptxas, their knobs (or the wheel's bin/) name the tool."""
    import triton
    if name == "ptxas":
        try:
            from triton.backends.nvidia.compiler import get_ptxas
            tool = get_ptxas(arch)
        except ImportError:
            tool = None
        if tool is not None:
            return getattr(tool, "path", tool)
    try:
        from triton import knobs
        tool = getattr(knobs.nvidia, name, None)
        if tool is not None and getattr(tool, "path", None):
            return tool.path
    except (ImportError, AttributeError):
        pass
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _assemble(ptx: str, arch: int, options: dict) -> tuple[str, bytes]:
    """(ptxas -v's report, the cubin) of Triton's own assembly of `ptx` for sm_<arch>: its backend's make_cubin
    with the compile options, so the assembler (the one Triton picks for the arch) and its flags are Triton's
    (--regAllocOptLevel=2 from 3.8 on, --fmad=false without FP fusion); a re-run of ptxas with flags of our own
    read other spills (3.9, fp32 token forward: 200 B where Triton's own assembly spills 356 B)."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    backend = CUDABackend(GPUTarget("cuda", arch, 32))
    opt = backend.parse_options(dict(options))
    log, saved = io.StringIO(), knobs.nvidia.dump_ptxas_log
    knobs.nvidia.dump_ptxas_log = True      # make_cubin prints ptxas's -v report on success
    try:
        with contextlib.redirect_stdout(log):
            cubin = backend.make_cubin(ptx, {}, opt, arch)
    except Exception as e:
        raise RuntimeError(f"ptxas failed:\n{str(e)[-2000:]}") from None
    finally:
        knobs.nvidia.dump_ptxas_log = saved
    return log.getvalue(), cubin


def _ptxas(ptx: str, arch: int, options: dict) -> tuple[dict, str | None]:
    """Triton's assembly of the PTX (_assemble) read: registers, spills, stack, serialisation notes, and the
    SASS of its cubin (nvdisasm -c) for sm_90."""
    text, cubin = _assemble(ptx, arch, options)
    sass = None
    if arch == 90:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "k.cubin")
            with open(path, "wb") as f:
                f.write(cubin)
            dis = subprocess.run([_tool("nvdisasm", arch), "-c", path], capture_output=True, text=True)
        if dis.returncode != 0:
            raise RuntimeError(f"nvdisasm failed:\n{dis.stderr[-2000:]}")
        sass = dis.stdout

    def grab(pattern):
        m = re.search(pattern, text)
        return int(m.group(1)) if m else 0
    return dict(registers=grab(r"Used (\d+) registers"), spill_stores=grab(r"(\d+) bytes spill stores"),
                spill_loads=grab(r"(\d+) bytes spill loads"), stack=grab(r"(\d+) bytes stack frame"),
                notes=ptxas_notes(text)), sass


# Per-SM limits of sm_90 (H100/H200) and sm_80 (A100): registers, threads, CTAs, shared memory (the
# per-SM carve-out; the runtime reserves 1 KB per CTA).
_SM_LIMITS = {90: dict(regs=65536, threads=2048, ctas=32, smem=233472),
              80: dict(regs=65536, threads=2048, ctas=32, smem=167936),
              86: dict(regs=65536, threads=1536, ctas=16, smem=102400),
              89: dict(regs=65536, threads=1536, ctas=24, smem=102400),
              120: dict(regs=65536, threads=1536, ctas=32, smem=102400)}


def ctas_per_sm(registers: int, num_warps: int, shared: int, arch: int = 90) -> int:
    """Resident CTAs of one kernel per SM: registers (allocated per warp in units of 256, per thread
    rounded up to 8), threads, the CTA cap and shared memory (+1 KB reserved per CTA)."""
    lim = _SM_LIMITS[arch]
    per_thread = -(-max(registers, 1) // 8) * 8
    per_warp = -(-per_thread * 32 // 256) * 256
    by_regs = lim["regs"] // (per_warp * num_warps)
    by_threads = lim["threads"] // (32 * num_warps)
    by_smem = lim["smem"] // (shared + 1024) if shared else lim["ctas"]
    return max(0, min(by_regs, by_threads, by_smem, lim["ctas"]))


def hazards(row: dict) -> list[str]:
    """The speed hazards of one compiled case: 'serialised' (ptxas C7515), 'mma.sync' (HMMA on sm_90,
    where wgmma is the fast path), 'spills' (register spill stores or loads)."""
    out = []
    if row.get("error"):
        return out
    if row["notes"].get("C7515"):
        out.append("serialised")
    if row["arch"] == 90 and row["sass"] and row["sass"]["total"]["hmma"]:
        out.append("mma.sync")
    if row["spill_stores"] or row["spill_loads"]:
        out.append("spills")
    return out


def compile_kernel(fn, signature: dict, constexprs: dict, attrs: dict, num_warps: int, num_stages: int,
                   arch: int = 90, **options) -> dict:
    """Compile one specialisation of the @triton.jit function `fn` for sm_<arch> and read it: registers,
    spills, shared memory, CTAs per SM, ptxas notes, and (sm_90) the SASS report (ops/_sass.py).
    `options`: other compile options a launch may carry (num_ctas, enable_fp_fusion, maxnreg, ...); those not
    given are ops/_tuning.LAUNCH_OPTIONS, as every launch of the package passes them."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from mixer_kernels.ops._tuning import LAUNCH_OPTIONS
    options = {**LAUNCH_OPTIONS, **options}     # what every launch of the package passes (FP contraction pinned)
    row = dict(arch=arch, num_warps=num_warps, num_stages=num_stages)
    try:
        src = ASTSource(fn, signature, constexprs, attrs)
        ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages, **options))
        ptx = ck.asm["ptx"]
        report, sass = _ptxas(ptx, arch, dict(num_warps=num_warps, num_stages=num_stages, **options))
        row.update(report)
        row["shared"] = ck.metadata.shared
        row["wgmma"] = "wgmma" in ptx
        row["mma"] = "mma.sync" in ptx or "wgmma" in ptx
        row["sass"] = _sass.analyse(sass).as_dict() if sass else None
        row["ctas_per_sm"] = ctas_per_sm(row["registers"], num_warps, row["shared"], arch)
        row["error"] = None
    except Exception as e:  # reported, and the test fails on it
        row["error"] = f"{type(e).__name__}: {str(e)[-1500:]}"
    row["hazards"] = hazards(row)
    return row


def baseline_key(row: dict) -> str:
    """One line of tests/compile_hazards.txt: triton version (major.minor), kernel, case, hazards."""
    import triton
    version = ".".join(triton.__version__.split(".")[:2])
    return f"{version} | {row['kernel']} | {row['case']} | {','.join(row['hazards'])}"


def baseline_lines(rows: list[dict]) -> list[str]:
    return [baseline_key(r) for r in rows if r["arch"] == 90 and r["hazards"]]


def _check_not_interpreted():
    if triton_interpret():
        raise RuntimeError("unset TRITON_INTERPRET: the compile check needs real @triton.jit functions")


def targets(archs) -> list[int]:
    """The archs of `archs` that the assembler the installed Triton uses for each (_tool) can build."""
    out = []
    for arch in archs:
        tool = _tool("ptxas", arch)
        if not os.path.exists(tool):
            continue
        listed = subprocess.run([tool, "--help"], capture_output=True, text=True).stdout
        if re.search(rf"\bsm_{arch}\b", listed):
            out.append(arch)
    return out


def _compile_job(job):
    """One (kernel, case index, arch) compile, in a worker process."""
    from mixer_kernels.ops._registry import KERNELS, import_all_ops, jit_function, signature_of
    import_all_ops()
    name, index, arch = job
    entry = KERNELS[name]
    case = entry.cases()[index]
    sig, constexprs, attrs = signature_of(entry.kernel, case.args_for(arch))
    row = dict(kernel=name, case=case.name, group=case.group or case.name, fallback=case.fallback)
    row.update(compile_kernel(jit_function(entry.kernel), sig, constexprs, attrs, case.num_warps, case.num_stages,
                              arch))
    return row


def mark_kept(rows: list[dict]) -> list[dict]:
    """Judge every launch (kernel, group) per arch as a launch on that card would (ops/_tuning.keep with the
    compiled shared memory and spills, autotuning on): row["kept"], row["first"] (MIXER_KERNELS_AUTOTUNE=0's
    pick), row["no_fit"] (the error when no entry of the launch fits the card)."""
    from mixer_kernels.ops import _tuning
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["group"], r["arch"]), []).append(r)
    for (kernel, group, arch), members in groups.items():
        for r in members:
            r.update(kept=False, first=False, no_fit=None)
        if any(r["error"] for r in members) or arch not in _tuning.SHARED_PER_BLOCK:
            continue
        entries = [_tuning.Entry(i, r["fallback"], r["shared"], r["spill_stores"] + r["spill_loads"])
                   for i, r in enumerate(members)]
        limit = _tuning.shared_limit(arch=arch)
        try:
            kept = _tuning.keep(f"{kernel} [{group}]", entries, None, limit, tune=True, card=f"sm_{arch}")
            first = _tuning.keep(f"{kernel} [{group}]", entries, None, limit, tune=False, card=f"sm_{arch}")
        except _tuning.NoConfigFits as e:
            for r in members:
                r["no_fit"] = str(e)
            continue
        for e in kept:
            members[e.config]["kept"] = True
        members[first[0].config]["first"] = True
    return rows


def compile_all(archs=(90, 80), only: str | None = None, jobs: int | None = None) -> list[dict]:
    """Compile every registered case for each arch (in `jobs` processes: default, the CPU count) and mark
    what each card keeps (mark_kept)."""
    _check_not_interpreted()
    from mixer_kernels.ops._registry import KERNELS, import_all_ops
    import_all_ops()
    work = [(entry.name, i, arch) for entry in KERNELS.values() if not only or only in entry.name
            for i, _ in enumerate(entry.cases()) for arch in archs]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(work)))
    if jobs == 1:
        rows = [_compile_job(w) for w in work]
    else:
        import concurrent.futures
        import multiprocessing
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as ex:
            rows = list(ex.map(_compile_job, work, chunksize=4))
    return mark_kept(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, nargs="+", default=[90, 80],
                   help="compute capabilities (those the installed Triton cannot build are left out)")
    p.add_argument("--jobs", type=int, default=None, help="compile processes (default: the CPU count)")
    p.add_argument("--only", default=None, help="substring of the kernel names to compile")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--hazards", action="store_true",
                   help="print the sm_90 cases with speed hazards in the format of tests/compile_hazards.txt")
    a = p.parse_args(argv)
    rows = compile_all(tuple(targets(a.arch)), a.only, a.jobs)
    if a.json:
        print(json.dumps(rows))
        return
    if a.hazards:
        for line in baseline_lines(rows):
            print(line)
        return
    print(f"{'kernel':36} {'case':30} {'sm':>3} {'warps':>5} {'regs':>4} {'spill':>5} {'smem':>6} {'cta/sm':>6} "
          f"{'mma':5} hazards")
    for r in rows:
        if r["error"]:
            print(f"{r['kernel']:36} {r['case']:30} {r['arch']:>3} ERROR {r['error'][:200]}")
        else:
            print(f"{r['kernel']:36} {r['case']:30} {r['arch']:>3} {r['num_warps']:>5} {r['registers']:>4} "
                  f"{r['spill_stores']:>5} {r['shared']:>6} {r['ctas_per_sm']:>6} "
                  f"{'wgmma' if r['wgmma'] else 'mma' if r['mma'] else '-':5} {','.join(r['hazards']) or '-'}")
    sys.exit(1 if any(r["error"] for r in rows) else 0)


if __name__ == "__main__":
    main()
