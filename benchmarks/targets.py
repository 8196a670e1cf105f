"""The speed and memory targets of the issues, read off one run's records: each target's measured value
and whether it was met, so a GPU run answers "did we get there" by itself (summary.md, printed last by
benchmarks/gpu_check.sh). Only what the run measured is judged; a target whose case was not run, or whose
providers failed, reads "not measured".

All at B/16, bf16 (the gpu_check.sh sweep): token and channel mixing and timm Mixer-B/16 at batch 256,
inference at batch 1024. "compile" is torch.compile default of the same math (for the model: of timm's
model), "eager" the eager reference.
"""
from __future__ import annotations

from .cases import MK

CHANNEL_KERNELS = ("_channel_hidden_kernel", "_channel_out_kernel", "_channel_wgrad_kernel")


def _speedup(baseline):
    def get(rec):
        return rec["speedup"].get(baseline)
    get.baseline = baseline
    return get


def _peak_ratio(rec):
    mk, eager = rec["providers"].get(MK, {}), rec["providers"].get("eager", {})
    if mk.get("status") != "ok" or eager.get("status") != "ok" or not mk.get("peak_mib") or not eager.get("peak_mib"):
        return None
    return mk["peak_mib"] / eager["peak_mib"]


def _min_gemm_pct(rec):
    """The slowest channel-mixing GEMM kernel's % of the matmul rate (--kernels)."""
    rows = ((rec["providers"].get(MK) or {}).get("kernels") or {}).get("kernels", [])
    pcts = [r.get("pct_matmul") for r in rows if r["kernel"] in CHANNEL_KERNELS]
    return min(pcts) if pcts and None not in pcts else None


# (issue, target, (family, name, batch, mode), metric, "min" or "max", threshold, format)
TARGETS = [
    (3, "token mixing fwd >= 3x eager", ("token", "B/16", 256, "fwd"), _speedup("eager"), "min", 3.0, "x"),
    (3, "token mixing fwd >= 1.5x torch.compile", ("token", "B/16", 256, "fwd"), _speedup("compile"), "min", 1.5, "x"),
    (3, "token mixing fwd+bwd >= 2x eager", ("token", "B/16", 256, "fwd+bwd"), _speedup("eager"), "min", 2.0, "x"),
    (4, "channel mixing fwd >= 1.15x torch.compile", ("channel", "B/16", 256, "fwd"), _speedup("compile"), "min",
     1.15, "x"),
    (4, "channel mixing fwd+bwd >= 1.1x torch.compile", ("channel", "B/16", 256, "fwd+bwd"), _speedup("compile"),
     "min", 1.1, "x"),
    (4, "each channel GEMM (fwd) >= 70% of matmul", ("channel", "B/16", 256, "fwd"), _min_gemm_pct, "min", 70.0, "%"),
    (4, "each channel GEMM (fwd+bwd) >= 70% of matmul", ("channel", "B/16", 256, "fwd+bwd"), _min_gemm_pct, "min",
     70.0, "%"),
    (5, "Mixer-B/16 train step >= 1.3x eager timm", ("model", "timm B/16", 256, "train"), _speedup("eager"), "min",
     1.3, "x"),
    (5, "Mixer-B/16 train step >= 1.25x compiled timm", ("model", "timm B/16", 256, "train"), _speedup("compile"),
     "min", 1.25, "x"),
    (5, "Mixer-B/16 peak train memory <= 0.6x eager", ("model", "timm B/16", 256, "train"), _peak_ratio, "max", 0.6,
     "x"),
    (5, "Mixer-B/16 inference, batch 1024, >= 1.25x compiled timm", ("model", "timm B/16", 1024, "infer"),
     _speedup("compile"), "min", 1.25, "x"),
]


def evaluate(records: list[dict]) -> list[dict]:
    """One row per target: issue, target, measured (a number or None), met (True/False/None)."""
    by_key = {(r["family"], r["name"], r["batch"], r["mode"]): r for r in records}
    rows = []
    for issue, text, key, metric, sense, threshold, unit in TARGETS:
        rec = by_key.get(key)
        value = metric(rec) if rec is not None else None
        met = None if value is None else (value >= threshold if sense == "min" else value <= threshold)
        rows.append(dict(issue=issue, target=text, measured=value, unit=unit, met=met))
    return rows


