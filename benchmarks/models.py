"""Whole MLP-Mixer models (Mixer-B/16, L/16), built by the reference model (reference/mlp_mixer.py) or
by timm: eager, torch.compile'd, and fused by `mixer_kernels.fuse_mixer_blocks(model)`.

fwd, fwd+bwd, infer: weights are cast to the run's dtype (`model.to(dtype)`), images too; fwd+bwd runs
the forward and a backward from a random logits gradient (no optimizer step); gradients are freed after
each step. train: what a timm training loop does, a mixed-precision step: fp32 weights, the forward
under torch.autocast in the run's dtype (plain fp32 for --dtype fp32), cross-entropy on random labels,
backward, and an AdamW step. Every provider trains its own copy of the same initial model (so their
first steps, which the correctness check compares, start from the same weights); the logits and loss
of the step are returned.
"""
from __future__ import annotations

import copy

import torch

from .block import block_flops
from .cases import (
    MK,
    MK_COMPILE,
    SHAPES,
    Built,
    Case,
    RunConfig,
    compiled,
    generator,
    mode_factor,
    rotation_sets,
)

TIMM_NAMES = {"S/16": "mixer_s16_224", "B/16": "mixer_b16_224", "L/16": "mixer_l16_224"}
NUM_CLASSES = 1000
IMG = 224


def _make_model(source: str, shape: str) -> torch.nn.Module:
    if shape == "tiny":   # the CPU smoke run: 32 px images, patch 8 -> S = 16 tokens, C = 16, 2 blocks
        kw = dict(img_size=32, patch_size=8, num_blocks=2, embed_dim=16, num_classes=10)
        if source == "timm":
            from timm.models.mlp_mixer import MlpMixer
            return MlpMixer(**kw)
        from reference.mlp_mixer import MlpMixer
        return MlpMixer(**kw)
    if source == "timm":
        import timm
        return timm.create_model(TIMM_NAMES[shape], pretrained=False, num_classes=NUM_CLASSES)
    from reference.mlp_mixer import MlpMixer
    return MlpMixer.from_name(shape, num_classes=NUM_CLASSES)


@torch.no_grad()
def _perturb(model: torch.nn.Module, cfg: RunConfig) -> torch.nn.Module:
    """Parameters away from their init (LayerNorm weights != 1, biases != 0, and no zero matrix:
    timm zero-initialises the head, which would make every logit 0 and the correctness check vacuous)."""
    gen = generator(cfg, 1)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
        if p.dim() == 1:
            p.copy_(1.0 + 0.1 * r if "norm" in name and name.endswith("weight") else 0.1 * r)
        else:
            std, init = p.std().item(), p[0].numel() ** -0.5
            p.add_(0.1 * std * r) if std > 0 else p.copy_(init * r)
    return model


def _fuse(model: torch.nn.Module) -> torch.nn.Module:
    """A fused copy (fuse_mixer_blocks on a deep copy: the eager model stays unfused)."""
    from mixer_kernels import fuse_mixer_blocks
    return fuse_mixer_blocks(copy.deepcopy(model))


def _model_step(model, names, images, grad_outs, mode):
    params = dict(getattr(model, "_orig_mod", model).named_parameters())   # torch.compile'd: _orig_mod.*
    plist = [params[n] for n in names]        # the eager model's order, so gradients line up
    n = len(images)
    if mode == "infer":
        def step(i):
            with torch.no_grad():
                return (model(images[i % n]),)
    elif mode == "fwd":
        def step(i):
            return (model(images[i % n]),)
    else:
        def step(i):
            out = model(images[i % n])
            out.backward(grad_outs[i % n])
            grads = [p.grad for p in plist]
            for p in plist:
                p.grad = None
            return (out.detach(), *grads)
    return step


