"""Model every published anchor with today's Hopper model and compare: `python -m benchmarks.calibration.calibrate`
(TRITON_INTERPRET unset: the Triton anchors compile for sm_90a). Writes benchmarks/results/calibration/summary.md
and results.json. `evaluate(card)` returns the rows and calls the model's entry points each time (compiles are
cached in-process by hopper_model.compile_launch), so constants can be refitted and re-judged in a loop.

Acceptance (issue 22, item 5): per group, the median of modelled/measured (a ratio of times) on the held_out part
within 0.90-1.15, and no case of a gemm_* group below 0.70."""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time

from . import rebuild
from .published import ANCHORS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "benchmarks", "results", "calibration")
LOW, HIGH, GEMM_FLOOR = 0.90, 1.15, 0.70


def model_spec(spec, card: str, isolated: bool = True) -> tuple[float, dict]:
    """The modelled time (seconds) of one rebuild spec, and what was picked (for candidates: the fastest).
    `isolated`: the launch is timed alone (do_bench of one kernel: hopper_model's ISOLATED_LAUNCH_S); in a
    sequence only the first launch is."""
    from benchmarks import hopper_model as hm
    if isinstance(spec, list):
        best, info, errors = math.inf, {}, []
        for cand in spec:
            try:
                t, i = model_spec(cand, card, isolated)
            except RuntimeError as e:
                errors.append(str(e)[:200])
                continue
            if t < best:
                best, info = t, i
        if not math.isfinite(best):
            raise RuntimeError(f"no candidate compiled: {errors[:2]}")
        return best, dict(info, candidates=len(spec), failed=len(errors))
    kind = spec[0]
    if kind == "triton":
        _, fn, args, grid, warps, stages, work, options = spec
        r = hm.model_triton_launch(fn, args, grid, warps, stages, work, card=card, isolated=isolated, **options)
        row = r["row"]
        keys = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_H", "BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K",
                "BLOCK_SIZE")
        return r["time_s"], dict(bound=r.get("bound"), waves=r.get("waves"), registers=row.get("registers"),
                                 spills=row.get("spill_stores", row.get("spills")), shared=row.get("shared"),
                                 ctas_per_sm=row.get("ctas_per_sm"), hazards=row.get("hazards"),
                                 model_hazards=r.get("model_hazards"), num_warps=warps,
                                 num_stages=stages, **{k: args[k] for k in keys if k in args})
    if kind == "gemm":
        _, M, N, K, dtype, batch = spec[:6]      # [, (BM, BN): the tile of the kernel the source names]
        tile = spec[6] if len(spec) > 6 else None
        return hm.model_gemm(M, N, K, dtype, card, batch=batch, isolated=isolated, tile=tile), {}
    if kind == "elementwise":        # ("elementwise", nbytes[, ATen class of hopper_model.ATEN_EFF])
        return hm.model_elementwise(spec[1], card, kind=spec[2] if len(spec) > 2 else "elementwise",
                                    isolated=isolated), {}
    if kind == "tuned":      # ("tuned", candidates at the shape the autotuner ran, the same at the anchor's shape)
        _, tuned_at, run_at = spec
        best, pick = math.inf, None
        for i, cand in enumerate(tuned_at):
            try:
                t = model_spec(cand, card, isolated)[0]
            except RuntimeError:
                continue
            if t < best:
                best, pick = t, i
        if pick is None:
            raise RuntimeError("no candidate compiled")
        t, info = model_spec(run_at[pick], card, isolated)
        return t, dict(info, candidates=len(tuned_at), picked=pick)
    if kind == "sequence":   # launches in a row; ("sync",): a host sync, the next launch starts an idle GPU
        total, iso, infos = 0.0, isolated, []
        for s in spec[1]:
            if isinstance(s, tuple) and s[0] == "sync":
                iso = True
                continue
            t, info = model_spec(s, card, iso)
            total, iso = total + t, False
            infos.append(dict(time_s=t, **{k: v for k, v in info.items() if k in (
                "bound", "model_hazards", "picked", "num_warps", "num_stages", "BLOCK_N", "BLOCK_K", "BLOCK_H")}))
        longest = max(infos, key=lambda i: i["time_s"])
        return total, dict(launches=len(infos), bound=longest.get("bound"),
                           model_hazards=sorted({h for i in infos for h in (i.get("model_hazards") or [])}),
                           parts=infos)
    raise ValueError(f"unknown spec {kind!r}")


