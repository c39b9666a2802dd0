"""The DRN primal network in PyTorch, module for module as the authors' ``model/drn.py``, so that
their ``.pt`` state dicts load unchanged (same keys, same shapes) and the benchmarks can time
the authors' architecture on the very weights the Keras model was converted from.

Needs the optional ``[compare]`` extra (``pip install '.[compare]'``: torch). Images are NCHW
float32 on 0..255, as in the authors' code; :func:`runner` wraps the NHWC convention of
:mod:`export.base` runners around it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from benchmarks.checkpoints import checkpoint_sizes

#: DIV2K RGB mean of the authors' MeanShift (std 1, rgb_range 255).
RGB_MEAN = (0.4488, 0.4371, 0.4040)

#: How :func:`runner` and :func:`trainer` run the model: fp32 NCHW (the authors' code), fp32
#: channels_last, bf16 autocast on channels_last, and the last two through ``torch.compile``
#: (inductor; for inference with ``freezing``, PyTorch's advice for CPUs), needing a C++
#: compiler. Compiled bf16 is PyTorch's fastest on the AMX Xeon (docs/speed_xeon_amx.md: DRN-S
#: ×4 at 128² 291 ms against 431 eager, the paper-size training step 1,562 against 1,678), at a
#: compile of about a minute.
SETTINGS = ("fp32", "channels_last", "bf16", "channels_last_compiled", "bf16_compiled")


def _conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """1×1 conv: identity kernel, bias ``sign·255·mean`` (trainable, as in the authors' code)."""

    def __init__(self, sign: int):
        super().__init__(3, 3, 1)
        self.weight.data.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.bias.data.copy_(sign * 255.0 * torch.tensor(RGB_MEAN))


class CALayer(nn.Module):
    """RCAN channel attention: mean over H, W; 1×1 C→C/r, ReLU, 1×1 C/r→C, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        squeezed = max(channels // reduction, 1)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, squeezed, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """conv3×3, ReLU, conv3×3, channel attention, + input (keys ``body.{0,2,3}``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 3), nn.ReLU(True), _conv(channels, channels, 3),
            CALayer(channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DownBlock(nn.Module):
    """conv3×3 stride 2 (padding 1, no bias), LeakyReLU 0.2, conv3×3 (no bias)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__()
        self.dual_module = nn.Sequential(
            nn.Sequential(
                nn.Conv2d(in_channels, mid_channels, 3, stride=2, padding=1, bias=False),
                nn.LeakyReLU(negative_slope=0.2, inplace=True),
            ),
            _conv(mid_channels, out_channels, 3, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dual_module(x)


class DRN(nn.Module):
    """The primal network: NCHW float32 ``(N, 3, H, W)`` on 0..255 → the list of SR levels
    ``[×1, ×2, …, ×scale]``, each ``(N, 3, 2^k·H, 2^k·W)``."""

    def __init__(self, scale: int = 4, n_blocks: int = 30, n_feats: int = 16):
        super().__init__()
        self.phases = int(math.log2(scale))
        if 2**self.phases != scale or scale < 2:
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        self.upsample = nn.Upsample(scale_factor=scale, mode="bicubic", align_corners=False)
        self.sub_mean = MeanShift(-1)
        self.add_mean = MeanShift(+1)
        self.head = _conv(3, n_feats, 3)
        self.down = nn.ModuleList(
            DownBlock(n_feats * 2**k, n_feats * 2**k, n_feats * 2 ** (k + 1))
            for k in range(self.phases)
        )
        width = n_feats * 2**self.phases
        skips = [n_feats * 2**k for k in range(self.phases)]
        tails, blocks = [_conv(width, 3, 3)], []
        for k in range(self.phases):
            skip = skips[self.phases - k - 1]
            blocks.append(nn.Sequential(
                *(RCAB(width) for _ in range(n_blocks)),
                nn.Sequential(_conv(width, 4 * width, 3), nn.PixelShuffle(2)),
                _conv(width, skip, 1),
            ))  # fmt: skip
            width = 2 * skip
            tails.append(_conv(width, 3, 3))
        self.up_blocks = nn.ModuleList(blocks)
        self.tail = nn.ModuleList(tails)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.head(self.sub_mean(self.upsample(x)))
        copies = []
        for k in range(self.phases):
            copies.append(x)
            x = self.down[k](x)
        results = [self.add_mean(self.tail[0](x))]
        for k in range(self.phases):
            x = torch.cat((self.up_blocks[k](x), copies[self.phases - k - 1]), 1)
            results.append(self.add_mean(self.tail[k + 1](x)))
        return results


def load(path: str | os.PathLike) -> DRN:
    """A :class:`DRN` of the matching size, in eval mode, holding the primal weights at
    ``path``: the authors' checkpoint (a state dict, e.g. ``DRNS4x.pt``, read with
    ``weights_only=True`` so the file can hold tensors only, never code) or an ``.npz`` of the
    same keys (:func:`benchmarks.checkpoints.keras_state_dict` of a Keras model)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            state_dict = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: not a state dict (found a {type(state_dict).__name__})")
    model = DRN(**checkpoint_sizes(state_dict))
    model.load_state_dict({k.removeprefix("module."): v for k, v in state_dict.items()})
    return model.eval()


def load_duals(path: str | os.PathLike) -> list[DownBlock]:
    """The dual networks at ``path`` (the authors' ``*_dual_model.pt``: a list of state dicts,
    one per ×2 step), each a ``DownBlock(3, F, 3)`` with ``F`` read from its weights."""
    states = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(states, list):
        raise ValueError(f"{path}: not a list of dual state dicts")
    duals = []
    for state in states:
        dual = DownBlock(3, state["dual_module.0.0.weight"].shape[0], 3)
        dual.load_state_dict(state)
        duals.append(dual)
    return duals


def trainer(
    model: DRN,
    duals: list[DownBlock],
    setting: str = "fp32",
    learning_rate: float = 1e-4,
    dual_weight: float = 0.1,
) -> Callable[[np.ndarray, tuple[np.ndarray, ...]], dict[str, float]]:
    """One training step of the authors' ``trainer.py`` (§1.3 of the reference: L1 on every
    level + ``dual_weight`` × L1 of each dual's reconstruction, one backward pass, Adam over the
    primal and dual weights), run by ``setting`` (:data:`SETTINGS`; ``bf16`` autocasts the
    forward pass, the losses are taken in float32). The step takes NHWC float32 on 0..255: the
    LR input ``(N, h, w, 3)`` and the targets of the levels above it, lowest first; it returns
    the losses of the batch before the update."""
    layout, bf16, compiled = _setting(setting)
    modules = [model, *duals]
    for module in modules:
        module.to(memory_format=layout).train()
        if compiled:
            module.forward = torch.compile(module.forward)
    parameters = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)

    def tensor(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=layout)

    def step(lr: np.ndarray, targets: tuple[np.ndarray, ...]) -> dict[str, float]:
        levels = [tensor(lr), *map(tensor, targets)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            sr = model(levels[0])
            back = [dual(sr[k + 1]) for k, dual in enumerate(duals)]
        primal = sum(functional.l1_loss(s.float(), t) for s, t in zip(sr, levels, strict=True))
        dual = sum(functional.l1_loss(d.float(), t) for d, t in zip(back, levels, strict=False))
        loss = primal + dual_weight * dual
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "primal_loss": primal.item(), "dual_loss": dual.item()}

    return step


def runner(model: DRN, setting: str = "fp32") -> Callable[[np.ndarray], np.ndarray]:
    """``model`` run by ``setting`` (:data:`SETTINGS`) as an :mod:`export.base` runner: float32
    NHWC ``(N, H, W, 3)`` on 0..255 → float32 NHWC top SR level."""
    layout, bf16, compiled = _setting(setting)
    model = model.to(memory_format=layout)
    if compiled:
        from torch._inductor import config as inductor

        inductor.freezing = True  # weights as constants: inference only
        model = torch.compile(model)

    @torch.inference_mode()
    def run(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            top = model(x)[-1]
        return top.float().permute(0, 2, 3, 1).numpy()

    return run


def _setting(setting: str) -> tuple[torch.memory_format, bool, bool]:
    """``setting`` (:data:`SETTINGS`) → (memory format, bf16 autocast, compiled)."""
    if setting not in SETTINGS:
        raise ValueError(f"PyTorch setting {setting!r}: one of {', '.join(SETTINGS)}")
    layout = torch.contiguous_format if setting == "fp32" else torch.channels_last
    return layout, setting.startswith("bf16"), setting.endswith("_compiled")