def _train_step(model, images, labels, dtype):
    """One mixed-precision training step of `model` (its own AdamW); returns (logits, loss)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device_type = images[0].device.type
    n = len(images)

    def step(i):
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(images[i % n])
            loss = torch.nn.functional.cross_entropy(out.float(), labels[i % n])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.detach(), loss.detach()
    return step


def _build_train(source: str, shape: str, B: int):
    def build(cfg: RunConfig) -> Built:
        torch.manual_seed(0)
        model = _perturb(_make_model(source, shape).to(cfg.device), cfg).train()     # fp32 master weights
        img = 32 if shape == "tiny" else IMG
        n_sets = rotation_sets(B * 3 * img * img * 4, cfg)
        images = [torch.randn(B, 3, img, img, generator=generator(cfg, i), device=cfg.device) for i in range(n_sets)]
        labels = [torch.randint(0, model.num_classes, (B,), generator=generator(cfg, 1000 + i), device=cfg.device)
                  for i in range(n_sets)]
        built = Built(steps={}, n_sets=n_sets)
        for p in cfg.providers:
            if p == "eager":
                m = copy.deepcopy(model)
            elif p in ("compile", "compile-max"):
                m = compiled(copy.deepcopy(model), p)
            elif p in (MK, MK_COMPILE):
                m = _fuse(model)
                m = m if p == MK else compiled(m, "compile")
            else:
                continue
            built.steps[p] = _train_step(m, images, labels, cfg.dtype)
        return built

    return build


def _build(source: str, shape: str, B: int, mode: str):
    if mode == "train":
        return _build_train(source, shape, B)

    def build(cfg: RunConfig) -> Built:
        torch.manual_seed(0)
        model = _perturb(_make_model(source, shape).to(cfg.device), cfg).to(cfg.dtype)
        model.train(mode != "infer")
        img = 32 if shape == "tiny" else IMG
        set_bytes = B * 3 * img * img * cfg.dtype.itemsize
        n_sets = rotation_sets(set_bytes, cfg)
        images = [torch.randn(B, 3, img, img, generator=generator(cfg, i), device=cfg.device).to(cfg.dtype)
                  for i in range(n_sets)]
        n_out = model.num_classes
        grad_outs = [torch.randn(B, n_out, generator=generator(cfg, 1000 + i), device=cfg.device).to(cfg.dtype)
                     for i in range(n_sets)] if mode == "fwd+bwd" else None
        names = [n for n, _ in model.named_parameters()]
        models, built = {}, Built(steps={}, n_sets=n_sets)
        fused = None                        # one fused copy, shared by mixer-kernels and its compiled form
        for p in cfg.providers:
            if p == "eager":
                models[p] = model
            elif p in ("compile", "compile-max"):
                models[p] = compiled(model, p)        # shares the eager model's parameters
            elif p in (MK, MK_COMPILE):
                if fused is None:
                    fused = _fuse(model)
                models[p] = fused if p == MK else compiled(fused, "compile")
        for p, m in models.items():
            built.steps[p] = _model_step(m, names, images, grad_outs, mode)
        return built

    return build


def _dims(shape: str) -> dict:
    if shape == "tiny":
        return dict(S=16, C=16, DS=8, DC=64, depth=2, patch=8, classes=10)
    return dict(SHAPES[shape], classes=NUM_CLASSES)


def model_flops(shape: str, B: int) -> float:
    """Blocks, plus the patch-embedding convolution and the head (the final LayerNorm and pooling are
    not counted)."""
    d = _dims(shape)
    return (d["depth"] * block_flops(B, d) + 2.0 * B * d["S"] * d["C"] * 3 * d["patch"] ** 2
            + 2.0 * B * d["C"] * d["classes"])


def cases(sources, shapes, batches, modes) -> list[Case]:
    out = []
    for shape in shapes:
        for source in sources:
            for B in batches:
                for mode in modes:
                    out.append(Case("model", f"{source} {shape}", B, mode, model_flops(shape, B) * mode_factor(mode),
                                    _build(source, shape, B, mode)))
    return out