def markdown_targets(records: list[dict]) -> str:
    rows = evaluate(records)
    lines = ["", "| issue | target | measured | met |", "|---|---|---|---|"]
    for r in rows:
        v = r["measured"]
        shown = "not measured" if v is None else (f"{v:.0f}%" if r["unit"] == "%" else f"{v:.2f}x")
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['issue']} | {r['target']} | {shown} | {met} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# The same targets read off the speed model's report (benchmarks/speed_model.py): a model, not a measurement.

_MODEL_OPS = {"token": "token_mixing", "channel": "channel_mixing"}
_MODEL_BASE = {"eager": "eager_autocast", "compile": "compile_default"}


def _model_speedup(doc, family, shape, mode, baseline, level):
    """The library's speedup over a baseline: the baseline's time at `level` over ours at the same level."""
    op = _MODEL_OPS.get(family)
    rows = [o for o in doc["ops"] if o["card"] == "H100" and o["shape"] == shape and o["op"] == op
            and o["mode"] == mode and o["triton"].startswith(doc["triton"][-1][:3])]
    if not rows or f"{baseline}_ms" not in rows[0]:
        return None
    o = rows[0]
    return o[f"{baseline}_ms"][level] / o["library_ms"][level]


def _model_gemm_pct(doc, shape, mode, level):
    """The slowest channel GEMM kernel (the model's pick) as % of cuBLAS's large-K rate (PEAK_CUBLAS)."""
    from benchmarks import hopper_model as hm
    phases = ("fwd",) if mode == "fwd" else ("fwd", "bwd")
    key = {"fast": "modelled_fast_ms", "central": "modelled_ms", "slow": "modelled_slow_ms"}[level]
    ks = [k for k in doc["kernels"] if k.get("tuner_pick") and k["card"] == "H100" and k["shape"] == shape
          and k["kernel"] in CHANNEL_KERNELS and k["mode"] in phases and k["op"] == "channel_mixing"
          and k["triton"].startswith(doc["triton"][-1][:3])]
    if not ks:
        return None
    return min(100 * k["flops"] / (k[key] / 1e3) / hm.C("PEAK_CUBLAS", level) for k in ks)


def model_targets(doc: dict) -> list[dict]:
    """One row per target, read off the speed model's results (the newest Triton in the report): the value at
    the central constants and its range over the fast / slow ends, whether the central value meets the target;
    None where the model does not cover the case (whole models, memory)."""
    rows = []
    for issue, text, key, metric, sense, threshold, unit in TARGETS:
        family, shape, _batch, mode = key
        vals = None
        if family in _MODEL_OPS and hasattr(metric, "baseline"):       # a speedup over a baseline
            baseline = _MODEL_BASE[metric.baseline]
            vals = {lv: _model_speedup(doc, family, shape, mode, baseline, lv) for lv in ("fast", "central", "slow")}
        elif metric is _min_gemm_pct:
            vals = {lv: _model_gemm_pct(doc, shape, mode, lv) for lv in ("fast", "central", "slow")}
        if vals is None or vals["central"] is None:
            rows.append(dict(issue=issue, target=text, model=None, unit=unit, met=None))
            continue
        c = vals["central"]
        rows.append(dict(issue=issue, target=text, model=vals, unit=unit,
                         met=c >= threshold if sense == "min" else c <= threshold))
    return rows


def markdown_model_targets(doc: dict) -> str:
    lines = ["| issue | target | model: central [lowest-highest over the fast, central, slow constants] | "
             "met (central) |", "|---|---|---|---|"]
    for r in model_targets(doc):
        v = r["model"]
        if v is None:
            shown = "not modelled"
        else:       # a ratio of two ranged times need not be monotonic in the level: the extremes of the three
            lo, hi = min(v.values()), max(v.values())
            f = "{:.0f}%" if r["unit"] == "%" else "{:.2f}x"
            shown = f"{f.format(v['central'])} [{f.format(lo)}-{f.format(hi)}]"
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['issue']} | {r['target']} | {shown} | {met} |")
    return "\n".join(lines)
