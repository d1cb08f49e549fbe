"""Making a training step fast on the machine at hand: channels-last convolution weights, the autocast
precision the device does well, torch.compile where it pays (CUDA), and a fused optimiser.

    fast = accelerate(model, device)              # the same parameters, now channels-last where 4-D
    optimizer = sgd(model.parameters(), device, lr=0.1, momentum=0.9, weight_decay=5e-4)
    with fast.autocast():
        outputs = fast.forward(sils=..., labels=...)  # compiled on CUDA; `fast.model` for state_dict
        loss = ...
    fast.scaler.scale(loss).backward(); fast.scaler.step(optimizer); fast.scaler.update()

Measured on one CPU core (DeepGaitV2-P3D c=8, 8x4x20 frames): fp32 264 frames/s, bf16 autocast 456,
bf16 + channels-last 589; torch.compile was slower there (152-214), so it is CUDA-only by default.
Channels-last is applied to 4-D (Conv2d) weights only: `module.to(memory_format=channels_last)` raises
on the rank-5 Conv3d weights of P3D/3D networks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn


def channels_last_conv2d(model: nn.Module) -> int:
    """Store every 4-D convolution weight channels-last (in place, same Parameter objects, so an
    optimiser built before or after sees them); returns how many were converted."""
    converted = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
            converted += 1
    return converted


def _cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matrix work in hardware (elsewhere bf16 autocast is emulated, slower)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the device does it in hardware; fp16 on older CUDA GPUs (with a GradScaler); None
    (fp32) on a CPU without bf16 (fp16 autocast on CPU is slower than fp32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_has_bf16() else None
    return None


@dataclass
class Accelerated:
    """A network made fast for training. `model` is the network itself (parameters, state_dict,
    export); `forward` is what a training step calls (the compiled module, or `model`)."""

    model: nn.Module
    forward: Callable
    device: torch.device
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler  # enabled only for fp16, whose gradients underflow without it
    compiled: bool
    channels_last_convs: int

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> dict:
        return {"device": str(self.device), "autocast": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                "grad_scaler": self.scaler.is_enabled(), "compiled": self.compiled,
                "channels_last_conv2d": self.channels_last_convs}


def accelerate(model: nn.Module, device: str | torch.device, *, amp: bool = True, channels_last: bool = True,
               compile: bool | None = None) -> Accelerated:
    """Move `model` to `device` and apply what makes its training step fast there.

    amp: autocast in `autocast_dtype(device)`; channels_last: 4-D conv weights only; compile: default
    on CUDA only. On CUDA this also turns on cuDNN autotuning and TF32 for the fp32 parts (process-wide
    settings; training shapes are fixed, so autotuning is paid once).
    """
    device = torch.device(device)
    model = model.to(device)
    converted = channels_last_conv2d(model) if channels_last else 0
    dtype = autocast_dtype(device) if amp else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compile = device.type == "cuda" if compile is None else compile
    forward = torch.compile(model) if compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return Accelerated(model, forward, device, dtype, scaler, compile, converted)


def sgd(params: Iterable[nn.Parameter], device: str | torch.device, **hyper) -> torch.optim.SGD:
    """SGD with the fused CUDA kernel where this torch has it (one launch for all parameters), else the
    default implementation."""
    params = list(params)
    if torch.device(device).type == "cuda":
        try:
            return torch.optim.SGD(params, fused=True, **hyper)
        except (RuntimeError, TypeError, ValueError):
            pass  # an older torch without fused SGD
    return torch.optim.SGD(params, **hyper)


def portable_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser's state_dict with the implementation choice (fused / foreach) cleared, so a
    checkpoint written on a GPU resumes on a CPU whose torch lacks that kernel."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        for key in ("fused", "foreach"):
            if key in group:
                group[key] = None
    return state
