"""Fuse a timm MLP-Mixer, check it against the unfused model, and time both.

    python examples/fuse_timm_mixer.py                  # GPU: Mixer-B/16, batch 64, bf16 autocast
    python examples/fuse_timm_mixer.py --batch 256

Without a GPU it runs a tiny Mixer through the Triton interpreter (TRITON_INTERPRET=1) and checks
numbers only: interpreted kernels say nothing about speed, so no times are printed there.
"""
import argparse
import copy
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before mixer_kernels imports triton kernels

import timm  # noqa: E402
from timm.models.mlp_mixer import MlpMixer  # noqa: E402

import mixer_kernels as mk  # noqa: E402


def time_ms(fn, reps=20):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mixer_b16_224")
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    if cuda:
        device, batch, img = "cuda", a.batch, 224
        unfused = timm.create_model(a.model, pretrained=False).to(device)
    else:
        device, batch, img = "cpu", 2, 32
        unfused = MlpMixer(num_classes=10, img_size=img, patch_size=8, num_blocks=2, embed_dim=32)
        print("no GPU: a tiny Mixer through the Triton interpreter, correctness only (no timings)")
    torch.nn.init.normal_(unfused.head.weight, std=0.02)   # timm zero-initialises the head: give the check teeth
    fused = mk.fuse_mixer_blocks(copy.deepcopy(unfused))
    print(f"fused {sum(isinstance(m, mk.MixerBlock) for m in fused.modules())} blocks of {a.model if cuda else 'tiny'}")

    x = torch.randn(batch, 3, img, img, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        ref, out = unfused(x), fused(x)
    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    print(f"logits: relative difference fused vs unfused (bf16 autocast) = {err:.2e}")
    if err > 2e-2:
        sys.exit("fused and unfused models disagree")
    if not cuda:
        return

    def step(model):
        def run():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model(x).float().square().mean().backward()
        return run

    def infer(model):
        def run():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(x)
        return run

    name = torch.cuda.get_device_name()
    for label, make in (("inference", infer), ("forward+backward", step)):
        t_u, t_f = time_ms(make(unfused)), time_ms(make(fused))
        print(f"{name}, batch {batch}, {label}: unfused {t_u:.2f} ms, fused {t_f:.2f} ms, speedup {t_u / t_f:.2f}x")


if __name__ == "__main__":
    main()
