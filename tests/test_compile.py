"""Every registered Triton kernel compiles with Triton's own compiler on this machine, GPU or not, for the
cards a timm user has: sm_90 (H100/H200), sm_80 (A100), sm_86 (RTX 30xx, A10/A40) and sm_120 (RTX 50xx), where
the installed Triton targets them. sm_89 (RTX 40xx, L4/L40) is left out to keep the run short: Triton builds it
exactly as sm_86 (the same MMAv2 code path and the same 99 KB limit; measured on all 161 cases with triton
3.8: the same registers, spills and shared memory) - `python -m mixer_kernels.ops._compile_check --arch 89`
compiles it. Each launch's tile table (the cases of one group) is judged per card by ops/_tuning.keep, the
function the launches use at run time: every launch keeps a config on every card, what it keeps fits the
card's shared memory per block and spills nothing (sm_90 always; other cards: tests/compile_cards_baseline.txt
lists the known exceptions, and the launches with no entry that fits a card, and only shrinks), and
MIXER_KERNELS_AUTOTUNE=0's pick is one of the kept. The compile runs in a subprocess without
TRITON_INTERPRET (the interpreter replaces @triton.jit functions), in as many processes as there are CPUs."""
import json
import os
import subprocess
import sys
import time

import pytest

from mixer_kernels._config import compile_archs
from mixer_kernels.ops._tuning import SHARED_PER_BLOCK

# MIXER_KERNELS_COMPILE_ARCHS="90": CI's stages for the other torch / Triton pairs compile for sm_90 only (every
# Triton on sm_90, every card under Triton 3.8: README, "Testing").
ARCHS = compile_archs()


