"""How torch runs a model on this process: intra-op threads and the activations' memory format.

Shared by the trainer and the latency measurement so that ``auto`` means the same in both:
a latency is measured the way the search trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

from archsearch.checks import check_choice
from archsearch.errors import ConfigError
from archsearch.hardware.choices import MEMORY_FORMATS

__all__ = [
    "MEMORY_FORMATS",
    "check_threads",
    "resolve_memory_format",
    "stored_in",
    "to_memory_format",
    "torch_threads",
]

M = TypeVar("M", bound=nn.Module)


def check_threads(threads: int | None) -> int:
    """The intra-op thread count ``threads`` means (None: torch's current setting).

    Raises:
        ConfigError: ``threads`` is neither None nor a positive integer.
    """
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer or null, got {threads!r}.")
    return threads


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run a block with ``threads`` torch intra-op threads (None: leave as is); restore afterwards.

    Yields:
        The thread count in effect inside the block.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(check_threads(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def resolve_memory_format(choice: str, model: nn.Module) -> torch.memory_format:
    """Pick the memory format for a model's activations.

    ``auto`` chooses channels-last for any model with a 2-D convolution. Measured on the
    development machine (2-core Sapphire Rapids Xeon, torch 2.13 CPU, fp32, batch 128, training
    steps on the real datasets, median of 7 alternating runs, 1 thread): fire_digits on digits
    1.43x the images/s of NCHW, fire_mnist on Fashion-MNIST 0.99x (no gain, no loss). On random
    inputs fire_mnist gains 1.34x, nearly all from max-pooling, whose NCHW kernel branches on
    the data (21 ms against 3 ms per call) while the channels-last one does not; so channels-last
    is never slower here and much faster on some nets and data. On CUDA it is what tensor cores
    want under mixed precision. A model without convolutions stays contiguous.
    """
    check_choice("memory_format", choice, MEMORY_FORMATS)
    if choice == "channels_last" or (
        choice == "auto" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    ):
        return torch.channels_last
    return torch.contiguous_format


def to_memory_format(module: M, fmt: torch.memory_format) -> M:
    """``module.to(memory_format=fmt)`` (in place, returned), typed: torch's stubs lack that overload."""
    return module.to(memory_format=fmt)  # type: ignore[call-overload]


def stored_in(tensor: torch.Tensor, fmt: torch.memory_format) -> bool:
    """Whether a 4-D tensor has exactly the strides ``tensor.to(memory_format=fmt)`` gives it.

    ``Tensor.is_contiguous(memory_format=...)`` is no test of a weight's format: it holds for
    both formats when a dimension is 1 (a 1x1 conv, a conv on one input channel). Such a
    weight left with NCHW strides makes oneDNN run its conv, and the network after it, in NCHW:
    measured on the build VM, 24 ms against 7 ms per batch of 64 for a net of 1x1 Fire modules
    on a grey image, whose every weight passes both tests.
    """
    _, c, h, w = tensor.shape
    if fmt == torch.channels_last:
        return tensor.stride() == (c * h * w, 1, w * c, c)
    return tensor.stride() == (c * h * w, h * w, w, 1)
