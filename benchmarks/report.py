"""Turning measured cases into results: metadata (card, versions, date), rates, speedups, and the
markdown table (stdout), JSON, CSV and PNG files."""
from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import re
import subprocess
import sys

import torch

from .cases import BASELINES, MK, kernel_flops
from .targets import evaluate, markdown_targets
from .timing import quantiles

SMOKE_BANNER = "CPU smoke run: correctness only, no speed claims"
FILES = ("results.json", "results.csv", "results.md", "summary.md", "results.png")


def environment(cfg, argv) -> dict:
    import triton
    if cfg.device == "cuda":
        card = torch.cuda.get_device_name()
        cap = ".".join(map(str, torch.cuda.get_device_capability()))
    else:
        card, cap = f"CPU ({platform.processor() or platform.machine()}), Triton interpreter", None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except Exception:
        commit = None
    return dict(card=card, compute_capability=cap, smoke=cfg.smoke, dtype=str(cfg.dtype).replace("torch.", ""),
                torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                python=platform.python_version(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"), commit=commit, command=" ".join([sys.executable, "-m", "benchmarks.run"]
                                                                          + list(argv)))


def card_slug(card: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-") or "unknown"


def check_tolerance(dtype: torch.dtype, family: str) -> float:
    """Largest relative difference from the eager reference accepted by the benchmark's sanity check
    (the GPU tests judge accuracy properly, against float64)."""
    tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    return tol * (2 if family == "model" else 1)


def case_record(case, cfg, presults: dict, seconds: float) -> dict:
    """The JSON record of one case: per provider the status, time quantiles, rate and memory; the
    mixer-kernels speedup over every baseline measured."""
    provs = {}
    for p, r in presults.items():
        q = None if cfg.smoke else quantiles(r.times_ms)
        rec = dict(status=r.status, reason=r.reason, rel_err=r.rel_err, triton_launches=r.triton_launches,
                   median_ms=None, p20_ms=None, p80_ms=None, rate=None, peak_mib=r.peak_mib, n_timed=len(r.times_ms),
                   n_input_sets=r.n_sets)
        if q is not None:
            rec.update(median_ms=q[0], p20_ms=q[1], p80_ms=q[2],
                       rate=case.work / (q[0] * 1e-3) / (1e12 if case.unit == "flop" else 1e9))
        if cfg.smoke:
            rec.update(n_timed=0, peak_mib=None)
        if r.kernels is not None:
            rec["kernels"] = r.kernels
        provs[p] = rec
    speedup = {}
    mk = provs.get(MK, {}).get("median_ms")
    for b in provs:
        bm = provs[b].get("median_ms")
        if b != MK and mk and bm:
            speedup[b] = bm / mk
    if case.family == "model":
        for rec in provs.values():
            rec["images_per_s"] = case.batch / (rec["median_ms"] * 1e-3) if rec["median_ms"] else None
    return dict(family=case.family, name=case.name, batch=case.batch, mode=case.mode, work=case.work,
                unit=case.unit, rate_unit="TFLOP/s" if case.unit == "flop" else "GB/s", providers=provs,
                speedup=speedup, seconds=round(seconds, 2))


def add_matmul_percent(records: list[dict]) -> float | None:
    """% of the matmul anchor's rate measured in this run, for every FLOP rate, the per-kernel rates of
    mixer-kernels' matmul kernels (--kernels) included; returns that rate."""
    mm = next((r["providers"]["torch"]["rate"] for r in records
               if r["family"] == "anchor" and r["name"].startswith("matmul")), None)
    for r in records:
        flops = kernel_flops(r["family"], r["name"], r["batch"])
        for rec in r["providers"].values():
            rec["pct_matmul"] = (100.0 * rec["rate"] / mm) if (mm and rec["rate"] and r["unit"] == "flop") else None
            for row in (rec.get("kernels") or {}).get("kernels", []):
                f = flops.get(row["kernel"])
                us = row["us_per_step"]
                row["tflops"] = f * row["calls_per_step"] / (us * 1e-6) / 1e12 if (f and us) else None
                row["pct_matmul"] = 100.0 * row["tflops"] / mm if (mm and row["tflops"]) else None
    return mm


# -------------------------------------------------------------------------------------------------
# Text.

def _f(v, fmt="{:.3g}", none="—"):
    return none if v is None else fmt.format(v)


def _status(rec) -> str:
    if rec["status"] == "ok":
        return "ok"
    return f"{rec['status']}: {rec['reason']}"


def markdown_full(meta: dict, records: list[dict]) -> str:
    mm_rate = meta.get("matmul_tflops")
    lines = [_header(meta), "",
             "Median ms [20th, 80th percentile]; rates use the FLOPs of docs/design.md, 'Where the time goes' "
             "(backward = 2x forward); "
             f"% mm = share of the {meta['dtype']} matmul rate measured in this run ({_f(mm_rate, '{:.0f}')} TFLOP/s); "
             "peak = memory of one step above what was allocated before it; err = relative difference from eager; "
             f"speedup = this provider's time / {MK}'s.", "",
             "| case | mode | B | provider | ms [p20, p80] | rate | % mm | peak MiB | err | speedup | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        for p, rec in r["providers"].items():
            ms = "—" if rec["median_ms"] is None else \
                f"{rec['median_ms']:.4g} [{rec['p20_ms']:.4g}, {rec['p80_ms']:.4g}]"
            rate = "—" if rec["rate"] is None else f"{rec['rate']:.4g} {r['rate_unit']}"
            lines.append(f"| {r['family']} {r['name']} | {r['mode']} | {r['batch']} | {p} | {ms} | {rate} | "
                         f"{_f(rec.get('pct_matmul'), '{:.0f}%')} | {_f(rec['peak_mib'], '{:.0f}')} | "
                         f"{_f(rec['rel_err'], '{:.1e}')} | {_f(r['speedup'].get(p), '{:.2f}x')} | {_status(rec)} |")
    return "\n".join(lines)


def markdown_kernels(records: list[dict], card: str = "") -> str:
    """Per case and provider, the kernels that take the device time (--kernels), and for mixer-kernels'
    Triton kernels the speed model's time (benchmarks/speed_model.py, committed results) with the
    measured / model ratio that calibrates it."""
    from .speed_model import load_committed, model_us_per_step
    model = load_committed()
    lines = []
    for r in records:
        for p, rec in r["providers"].items():
            k = rec.get("kernels")
            if not k:
                continue
            total = k["error"] if "error" in k else f"{_f(k['total_us_per_step'], '{:.1f}')} us of kernels per step"
            lines += ["", f"**{r['family']} {r['name']} B={r['batch']} {r['mode']}, {p}**: {total}"]
            if "error" in k:
                continue
            lines += ["", "| kernel | calls/step | us/step | share | TFLOP/s | % mm | model us/step | "
                      "measured / model |", "|---|---|---|---|---|---|---|---|"]
            for row in k["kernels"]:
                name = row["kernel"].replace("|", "/")
                name = name if len(name) <= 90 else name[:87] + "..."
                mod = (model_us_per_step(model, r["family"], r["name"].split()[-1], r["batch"], r["mode"], card,
                                         row["kernel"]) if p == MK else None)
                row["model_us_per_step"] = mod
                ratio = row["us_per_step"] / mod if (mod and row["us_per_step"]) else None
                lines.append(f"| `{name}` | {row['calls_per_step']:.3g} | {_f(row['us_per_step'], '{:.1f}')} | "
                             f"{_f(row['share'], '{:.0%}')} | {_f(row.get('tflops'), '{:.0f}')} | "
                             f"{_f(row.get('pct_matmul'), '{:.0f}%')} | {_f(mod, '{:.1f}')} | {_f(ratio, '{:.2f}')} |")
            lines += _markdown_choices(k.get("choices"))
    head = ("## Device time per kernel (3 profiled steps, after timing); TFLOP/s and % mm for mixer-kernels' "
            "matmul kernels (FLOPs per call: benchmarks/cases.py kernel_flops); model us/step: the speed model's "
            "time for the same launches (benchmarks/results/model-sm90, a model, not a measurement), and "
            "measured / model, which calibrates it")
    return "\n".join(["", head] + lines) if lines else ""


def _markdown_choices(choices) -> list[str]:
    """The GEMM choices of the profiled steps (mixer_kernels/ops/_choice.py): which alternative ran, why,
    and the first-call timings when it was measured."""
    if not choices:
        return []
    lines = ["", "| GEMM choice | key | ran | why | first-call ms per alternative |", "|---|---|---|---|---|"]
    for c in choices:
        t = c.get("timings_ms")
        times = ", ".join(f"{label} {ms:.3f}" for label, ms in t.items()) if t else "-"
        lines.append(f"| {c['choice']} | `{c['key']}` | **{c['pick']}** | {c['reason']} | {times} |")
    return lines


def markdown_summary(meta: dict, records: list[dict]) -> str:
    """One line per case: mixer-kernels' time, rate and speedup over each baseline."""
    lines = [_header(meta), "",
             f"| case | mode | B | {MK} ms | TFLOP/s | % mm | x eager | x compile | x max-autotune | "
             f"peak MiB mk / eager | check |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["family"] == "anchor":
            rec = r["providers"]["torch"]
            lines.append(f"| {r['name']} | | | {_f(rec['median_ms'], '{:.4g}')} | "
                         f"{_f(rec['rate'], '{:.4g}')} {r['rate_unit']} | | | | | | {_status(rec)} |")
            continue
        mk = r["providers"].get(MK, {})
        eager = r["providers"].get("eager", {})
        problems = [f"{p} {_status(v)}" for p, v in r["providers"].items() if v["status"] != "ok"]
        sp = r["speedup"]
        ips = f" ({mk['images_per_s']:.0f} img/s)" if mk.get("images_per_s") else ""
        lines.append(f"| {r['family']} {r['name']} | {r['mode']} | {r['batch']} | "
                     f"{_f(mk.get('median_ms'), '{:.4g}')}{ips} | "
                     f"{_f(mk.get('rate'), '{:.4g}')} | {_f(mk.get('pct_matmul'), '{:.0f}%')} | "
                     f"{_f(sp.get('eager'), '{:.2f}')} | {_f(sp.get('compile'), '{:.2f}')} | "
                     f"{_f(sp.get('compile-max'), '{:.2f}')} | {_f(mk.get('peak_mib'), '{:.0f}')} / "
                     f"{_f(eager.get('peak_mib'), '{:.0f}')} | {'; '.join(problems) or 'ok'} |")
    lines += ["", "**The issues' targets** (benchmarks/targets.py)", markdown_targets(records)]
    return "\n".join(lines)


def markdown_smoke(meta: dict, records: list[dict]) -> str:
    lines = [f"**{SMOKE_BANNER}.** {meta['card']}; torch {meta['torch']}, triton {meta['triton']}; "
             f"{meta['dtype']}; {meta['date']}.", "",
             "| case | mode | B | provider | status | err vs eager | Triton launches |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        for p, rec in r["providers"].items():
            lines.append(f"| {r['family']} {r['name']} | {r['mode']} | {r['batch']} | {p} | {_status(rec)} | "
                         f"{_f(rec['rel_err'], '{:.1e}')} | {_f(rec['triton_launches'], '{}')} |")
    return "\n".join(lines)


def _header(meta: dict) -> str:
    return (f"**{meta['card']}** (sm {meta['compute_capability']}), torch {meta['torch']}, triton {meta['triton']}, "
            f"CUDA {meta['cuda']}, {meta['dtype']}, {meta['date']}, commit {meta['commit']}")


# -------------------------------------------------------------------------------------------------
# Files.

def write_files(out_dir: str, meta: dict, records: list[dict], plot: bool) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(dict(meta=meta, results=records, targets=None if meta["smoke"] else evaluate(records)), f, indent=1)
    written.append(path)
    path = os.path.join(out_dir, "results.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        cols = ["family", "name", "batch", "mode", "provider", "status", "reason", "median_ms", "p20_ms", "p80_ms",
                "rate", "rate_unit", "pct_matmul", "speedup_of_mixer_kernels", "peak_mib", "rel_err",
                "triton_launches", "card", "dtype", "torch", "triton", "date", "smoke"]
        w.writerow(cols)
        for r in records:
            for p, rec in r["providers"].items():
                w.writerow([r["family"], r["name"], r["batch"], r["mode"], p, rec["status"], rec["reason"],
                            rec["median_ms"], rec["p20_ms"], rec["p80_ms"], rec["rate"], r["rate_unit"],
                            rec.get("pct_matmul"), r["speedup"].get(p), rec["peak_mib"], rec["rel_err"],
                            rec["triton_launches"], meta["card"], meta["dtype"], meta["torch"], meta["triton"],
                            meta["date"], meta["smoke"]])
    written.append(path)
    if meta["smoke"]:
        md_full = md_summary = markdown_smoke(meta, records)
    else:
        md_full, md_summary = markdown_full(meta, records), markdown_summary(meta, records)
    md_full += markdown_kernels(records, meta.get("card", ""))
    for name, text in (("results.md", md_full), ("summary.md", md_summary)):
        path = os.path.join(out_dir, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        written.append(path)
    if plot:
        path = plot_speedups(os.path.join(out_dir, "results.png"), meta, records)
        if path:
            written.append(path)
    return written


def plot_speedups(path: str, meta: dict, records: list[dict]) -> str | None:
    """Horizontal bars: mixer-kernels' speedup over each baseline, per case. None (and a message on
    stderr) when matplotlib is missing or there is nothing measured to plot."""
    rows = [r for r in records if r["speedup"]]
    if meta["smoke"] or not rows:
        print("plot: skipped (no measured speedups to plot)", file=sys.stderr)
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot: skipped (matplotlib is not installed)", file=sys.stderr)
        return None
    baselines = [b for b in BASELINES if any(b in r["speedup"] for r in rows)]
    labels = [f"{r['family']} {r['name']} B={r['batch']} {r['mode']}" for r in rows]
    h = 0.8 / max(len(baselines), 1)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.35 * len(rows) * max(len(baselines), 1)))
    for j, b in enumerate(baselines):
        ys = [i + (j - (len(baselines) - 1) / 2) * h for i in range(len(rows))]
        ax.barh(ys, [r["speedup"].get(b, 0.0) for r in rows], height=h, label=f"vs {b}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"speedup of {MK} (baseline time / {MK} time)")
    ax.set_title(f"{meta['card']}, {meta['dtype']}\ntorch {meta['torch']}, triton {meta['triton']}, {meta['date']}",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
