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
