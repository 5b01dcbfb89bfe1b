"""Where and how the trainer's arithmetic runs: the device, the precision and the memory format.

Both the fit loop and :func:`archsearch.train.evaluate.evaluate` resolve these the same way, so
they live apart from either.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from archsearch import devices
from archsearch.errors import ConfigError
from archsearch.hardware.runtime import stored_in

__all__ = ["autocast", "model_memory_format", "resolve_device", "resolve_precision"]

_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``trainer.device``'s device: :func:`archsearch.devices.resolve_device` with every kind, so
    ``auto`` is CUDA, then MPS, then the CPU.

    Raises:
        ConfigError: the name is not a device, or names one torch cannot use on this machine.
    """
    return devices.resolve_device(name, "trainer.device")


def resolve_precision(choice: str, device: torch.device) -> str:
    """``auto`` = fp16 on CUDA, fp32 elsewhere; otherwise ``choice`` (fp32, bf16 or fp16).

    Raises:
        ConfigError: fp16 on a device other than CUDA.
    """
    precision = ("fp16" if device.type == "cuda" else "fp32") if choice == "auto" else choice
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU.")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """A context that runs the forward pass in ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPE[precision])


def model_memory_format(model: nn.Module) -> torch.memory_format:
    """Channels-last if any 4-D weight has channels-last strides and not NCHW ones (see
    :func:`archsearch.hardware.runtime.stored_in`; ``to_memory_format`` gives even a 1x1 kernel
    its channels-last strides)."""
    for p in model.parameters():
        if p.dim() == 4 and stored_in(p, torch.channels_last) and not stored_in(p, torch.contiguous_format):
            return torch.channels_last
    return torch.contiguous_format
