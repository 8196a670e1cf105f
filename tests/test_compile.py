"""Every registered Triton kernel compiles for sm_90 (H100) and sm_80 with Triton's own compiler on
this machine, GPU or not, and the cases marked so compile without register spills. The compile runs
in a subprocess without TRITON_INTERPRET (the interpreter replaces @triton.jit functions)."""
import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def compile_report():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "mixer_kernels.ops._compile_check", "--json", "--arch", "90", "80"],
                       capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    print("\nkernel / case / sm / warps / registers / spill bytes / shared bytes")
    for row in rows:
        print(f"  {row['kernel']} / {row['case']} / sm_{row['arch']} / {row['num_warps']} / "
              f"{row.get('registers')} / {row.get('spill_stores')} / {row.get('shared')}")
    return rows


def test_registry_is_not_empty(compile_report):
    kernels = {r["kernel"] for r in compile_report}
    assert "_layernorm_stats_kernel" in kernels


def test_every_kernel_compiles(compile_report):
    failed = [f"{r['kernel']} [{r['case']}] sm_{r['arch']}: {r['error']}" for r in compile_report if r["error"]]
    assert not failed, "\n".join(failed)


def test_no_spills_on_sm90(compile_report):
    spilled = [f"{r['kernel']} [{r['case']}]: {r['spill_stores']} B stores, {r['spill_loads']} B loads"
               for r in compile_report
               if r["arch"] == 90 and not r["error"]
               and (r["spill_stores"] or r["spill_loads"])]
    assert not spilled, "\n".join(spilled)


# The most shared memory one program may take (cudaDevAttrMaxSharedMemoryPerBlockOptin): H100 227 KB,
# A100 163 KB. Triton only finds a larger kernel at launch (OutOfResources), on the GPU: here it is found
# on every submission. Every registered case is a configuration some launch uses (the default configs
# and the GPU autotune lists), so none may be pruned for size.
MAX_SHARED = {90: 232448, 80: 166912}


def test_shared_memory_fits(compile_report):
    over = [f"{r['kernel']} [{r['case']}] sm_{r['arch']}: {r['shared']} B > {MAX_SHARED[r['arch']]} B"
            for r in compile_report if not r["error"] and r["shared"] > MAX_SHARED[r["arch"]]]
    assert not over, "\n".join(over)


# Speed hazards (ops/_compile_check.py `hazards`: wgmma serialised by ptxas, mma.sync on sm_90, spills) of
# the sm_90 cases, by Triton version. tests/compile_hazards.txt lists the cases that had them when the
# detector arrived; the list may only shrink: a hazard on a case not listed fails, and so does a listed
# case that no longer has its hazards (take it off the list). Regenerate a version's lines with
# `python -m mixer_kernels.ops._compile_check --arch 90 --hazards`.
BASELINE = os.path.join(os.path.dirname(__file__), "compile_hazards.txt")


def _baseline(version: str) -> dict[tuple[str, str], set[str]]:
    out = {}
    with open(BASELINE) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                v, kernel, case, hz = (p.strip() for p in line.split("|"))
                if v == version:
                    out[kernel, case] = set(hz.split(","))
    return out


def test_speed_hazards_only_shrink(compile_report):
    import triton
    version = ".".join(triton.__version__.split(".")[:2])
    allowed = _baseline(version)
    rows = {(r["kernel"], r["case"]): set(r["hazards"]) for r in compile_report if r["arch"] == 90 and not r["error"]}
    new = [f"{k} [{c}]: {sorted(h - allowed.get((k, c), set()))}" for (k, c), h in rows.items()
           if h - allowed.get((k, c), set())]
    assert not new, f"speed hazards not in {os.path.basename(BASELINE)} (triton {version}):\n" + "\n".join(new)
    stale = [f"{version} | {k} | {c} | {','.join(sorted(h))}" for (k, c), h in allowed.items()
             if rows.get((k, c)) != h]
    assert not stale, ("listed cases whose hazards changed or that no longer exist: update their lines in "
                       f"{os.path.basename(BASELINE)} (the list only shrinks):\n" + "\n".join(stale))