@pytest.fixture(scope="module")
def compile_report():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mixer_kernels.ops._compile_check", "--json", "--arch",
                        *map(str, ARCHS)], capture_output=True, text=True, env=env, timeout=2400)
    assert r.returncode == 0, r.stderr[-4000:]
    # every compile passes the pinned options (ops/_tuning.LAUNCH_OPTIONS): Triton 3.9's FP-fusion warning never shows
    assert "TRITON_DEFAULT_FP_FUSION" not in r.stderr, r.stderr[-2000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    archs = sorted({row["arch"] for row in rows})
    print(f"\ncompiled {len(rows)} cases for sm_{', sm_'.join(map(str, archs))} in {time.perf_counter() - t0:.0f} s "
          f"(left out, not targeted by this Triton: {sorted(set(ARCHS) - set(archs)) or 'none'})")
    print("kernel / case / sm / warps / registers / spill bytes / shared bytes / kept")
    for row in rows:
        print(f"  {row['kernel']} / {row['case']} / sm_{row['arch']} / {row['num_warps']} / "
              f"{row.get('registers')} / {row.get('spill_stores')} / {row.get('shared')} / {row.get('kept')}")
    return rows


def test_registry_is_not_empty(compile_report):
    kernels = {r["kernel"] for r in compile_report}
    assert "_layernorm_stats_kernel" in kernels
    assert {r["arch"] for r in compile_report} >= {90, 80} & set(ARCHS)


def test_every_kernel_compiles(compile_report):
    failed = [f"{r['kernel']} [{r['case']}] sm_{r['arch']}: {r['error']}" for r in compile_report if r["error"]]
    assert not failed, "\n".join(failed)


CARDS_BASELINE = os.path.join(os.path.dirname(__file__), "compile_cards_baseline.txt")


def _version():
    import triton
    return ".".join(triton.__version__.split(".")[:2])


def _cards_baseline() -> set[tuple[str, str, str, str]]:
    """tests/compile_cards_baseline.txt for this Triton version: {(sm, kernel, case or launch, kind)}, kind
    'spills' (a kept config of a card other than sm_90 spills) or 'no fit' (no entry of the launch fits)."""
    out = set()
    with open(CARDS_BASELINE) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                v, sm, kernel, case, kind = (p.strip() for p in line.split("|"))
                if v == _version():
                    out.add((sm, kernel, case, kind))
    return out


def _shrink_only(found: set, kind: str, archs: set, what: str):
    allowed = {a[:3] for a in _cards_baseline() if a[3] == kind}
    new = sorted(found - allowed)
    assert not new, (what + f" (or, for now, list them in {os.path.basename(CARDS_BASELINE)}):\n"
                     + "\n".join(f"{_version()} | {s} | {k} | {c} | {kind}" for s, k, c in new))
    stale = sorted(a for a in allowed - found if a[0] in archs)
    assert not stale, (f"fixed or gone: take them off {os.path.basename(CARDS_BASELINE)} (it only shrinks):\n"
                       + "\n".join(f"{_version()} | {s} | {k} | {c} | {kind}" for s, k, c in stale))


def test_every_launch_keeps_a_config_on_every_card(compile_report):
    """ops/_tuning.keep finds an entry of every launch's table that fits each card's shared memory (launches
    listed 'no fit' in tests/compile_cards_baseline.txt excepted, a list that only shrinks), and
    MIXER_KERNELS_AUTOTUNE=0 takes exactly one of the kept entries."""
    archs = {f"sm_{r['arch']}" for r in compile_report}
    no_fit = {(f"sm_{r['arch']}", r["kernel"], r["group"]) for r in compile_report if r["no_fit"]}
    _shrink_only(no_fit, "no fit", archs, "launches with no tile config that fits the card (add a fallback entry "
                 "to the table, and let the launch choose through ops/_tuning)")
    launches = {}
    for r in compile_report:
        if not r["error"] and not r["no_fit"]:
            launches.setdefault((r["kernel"], r["group"], r["arch"]), []).append(r)
    bad = [f"{k} sm_{a} [{g}]: {sum(r['kept'] for r in rs)} kept, {sum(r['first'] for r in rs)} first"
           for (k, g, a), rs in launches.items()
           if not any(r["kept"] for r in rs) or sum(r["first"] for r in rs) != 1
           or any(r["first"] and not r["kept"] for r in rs)]
    assert not bad, "\n".join(bad)


def test_kept_configs_fit_the_card(compile_report):
    """What a card keeps fits its shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KB
    on sm_90, 163 KB on sm_80, 99 KB on sm_86/89/120): Triton finds a larger kernel only at launch, as
    OutOfResources, on that card; here it is found on every submission. Entries over the limit are dropped,
    never kept."""
    over = [f"{r['kernel']} [{r['case']}] sm_{r['arch']}: {r['shared']} B > {SHARED_PER_BLOCK[r['arch']]} B"
            for r in compile_report if r["kept"] and r["shared"] > SHARED_PER_BLOCK[r["arch"]]]
    assert not over, "\n".join(over)
    dropped = [r for r in compile_report if not r["error"] and r["shared"] > SHARED_PER_BLOCK[r["arch"]]]
    assert all(not r["kept"] for r in dropped)


def test_no_spills_on_sm90(compile_report):
    spilled = [f"{r['kernel']} [{r['case']}]: {r['spill_stores']} B stores, {r['spill_loads']} B loads"
               for r in compile_report
               if r["arch"] == 90 and r["kept"] and (r["spill_stores"] or r["spill_loads"])]
    assert not spilled, "\n".join(spilled)


def test_no_new_spills_on_other_cards(compile_report):
    """Kept configs on sm_80/86/120 spill nothing, except the 'spills' lines of tests/compile_cards_baseline.txt
    (launches that had no spill-free entry on that card when this test arrived; the list only shrinks)."""
    archs = {f"sm_{r['arch']}" for r in compile_report}
    spilled = {(f"sm_{r['arch']}", r["kernel"], r["case"]) for r in compile_report
               if r["arch"] != 90 and r["kept"] and (r["spill_stores"] or r["spill_loads"])}
    _shrink_only(spilled, "spills", archs, "kept configs that spill (add a spill-free entry to the launch's table, "
                 "a fallback if it is for smaller cards)")


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
    rows = {(r["kernel"], r["case"]): set(r["hazards"]) for r in compile_report if r["arch"] == 90 and r["kept"]}
    new = [f"{k} [{c}]: {sorted(h - allowed.get((k, c), set()))}" for (k, c), h in rows.items()
           if h - allowed.get((k, c), set())]
    assert not new, f"speed hazards not in {os.path.basename(BASELINE)} (triton {version}):\n" + "\n".join(new)
    stale = [f"{version} | {k} | {c} | {','.join(sorted(h))}" for (k, c), h in allowed.items()
             if rows.get((k, c)) != h]
    assert not stale, ("listed cases whose hazards changed or that no longer exist: update their lines in "
                       f"{os.path.basename(BASELINE)} (the list only shrinks):\n" + "\n".join(stale))