def evaluate(card: str = "H100", anchors=None, progress=None) -> list[dict]:
    """One row per anchor: id, group, part, measured_s, modelled_s, ratio (modelled/measured time), info or error."""
    rows = []
    anchors = ANCHORS if anchors is None else anchors
    for i, a in enumerate(anchors):
        t0 = time.time()
        row = dict(id=a.id, group=a.group, part=a.part, card=a.card, fidelity=a.fidelity, measured_s=a.measured_s(),
                   modelled_s=None, ratio=None, info={}, error=None)
        try:
            # an anchor measured on an H100 PCIe is modelled as one (hopper_model.CARDS)
            t, info = model_spec(getattr(rebuild, a.rebuild)(a), "H100 PCIe" if "PCIe" in a.card else card)
            row.update(modelled_s=t, ratio=t / row["measured_s"], info=info)
        except Exception as e:  # an anchor that cannot be modelled is reported, not hidden
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(row)
        if progress:
            progress(f"[{i + 1}/{len(anchors)}] {a.id}: " + (f"ratio {row['ratio']:.3f}" if row["ratio"] else
                                                              row["error"]) + f" ({time.time() - t0:.1f} s)")
    return rows


def summarise(rows) -> dict:
    """Per group and part: n, median, min, max of the ratio; the acceptance verdicts."""
    out = {}
    for g in sorted({r["group"] for r in rows}):
        for part in ("fit", "held_out"):
            rs = [r["ratio"] for r in rows if r["group"] == g and r["part"] == part and r["ratio"] is not None]
            out[f"{g}/{part}"] = dict(n=len(rs), median=statistics.median(rs) if rs else None,
                                      min=min(rs) if rs else None, max=max(rs) if rs else None)
    verdict = {}
    for g in sorted({r["group"] for r in rows}):
        h = out[f"{g}/held_out"]
        ok = h["median"] is not None and LOW <= h["median"] <= HIGH
        if g.startswith("gemm"):
            ok = ok and all(r["ratio"] is not None and r["ratio"] >= GEMM_FLOOR for r in rows if r["group"] == g)
        verdict[g] = ok
    return dict(groups=out, accepted=verdict, all_accepted=all(verdict.values()),
                missing=[r["id"] for r in rows if r["ratio"] is None])


def _fmt(x, f="{:.3f}"):
    return "-" if x is None else f.format(x)


def write(rows, summary, card: str) -> str:
    """Write summary.md and results.json under benchmarks/results/calibration/; return the markdown."""
    import datetime

    import triton

    from benchmarks import hopper_model as hm
    lines = [f"# Calibration of the Hopper speed model on published measurements (card {card})", "",
             f"Model version {hm.MODEL_VERSION}; triton {triton.__version__}; {datetime.date.today().isoformat()}. "
             "Ratio = modelled time / measured time (below 1: the model is faster than the card was). Sources: "
             "benchmarks/calibration/published.py. Constants fitted on the fit part (hopper_model.CONSTANTS, "
             "ATEN_EFF and CEILINGS say which); acceptance is judged on the held_out part. An H100 PCIe anchor is "
             "modelled as that card.", "",
             "| id | group | part | measured (us) | modelled (us) | ratio | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        shown = ("bound", "hazards", "model_hazards", "candidates")
        note = r["error"] or ", ".join(f"{k}={v}" for k, v in r["info"].items() if k in shown)
        lines.append(f"| {r['id']} | {r['group']} | {r['part']} | {r['measured_s'] * 1e6:.1f} | "
                     f"{_fmt(r['modelled_s'] and r['modelled_s'] * 1e6, '{:.1f}')} | {_fmt(r['ratio'])} | {note} |")
    lines += ["", "| group / part | n | median | min | max |", "|---|---|---|---|---|"]
    for k, v in summary["groups"].items():
        lines.append(f"| {k} | {v['n']} | {_fmt(v['median'])} | {_fmt(v['min'])} | {_fmt(v['max'])} |")
    lines += ["", f"Acceptance (held_out median in {LOW}-{HIGH}; no gemm_* case below {GEMM_FLOOR}):", ""]
    lines += [f"- {g}: {'pass' if ok else 'FAIL'}" for g, ok in summary["accepted"].items()]
    if summary["missing"]:
        lines += ["", "Not modelled: " + ", ".join(summary["missing"])]
    md = "\n".join(lines) + "\n"
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "summary.md"), "w") as f:
        f.write(md)
    consts = {k: dict(fast=c.fast, central=c.central, slow=c.slow, source=c.source) for k, c in hm.CONSTANTS.items()}
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(dict(card=card, model_version=hm.MODEL_VERSION, constants=consts, rows=rows, summary=summary), f,
                  indent=1, default=str)
    return md


def main(argv=None) -> int:
    card = (argv or sys.argv[1:] or ["H100"])[0]
    from mixer_kernels._config import triton_interpret
    if triton_interpret():
        print("unset TRITON_INTERPRET: the Triton anchors compile for sm_90a", file=sys.stderr)
        return 2
    rows = evaluate(card, progress=lambda s: print(s, flush=True))
    summary = summarise(rows)
    print(write(rows, summary, card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
