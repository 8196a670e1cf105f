"""Fuse a timm MLP-Mixer, check it against the unfused model, and (on a GPU) time both.

    python examples/fuse_timm_mixer.py                          # GPU: Mixer-B/16, batch 64, bf16 autocast
    python examples/fuse_timm_mixer.py --model mixer_l16_224 --batch 256
    python examples/fuse_timm_mixer.py --model gmixer_24_224    # gMixer: GluMlp + SiLU halves fuse too
    python examples/fuse_timm_mixer.py --device cpu             # CPU: the plain PyTorch path, check only
    python examples/fuse_timm_mixer.py --device cpu --interpret # CPU: the Triton kernels, interpreted (tiny model)

On a CUDA GPU the fused blocks run the compiled Triton kernels. On a CPU they run the plain PyTorch math
(the same numbers, no speed-up), or with --interpret the real kernels under Triton's interpreter, which
is only fast enough for the tiny model. CPU runs check numbers and print no timings: neither CPU path
says anything about GPU speed. Weights and inputs are random (no download), drawn from --seed.
"""
import argparse
import os
import sys

DTYPES = ("bf16", "fp16", "fp32")
TOLERANCE = {"bf16": 2e-2, "fp16": 1e-2, "fp32": 1e-4}   # fused vs unfused logits, relative (Frobenius)


def parse_args(argv=None):
    """Parsed before torch and timm are imported, so --help and argument errors answer at once."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--model", default=None,
                   help="a timm MLP-Mixer, ResMLP, gMLP or gMixer model (mixer_b16_224, resmlp_24_224, gmlp_s16_224, "
                        "gmixer_24_224, ...), or "
                        "'tiny' (2 blocks, 32 px images, 10 classes); default mixer_b16_224, or tiny with --interpret")
    p.add_argument("--batch", type=int, default=None, help="images per step (default 64 on a GPU, 2 on a CPU)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="where to run (default: cuda when a GPU is visible, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="bf16",
                   help="autocast dtype of the forward passes; fp32 runs without autocast (default bf16)")
    p.add_argument("--interpret", action="store_true",
                   help="CPU only: run the real Triton kernels under Triton's interpreter (TRITON_INTERPRET=1) "
                        "instead of the plain PyTorch math; tiny shapes only (use --model tiny)")
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per measurement, GPU only (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    a = p.parse_args(argv)
    if a.batch is not None and a.batch < 1:
        p.error(f"--batch: expected a positive number of images, got {a.batch}")
    if a.reps < 1:
        p.error(f"--reps: expected at least 1, got {a.reps}")
    if a.interpret and a.device == "cuda":
        p.error("--interpret runs the kernels on CPU tensors; it cannot be combined with --device cuda")
    if a.interpret:
        a.device = "cpu"
        a.model = a.model or "tiny"
        if a.model != "tiny":
            p.error(f"--interpret with --model {a.model}: the interpreter runs every kernel program in Python "
                    f"(a Mixer-B/16 forward at batch 2 takes over 20 minutes); use --model tiny")
    a.model = a.model or "mixer_b16_224"
    return a


def time_ms(torch, fn, reps):
    """Median of `reps` CUDA-event timings of fn(), after 3 warm-up calls (which also autotune)."""
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


def main(argv=None):
    a = parse_args(argv)
    from mixer_kernels._config import triton_interpret  # imports torch; the kernel modules come later
    if triton_interpret() and not a.interpret:
        sys.exit(f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']} is set: every kernel would run interpreted, "
                 f"far too slowly for --model {a.model} and meaningless to time; unset it, or pass --interpret "
                 f"(with --model tiny)")
    if a.interpret:
        os.environ["TRITON_INTERPRET"] = "1"   # before mixer_kernels imports its kernel modules

    import copy

    import torch
    cuda = torch.cuda.is_available()
    if a.device == "cuda" and not cuda:
        sys.exit("--device cuda: no CUDA device is visible to torch")
    device = "cuda" if a.device == "auto" and cuda else ("cpu" if a.device == "auto" else a.device)
    batch = a.batch or (64 if device == "cuda" else 2)

    import timm
    from timm.models.mlp_mixer import MlpMixer

    import mixer_kernels as mk

    torch.manual_seed(a.seed)
    if a.model == "tiny":
        unfused = MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=32)
    else:
        try:
            unfused = timm.create_model(a.model, pretrained=False)
        except RuntimeError as e:   # timm: "Unknown model (...)"
            sys.exit(f"--model {a.model}: {e}; MLP-Mixer, ResMLP, gMLP and gMixer models: "
                     f"{', '.join(timm.list_models(['mixer_*', 'resmlp_*', 'gmlp_*', 'gmixer_*']))}")
    unfused = unfused.to(device).eval()
    torch.nn.init.normal_(unfused.head.weight, std=0.02)   # timm zero-initialises the head: give the check teeth
    try:
        fused = mk.fuse_mixer_blocks(copy.deepcopy(unfused))
    except ValueError as e:     # a block fuse_mixer_blocks cannot compute (it names the block and the part)
        sys.exit(f"--model {a.model}: {e}")
    n_fused = sum(isinstance(m, (mk.MixerBlock, mk.ResBlock, mk.SpatialGatingBlock)) for m in fused.modules())
    if n_fused == 0:
        sys.exit(f"--model {a.model}: no MixerBlock, ResBlock or SpatialGatingBlock to fuse")
    path = {"cuda": "compiled Triton kernels", "cpu": "plain PyTorch math (no kernels, no speed-up)"}[device]
    if a.interpret:
        path = "Triton kernels under the interpreter (correctness only)"
    print(f"{a.model}: fused {n_fused} blocks; {device}, batch {batch}, {a.dtype}, seed {a.seed}; {path}")

    img = unfused.stem.img_size
    x = torch.randn(batch, 3, *img, device=device)
    autocast = torch.autocast(device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.dtype),
                              enabled=a.dtype != "fp32")
    with torch.no_grad(), autocast:
        ref, out = unfused(x), fused(x)
    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    print(f"logits [{batch}, {ref.shape[1]}]: relative difference fused vs unfused = {err:.2e} "
          f"(limit {TOLERANCE[a.dtype]:g} for {a.dtype})")
    if not err <= TOLERANCE[a.dtype]:
        sys.exit("fused and unfused models disagree")
    if device != "cuda":
        print(f"no timings on a CPU (--reps {a.reps} unused): neither CPU path says anything about GPU speed")
        return

    def step(model):
        def run():
            with autocast:
                model(x).float().square().mean().backward()
        return run

    def infer(model):
        def run():
            with torch.no_grad(), autocast:
                model(x)
        return run

    name = torch.cuda.get_device_name()
    for label, make in (("inference", infer), ("forward+backward", step)):
        t_u, t_f = time_ms(torch, make(unfused), a.reps), time_ms(torch, make(fused), a.reps)
        print(f"{name}, batch {batch}, {a.dtype}, {label}: unfused {t_u:.2f} ms, fused {t_f:.2f} ms, "
              f"speedup {t_u / t_f:.2f}x (median of {a.reps})")


if __name__ == "__main__":
    main()
