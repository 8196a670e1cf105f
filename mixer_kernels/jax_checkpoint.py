"""Load the official JAX/Flax MLP-Mixer checkpoints (google-research/vision_transformer, `.npz`) as a
state_dict with timm's names, which `reference.MlpMixer`, timm's `MlpMixer` and models fused by
`fuse_mixer_blocks` all load with `strict=True`. timm has no such loader.

Layout conversion (Flax -> PyTorch):
    stem/kernel [p, p, in_chans, C] (HWIO)        -> stem.proj.weight [C, in_chans, p, p] (OIHW)
    */Dense_k/kernel [in, out]                     -> *.fc{k+1}.weight [out, in]
    */LayerNorm_k/scale                            -> norm{k+1}.weight
    MixerBlock_i/token_mixing, /channel_mixing     -> blocks.i.mlp_tokens, blocks.i.mlp_channels
    pre_head_layer_norm/{scale,bias}               -> norm.{weight,bias}
    head/{kernel,bias}                             -> head.{weight,bias}
"""
from __future__ import annotations

import io
import os
import re
from typing import Any, Mapping

import numpy as np
import torch

_BLOCK = re.compile(r"^MixerBlock_(\d+)/(.+)$")
_PREFIXES = ("params/", "opt/target/", "target/")


def _read(source) -> dict[str, np.ndarray]:
    if isinstance(source, Mapping):
        return {str(k): np.asarray(v) for k, v in source.items()}
    if isinstance(source, (str, os.PathLike, io.IOBase)) or hasattr(source, "read"):
        with np.load(source, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    if isinstance(source, np.lib.npyio.NpzFile):
        return {k: source[k] for k in source.files}
    raise TypeError(f"path_or_npz: expected a path, a file object, an NpzFile or a mapping of arrays, "
                    f"got {type(source).__name__}")


def _strip(key: str) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


def _convert_block_key(rest: str) -> str:
    parts = rest.split("/")
    if len(parts) == 2 and parts[0] in ("LayerNorm_0", "LayerNorm_1"):
        norm = "norm1" if parts[0] == "LayerNorm_0" else "norm2"
        return f"{norm}.{'weight' if parts[1] == 'scale' else parts[1]}"
    if len(parts) == 3 and parts[0] in ("token_mixing", "channel_mixing") and parts[1] in ("Dense_0", "Dense_1"):
        mlp = "mlp_tokens" if parts[0] == "token_mixing" else "mlp_channels"
        fc = "fc1" if parts[1] == "Dense_0" else "fc2"
        return f"{mlp}.{fc}.{'weight' if parts[2] == 'kernel' else parts[2]}"
    raise KeyError(rest)


def load_jax_checkpoint(path_or_npz: Any) -> dict[str, torch.Tensor]:
    """Convert an official JAX MLP-Mixer checkpoint to a timm-named state_dict (float32 tensors).

    `path_or_npz`: a path or file object of an `.npz`, an open `np.load` result, or a mapping from
    '/'-joined Flax parameter paths to arrays. Keys may carry a leading 'params/' or 'opt/target/'.
    Raises KeyError naming any parameter it does not know, so a non-Mixer checkpoint fails loudly.
    """
    arrays: dict[str, Any] = {}
    first: dict[str, str] = {}
    for k, v in _read(path_or_npz).items():
        name = _strip(k)
        if name in first:
            raise ValueError(f"path_or_npz: parameter {name!r} appears twice, as {first[name]!r} and {k!r} (a "
                             "checkpoint with both params/ and opt/target/ trees?); keep one of them and load again")
        first[name] = k
        arrays[name] = v
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        m = _BLOCK.match(key)
        try:
            if m:
                name = f"blocks.{int(m.group(1))}.{_convert_block_key(m.group(2))}"
            elif key in ("stem/kernel", "stem/bias"):
                name = "stem.proj." + ("weight" if key.endswith("kernel") else "bias")
            elif key in ("pre_head_layer_norm/scale", "pre_head_layer_norm/bias"):
                name = "norm." + ("weight" if key.endswith("scale") else "bias")
            elif key in ("head/kernel", "head/bias"):
                name = "head." + ("weight" if key.endswith("kernel") else "bias")
            else:
                raise KeyError(key)
        except KeyError:
            unknown.append(key)
            continue
        if name == "stem.proj.weight":
            if t.dim() != 4:
                raise ValueError(f"stem/kernel: expected [p, p, in_chans, C], got {tuple(t.shape)}")
            t = t.permute(3, 2, 0, 1)               # HWIO -> OIHW
        elif name.endswith(".weight") and t.dim() == 2:
            t = t.t()                               # Dense [in, out] -> Linear [out, in]
        out[name] = t.contiguous()
    if unknown:
        raise KeyError(f"path_or_npz: parameters not in the MLP-Mixer layout: {sorted(unknown)[:8]}")
    return out
